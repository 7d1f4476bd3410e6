"""Schema of the language-model stages: ``model.gpt``, ``gpt_scaling``, ``scaling_fit``, ``emergence``."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Optional

from genlab.config.checks import positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class EmergenceConfig:
    path: ClassVar[str] = "model.emergence"
    widths: list[int] = field(default_factory=lambda: [8, 12, 16, 24, 32, 48])   # model sizes (n_embd)
    n_layer: int = 2
    n_head: int = 2
    only: Optional[int] = None        # train just this width (one DVC foreach item); null: every width
    digits: list[int] = field(default_factory=lambda: [2, 3])   # operand digit counts trained and scored on
    steps: int = 2000                 # the same training budget for every size
    batch_size: int = 64
    lr: float = 3e-3                  # peak; warmup then cosine decay to 0.1·lr
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.0
    pos: str = "learned"              # learned absolute positions | rope
    init_scale: float = 4.0           # × GPT-2's N(0, 0.02) init of every weight matrix
    threads: int = 1                  # torch threads: these models are so small that more threads only add sync

    def __post_init__(self):
        positive(self, "n_layer", "n_head", "threads", "steps", "batch_size", "lr", "warmup_steps", "grad_clip",
                 "init_scale")
        fraction(self, "dropout")
        one_of(self, "pos", ("learned", "rope"))
        if not self.digits or min(self.digits) <= 0:
            raise ConfigError(f"model.emergence.digits={self.digits} must be positive digit counts", "e.g. digits=[2]")
        head_dim_ok = (lambda w: w % self.n_head == 0 and (self.pos == "learned" or w // self.n_head % 2 == 0))
        if not self.widths or not all(w > 0 and head_dim_ok(w) for w in self.widths):
            raise ConfigError(f"model.emergence.widths={self.widths} must be positive multiples of n_head="
                              f"{self.n_head} (with an even head dimension for pos=rope)", "e.g. widths=[8,16,32]")
        if self.only is not None:
            one_of(self, "only", tuple(self.widths))


@dataclass
class LMOptimConfig:
    """AdamW + warmup/cosine schedule of the language-model stages (nanoGPT's recipe)."""
    path: ClassVar[str] = "model.<stage>.optim"
    batch_size: int = 12              # windows per step (tokens per step = batch_size × block_size)
    lr: float = 1e-3                  # peak, after linear warmup
    min_lr: float = 1e-4              # end of the cosine decay
    warmup_iters: int = 100
    weight_decay: float = 0.1         # on weight matrices only
    beta2: float = 0.99
    grad_clip: float = 1.0            # max global gradient norm (Trainer gradient_clip_val)

    def __post_init__(self):
        positive(self, "batch_size", "lr", "min_lr", "grad_clip")
        if self.min_lr > self.lr or self.warmup_iters < 0 or not 0 < self.beta2 < 1 or self.weight_decay < 0:
            raise ConfigError(f"{self.path}: need min_lr ≤ lr, warmup_iters ≥ 0, 0 < beta2 < 1, weight_decay ≥ 0",
                              "e.g. lr=1e-3 min_lr=1e-4 warmup_iters=100 beta2=0.99 weight_decay=0.1")


@dataclass
class GPTArchConfig:
    """``genlab.nn.transformer.TransformerConfig`` (vocab_size comes from the data)."""
    path: ClassVar[str] = "model.gpt.arch"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    pos: str = "learned"              # learned absolute positions | rope

    def __post_init__(self):
        positive(self, "n_layer", "n_head", "n_embd", "block_size")
        fraction(self, "dropout")
        one_of(self, "pos", ("learned", "rope"))
        if self.n_embd % self.n_head or (self.pos == "rope" and self.n_embd // self.n_head % 2):
            raise ConfigError(f"{self.path}.n_embd={self.n_embd} must be a multiple of n_head={self.n_head} "
                              "(with an even head dimension for pos=rope)", "e.g. n_embd=128 n_head=4")


@dataclass
class GPTSampleConfig:
    path: ClassVar[str] = "model.gpt.sample"
    n: int = 3                        # samples shown in the report
    tokens: int = 400
    temperature: float = 0.8
    top_k: int = 40

    def __post_init__(self):
        positive(self, "n", "tokens", "temperature", "top_k")


def val_tokens_hold_a_block(section, block_size: int) -> None:
    """``val_tokens``: 0 (the whole split) or enough tokens for one window of ``block_size + 1``."""
    if section.val_tokens < 0 or 0 < section.val_tokens <= block_size:
        raise ConfigError(f"{section.path}.val_tokens={section.val_tokens} holds no validation window of "
                          f"block_size + 1 = {block_size + 1} tokens", f"use 0 (the whole split) or > {block_size}")


@dataclass
class GPTConfig:
    path: ClassVar[str] = "model.gpt"
    arch: GPTArchConfig = field(default_factory=GPTArchConfig)
    optim: LMOptimConfig = field(default_factory=LMOptimConfig)
    max_iters: int = 1500
    lr_decay_iters: int = 1500        # cosine reaches min_lr here (nanoGPT: = max_iters)
    eval_interval: int = 250          # steps between validations (best-on-validation weights are kept)
    val_tokens: int = 0               # tokens of the val split per validation; 0 = all of it
    sample: GPTSampleConfig = field(default_factory=GPTSampleConfig)

    def __post_init__(self):
        positive(self, "max_iters", "lr_decay_iters", "eval_interval")
        val_tokens_hold_a_block(self, self.arch.block_size)


@dataclass
class GPTScalingConfig:
    """A model-size family (one DVC foreach item per size), the largest few also at smaller token budgets."""
    path: ClassVar[str] = "model.gpt_scaling"
    sizes: list[str] = field(default_factory=lambda: ["L1-W32", "L2-W32", "L2-W48", "L3-W64", "L4-W80", "L4-W96"])
                                      # "L<n_layer>-W<n_embd>", small → large
    tokens: int = 400_000             # D of every size's main run
    extra_budgets: list[float] = field(default_factory=lambda: [0.25, 0.5])  # × tokens, for the largest few
    extra_sizes: int = 3              # how many of the largest sizes also train at the extra budgets
    only: Optional[str] = None        # train just this size (one DVC foreach item); null: every size
    head_dim: int = 16                # n_head = n_embd / head_dim
    block_size: int = 64
    pos: str = "learned"
    optim: LMOptimConfig = field(default_factory=lambda: LMOptimConfig(batch_size=32, lr=3e-3, min_lr=3e-4,
                                                                        warmup_iters=20))
    val_tokens: int = 0               # 0: the whole validation split

    def __post_init__(self):
        positive(self, "tokens", "head_dim", "block_size")
        val_tokens_hold_a_block(self, self.block_size)
        one_of(self, "pos", ("learned", "rope"))
        for size in self.sizes:
            m = re.fullmatch(r"L(\d+)-W(\d+)", size)
            if not m or int(m[1]) < 1 or int(m[2]) < 1 or int(m[2]) % self.head_dim:
                raise ConfigError(f"model.gpt_scaling.sizes: {size!r} is not L<n_layer>-W<n_embd> with n_embd a "
                                  f"positive multiple of head_dim={self.head_dim}", "e.g. sizes=[L1-W32,L2-W64]")
        if self.extra_sizes < 0 or not all(0 < f for f in self.extra_budgets):
            raise ConfigError("model.gpt_scaling: extra_sizes must be ≥ 0 and extra_budgets positive fractions",
                              "e.g. extra_budgets=[0.25,0.5] extra_sizes=3")
        if self.only is not None:
            one_of(self, "only", tuple(self.sizes))


@dataclass
class ScalingFitConfig:
    path: ClassVar[str] = "model.scaling_fit"
    huber_delta: float = 1e-3         # on log-loss residuals (Hoffmann et al. 2022)
    n_starts: int = 64                # L-BFGS runs from the best points of the initialisation grid
    n_boot: int = 100                 # bootstrap resamples for the confidence intervals
    ci: float = 0.9

    def __post_init__(self):
        positive(self, "huber_delta", "n_starts", "n_boot")
        fraction(self, "ci")
