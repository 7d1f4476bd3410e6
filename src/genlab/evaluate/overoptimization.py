"""Reward over-optimization (Gao, Schulman & Hilton 2023): gold and proxy reward against d = √KL.

Best-of-n. The policy π_bon returns the proxy-argmax of n draws from π. With the responses ordered by
proxy reward and F(y) = Σ_{y' ≤ y} π(y') the CDF of π in that order, π_bon(y) = F(y)^n − F(y⁻)^n
(Beirami et al. 2024, eq. 4), and its KL is computed exactly, Σ_y π_bon(y)·log(π_bon(y)/π(y)), from the
model's log-probs of the *distinct* sampled responses (``best_of_n_kl_exact``). The mass π leaves
unsampled is lumped into one atom ranked below every sample. The textbook value
log n − (n − 1)/n (Stiennon et al. 2020, App. G.3) is exact only when responses never repeat and is an
upper bound otherwise (Beirami et al. 2024, Thm. 1): ``best_of_n_kl`` keeps it as the bound.

The expected reward of the proxy-argmax among n draws is estimated without bias from N ≥ n samples per
prompt: with samples sorted by proxy, the i-th smallest (1-based) is the argmax of a random n-subset with
probability C(i−1, n−1) / C(N, n) (Nakano et al. 2021, App. I).

Functional forms (Gao et al. eqs. 1–2), fitted to the gold-reward gain R(d) = gold(d) − gold(0):
  R_bon(d) = d(α − β·d)          peak at d* = α / (2β)
  R_RL(d)  = d(α − β·log d)      peak at d* = exp(α/β − 1)
Both are linear in (α, β), so least squares is exact; ``bootstrap_fit`` resamples prompts for intervals.

"Gold falls while proxy rises" is decided by intervals (``falls_while_proxy_rises``), never by comparing
two point estimates.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.stats
import torch


def best_of_n_kl(n: int) -> float:
    """log n − (n − 1)/n: KL(π_bon‖π) when responses never repeat; an upper bound otherwise."""
    return math.log(n) - (n - 1) / n


def best_of_n_kl_exact(logp: torch.Tensor, proxy: torch.Tensor, n: int) -> float:
    """KL(π_bon‖π) of one prompt from its distinct responses: log-probs ``[K]`` under π and proxy ``[K]``.

    Order by proxy (ties broken by position), F_k = m₀ + Σ_{j ≤ k} π_j with m₀ = 1 − Σ π the unsampled mass
    (one atom, ranked lowest), π_bon,k = F_k^n − (F_k − π_k)^n and KL = Σ_k π_bon,k log(π_bon,k / π_k)
    (+ the atom's m₀^n log(m₀^{n−1})). Exact when the responses cover π's support."""
    p = logp.double().exp()[torch.argsort(proxy, stable=True)]
    m0 = float((1.0 - p.sum()).clamp_min(0.0))
    upper = m0 + p.cumsum(0)
    bon = upper.pow(n) - (upper - p).pow(n)
    keep = bon > 0
    kl = float((bon[keep] * (bon[keep].log() - p[keep].log())).sum())
    if m0 > 0:
        kl += m0 ** n * (n - 1) * math.log(m0)
    return max(kl, 0.0)


def distinct(responses: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The distinct rows of ``responses [N, R]`` and, for each, the first value of each ``values [N]``."""
    uniq, inverse = torch.unique(responses, dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(responses), dtype=torch.long, device=responses.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(responses), device=responses.device), "amin")
    return (uniq, *(v[first] for v in values))


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
        peak = math.exp(min(alpha / beta - 1, 700)) if beta > 0 else float("inf")
    return {"alpha": float(alpha), "beta": float(beta), "d_peak": float(peak)}


def bootstrap_fit(kl: np.ndarray, gold: np.ndarray, form: str, n_boot: int, seed: int = 0) -> dict:
    """``fit`` of the mean curve with percentile 95% intervals from resampling prompts.

    ``kl``, ``gold`` ``[P, K]``: per-prompt KL and gold at the K curve points (point 0 is the start,
    d = 0). Each resample draws P prompts with replacement, recomputes d_k = √(mean KL_k) and the mean gain
    gold_k − gold_0, and refits; the CI of each parameter is its 2.5–97.5% resample quantiles."""
    kl, gold = np.asarray(kl, float), np.asarray(gold, float)
    one = lambda idx: fit(np.sqrt(np.maximum(kl[idx].mean(0), 0)), gold[idx].mean(0) - gold[idx, 0].mean(), form)  # noqa: E731
    out = one(np.arange(len(kl)))
    rng = np.random.default_rng(seed)
    boots = [one(rng.integers(0, len(kl), len(kl))) for _ in range(n_boot)]
    for key in ("alpha", "beta", "d_peak"):
        v = np.array([b[key] for b in boots], float)
        out[f"{key}_ci95"] = [float(np.nanquantile(v, 0.025)), float(np.nanquantile(v, 0.975))] if n_boot else None
    out["n_boot"], out["unit"] = n_boot, "prompts"
    return out


def form(d: np.ndarray, params: dict, kind: str) -> np.ndarray:
    d = np.asarray(d, float)
    g = d * d if kind == "bon" else d * np.log(np.maximum(d, 1e-12))
    return params["alpha"] * d - params["beta"] * g


def _t_interval(x: np.ndarray, confidence: float) -> list[float] | None:
    if len(x) < 2:
        return None
    se = x.std(ddof=1) / math.sqrt(len(x))
    if se == 0:
        return [float(x.mean())] * 2
    lo, hi = scipy.stats.t.interval(confidence, len(x) - 1, loc=x.mean(), scale=se)
    return [float(lo), float(hi)]


def falls_while_proxy_rises(gold_select: np.ndarray, gold_test: np.ndarray, proxy_test: np.ndarray) -> dict:
    """Paired test of "gold peaks and then falls while the proxy keeps rising" along a curve.

    Inputs ``[S, K]``: per seed (the unit) and curve point (increasing KL), the gold reward on a
    *selection* half of the prompts, and gold / proxy on the other, *test* half. The peak k* is the argmax
    of the seed-mean selection gold (choosing it on the test half would bias the drop upwards); on the
    test half, per seed,  drop_s = gold_s[k*] − gold_s[K−1]  and  rise_s = proxy_s[K−1] − proxy_s[k*].
    Each gets a 97.5% paired t-interval over seeds; the claim's statistic min(drop, rise) gets
    [min(lo), min(hi)], a ≥ 95% interval by Bonferroni. It holds when both lower ends are > 0 (an
    intersection–union test at level 0.025 per part). A peak at the last point gives drop ≡ 0: no fall.
    """
    gold_select, gold_test, proxy_test = (np.asarray(x, float) for x in (gold_select, gold_test, proxy_test))
    peak, last = int(np.argmax(gold_select.mean(0))), gold_test.shape[1] - 1
    drop, rise = gold_test[:, peak] - gold_test[:, last], proxy_test[:, last] - proxy_test[:, peak]
    ci_drop, ci_rise = _t_interval(drop, 0.975), _t_interval(rise, 0.975)
    ci = None if ci_drop is None or ci_rise is None else [min(ci_drop[0], ci_rise[0]), min(ci_drop[1], ci_rise[1])]
    return {"estimate": float(min(drop.mean(), rise.mean())), "ci": ci, "n": len(drop), "confidence": 0.95,
            "peak_index": peak, "last_index": last, "gold_drop": float(drop.mean()), "gold_drop_ci975": ci_drop,
            "proxy_rise": float(rise.mean()), "proxy_rise_ci975": ci_rise, "unit": "seeds",
            "method": "peak chosen on selection prompts; 97.5% paired t over seeds for the gold drop and the "
                      "proxy rise on test prompts; min of the two (intersection-union)"}
