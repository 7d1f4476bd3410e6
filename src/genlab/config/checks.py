"""Value checks of the schema sections: one line naming the key and the fix.

Every section with checks derives from ``Section`` and puts them in ``check()``. The schema holds no
values (every field is ``MISSING``; the YAML in ``experiments/`` gives them), so ``check()`` runs only
once every field of the section has a value: ``validate`` guarantees that, while building the bare
schema (``OmegaConf.structured(Config)``) creates sections without values and skips their checks.
Before ``check()``, every float (and every float in a list) must be finite: ``nan`` compares False
with everything, so it would slip through each ``<`` / ``<=`` range check below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, ClassVar

from omegaconf import MISSING

from genlab.errors import ConfigError


def is_missing(value: Any) -> bool:
    """``value`` is OmegaConf's ``MISSING`` marker (``"???"``): the YAML has not set it yet."""
    return isinstance(value, str) and value == MISSING


def complete(section: Any) -> bool:
    """Every field of ``section`` (and of its nested sections) has a value."""
    for f in fields(section):
        value = getattr(section, f.name)
        if is_missing(value) or (is_dataclass(value) and not complete(value)):
            return False
    return True


def finite_floats(section: Any) -> None:
    """No float field of ``section`` (nor an item of a float list) is nan or ±inf."""
    for f in fields(section):
        value = getattr(section, f.name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{section.path}.{f.name} must be a finite number (got {value})",
                                  f"set {section.path}.{f.name} to a number (not nan or inf)")


# Lightning precisions a model section may set for its own runs, and genlab's "bf16-train": bfloat16 autocast in
# training steps only, validation and test in float32 (``genlab.precision.TrainOnlyMixedPrecision``); 16-mixed: GPU only
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-train")


@dataclass
class Section:
    """Base of a schema section with value checks (``check``), run once all its fields are set."""
    path: ClassVar[str] = "?"          # the section's key in the composed config, for error messages

    def __post_init__(self):
        if complete(self):
            finite_floats(self)
            self.check()

    def check(self) -> None:
        """Raise ConfigError (one line: the key, what is allowed) for an impossible value."""


def positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is None or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{section.path}.{name} must be > 0 (got {value})",
                              f"set {section.path}.{name} to a positive number")


def nonnegative(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if value is None or not math.isfinite(value) or value < 0:
            raise ConfigError(f"{section.path}.{name} must be ≥ 0 (got {value})",
                              f"set {section.path}.{name} to 0 or a positive number")


def fraction(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        if not 0.0 <= value < 1.0:      # also refuses nan: every comparison with nan is False
            raise ConfigError(f"{section.path}.{name} must be in [0, 1) (got {value})",
                              f"set {section.path}.{name} to a fraction such as 0.1")


def one_of(section: Any, name: str, allowed: tuple) -> None:
    """``section.name`` is one of ``allowed`` (each item, if it is a list)."""
    value = getattr(section, name)
    for item in value if isinstance(value, list) else [value]:
        if item not in allowed:
            raise ConfigError(f"{section.path}.{name}={item!r} is not allowed",
                              f"use one of {', '.join(map(str, allowed))}")
