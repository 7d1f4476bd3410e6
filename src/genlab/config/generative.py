"""Schema of the generative stages (``model.cnf``, ``flow_matching``, ``diffusion``, ``generative_eval``)
and of the U-Net they share.

Values live in ``experiments/model/<stage>/default.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING

from genlab.config.checks import PRECISIONS, Section, nonnegative, positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class UNetConfig(Section):
    """``genlab.nn.unet.UNet`` widths, shared by the flow-matching and diffusion sections."""
    path: ClassVar[str] = "model.<stage>.unet"
    channels: int = MISSING           # base width (at 28×28); the time embedding is 4× this
    channel_mults: list[int] = MISSING   # width multipliers, one per resolution 28/14/7
    attention: bool = MISSING         # self-attention at the lowest resolution
    dropout: float = MISSING

    def check(self):
        positive(self, "channels")
        fraction(self, "dropout")
        if not 1 <= len(self.channel_mults) <= 3 or min(self.channel_mults) < 1:
            raise ConfigError(f"{self.path}.channel_mults must be 1–3 positive ints (got {self.channel_mults})",
                              "e.g. channel_mults=[1,2,2] (resolutions 28, 14, 7)")


def guidance_grid(section) -> None:
    """A guidance grid: distinct w ≥ 0 (w = 0, the unguided reference, is sampled whether listed or not); an
    accuracy bar in [0, 1]."""
    ws = list(section.guidance_ws)
    if not ws or min(ws) < 0 or len(set(ws)) != len(ws):
        raise ConfigError(f"{section.path}.guidance_ws must be distinct values ≥ 0 (got {ws})",
                          "e.g. guidance_ws=[0,0.25,0.5,1,2]")
    if not 0 <= section.accuracy_bar <= 1:
        raise ConfigError(f"{section.path}.accuracy_bar must be in [0, 1] (got {section.accuracy_bar})", "e.g. 0.98")


@dataclass
class FieldTrainConfig(Section):
    """A ``genlab.nn.vector_field.VectorField`` and its training (model.cnf.toy|digits, model.flow_matching.toy)."""
    path: ClassVar[str] = "model.<stage>.<data>"
    width: int = MISSING              # hidden units per layer
    depth: int = MISSING              # hidden layers
    activation: str = MISSING         # tanh | softplus | silu: smooth only, the CNF's dopri5 stalls on kinks
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    eval_every: int = MISSING         # steps between test-NLL evaluations (the NLL-vs-time curve)
    threads: int = MISSING            # torch threads for this training; 0 = trainer.threads

    def check(self):
        positive(self, "width", "depth", "steps", "batch_size", "lr", "eval_every")
        if self.threads < 0:
            raise ConfigError(f"{self.path}.threads must be ≥ 0 (got {self.threads})",
                              "use 0 for the default, or 1, 2, …")
        one_of(self, "activation", ("tanh", "softplus", "silu"))


@dataclass
class CnfConfig(Section):
    path: ClassVar[str] = "model.cnf"
    dataset: str = MISSING            # toy2d set; flow_matching compares with the CNF on the same one
    toy: FieldTrainConfig = field(default_factory=FieldTrainConfig)
    digits: FieldTrainConfig = field(default_factory=FieldTrainConfig)
    rtol: float = MISSING             # dopri5 tolerances, training and evaluation
    atol: float = MISSING
    adjoint: bool = MISSING           # true: adjoint ODE backward (O(1) memory); false: backprop through dopri5
    weight_decay: float = MISSING
    logit_alpha: float = MISSING      # digits: z = logit(α + (1−2α)·(pixel + u)/17)

    def check(self):
        one_of(self, "dataset", ("moons", "gaussians8", "checkerboard", "spirals"))
        positive(self, "rtol", "atol")
        if self.weight_decay < 0 or not 0 < self.logit_alpha < 0.5:
            raise ConfigError(f"model.cnf: need weight_decay ≥ 0 and 0 < logit_alpha < 0.5 "
                              f"(got {self.weight_decay}, {self.logit_alpha})", "e.g. weight_decay=0 logit_alpha=0.05")


@dataclass
class FlowMatchingMnistConfig(Section):
    """Class-conditional Gaussian → MNIST flow matching with classifier-free guidance, and its sampling runs."""
    path: ClassVar[str] = "model.flow_matching.mnist"
    unet: UNetConfig = field(default_factory=UNetConfig)
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING               # peak of the one-cycle schedule
    ema: float = MISSING              # decay of the weight average (second half of training) used for sampling
    label_dropout: float = MISSING    # p(label → null) in training
    t_sampling: str = MISSING         # training times: uniform | logit_normal (Esser et al. 2024, eq. 19)
    sampler: str = MISSING            # euler | midpoint | dopri5 (for the main runs and the sweep)
    nfe: int = MISSING                # main runs' sampler steps (= network evaluations unguided; a guided step is 2)
    guidance_ws: list[float] = MISSING   # ṽ = (1+w)·v(x,c) − w·v(x,∅), 0 included: the grid scored on validation
    accuracy_bar: float = MISSING     # guidance rule: lowest validation FID among w with accuracy ≥ this, else lowest
    n_select: int = MISSING           # samples per validation (selection) run
    n_samples: int = MISSING          # per test run, equally many per class
    sweep_nfe: list[int] = MISSING    # NFEs of the quality-vs-NFE sweep (w = 0)
    sweep_n: int = MISSING            # samples per sweep run (generative_eval scores every run on as many)
    precision: str = MISSING          # Lightning precision of the U-Net's training and sampling (not trainer's)

    def check(self):
        positive(self, "steps", "batch_size", "lr", "nfe", "n_samples", "sweep_n", "n_select")
        one_of(self, "precision", PRECISIONS)
        fraction(self, "ema", "label_dropout")
        one_of(self, "sampler", ("euler", "midpoint", "dopri5"))
        one_of(self, "t_sampling", ("uniform", "logit_normal"))
        guidance_grid(self)
        if min(self.sweep_nfe, default=1) < 1:
            raise ConfigError(f"{self.path}: need sweep_nfe ≥ 1 (got {self.sweep_nfe})", "e.g. sweep_nfe=[2,5,20]")
        if self.sampler == "midpoint" and any(n % 2 for n in [self.nfe, *self.sweep_nfe]):
            raise ConfigError(f"{self.path}.sampler=midpoint needs even NFEs (got nfe={self.nfe}, "
                              f"sweep_nfe={self.sweep_nfe})", "use even values or sampler=euler")


@dataclass
class FlowMatchingConfig(Section):
    path: ClassVar[str] = "model.flow_matching"
    coupling: str = MISSING           # the 2D model compared with the CNF (on the CNF's dataset)
    couplings: list[str] = MISSING    # all trained in 2D: gaussian, ot, independent
    sigma: float = MISSING            # path noise of I-CFM / OT-CFM
    sigma_min: float = MISSING        # Lipman's Gaussian path: width of p_1 around the data
    ot_block: Optional[int] = MISSING   # OT-CFM: exact assignment within blocks of this many pairs; null: whole batch
    rtol: float = MISSING             # dopri5 tolerances (likelihood, dopri5 sampler)
    atol: float = MISSING
    ema: float = MISSING              # decay of the 2D models' weight average (the evaluated weights)
    nll_deltas: list[float] = MISSING   # 2D: time to the true validation NLL + δ, for each δ (nats)
    true_nll_tolerance: float = MISSING   # 2D claim: FM's test NLL within this many nats of the true density's
    toy: FieldTrainConfig = field(default_factory=FieldTrainConfig)
    mnist: FlowMatchingMnistConfig = field(default_factory=FlowMatchingMnistConfig)

    def check(self):
        one_of(self, "coupling", ("independent", "ot", "gaussian"))
        one_of(self, "couplings", ("independent", "ot", "gaussian"))
        positive(self, "rtol", "atol", "sigma_min")
        if self.ot_block is not None:
            positive(self, "ot_block")
        fraction(self, "ema")
        positive(self, "true_nll_tolerance")
        if not self.nll_deltas or min(self.nll_deltas) < 0:
            raise ConfigError(f"{self.path}.nll_deltas must be non-empty and ≥ 0 (got {self.nll_deltas})",
                              "e.g. nll_deltas=[0.2,0.1,0.05,0.02]")
        if self.coupling not in self.couplings or self.sigma < 0:
            raise ConfigError(f"model.flow_matching: coupling={self.coupling!r} must be in couplings={self.couplings}"
                              f" and sigma ≥ 0 (got {self.sigma})", "add it to model.flow_matching.couplings")


@dataclass
class DiffusionConfig(Section):
    """Class-conditional DDPM on MNIST (genlab.models.diffusion) and its sampling runs."""
    path: ClassVar[str] = "model.diffusion"
    unet: UNetConfig = field(default_factory=UNetConfig)
    timesteps: int = MISSING          # T of the forward process (DDPM ancestral sampling uses all of them)
    schedule: str = MISSING           # linear (Ho et al. 2020) | cosine (Nichol & Dhariwal 2021)
    steps: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING               # peak of the one-cycle schedule
    ema: float = MISSING              # decay of the weight average used for sampling
    prediction: str = MISSING         # the network predicts eps (Ho et al.) or v (Salimans & Ho 2022)
    snr_gamma: float = MISSING        # Min-SNR-γ loss weight (Hang et al. 2023); 0: plain MSE of the prediction
    label_dropout: float = MISSING    # p(label → null) in training
    sample_steps: int = MISSING       # DDIM steps of the main runs
    ddim_etas: list[float] = MISSING   # DDIM noise η (Song et al. eq. 16) probed on validation at w = 0; 0 is also
                                      # always sampled at test (the deterministic sampler beside FM's Euler)
    sweep_steps: list[int] = MISSING   # extra DDIM step counts (w = 0): quality vs NFE
    guidance_ws: list[float] = MISSING   # ε̃ = (1+w)ε(x,c) − wε(x,∅), 0 included: the grid scored on validation
    accuracy_bar: float = MISSING     # guidance rule (as flow matching's)
    n_select: int = MISSING           # samples per validation (selection) run
    ddpm_reference: bool = MISSING    # also sample ancestral DDPM with all T steps at w = 0 (test)
    n_samples: int = MISSING          # per test run (DDIM and DDPM), equally many per class
    precision: str = MISSING          # Lightning precision of the U-Net's training and sampling (not trainer's)

    def check(self):
        positive(self, "timesteps", "steps", "batch_size", "lr", "sample_steps", "n_samples", "n_select")
        one_of(self, "precision", PRECISIONS)
        fraction(self, "ema", "label_dropout")
        nonnegative(self, "snr_gamma")
        one_of(self, "schedule", ("linear", "cosine"))
        one_of(self, "prediction", ("eps", "v"))
        if not self.ddim_etas or not all(0 <= e <= 1 for e in self.ddim_etas):
            raise ConfigError(f"{self.path}.ddim_etas={self.ddim_etas} must be non-empty values in [0, 1]",
                              "e.g. ddim_etas=[0,0.5,1] (0 deterministic … 1 DDPM's posterior)")
        guidance_grid(self)
        if max([self.sample_steps, *self.sweep_steps]) > self.timesteps or min(self.sweep_steps, default=1) < 1:
            raise ConfigError(f"{self.path}: need 1 ≤ sample_steps, sweep_steps ≤ timesteps "
                              f"(got {self.sample_steps}, {self.sweep_steps})", "e.g. sample_steps=10")


@dataclass
class GenerativeEvalConfig(Section):
    path: ClassVar[str] = "model.generative_eval"
    n_samples: int = MISSING          # per run, class-balanced: FID and accuracy always on this many
    n_boot: int = MISSING             # bootstrap resamples of a run's samples (FID interval)
    n_floor: int = MISSING            # random subsets of real training images for the real-vs-real FID floor

    def check(self):
        positive(self, "n_samples", "n_boot", "n_floor")
        if self.n_samples % 10:
            raise ConfigError(f"{self.path}.n_samples must be a multiple of 10 (got {self.n_samples})", "e.g. 1000")


@dataclass
class InpaintingConfig(Section):
    """Completing test digits with the flow-matching MNIST model (``genlab.stages.inpainting``); its sampler steps
    and precision are ``model.flow_matching.mnist``'s."""
    path: ClassVar[str] = "model.inpainting"
    mask: str = MISSING               # the visible part: top_half | left_half (the rest is filled)
    n_images: int = MISSING           # test images completed; 0: all

    def check(self):
        one_of(self, "mask", ("top_half", "left_half"))
        nonnegative(self, "n_images")
