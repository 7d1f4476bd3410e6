"""Schema of ``model.classifier`` and ``model.generalization``.

Values live in ``experiments/model/classifier/default.yaml`` and ``experiments/model/generalization/default.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from omegaconf import MISSING

from genlab.config.checks import PRECISIONS, Section, nonnegative, positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class ArchConfig(Section):
    path: ClassVar[str] = "model.classifier.<arch>"
    width: int = MISSING              # MLP hidden units / CNN base channels
    epochs: int = MISSING
    dropout: float = MISSING
    precision: str = MISSING          # Lightning precision of its training (or bf16-train: evaluation in float32)

    def check(self):
        positive(self, "width", "epochs")
        fraction(self, "dropout")
        one_of(self, "precision", PRECISIONS)


@dataclass
class ClassifierConfig(Section):
    path: ClassVar[str] = "model.classifier"
    archs: list[str] = MISSING        # architectures trained: mlp, cnn
    mlp: ArchConfig = field(default_factory=ArchConfig)
    cnn: ArchConfig = field(default_factory=ArchConfig)
    batch_size: int = MISSING
    lr: float = MISSING               # peak of the one-cycle schedule
    weight_decay: float = MISSING
    shift: int = MISSING              # random-translation augmentation, pixels

    def check(self):
        positive(self, "batch_size", "lr")
        nonnegative(self, "weight_decay", "shift")
        one_of(self, "archs", ("mlp", "cnn"))


@dataclass
class RandomLabelsConfig(Section):
    path: ClassVar[str] = "model.generalization.random_labels"
    fractions: list[float] = MISSING   # fractions of training labels replaced by random ones
    pixels: list[str] = MISSING       # true labels, permuted pixels: shuffled (one permutation) | random (per image)
    n_train: int = MISSING            # memorized training subset
    width: int = MISSING              # MLP hidden units (2 hidden layers)
    epochs: int = MISSING             # at most; a run stops once it fits
    fit_accuracy: float = MISSING     # "fitted" = accuracy on its own (noisy) training labels ≥ this
    lr: float = MISSING
    weight_decay: float = MISSING
    batch_size: int = MISSING

    def check(self):
        positive(self, "n_train", "width", "epochs", "lr", "batch_size", "fit_accuracy")
        nonnegative(self, "weight_decay")
        one_of(self, "pixels", ("shuffled", "random"))
        if any(not 0.0 <= f <= 1.0 for f in self.fractions) or self.fit_accuracy > 1.0:
            raise ConfigError(f"{self.path}.fractions and .fit_accuracy must lie in [0, 1] "
                              f"(got {self.fractions}, {self.fit_accuracy})", "e.g. fractions=[0.0,0.5,1.0]")


@dataclass
class AdversarialConfig(Section):
    path: ClassVar[str] = "model.generalization.adversarial"
    eps: list[float] = MISSING        # L∞ radii, pixels in [0, 1]
    pgd_steps: int = MISSING
    pgd_step_scale: float = MISSING   # PGD step α = scale·ε/steps (Madry et al. 2018)
    n_examples: int = MISSING         # test images attacked
    grid_eps: float = MISSING         # ε of the original/perturbed/difference figure
    train_eps: float = MISSING        # FGSM adversarial training of the MLP recipe (Goodfellow et al. 2015)

    def check(self):
        positive(self, "pgd_steps", "pgd_step_scale", "n_examples", "grid_eps", "train_eps")
        if any(e < 0 for e in self.eps):
            raise ConfigError(f"{self.path}.eps must be ≥ 0 (got {self.eps})", "e.g. eps=[0.0,0.1,0.2]")


@dataclass
class UncertaintyConfig(Section):
    path: ClassVar[str] = "model.generalization.uncertainty"
    n_bins: int = MISSING             # ECE / reliability-diagram bins
    ensemble: int = MISSING           # deep-ensemble members: models/classifier/mlp.pt + (ensemble−1) reseeded
    ood: list[str] = MISSING          # out-of-distribution inputs: rotated, noise
    overfit_epochs: int = MISSING     # Guo et al.'s overconfident MLP: random_labels net, clean labels, no wd/stop

    def check(self):
        positive(self, "n_bins", "ensemble", "overfit_epochs")
        one_of(self, "ood", ("rotated", "noise"))


@dataclass
class GeneralizationConfig:
    random_labels: RandomLabelsConfig = field(default_factory=RandomLabelsConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)
