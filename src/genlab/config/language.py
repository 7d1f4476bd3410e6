"""Schema of the language-model stages: ``model.gpt``, ``gpt_scaling``, ``scaling_fit``, ``emergence``.

Values live in ``experiments/model/<stage>/default.yaml``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING

from genlab.config.checks import Section, nonnegative, positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class EmergenceConfig(Section):
    path: ClassVar[str] = "model.emergence"
    widths: list[int] = MISSING       # model sizes (n_embd); every (width, seed) is one job of the run pool
    n_layer: int = MISSING
    n_head: int = MISSING
    only: Optional[int] = MISSING     # train just this width (all seeds); null: every width
    seeds: Optional[list[int]] = MISSING   # replicate seeds per size; null: the global `seeds`
    digits: list[int] = MISSING       # operand digit counts: trained on as a mix, scored one by one
    n_train: int = MISSING            # problems per digit count (fewer when the digit count has fewer)
    n_val: int = MISSING
    n_test: int = MISSING
    steps: int = MISSING              # step cap of every size
    val_every: int = MISSING          # steps between validation checks (early stopping, curves)
    patience: int = MISSING           # checks without a min_rel_delta fall of the validation loss: stalled
    min_rel_delta: float = MISSING
    solved_at: float = MISSING        # validation exact match at every digit count that stops a run: solved
    threshold: float = MISSING        # validation exact match of steps-to-threshold, per digit count
    batch_size: int = MISSING
    lr: float = MISSING               # peak; warmup then cosine decay to 0.1·lr over `steps`
    warmup_steps: int = MISSING
    weight_decay: float = MISSING
    grad_clip: float = MISSING        # max global gradient norm
    dropout: float = MISSING
    pos: str = MISSING                # learned absolute positions | rope
    init_scale: float = MISSING       # × GPT-2's N(0, 0.02) init of every weight matrix
    threads: int = MISSING            # torch threads per job: these models are so small that more only add sync
    transition_band: list[float] = MISSING   # [lo, hi]: a (size, length) cell with mean exact match inside is
                                             # "in transition", outside "saturated" (at the floor or ceiling)
    window: float = MISSING           # largest N ratio of a "size interval" in the abrupt-vs-smooth test
    tolerance: float = MISSING        # "p^L predicts exact match within x": x, mean |error| at transition cells

    def check(self):
        positive(self, "n_layer", "n_head", "threads", "steps", "batch_size", "lr", "warmup_steps", "grad_clip",
                 "init_scale", "n_train", "n_val", "n_test", "val_every", "patience", "tolerance")
        if self.val_every > self.steps:
            raise ConfigError(f"model.emergence.val_every={self.val_every} exceeds steps={self.steps}: no run would "
                              "ever be validated (no curves, no early stop)", f"set val_every ≤ {self.steps}")
        nonnegative(self, "weight_decay", "min_rel_delta")
        fraction(self, "dropout")
        fraction(self, "solved_at")
        fraction(self, "threshold")
        one_of(self, "pos", ("learned", "rope"))
        if not self.digits or min(self.digits) <= 0:
            raise ConfigError(f"model.emergence.digits={self.digits} must be positive digit counts", "e.g. digits=[2]")
        head_dim_ok = (lambda w: w % self.n_head == 0 and (self.pos == "learned" or w // self.n_head % 2 == 0))
        if not self.widths or not all(w > 0 and head_dim_ok(w) for w in self.widths):
            raise ConfigError(f"model.emergence.widths={self.widths} must be positive multiples of n_head="
                              f"{self.n_head} (with an even head dimension for pos=rope)", "e.g. widths=[8,16,32]")
        if self.only is not None:
            one_of(self, "only", tuple(self.widths))
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ConfigError(f"model.emergence.seeds={self.seeds} must be distinct seeds, or null for the global "
                              "`seeds`", "e.g. model.emergence.seeds=[0,1,2]")
        band = list(self.transition_band)
        if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
            raise ConfigError(f"model.emergence.transition_band={band} must be [lo, hi] with 0 ≤ lo < hi ≤ 1",
                              "e.g. transition_band=[0.05,0.95]")
        if self.window <= 1:
            raise ConfigError(f"model.emergence.window={self.window} must be an N ratio > 1", "e.g. window=2.0")


@dataclass
class LMOptimConfig(Section):
    """AdamW + warmup/cosine schedule of the language-model stages (nanoGPT's recipe)."""
    path: ClassVar[str] = "model.<stage>.optim"
    batch_size: int = MISSING         # windows per step (tokens per step = batch_size × block_size)
    lr: float = MISSING               # peak, after linear warmup
    min_lr: float = MISSING           # end of the cosine decay
    warmup_iters: int = MISSING
    weight_decay: float = MISSING     # on weight matrices only
    beta2: float = MISSING
    grad_clip: float = MISSING        # max global gradient norm (Trainer gradient_clip_val)

    def check(self):
        positive(self, "batch_size", "lr", "min_lr", "grad_clip")
        if self.min_lr > self.lr or self.warmup_iters < 0 or not 0 < self.beta2 < 1 or self.weight_decay < 0:
            raise ConfigError(f"{self.path}: need min_lr ≤ lr, warmup_iters ≥ 0, 0 < beta2 < 1, weight_decay ≥ 0",
                              "e.g. lr=1e-3 min_lr=1e-4 warmup_iters=100 beta2=0.99 weight_decay=0.1")


@dataclass
class GPTArchConfig(Section):
    """``genlab.nn.transformer.TransformerConfig`` (vocab_size comes from the data)."""
    path: ClassVar[str] = "model.gpt.arch"
    n_layer: int = MISSING
    n_head: int = MISSING
    n_embd: int = MISSING
    block_size: int = MISSING         # context length in tokens
    dropout: float = MISSING
    bias: bool = MISSING              # biases in linear layers and LayerNorms
    pos: str = MISSING                # learned absolute positions | rope

    def check(self):
        positive(self, "n_layer", "n_head", "n_embd", "block_size")
        fraction(self, "dropout")
        one_of(self, "pos", ("learned", "rope"))
        if self.n_embd % self.n_head or (self.pos == "rope" and self.n_embd // self.n_head % 2):
            raise ConfigError(f"{self.path}.n_embd={self.n_embd} must be a multiple of n_head={self.n_head} "
                              "(with an even head dimension for pos=rope)", "e.g. n_embd=128 n_head=4")


@dataclass
class GPTSampleConfig(Section):
    path: ClassVar[str] = "model.gpt.sample"
    n: int = MISSING                  # samples shown in the report
    tokens: int = MISSING             # length of each sample
    temperature: float = MISSING
    top_k: int = MISSING

    def check(self):
        positive(self, "n", "tokens", "temperature", "top_k")


def val_tokens_hold_a_block(section, block_size: int) -> None:
    """``val_tokens``: 0 (the whole split) or enough tokens for one window of ``block_size + 1``."""
    if section.val_tokens < 0 or 0 < section.val_tokens <= block_size:
        raise ConfigError(f"{section.path}.val_tokens={section.val_tokens} holds no validation window of "
                          f"block_size + 1 = {block_size + 1} tokens", f"use 0 (the whole split) or > {block_size}")


@dataclass
class GPTConfig(Section):
    path: ClassVar[str] = "model.gpt"
    arch: GPTArchConfig = field(default_factory=GPTArchConfig)
    optim: LMOptimConfig = field(default_factory=LMOptimConfig)
    max_iters: int = MISSING
    lr_decay_iters: int = MISSING     # cosine reaches min_lr here (nanoGPT: = max_iters)
    eval_interval: int = MISSING      # steps between validations (best-on-validation weights are kept)
    val_tokens: int = MISSING         # tokens of the val split per validation; 0 = all of it
    sample: GPTSampleConfig = field(default_factory=GPTSampleConfig)

    def check(self):
        positive(self, "max_iters", "lr_decay_iters", "eval_interval")
        val_tokens_hold_a_block(self, self.arch.block_size)


@dataclass
class GPTScalingConfig(Section):
    """IsoFLOP profiles: per compute budget, the sizes trained at it (D = C / FLOPs per token)."""
    path: ClassVar[str] = "model.gpt_scaling"
    budgets: list[float] = MISSING    # compute budgets C (training FLOPs), small → large
    sizes: list[list[str]] = MISSING  # per budget: "L<n_layer>-W<n_embd>" sizes trained at it
    seeded_budgets: int = MISSING     # the smallest k budgets run under every seed in `seeds`; the rest `seed` only
    head_dim: int = MISSING           # n_head = max(1, n_embd // head_dim)
    block_size: int = MISSING
    pos: str = MISSING                # learned absolute positions | rope
    batch_size: int = MISSING         # windows per step (tokens per step = batch_size × block_size)
    lr: float = MISSING               # peak lr at width lr_base_width
    lr_base_width: int = MISSING
    lr_width_power: float = MISSING   # lr(d) = lr · (lr_base_width / d)^power; 1: μP-style for Adam, 0: one lr
    min_lr_ratio: float = MISSING     # cosine decays to this × peak at each run's last step
    warmup_frac: float = MISSING      # linear warm-up over this fraction of each run's steps
    weight_decay: float = MISSING
    beta2: float = MISSING
    grad_clip: float = MISSING
    val_tokens: int = MISSING         # 0: the whole validation split

    def check(self):
        positive(self, "head_dim", "block_size", "batch_size", "lr", "lr_base_width", "min_lr_ratio", "grad_clip")
        nonnegative(self, "seeded_budgets", "weight_decay", "lr_width_power")
        fraction(self, "warmup_frac")
        val_tokens_hold_a_block(self, self.block_size)
        one_of(self, "pos", ("learned", "rope"))
        if not self.budgets or len(self.sizes) != len(self.budgets) or min(self.budgets) <= 0:
            raise ConfigError(f"model.gpt_scaling: {len(self.budgets)} budgets but {len(self.sizes)} size lists "
                              "(one list of sizes per positive budget)", "e.g. budgets=[1e10,1e11] "
                              "sizes=[[L1-W16,L2-W32],[L2-W32,L3-W64]]")
        for size in (s for group in self.sizes for s in group):
            m = re.fullmatch(r"L(\d+)-W(\d+)", size)
            width = int(m[2]) if m else 0
            heads = max(1, width // self.head_dim)
            if not m or int(m[1]) < 1 or width < 1 or width % heads or (self.pos == "rope" and width // heads % 2):
                raise ConfigError(f"model.gpt_scaling.sizes: {size!r} is not L<n_layer>-W<n_embd> with n_embd "
                                  f"divisible by its n_head = max(1, n_embd // head_dim={self.head_dim})",
                                  "e.g. sizes=[[L1-W32,L2-W64]]")
        if not 0 < self.min_lr_ratio <= 1 or not 0 < self.beta2 < 1:
            raise ConfigError("model.gpt_scaling: need 0 < min_lr_ratio ≤ 1 and 0 < beta2 < 1",
                              "e.g. min_lr_ratio=0.1 beta2=0.99")


@dataclass
class ScalingFitConfig(Section):
    path: ClassVar[str] = "model.scaling_fit"
    huber_delta: float = MISSING      # Huber δ on log-loss residuals (Hoffmann et al. 2022)
    n_starts: int = MISSING           # L-BFGS-B runs from the best points of the initialisation grid
    n_boot: int = MISSING             # bootstrap resamples (over runs) for the confidence intervals
    ci: float = MISSING               # confidence level of the reported intervals (claims use 95%)
    holdout_budgets: int = MISSING    # the largest k budgets are held out and predicted
    e_floor: float = MISSING          # "E is identified" claims E > this (nats/token)
    a_tolerance: float = MISSING      # ± band of the claims "a ≈ 0.5 (Chinchilla)" and "a ≈ 0.73 (Kaplan)"
    holdout_tolerance: float = MISSING   # the claim "held-out loss predicted within this relative error"

    def check(self):
        positive(self, "huber_delta", "n_starts", "n_boot", "holdout_budgets", "a_tolerance", "holdout_tolerance")
        nonnegative(self, "e_floor")
        fraction(self, "ci")
