"""Value checks the schema sections run in ``__post_init__``: one line naming the key and the fix."""
from __future__ import annotations

from typing import Any

from genlab.errors import ConfigError


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
