"""Reward over-optimization (Gao, Schulman & Hilton 2023): gold and proxy reward against d = √KL.

Best-of-n: KL(π_bon‖π) = log n − (n − 1)/n (Stiennon et al. 2020, App. G.3), and the expected reward of
the proxy-argmax among n draws is estimated without bias from N ≥ n samples per prompt: with samples
sorted by proxy, the i-th smallest (1-based) is the argmax of a random n-subset with probability
C(i−1, n−1) / C(N, n) (Nakano et al. 2021, App. I).

Functional forms (Gao et al. eqs. 1–2), fitted to the gold-reward gain R(d) = gold(d) − gold(0):
  R_bon(d) = d(α − β·d)          peak at d* = α / (2β)
  R_RL(d)  = d(α − β·log d)      peak at d* = exp(α/β − 1)
Both are linear in (α, β), so least squares is exact.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def best_of_n_kl(n: int) -> float:
    return math.log(n) - (n - 1) / n


def best_of_n(proxy: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Unbiased E[values of the proxy-argmax among n of the N samples] per prompt: ``[P, N]`` → ``[P]``."""
    big_n = proxy.shape[1]
    order = proxy.argsort(dim=1)
    sorted_values = values.gather(1, order)
    i = torch.arange(1, big_n + 1, dtype=torch.float64, device=proxy.device)
    log_c = torch.lgamma(i) - math.lgamma(n) - torch.lgamma((i - n + 1).clamp_min(1))   # log C(i−1, n−1)
    weights = torch.where(i >= n, log_c.exp(), torch.zeros_like(i))
    weights = weights / weights.sum()                                       # Σ_i C(i−1, n−1) = C(N, n)
    return (sorted_values.double() * weights).sum(1).float()


def fit(d: np.ndarray, gain: np.ndarray, form: str) -> dict[str, float]:
    """Least-squares (α, β) of R = α·d − β·g(d), g = d (bon) or d·log d (rl); with the peak d*."""
    d, gain = np.asarray(d, float), np.asarray(gain, float)
    keep = d > 0
    if keep.sum() < 2:
        return {"alpha": float("nan"), "beta": float("nan"), "d_peak": float("nan")}
    d, gain = d[keep], gain[keep]
    g = d * d if form == "bon" else d * np.log(d)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([d, -g], 1), gain, rcond=None)
    if form == "bon":
        peak = alpha / (2 * beta) if beta > 0 else float("inf")
    else:
        peak = math.exp(alpha / beta - 1) if beta > 0 else float("inf")
    return {"alpha": float(alpha), "beta": float(beta), "d_peak": float(peak)}


def form(d: np.ndarray, params: dict, kind: str) -> np.ndarray:
    d = np.asarray(d, float)
    g = d * d if kind == "bon" else d * np.log(np.maximum(d, 1e-12))
    return params["alpha"] * d - params["beta"] * g


def proxy_past_gold_peak(gold: list[float], proxy: list[float]) -> bool:
    """Did the proxy keep rising after the gold reward peaked (and gold fall from its peak)?"""
    peak = int(np.argmax(gold))
    return peak < len(gold) - 1 and proxy[-1] > proxy[peak] and gold[-1] < gold[peak]
