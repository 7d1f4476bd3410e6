"""PPO's clipped surrogate and clipped value losses (Schulman et al. 2017, eq. 7; value
clipping as in OpenAI baselines / TRL). Inputs are ``[B, T]`` over response tokens."""
from __future__ import annotations

import torch

from genlab.rl.advantages import masked_mean


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = E[max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))], ρ = π/π_old. Returns (loss, stats)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask),
             "approxkl": 0.5 * masked_mean(log_ratio ** 2, mask),    # TRL's policy/approxkl
             "ratio": masked_mean(ratio, mask)}
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """½·E[max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)]. Returns (loss, clip fraction)."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped, clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)
