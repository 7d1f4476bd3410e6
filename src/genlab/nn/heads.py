"""Scalar heads on the shared transformer: the reward model and the PPO policy's value head.

``ScalarHead``: Linear d → 1 applied to every state ``[B, T, d] → [B, T]``; zero-initialised
for the value head (so V ≡ 0 at the start of PPO and the first advantages are the rewards).
``RewardModel``: transformer + scalar head read at the last non-pad token, with an affine
normalisation (buffers) that the reward-model stage sets so rewards are mean 0 / std 1 under
the SFT policy.
"""
from __future__ import annotations

import torch
from torch import nn

from genlab.nn.transformer import Transformer


class ScalarHead(nn.Module):
    def __init__(self, n_embd: int, zero_init: bool = False):
        super().__init__()
        self.linear = nn.Linear(n_embd, 1)
        nn.init.zeros_(self.linear.bias)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
        else:
            nn.init.normal_(self.linear.weight, 0.0, 1.0 / (n_embd + 1) ** 0.5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(-1)


class RewardModel(nn.Module):
    """r(x, y) = (head(h_last) − shift) / scale, h_last the final-LN state at the last real token."""

    def __init__(self, backbone: Transformer):
        super().__init__()
        self.backbone = backbone
        self.head = ScalarHead(backbone.config.n_embd)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, seq: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """seq ``[B, L]``, last ``[B]`` (index of the last real token) → rewards ``[B]``."""
        h, _ = self.backbone.hidden(seq)
        raw = self.head(h.gather(1, last[:, None, None].expand(-1, 1, h.shape[-1])).squeeze(1))
        return (raw - self.shift) / self.scale
