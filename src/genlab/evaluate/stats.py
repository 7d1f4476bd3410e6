"""Statistics every stage reports with: seed summaries, confidence intervals, differences, Holm, verdicts.

A number from one seed is an anecdote. Each headline here is a statistic over independent
*units* — usually training seeds (each seed re-draws initialisation, data order and sampling
noise), sometimes samples within one seed (test images, prompts) when the question is about a
fixed trained model. Every function takes the unit values as a 1-D array ``[n]`` and says which
unit it assumed in its ``method`` string, so a reader of ``conclusions.json`` can tell.

Which interval, when:

* **Seeds (n = 3…10):** Student-t, x̄ ± t_{1−α/2, n−1} · s/√n (Student 1908). It is exact when the
  seed values are normal and robust to mild skew; with n = 3 it is wide (t_{0.975, 2} = 4.30),
  which is the honest price of three seeds.
* **Samples within a seed (n ≳ 30):** the bootstrap (Efron 1979), percentile or BCa (Efron 1987),
  via ``scipy.stats.bootstrap``. It needs no normality but does need n: with 3 seeds there are
  only 10 distinct resamples and the percentile interval badly under-covers — use the t-interval.
* **Two methods on the same seeds:** the paired difference d_i = a_i − b_i (same seed → same data
  split, same initialisation stream), one-sample t on d. Var(d) = Var(a) + Var(b) − 2 Cov(a, b):
  pairing removes the seed-to-seed variance both methods share, so when a seed that helps one
  method helps the other (Cov > 0) the paired CI is narrower than Welch's on the same data.
* **Two unrelated groups:** Welch's t (Welch 1947), no equal-variance assumption.
* **Many claims at once:** Holm's step-down (Holm 1979) bounds the family-wise error rate.

A *verdict* is read off the interval alone (``verdict``): a claim holds when the whole CI lies
inside the set of values the claim allows, does not hold when the CI lies wholly outside it, and
is inconclusive otherwise. With a two-sided 95% CI, "holds" or "does not hold" for a one-sided
claim about 0 happens exactly when the two-sided t-test p-value is below 0.05.

Results are plain dicts of JSON types (floats, lists, None) so they drop into metrics files.
Every result has ``estimate``, ``ci`` ([lo, hi] or None), ``n``, ``confidence`` and ``method``.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.stats

from genlab.errors import GenlabError

VERDICTS = ("holds", "does not hold", "inconclusive")
DIRECTIONS = ("greater", "less", "within")


def _values(values, name: str = "values") -> np.ndarray:
    """Unit values as a float array ``[n]``; refuse an empty, non-1-D or non-finite input.

    A NaN is a diverged or missing run; averaging it away (nanmean) would silently report the
    surviving seeds as if they were all of them, so it is an error the user must look at.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise GenlabError(f"{name}: expected a non-empty 1-D list of per-unit values, got shape {x.shape}",
                          "pass one number per seed (or per sample)")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise GenlabError(f"{name}: {bad.size} of {x.size} values are NaN/inf (positions {bad.tolist()})",
                          "a run diverged or did not finish: fix or re-run it; statistics never drop values")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise GenlabError(f"confidence must be in (0, 1), got {confidence}", "use e.g. 0.95")


def _units(n: int, unit: str) -> str:
    """``3 seeds``, ``1 seed``."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


def _ci(lo: float, hi: float) -> list[float] | None:
    """``[lo, hi]`` as plain floats, or None when scipy could not form an interval (NaN)."""
    lo, hi = float(lo), float(hi)
    return None if math.isnan(lo) or math.isnan(hi) else [lo, hi]


# --- one quantity over seeds -----------------------------------------------------------

def summarize(values: Sequence[float], confidence: float = 0.95, unit: str = "seeds") -> dict:
    """Mean, sd and a Student-t CI for the mean of per-unit values ``[n]``.

    sd uses ddof=1 (the unbiased variance), se = sd/√n, and the CI is
    x̄ ± t_{(1+confidence)/2, n−1} · se  (``scipy.stats.t.interval``).

    n = 1: sd, se and ci are None and ``method`` says so — one seed gives no interval, and a
    verdict from it is "inconclusive". All values equal (sd = 0, e.g. a deterministic metric):
    the interval is the point [x̄, x̄], the t-interval's limit.

    Returns {"estimate", "mean", "sd", "se", "ci", "n", "confidence", "unit", "method"}.
    """
    _check_confidence(confidence)
    x = _values(values)
    n, mean = x.size, float(x.mean())
    out = {"estimate": mean, "mean": mean, "n": n, "confidence": confidence, "unit": unit}
    if n == 1:
        return out | {"sd": None, "se": None, "ci": None, "method": f"a single value ({_units(1, unit)}): no interval"}
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(n)
    ci = [mean, mean] if se == 0 else _ci(*scipy.stats.t.interval(confidence, n - 1, loc=mean, scale=se))
    return out | {"sd": sd, "se": se, "ci": ci, "method": f"Student-t over {n} {unit}"}


def bootstrap_ci(data, statistic: Callable = np.mean, confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0, method: str = "percentile", paired: bool = False, unit: str = "samples") -> dict:
    """Bootstrap CI of ``statistic`` by resampling units with replacement (``scipy.stats.bootstrap``).

    ``data`` is one array ``[n]`` or a tuple of arrays ``([n_1], [n_2], …)`` for a statistic of
    several samples (e.g. ``lambda a, b, axis: a.mean(axis) - b.mean(axis)``); each array is
    resampled on its own, or jointly (same indices) with ``paired=True``. The unit is whatever one
    entry is: a seed's value (resample seeds) or one sample's score within a seed (resample
    samples); name it in ``unit``. ``statistic`` must accept ``axis`` (numpy reductions do) so
    scipy can vectorise over resamples.

    ``method``: "percentile" (the resample quantiles) or "BCa" (bias-corrected and accelerated,
    Efron 1987: second-order accurate, better for skewed statistics). Deterministic given ``seed``.
    Needs n ≥ 2 in every array; with n < ~10 prefer ``summarize``'s t-interval (see module doc).

    Returns {"estimate", "ci", "n", "confidence", "unit", "method", "n_resamples", "seed"}.
    """
    _check_confidence(confidence)
    if method not in ("percentile", "BCa"):
        raise GenlabError(f"bootstrap method must be 'percentile' or 'BCa', got {method!r}", "pick one")
    samples = tuple(_values(d, f"sample {i}") for i, d in enumerate(data if isinstance(data, tuple) else (data,)))
    n = min(s.size for s in samples)
    estimate = float(statistic(*samples, axis=-1))
    out = {"estimate": estimate, "n": n, "confidence": confidence, "unit": unit,
           "n_resamples": n_resamples, "seed": seed}
    if n < 2:
        return out | {"ci": None, "method": f"no bootstrap from {_units(1, unit)}: no interval"}
    if all(np.ptp(s) == 0 for s in samples):   # every resample is the data itself: scipy returns NaN (BCa)
        return out | {"ci": [estimate, estimate], "method": f"bootstrap {method} over {n} {unit} (constant data)"}
    res = scipy.stats.bootstrap(samples, statistic, n_resamples=n_resamples, confidence_level=confidence,
                                method=method, paired=paired, vectorized=True, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return out | {"ci": _ci(ci.low, ci.high), "method": f"bootstrap {method} over {n} {unit} ({n_resamples} resamples)"}


# --- two methods ------------------------------------------------------------------------

def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, bootstrap: bool = False,
                      n_resamples: int = 9999, seed: int = 0, unit: str = "seeds") -> dict:
    """Mean paired difference d̄ of d_i = a_i − b_i (``a[i]``, ``b[i]`` from the same seed), t-CI and p.

    CI: d̄ ± t_{(1+confidence)/2, n−1} · s_d/√n; p: two-sided paired t-test of E[d] = 0
    (``scipy.stats.ttest_rel``), so the CI excludes 0 exactly when p < 1 − confidence.
    All d_i equal: the CI is [d̄, d̄] and p is 0 (d̄ ≠ 0) or 1 (d̄ = 0), the t-test's limits.
    ``bootstrap=True`` adds ``ci_bootstrap``, a percentile bootstrap over the pairs (n ≥ 10 or so).

    Returns summarize's fields for d plus {"p_value", "mean_a", "mean_b"} (p_value None when n = 1).
    """
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise GenlabError(f"paired difference needs one value per seed in both: got {a.size} and {b.size}",
                          "pair a[i] with b[i] from the same seed; use unpaired_difference for unrelated groups")
    d = a - b
    out = summarize(d, confidence, unit) | {"mean_a": float(a.mean()), "mean_b": float(b.mean())}
    out["method"] = out["method"].replace("Student-t", "paired Student-t")
    if d.size == 1:
        out["p_value"] = None
    elif out["sd"] == 0:
        out["p_value"] = 0.0 if out["estimate"] != 0 else 1.0
    else:
        out["p_value"] = float(scipy.stats.ttest_rel(a, b).pvalue)
    if bootstrap:
        out["ci_bootstrap"] = bootstrap_ci(d, np.mean, confidence, n_resamples, seed, unit=unit)["ci"]
    return out


def unpaired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95,
                        unit: str = "seeds") -> dict:
    """Welch's difference of means ā − b̄ of two independent groups ``[n_a]``, ``[n_b]``: CI and p.

    se = √(s_a²/n_a + s_b²/n_b), Welch–Satterthwaite degrees of freedom
    ν = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1)); CI ā − b̄ ± t_{(1+confidence)/2, ν} · se
    and the two-sided p from ``scipy.stats.ttest_ind(equal_var=False)``. Needs n ≥ 2 in each group.
    ``n`` is the smaller group's size (what the claim rests on); ``n_a``, ``n_b`` are both.
    """
    _check_confidence(confidence)
    a, b = _values(a, "a"), _values(b, "b")
    if min(a.size, b.size) < 2:
        raise GenlabError(f"Welch's test needs ≥ 2 values per group, got {a.size} and {b.size}",
                          "run more seeds, or compare paired values with paired_difference")
    estimate = float(a.mean() - b.mean())
    out = {"estimate": estimate, "n": min(a.size, b.size), "n_a": a.size, "n_b": b.size,
           "mean_a": float(a.mean()), "mean_b": float(b.mean()), "confidence": confidence, "unit": unit,
           "method": f"Welch t over {a.size} vs {b.size} {unit}"}
    if np.ptp(a) == 0 and np.ptp(b) == 0:        # no variance anywhere: the limit of the t-interval
        return out | {"ci": [estimate, estimate], "p_value": 0.0 if estimate != 0 else 1.0, "df": None}
    res = scipy.stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return out | {"ci": _ci(ci.low, ci.high), "p_value": float(res.pvalue), "df": float(res.df)}


# --- many claims --------------------------------------------------------------------------

def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm–Bonferroni step-down (Holm 1979): which of m hypotheses to reject at family-wise level α.

    Sort p ascending, p_(1) ≤ … ≤ p_(m); reject H_(1)…H_(k−1) where k is the first index with
    p_(k) > α/(m − k + 1). Equivalently the adjusted p-values
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)) are compared with α. The family-wise error rate
    is ≤ α under any dependence between the tests, and Holm rejects everything Bonferroni does.

    pvalues ``[m]`` → (reject ``[m]`` bool, adjusted ``[m]``), both in the input order.
    """
    p = _values(pvalues, "p-values")
    if ((p < 0) | (p > 1)).any():
        raise GenlabError(f"p-values must lie in [0, 1], got {p.tolist()}", "pass p-values, not statistics")
    m = p.size
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])      # (m − j + 1) p_(j), j = 1…m
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(steps)               # monotone: step-down stops at the first failure
    return adjusted <= alpha, adjusted


# --- verdicts -----------------------------------------------------------------------------

def verdict(ci: Sequence[float] | None, null: float = 0.0, direction: str = "greater",
            tolerance: float | None = None) -> str:
    """"holds" / "does not hold" / "inconclusive" for a claim about a statistic, from its CI alone.

    A claim names the set S of values it allows:
      greater  statistic > null                 S = (null, ∞)
      less     statistic < null                 S = (−∞, null)
      within   |statistic − null| ≤ tolerance   S = [null − tolerance, null + tolerance]
    and the verdict is  holds if CI ⊆ S,  does not hold if CI ∩ S = ∅,  inconclusive otherwise.
    So for "greater": holds iff lo > null, does not hold iff hi ≤ null (a CI of [0, 0] for an
    improvement claim — identical results — does not hold). "within" with a 95% CI is an
    equivalence test at level 0.025 per side (TOST at 90% would be α = 0.05): conservative.
    No interval (one seed) is always inconclusive.
    """
    if direction not in DIRECTIONS:
        raise GenlabError(f"unknown claim direction {direction!r}", f"use one of {DIRECTIONS}")
    if (direction == "within") != (tolerance is not None):
        raise GenlabError("a 'within' claim needs a tolerance, and only a 'within' claim takes one",
                          "pass tolerance=… with direction='within' (e.g. 0.1 for 'error within 10%')")
    if tolerance is not None and tolerance < 0:
        raise GenlabError(f"tolerance must be ≥ 0, got {tolerance}", "pass the half-width of the allowed band")
    if ci is None:
        return "inconclusive"
    lo, hi = (float(c) for c in ci)
    if math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    if lo > hi:
        raise GenlabError(f"confidence interval [{lo}, {hi}] has its ends swapped", "pass [low, high]")
    if direction == "greater":
        inside, outside = lo > null, hi <= null
    elif direction == "less":
        inside, outside = hi < null, lo >= null
    else:
        band_lo, band_hi = null - tolerance, null + tolerance
        inside, outside = band_lo <= lo and hi <= band_hi, hi < band_lo or lo > band_hi
    return "holds" if inside else "does not hold" if outside else "inconclusive"


# --- text ----------------------------------------------------------------------------------

def _decimals(width: float) -> int:
    """Decimal places that show ``width`` to 2 significant figures (the usual way to quote an error)."""
    return max(0, 1 - math.floor(math.log10(abs(width)))) if width and math.isfinite(width) else 3


def format_difference(result: Mapping, symbol: str = "Δ") -> str:
    """One line for a result of this module, e.g. ``Δ = 1.23 ± 0.45 (95% CI, 3 seeds)``.

    ± is the CI half-width (not the sd), quoted to 2 significant figures with the estimate rounded
    to the same decimal place; an asymmetric (bootstrap) CI is printed as ``[lo, hi]``, and a
    single value as ``(1 seed, no interval)``.
    """
    est, ci, n = result["estimate"], result.get("ci"), result["n"]
    units = _units(n, result.get("unit", "seeds"))
    if ci is None:
        return f"{symbol} = {est:.4g} ({units}, no interval)"
    level = f"{100 * result.get('confidence', 0.95):g}% CI"
    lo, hi = ci
    half = (hi - lo) / 2
    k = _decimals(half if half else abs(est))
    if abs((hi - est) - (est - lo)) > 0.05 * max(half, 1e-300):
        return f"{symbol} = {est:.{k}f} [{lo:.{k}f}, {hi:.{k}f}] ({level}, {units})"
    return f"{symbol} = {est:.{k}f} ± {half:.{k}f} ({level}, {units})"
