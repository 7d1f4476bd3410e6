"""Schema of ``model.classifier`` and ``model.generalization``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from genlab.config.checks import positive, fraction, one_of
from genlab.errors import ConfigError


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
