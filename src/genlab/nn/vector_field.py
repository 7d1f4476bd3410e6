"""Time-conditioned MLP vector field v(x, t) for low-dimensional flows (2D toys, 64-D digits).

Used by the CNF (whose dynamics must be smooth: dopri5 takes tiny steps through kinks,
torchdiffeq #27/#57) and by flow matching on the same data. The time is concatenated to
the input of every layer, FFJORD's "concat" layer (Grathwohl et al. 2019, App. B).
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "silu": nn.SiLU}   # smooth: C^∞


class ConcatLinear(nn.Module):
    """Linear map of ``[h, t]``: h ``[B, d_in]``, t ``[B, 1]`` → ``[B, d_out]``."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in + 1, d_out)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([h, t], dim=1))


class VectorField(nn.Module):
    """``depth`` hidden layers of ``width`` units; input x ``[B, dim]`` and t ``[B]`` (or a scalar) → ``[B, dim]``."""

    def __init__(self, dim: int, width: int = 64, depth: int = 3, activation: str = "tanh"):
        super().__init__()
        sizes = [dim, *[width] * depth, dim]
        self.layers = nn.ModuleList(ConcatLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(len(x)).reshape(-1, 1)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h, t)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h
