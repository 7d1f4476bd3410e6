"""Scalar heads on the shared transformer: the reward model and the PPO policy's value head.

``ScalarHead``: Linear d → 1 applied to every state ``[B, T, d] → [B, T]``; zero-initialised
for the value head (so V ≡ 0 at the start of PPO and the first advantages are the rewards).
``RewardModel``: transformer + scalar head read at the last non-pad token, or (``pool="tokens"``)
a sum of token-level scores over the response, each the next-token logit the transformer gave the
token (its tied unembedding; the LM as a token-level reward, Rafailov et al. 2024 "From r to Q*")
plus the head; with an affine normalisation (buffers) that the reward-model stage sets so rewards
are mean 0 / std 1 under the SFT policy.
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
    """r(x, y) = (head(h_last) − shift) / scale, h_last the final-LN state at the last real token; with
    ``pool="tokens"``, r(x, y) = (Σ_t [logits(h_{t−1})[y_t] + head(h_t)] − shift) / scale over the response
    tokens y_t (after the prompt's first ``sep`` token, up to the last real token), the head zero-initialised
    so training starts from the transformer's own logit score."""

    def __init__(self, backbone: Transformer, pool: str = "last", sep: int | None = None):
        super().__init__()
        if pool not in ("last", "tokens") or (pool == "tokens" and sep is None):
            raise ValueError(f"pool must be 'last' or 'tokens' (with a sep token), not {pool!r}")
        self.backbone, self.pool, self.sep = backbone, pool, sep
        self.head = ScalarHead(backbone.config.n_embd, zero_init=pool == "tokens")
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, seq: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """seq ``[B, L]``, last ``[B]`` (index of the last real token) → rewards ``[B]``."""
        h, _ = self.backbone.hidden(seq)
        if self.pool == "last":
            raw = self.head(h.gather(1, last[:, None, None].expand(-1, 1, h.shape[-1])).squeeze(1))
        else:
            logit = self.backbone.lm_head(h[:, :-1]).gather(2, seq[:, 1:, None]).squeeze(2)   # logits(h_{t−1})[y_t]
            score = self.head(h) + nn.functional.pad(logit, (1, 0))
            pos = torch.arange(seq.shape[1], device=seq.device)[None, :]
            start = (seq == self.sep).int().argmax(1, keepdim=True)                         # the prompt's first sep
            raw = (score * ((pos > start) & (pos <= last[:, None]))).sum(1)
        return (raw - self.shift) / self.scale
