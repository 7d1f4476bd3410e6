"""Conditioner MLP of an affine coupling layer (RealNVP, Dinh et al. 2017, §3.3).

Maps the masked input m⊙x ``[B, D]`` to the raw log-scale and the shift ``[B, D]`` of eq. 9. Its last
layer starts at zero, so s = t = 0 and every coupling — hence the whole flow — starts as the identity
(the initial density is the base N(0, I) and training starts from a well-conditioned map).
"""
from __future__ import annotations

import torch
from torch import nn


class CouplingNet(nn.Module):
    """``depth`` hidden SiLU layers of ``width`` units; x ``[B, dim]`` → (log_scale_raw, shift), each ``[B, dim]``."""

    def __init__(self, dim: int, width: int, depth: int):
        super().__init__()
        sizes = [dim, *[width] * depth]
        self.hidden = nn.Sequential(*[m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.SiLU())])
        self.out = nn.Linear(sizes[-1], 2 * dim)
        nn.init.zeros_(self.out.weight)   # identity coupling at initialisation
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale_raw, shift = self.out(self.hidden(x)).chunk(2, dim=1)
        return log_scale_raw, shift
