"""Schema of the generative zoo (``model.zoo``): four more density models on the CNF's data and dequantization.

Values live in ``experiments/model/zoo/default.yaml``. The dataset (``model.cnf.dataset``) and the digits'
logit transform (``model.cnf.logit_alpha``) are the CNF's own, so every row of the likelihood table is
scored on the same splits under the same dequantization.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from omegaconf import MISSING

from genlab.config.checks import Section, fraction, one_of, positive
from genlab.errors import ConfigError


@dataclass
class ZooTrainConfig(Section):
    """One zoo model's network and training on one dataset (``model.zoo.<toy|digits>.<model>``)."""
    path: ClassVar[str] = "model.zoo.<part>.<model>"
    width: int = MISSING              # hidden units per layer
    depth: int = MISSING              # hidden layers
    steps: int = MISSING              # AdamW steps (no schedule)
    batch_size: int = MISSING
    lr: float = MISSING

    def check(self):
        positive(self, "width", "depth", "steps", "batch_size", "lr")


@dataclass
class CouplingTrainConfig(ZooTrainConfig):
    n_layers: int = MISSING           # affine coupling layers (masks alternate)

    def check(self):
        super().check()
        positive(self, "n_layers")


@dataclass
class VaeTrainConfig(ZooTrainConfig):
    latent_dim: int = MISSING         # dimension of z

    def check(self):
        super().check()
        positive(self, "latent_dim")


@dataclass
class ZooPartConfig:
    coupling: CouplingTrainConfig = field(default_factory=CouplingTrainConfig)   # RealNVP (models/coupling_flow)
    vae: VaeTrainConfig = field(default_factory=VaeTrainConfig)                  # VAE, IWAE bound (models/vae)
    flow_matching: ZooTrainConfig = field(default_factory=ZooTrainConfig)        # I-CFM, PF likelihood
    diffusion: ZooTrainConfig = field(default_factory=ZooTrainConfig)            # VP SDE, PF-ODE likelihood


@dataclass
class ZooConfig(Section):
    path: ClassVar[str] = "model.zoo"
    toy: ZooPartConfig = field(default_factory=ZooPartConfig)        # the CNF's 2D set: exact traces
    digits: ZooPartConfig = field(default_factory=ZooPartConfig)     # 8×8 digits, logit space: Hutchinson traces
    iw_samples: int = MISSING         # k of the VAE's importance-weighted bound (its NLL estimate)
    beta_min: float = MISSING         # VP SDE β(τ) = β_min + τ(β_max − β_min)
    beta_max: float = MISSING
    diffusion_eps: float = MISSING    # smallest diffusion time: the density reported is p at τ = eps
    diffusion_weighting: str = MISSING   # uniform (τ ~ U, λ = σ²) | likelihood (λ = β, τ importance-sampled)
    rtol: float = MISSING             # dopri5 tolerances of the likelihood solves and samples
    atol: float = MISSING
    n_test: int = MISSING             # test points scored per run (0: the whole split)

    def check(self):
        positive(self, "iw_samples", "beta_min", "beta_max", "rtol", "atol")
        fraction(self, "diffusion_eps")
        one_of(self, "diffusion_weighting", ("uniform", "likelihood"))
        if self.beta_max <= self.beta_min or self.diffusion_eps <= 0 or self.n_test < 0:
            raise ConfigError(f"model.zoo: need beta_max > beta_min, diffusion_eps > 0 and n_test ≥ 0 (got "
                              f"{self.beta_min}, {self.beta_max}, {self.diffusion_eps}, {self.n_test})",
                              "e.g. beta_min=0.1 beta_max=20 diffusion_eps=1e-3 n_test=0")
