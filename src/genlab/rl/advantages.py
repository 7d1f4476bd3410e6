"""Masked statistics, advantage whitening and generalized advantage estimation.

Tensors are ``[B, T]`` over response tokens; ``mask`` is 1 on real tokens, 0 on padding.
"""
from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (all of them, or along ``dim``)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the masked positions (unbiased variance); padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * mask.sum() / (mask.sum() - 1).clamp_min(1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) over ``[B, T]`` tokens.

    δ_t = r_t + γ V_{t+1} − V_t (V = 0 after the last real token),  A_t = δ_t + γλ A_{t+1}.
    Returns (advantages, returns = A + V), both zero on padding.
    """
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * mask


def token_rewards(kl: torch.Tensor, score: torch.Tensor, lengths: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards ``[B, T]`` of RLHF-PPO (Ziegler et al. 2019; Ouyang et al. 2022; TRL):
    r_t = −β·KL_t on every response token, plus the reward model's score ``[B]`` at the last real token
    (index ``lengths − 1``: the EOS, where the RM read the whole response)."""
    rewards = -beta * kl
    rows = torch.arange(len(score), device=score.device)
    rewards[rows, lengths - 1] += score
    return rewards


def rloo_advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, eq. 5; Kool et al. 2019): sequence rewards ``[B]``
    in consecutive groups of ``group`` samples of one prompt → A_i = R_i − mean_{j≠i} R_j ``[B]``
    = group/(group−1)·(R_i − mean_j R_j)."""
    r = rewards.view(-1, group)
    return (group / (group - 1) * (r - r.mean(1, keepdim=True))).view(-1)


def group_advantages(rewards: torch.Tensor, group: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's outcome advantages (Shao et al. 2024, §4.1.2): sequence rewards ``[B]`` in groups of
    ``group`` → Â_i = (R_i − mean(R_group)) / (std(R_group) + eps) ``[B]``."""
    r = rewards.view(-1, group)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)).view(-1)
