"""Evaluate a policy on fixed prompts: gold reward, proxy (reward-model) reward, KL to the reference.

KL(π‖π_ref) per prompt is the k1 estimate over a sampled response, Σ_t log π(y_t) − log π_ref(y_t),
which is unbiased for the sequence-level KL; its mean over prompts is the reported KL and
d = √KL is the x-axis of Gao et al. (2023). Intervals are 95% normal intervals over prompts.
"""
from __future__ import annotations

import math

import torch

from genlab.evaluate.gold_reward import gold_reward
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer
from genlab.rl.rollout import join, last_index, response_logprobs, response_mask, sample


@torch.no_grad()
def score(policy: Transformer, ref: Transformer, reward_model: RewardModel | None, problems: dict, responses,
          temperature: float, reverse: bool, format_weight: float) -> dict[str, torch.Tensor]:
    """Per-prompt ``[N]`` gold, proxy (nan without a reward model) and k1 KL of given responses ``[N, R]``."""
    seq = join(problems["prompts"], problems["prompt_len"], responses)
    width, mask = responses.shape[1], response_mask(responses)
    logp = response_logprobs(policy, seq, problems["prompt_len"], width, temperature)
    ref_logp = response_logprobs(ref, seq, problems["prompt_len"], width, temperature)
    proxy = (reward_model(seq, last_index(problems["prompt_len"], responses)) if reward_model is not None
             else torch.full((len(seq),), float("nan"), device=seq.device))
    return {"gold": gold_reward(problems["a"], problems["b"], problems["digits"], responses, reverse, format_weight),
            "proxy": proxy, "kl": ((logp - ref_logp) * mask).sum(1), "responses": responses}


def evaluate(policy: Transformer, ref: Transformer, reward_model: RewardModel | None, problems: dict, width: int,
             temperature: float, reverse: bool, format_weight: float, seed: int) -> dict[str, torch.Tensor]:
    """Sample one response per prompt (seeded) and ``score`` it, on the policy's device (PPO evaluates
    during training, where the policy may be on a GPU while the prompts stay on the CPU)."""
    device = next(policy.parameters()).device
    problems = {k: v.to(device) if torch.is_tensor(v) else v for k, v in problems.items()}
    responses = sample(policy, problems["prompts"], problems["prompt_len"], width, temperature,
                       torch.Generator().manual_seed(seed))
    return score(policy, ref, reward_model, problems, responses, temperature, reverse, format_weight)


def mean_ci(x: torch.Tensor) -> tuple[float, float]:
    """Mean and 95% half-width 1.96·s/√n."""
    return float(x.mean()), float(1.96 * x.std() / math.sqrt(len(x)))


def summary(result: dict[str, torch.Tensor], baseline: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Means with 95% intervals; with ``baseline`` (same prompts) also the paired gold gain over it."""
    out = {}
    for key in ("gold", "proxy", "kl"):
        if not torch.isnan(result[key]).any():
            m, h = mean_ci(result[key])
            name = {"gold": "gold_reward", "proxy": "proxy_reward", "kl": "kl"}[key]
            out[name], out[f"{name}_ci95"] = m, h
    out["exact_match"] = float((result["gold"] >= 1.0 - 1e-6).float().mean())
    if baseline is not None:
        out["gold_gain"], out["gold_gain_ci95"] = mean_ci(result["gold"] - baseline["gold"])
    return out
