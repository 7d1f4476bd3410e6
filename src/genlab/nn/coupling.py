"""Conditioner MLP of an affine coupling layer (RealNVP, Dinh et al. 2017, §3.3).

Maps the masked input m⊙x ``[B, D]`` to the raw log-scale and the shift ``[B, D]`` of eq. 9. With
``context_dim`` > 0 it also reads a context c ``[B, C]`` (an observation, for a conditional flow q(θ | c): Papamakarios
& Murray 2016), concatenated to m⊙x: [m⊙x, c] ``[B, D + C]``; c is never transformed, so it may enter the conditioner
arbitrarily without touching the triangular Jacobian. Its last
layer starts at zero, so s = t = 0 and every coupling — hence the whole flow — starts as the identity
(the initial density is the base N(0, I) and training starts from a well-conditioned map).
"""
from __future__ import annotations

import torch
from torch import nn


class CouplingNet(nn.Module):
    """``depth`` hidden SiLU layers of ``width`` units; x ``[B, dim]`` (and context ``[B, context_dim]``) →
    (log_scale_raw, shift), each ``[B, dim]``. ``context_dim`` = 0 builds exactly the unconditional network."""

    def __init__(self, dim: int, width: int, depth: int, context_dim: int = 0):
        super().__init__()
        self.context_dim = context_dim
        sizes = [dim + context_dim, *[width] * depth]
        self.hidden = nn.Sequential(*[m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.SiLU())])
        self.out = nn.Linear(sizes[-1], 2 * dim)
        nn.init.zeros_(self.out.weight)   # identity coupling at initialisation
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context_dim:
            x = torch.cat([x, context], dim=1)
        log_scale_raw, shift = self.out(self.hidden(x)).chunk(2, dim=1)
        return log_scale_raw, shift
