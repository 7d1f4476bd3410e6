"""Random draws on the caller's device and dtype, reproducible under a seeded generator.

A ``torch.Generator`` can only draw on its own device, and the pipeline seeds CPU generators
(``torch.Generator().manual_seed(seed)``) so that seeded samples are the same numbers whatever device
the model runs on. So with a generator these functions draw on the generator's device and move the
result to ``device``; without one they draw directly on ``device`` (that device's global RNG).
Either way the result has ``dtype``. On the CPU, ``randn(shape, dtype=torch.float32, device="cpu",
generator=g)`` draws exactly what ``torch.randn(shape, generator=g)`` draws.
"""
from __future__ import annotations

import torch


def _source(device: torch.device | str, generator: torch.Generator | None) -> torch.device | str:
    return generator.device if generator is not None else device


def randn(shape: tuple[int, ...] | torch.Size, *, dtype: torch.dtype, device: torch.device | str,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal ``shape`` draws of ``dtype`` on ``device``."""
    return torch.randn(shape, generator=generator, dtype=dtype, device=_source(device, generator)).to(device)


def rand(shape: tuple[int, ...] | torch.Size, *, dtype: torch.dtype, device: torch.device | str,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) ``shape`` draws of ``dtype`` on ``device``."""
    return torch.rand(shape, generator=generator, dtype=dtype, device=_source(device, generator)).to(device)
