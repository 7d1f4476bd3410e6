"""Evaluate a policy on fixed prompts: gold reward, proxy (reward-model) reward, KL to the reference.

KL(π‖π_ref) per prompt is the k1 estimate over a sampled response, Σ_t log π(y_t) − log π_ref(y_t),
which is unbiased for the sequence-level KL; its mean over prompts is the reported KL and
d = √KL is the x-axis of Gao et al. (2023). Intervals are 95% normal intervals over prompts.

A policy may be sampled at its own temperature T while the reference stays at the task's temperature:
π_T ∝ π^{1/T} is the SFT temperature curve, the preference-free baseline every method is compared with
at equal KL. T = 0 is greedy decoding, a deterministic policy: log π_0(y) = 0 on its own answer, so its
KL is −log π_ref(y_greedy).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from genlab.evaluate import stats
from genlab.evaluate.gold_reward import gold_reward
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer
from genlab.rl.rollout import greedy, join, last_index, response_logprobs, response_mask, sample


@torch.no_grad()
def score(policy: Transformer, ref: Transformer, reward_model: RewardModel | None, problems: dict, responses,
          temperature: float, reverse: bool, format_weight: float,
          policy_temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Per-prompt ``[N]`` gold, proxy (nan without a reward model) and k1 KL of given responses ``[N, R]``
    (π at ``policy_temperature``, default ``temperature``; 0 = greedy; π_ref at ``temperature``)."""
    seq = join(problems["prompts"], problems["prompt_len"], responses)
    width, mask = responses.shape[1], response_mask(responses)
    t = temperature if policy_temperature is None else policy_temperature
    logp = (torch.zeros(responses.shape, device=seq.device) if t == 0          # greedy: π_0(y_greedy) = 1
            else response_logprobs(policy, seq, problems["prompt_len"], width, t))
    ref_logp = response_logprobs(ref, seq, problems["prompt_len"], width, temperature)
    proxy = (reward_model(seq, last_index(problems["prompt_len"], responses)) if reward_model is not None
             else torch.full((len(seq),), float("nan"), device=seq.device))
    return {"gold": gold_reward(problems["a"], problems["b"], problems["digits"], responses, reverse, format_weight),
            "proxy": proxy, "kl": ((logp - ref_logp) * mask).sum(1), "responses": responses}


def evaluate(policy: Transformer, ref: Transformer, reward_model: RewardModel | None, problems: dict, width: int,
             temperature: float, reverse: bool, format_weight: float, seed: int,
             policy_temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Sample one response per prompt (seeded; at ``policy_temperature`` if given, 0 = greedy) and ``score``
    it, on the policy's device (PPO evaluates during training, where the policy may be on a GPU while the
    prompts stay on the CPU)."""
    device = next(policy.parameters()).device
    problems = {k: v.to(device) if torch.is_tensor(v) else v for k, v in problems.items()}
    t = temperature if policy_temperature is None else policy_temperature
    if t == 0:
        responses = greedy(policy, problems["prompts"], problems["prompt_len"], width)
    else:
        responses = sample(policy, problems["prompts"], problems["prompt_len"], width, t,
                           torch.Generator().manual_seed(seed))
    return score(policy, ref, reward_model, problems, responses, temperature, reverse, format_weight, t)


def interpolate_at_kl(curve_kl, curve_gold, kl: float) -> float:
    """The temperature curve's gold at ``kl``: linear in KL between its points (sorted by KL), clamped to
    its ends (no temperature reaches further than greedy)."""
    order = np.argsort(curve_kl)
    return float(np.interp(kl, np.asarray(curve_kl, float)[order], np.asarray(curve_gold, float)[order]))


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


def seed_summary(values) -> dict:
    """Mean over seeds with its Student-t 95% interval (``stats.summarize``): {"mean", "ci95", "sd", "n"}."""
    r = stats.summarize(list(values))
    return {"mean": r["mean"], "ci95": r["ci"], "sd": r["sd"], "n": r["n"]}


def kl_matched_gap(gold, kl, curves: list[dict]) -> tuple[list[float], dict]:
    """A method against a baseline curve at its own KL, seed by seed.

    ``gold``, ``kl`` ``[S]``: the method's gold reward and KL(π‖π_SFT) under each seed; ``curves[s]``:
    the baseline's points {"kl": [...], "gold": [...]} under the same seed (same prompts and sampling
    seed). Per seed the baseline is interpolated at the method's KL (``interpolate_at_kl``) and
    Δ_s = gold_s − baseline_s; returns (baseline values ``[S]``, the paired t-interval of Δ over seeds)."""
    base = [interpolate_at_kl(c["kl"], c["gold"], k) for c, k in zip(curves, kl)]
    return base, stats.paired_difference(list(gold), base)
