"""MLP that parameterises a diagonal Gaussian, for the VAE's encoder q(z|x) and decoder p(x|z) on vector data.

Output (μ, log σ²), each ``[B, d_out]`` (Kingma & Welling 2014, App. C.2: "Gaussian MLP as encoder or decoder").
The log-variance is softly bounded to [``logvar_min``, ``logvar_max``]:
    s = hi − softplus(hi − raw),  log σ² = lo + softplus(s − lo)
(the soft clamp of PETS, Chua et al. 2018, App. A.1): the identity well inside the range, smooth, with a
gradient everywhere. Why bound it at all: a Gaussian decoder's likelihood is unbounded — a mean that lands
on a training point with σ² → 0 sends log p(x|z) → +∞ (Mattei & Frellsen 2018) — and σ² = e^{raw} overflows
or makes the 1/σ² of the log-density (and its gradient) explode in float32. Why softly: a hard clamp has zero
gradient beyond the bound, so a unit pushed there early stays stuck.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GaussianMLP(nn.Module):
    """``depth`` hidden SiLU layers of ``width`` units (``depth = 0``: affine); x ``[B, d_in]`` → (μ, log σ²)
    ``[B, d_out]`` each."""

    def __init__(self, d_in: int, d_out: int, width: int = 64, depth: int = 2,
                 logvar_min: float = -9.0, logvar_max: float = 4.0):
        super().__init__()
        sizes = [d_in, *[width] * depth]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]   # SiLU: smooth, so the ELBO is smooth in x and in z
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], 2 * d_out)   # [μ, raw log σ²]
        self.logvar_min, self.logvar_max = logvar_min, logvar_max

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.head(self.body(x)).chunk(2, dim=1)
        return mean, self.soft_clamp(raw)

    def soft_clamp(self, raw: torch.Tensor) -> torch.Tensor:
        """Smooth, strictly increasing map of ``raw`` into (logvar_min, logvar_max); ≈ identity in between."""
        upper = self.logvar_max - F.softplus(self.logvar_max - raw)
        return self.logvar_min + F.softplus(upper - self.logvar_min)
