"""The statistics are checked against their definitions: coverage, error rates, power, hand-worked Holm.

Simulations use fixed seeds, so each test is deterministic; the tolerances are ~3 binomial
standard errors of the simulated rate, so a correct implementation passes for (almost) any seed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from genlab.errors import GenlabError
from genlab.evaluate.stats import (bootstrap_ci, format_difference, holm, paired_difference, summarize,
                                   unpaired_difference, verdict)

REPS = 2000


def binomial_tol(p: float, reps: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / reps)


# --- summarize ---------------------------------------------------------------------------

def test_summarize_matches_definitions():
    x = [1.0, 2.0, 4.0, 7.0]
    s = summarize(x)
    assert s["n"] == 4 and s["mean"] == s["estimate"] == 3.5
    assert s["sd"] == pytest.approx(np.std(x, ddof=1)) and s["se"] == pytest.approx(s["sd"] / 2)
    half = scipy.stats.t.ppf(0.975, 3) * s["se"]                   # t_{0.975, 3} = 3.182
    assert s["ci"] == pytest.approx([3.5 - half, 3.5 + half])
    assert "Student-t" in s["method"]


def test_t_interval_covers_at_nominal_rate():
    """2000 experiments of n = 5 seeds from N(μ, σ²): the 95% t-CI covers μ in 95% ± 1.5% of them."""
    rng = np.random.default_rng(0)
    mu = 3.0
    draws = rng.normal(mu, 2.0, size=(REPS, 5))
    for confidence, tol in ((0.95, 0.015), (0.80, binomial_tol(0.8, REPS))):   # 80%: the argument is used
        cis = np.array([summarize(d, confidence)["ci"] for d in draws])
        coverage = np.mean((cis[:, 0] <= mu) & (mu <= cis[:, 1]))
        assert abs(coverage - confidence) <= tol


def test_summarize_single_value_and_constant_and_nan():
    one = summarize([2.5])
    assert one["ci"] is None and one["sd"] is None and "no interval" in one["method"]
    assert verdict(one["ci"]) == "inconclusive"
    const = summarize([1.0, 1.0, 1.0])
    assert const["ci"] == [1.0, 1.0] and const["sd"] == 0
    with pytest.raises(GenlabError, match="NaN"):
        summarize([1.0, float("nan"), 2.0])
    with pytest.raises(GenlabError):
        summarize([])


# --- bootstrap ---------------------------------------------------------------------------

def test_bootstrap_percentile_coverage_n30():
    """Percentile bootstrap of the mean of n = 30 samples: coverage of the true mean ≥ 0.90 (nominal 0.95).

    Exponential data (skewed, mean 1) so the bootstrap's lack of a normality assumption is exercised.
    """
    rng = np.random.default_rng(1)
    reps = 300
    covered = 0
    for r in range(reps):
        ci = bootstrap_ci(rng.exponential(1.0, 30), n_resamples=2000, seed=r)["ci"]
        covered += ci[0] <= 1.0 <= ci[1]
    assert covered / reps >= 0.90


def test_bootstrap_deterministic_and_bca_and_two_sample():
    x = np.random.default_rng(2).normal(size=40)
    a, b = bootstrap_ci(x, seed=5), bootstrap_ci(x, seed=5)
    assert a["ci"] == b["ci"] and bootstrap_ci(x, seed=6)["ci"] != a["ci"]
    bca = bootstrap_ci(x, method="BCa", n_resamples=2000)
    assert bca["ci"][0] < x.mean() < bca["ci"][1] and "BCa" in bca["method"]
    # a statistic of two independent samples: difference of means, true value −1
    y = np.random.default_rng(3).normal(1.0, 1.0, size=50)
    diff = bootstrap_ci((x, y), lambda u, v, axis: u.mean(axis) - v.mean(axis), n_resamples=2000)
    assert diff["estimate"] == pytest.approx(x.mean() - y.mean()) and diff["ci"][0] < -1 < diff["ci"][1]
    assert bootstrap_ci([4.0])["ci"] is None


# --- paired / unpaired differences -----------------------------------------------------------

def _seed_effects(rng, reps, n, delta):
    """Per-seed results of two methods sharing a large seed effect (sd 3) plus own noise (sd 1)."""
    seed = rng.normal(0, 3, size=(reps, n))
    return seed + delta + rng.normal(0, 1, (reps, n)), seed + rng.normal(0, 1, (reps, n))


def test_paired_test_size_at_null():
    """No planted difference: the paired test rejects (and the verdict is decisive) in ≤ α + 3 se of runs."""
    a, b = _seed_effects(np.random.default_rng(4), REPS, 5, delta=0.0)
    results = [paired_difference(x, y) for x, y in zip(a, b)]
    rejected = np.array([r["p_value"] < 0.05 for r in results])
    assert rejected.mean() <= 0.05 + binomial_tol(0.05, REPS)
    # CI ↔ test duality: the CI excludes 0 exactly when p < 0.05, so the verdict is decided then
    decided = np.array([verdict(r["ci"]) != "inconclusive" for r in results])
    assert (decided == rejected).all()


def test_paired_test_power_and_pairing_helps():
    """A planted difference of 3 with 5 seeds (per-pair noise sd √2) is detected at the paired t-test's
    theoretical power — the noncentral t tail P(T'_{4, δ√5/√2} > t_{0.975, 4}) = 0.936 — within 3 se;
    Welch on the same data, blind to the shared seed effect (sd 3), detects it far less often (~0.26)."""
    reps = 500
    power = scipy.stats.nct.sf(scipy.stats.t.ppf(0.975, 4), 4, 3.0 * math.sqrt(5 / 2))
    a, b = _seed_effects(np.random.default_rng(5), reps, 5, delta=3.0)
    paired = [paired_difference(x, y) for x, y in zip(a, b)]
    welch = [unpaired_difference(x, y) for x, y in zip(a, b)]
    power_paired = np.mean([verdict(r["ci"], direction="greater") == "holds" for r in paired])
    power_welch = np.mean([verdict(r["ci"], direction="greater") == "holds" for r in welch])
    assert abs(power_paired - power) <= binomial_tol(power, reps) and power_paired >= 0.8
    assert power_welch < power_paired - 0.3
    assert np.mean([r["estimate"] for r in paired]) == pytest.approx(3.0, abs=0.1)


def test_paired_difference_matches_scipy_and_edge_cases():
    a, b = [3.0, 4.0, 5.2], [1.9, 2.5, 4.1]
    r = paired_difference(a, b, bootstrap=True, n_resamples=999)
    ref = scipy.stats.ttest_rel(a, b)
    assert r["p_value"] == pytest.approx(ref.pvalue)
    assert r["ci"] == pytest.approx(list(ref.confidence_interval(0.95)))
    assert r["n"] == 3 and len(r["ci_bootstrap"]) == 2
    assert paired_difference([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0       # identical runs
    assert paired_difference([2.0], [1.0])["p_value"] is None
    with pytest.raises(GenlabError, match="same seed"):
        paired_difference([1.0, 2.0], [1.0])


def test_welch_matches_definition():
    a, b = np.array([1.0, 2.0, 3.0, 4.5]), np.array([2.0, 3.0, 5.0, 6.0, 9.0])
    r = unpaired_difference(a, b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))    # Welch–Satterthwaite
    half = scipy.stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert r["df"] == pytest.approx(df) and r["ci"] == pytest.approx([r["estimate"] - half, r["estimate"] + half])
    assert r["n"] == 4 and (r["n_a"], r["n_b"]) == (4, 5)


# --- Holm -------------------------------------------------------------------------------------

def test_holm_hand_worked():
    """p = (.01, .04, .03, .005), α = .05, m = 4. Sorted: .005 ≤ .05/4 ✓, .01 ≤ .05/3 ✓, .03 > .05/2 ✗ stop.
    Adjusted: 4·.005 = .02; max(.02, 3·.01) = .03; max(.03, 2·.03) = .06; max(.06, 1·.04) = .06."""
    reject, adjusted = holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert reject.tolist() == [True, False, False, True]
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Holm rejects everything Bonferroni does (here one more: .01 > .05/4 but ≤ .05/3)
    assert (reject >= (np.array([0.01, 0.04, 0.03, 0.005]) <= 0.05 / 4)).all()
    assert holm([0.3, 0.02])[1] == pytest.approx([0.3, 0.04])                 # max(2·.02, 1·.3)
    assert holm([0.9, 0.8])[1].tolist() == [1.0, 1.0]                          # capped at 1


def test_holm_controls_familywise_error():
    """10 true nulls: unadjusted testing errs in ~40% of families, Holm in ≤ 5% (+ 3 se)."""
    p = np.random.default_rng(6).uniform(size=(REPS, 10))
    fwer_holm = np.mean([holm(row)[0].any() for row in p])
    fwer_raw = np.mean((p <= 0.05).any(axis=1))
    assert fwer_holm <= 0.05 + binomial_tol(0.05, REPS)
    assert fwer_raw > 0.3


# --- verdict ----------------------------------------------------------------------------------

@pytest.mark.parametrize("ci, direction, tol, expected", [
    ([0.1, 2.0], "greater", None, "holds"),
    ([-0.5, 2.0], "greater", None, "inconclusive"),
    ([0.0, 2.0], "greater", None, "inconclusive"),        # touches the null: x = 0 not excluded
    ([-2.0, -0.1], "greater", None, "does not hold"),
    ([-1.0, 0.0], "greater", None, "does not hold"),      # nothing above 0 is in the CI
    ([0.0, 0.0], "greater", None, "does not hold"),       # identical runs: no improvement
    ([-2.0, -0.1], "less", None, "holds"),
    ([0.5, 3.0], "less", None, "does not hold"),
    ([-1.0, 1.0], "less", None, "inconclusive"),
    ([-0.05, 0.08], "within", 0.1, "holds"),              # |error| ≤ 10%
    ([-0.05, 0.15], "within", 0.1, "inconclusive"),
    ([0.12, 0.3], "within", 0.1, "does not hold"),
    ([0.1, 0.3], "within", 0.1, "inconclusive"),          # the band is closed: 0.1 is allowed
    (None, "greater", None, "inconclusive"),
])
def test_verdict_cases(ci, direction, tol, expected):
    assert verdict(ci, 0.0, direction, tol) == expected


def test_verdict_null_and_refusals():
    assert verdict([10.5, 12.0], null=10.0) == "holds"
    assert verdict([0.9, 1.05], null=1.0, direction="within", tolerance=0.1) == "holds"
    with pytest.raises(GenlabError, match="tolerance"):
        verdict([0.0, 1.0], direction="within")
    with pytest.raises(GenlabError, match="tolerance"):
        verdict([0.0, 1.0], direction="greater", tolerance=0.1)
    with pytest.raises(GenlabError, match="direction"):
        verdict([0.0, 1.0], direction="bigger")
    with pytest.raises(GenlabError, match="swapped"):
        verdict([1.0, 0.0])


def test_format_difference():
    r = {"estimate": 1.2345, "ci": [1.2345 - 0.4567, 1.2345 + 0.4567], "n": 3, "confidence": 0.95}
    assert format_difference(r) == "Δ = 1.23 ± 0.46 (95% CI, 3 seeds)"
    assert format_difference(summarize([12.1, 15.3, 14.2]), symbol="FID") == "FID = 13.9 ± 4.0 (95% CI, 3 seeds)"
    assert format_difference(summarize([3.0])) == "Δ = 3 (1 seed, no interval)"
    asym = {"estimate": 1.0, "ci": [0.8, 1.7], "n": 40, "unit": "samples"}
    assert format_difference(asym) == "Δ = 1.00 [0.80, 1.70] (95% CI, 40 samples)"
