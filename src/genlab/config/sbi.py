"""Schema of simulation-based inference (``model.sbi``): neural posterior estimation on benchmark simulators.

Values live in ``experiments/model/sbi/default.yaml``. One conditional coupling flow q(θ | x) per (task, seed),
trained on ``n_train`` simulations, selected on ``n_val`` held-out ones (their NLL of θ under q), then scored on
observations simulated under the test seed: C2ST against the reference posterior and simulation-based calibration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from omegaconf import MISSING

from genlab.config.checks import Section, positive
from genlab.errors import ConfigError

TASKS = ("two_moons", "gaussian_linear")   # genlab.data.simulators.TASKS


@dataclass
class NpeTrainConfig(Section):
    """One task's flow and training (``model.sbi.<task>``)."""
    path: ClassVar[str] = "model.sbi.<task>"
    n_layers: int = MISSING           # affine couplings (masks alternate)
    width: int = MISSING              # hidden units per conditioner layer
    depth: int = MISSING              # hidden layers per conditioner
    steps: int = MISSING              # AdamW steps (no schedule)
    batch_size: int = MISSING
    lr: float = MISSING
    n_train: int = MISSING            # training simulations (θ, x) ~ p(θ) p(x | θ)
    n_val: int = MISSING              # validation simulations: the NLL that selects hyper-parameters

    def check(self):
        positive(self, "n_layers", "width", "depth", "steps", "batch_size", "lr", "n_train", "n_val")


@dataclass
class SbiConfig(Section):
    path: ClassVar[str] = "model.sbi"
    tasks: list[str] = MISSING        # subset of two_moons, gaussian_linear
    two_moons: NpeTrainConfig = field(default_factory=NpeTrainConfig)
    gaussian_linear: NpeTrainConfig = field(default_factory=NpeTrainConfig)
    gaussian_dim: int = MISSING       # dimension of θ and x in the Gaussian-linear task
    n_obs: int = MISSING              # test observations per task scored by C2ST
    n_posterior: int = MISSING        # posterior samples per side of each C2ST
    c2st_folds: int = MISSING         # cross-validation folds of the C2ST classifier
    c2st_threshold: float = MISSING   # the claim: mean C2ST accuracy below this
    sbc_runs: int = MISSING           # SBC: (θ*, x) pairs per (task, seed)
    sbc_samples: int = MISSING        # SBC: posterior draws L per pair (ranks 0..L)
    sbc_bins: int = MISSING           # SBC: rank-histogram bins (χ² test and figure)

    def check(self):
        positive(self, "gaussian_dim", "n_obs", "n_posterior", "sbc_runs", "sbc_samples", "sbc_bins")
        bad = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or bad or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"model.sbi.tasks: {list(self.tasks)} is not a non-empty list of distinct tasks",
                              f"choose from {list(TASKS)}")
        if self.c2st_folds < 2 or not 0.5 < self.c2st_threshold <= 1.0:
            raise ConfigError(f"model.sbi: need c2st_folds ≥ 2 and 0.5 < c2st_threshold ≤ 1 (got {self.c2st_folds}, "
                              f"{self.c2st_threshold})", "e.g. c2st_folds=5 c2st_threshold=0.6")
        if self.n_posterior < self.c2st_folds:
            raise ConfigError(f"model.sbi.n_posterior={self.n_posterior} < c2st_folds={self.c2st_folds}",
                              "draw at least one sample per fold, e.g. n_posterior=1000")
