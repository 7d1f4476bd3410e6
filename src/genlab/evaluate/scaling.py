"""Scaling-law fits on any table of runs (N params, D tokens, C FLOPs, loss): plain numpy/scipy functions.

* ``fit_power_law(x, L)``: Kaplan et al. 2020 form L = (x_c / x)^α (Eqs. 1.1–1.3), least squares
  in log–log space; used for L(C) along the compute frontier (the plain power-law baseline).
* ``fit_chinchilla(N, D, L)``: Hoffmann et al. 2022 Eq. 2, L(N, D) = E + A/N^α + B/D^β, fitted as
  in their App. D.2 and Epoch AI's replication (Besiroglu et al. 2024): parameters θ = (a, b, e, α, β)
  with A = eᵃ, B = eᵇ, E = eᵉ; the model's log-loss is LSE(a − α log N, b − β log D, e);
  minimise the Huber loss (δ = 1e-3) of log-loss residuals **summed** over runs (averaging
  shrinks the gradients until L-BFGS stops early). A grid of initialisations is scored first;
  ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)`` starts from its best points.
* ``bootstrap_fits``: refits on runs resampled with replacement (Efron 1979); ``percentile_ci``
  reads intervals off the draws (percentile method).
* ``compute_optimal(fit, C)``: N*(C), D*(C) minimising L under C = 6ND (Hoffmann Eq. 4):
  N* ∝ C^a, D* ∝ C^b with a = β/(α+β), b = α/(α+β).
* ``isoflop_minimum(N, L)``: Hoffmann's approach 2 — a parabola in log N through one budget's
  IsoFLOP profile; its vertex is that budget's loss-optimal N.
* ``read_table(csv, n=…, d=…, loss=…, c=…)``: any CSV with N and D columns (or N and C plus a
  FLOPs-per-token rule) → arrays, for ``genlab fit-scaling``.
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import scipy.optimize
from threadpoolctl import threadpool_limits

from genlab.errors import GenlabError

NAMES = ("E", "A", "alpha", "B", "beta")
# Epoch AI's grid: a, b ∈ {0, 5, …, 25}, e ∈ {−1, −0.5, …, 1}, α, β ∈ {0, 0.5, …, 2}  (6·6·5·5·5 points)
GRID = np.array(list(itertools.product(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
                                       np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))))


def read_table(path: str | Path, n: str = "N", d: str | None = "D", loss: str = "loss", c: str | None = None
               ) -> dict[str, np.ndarray]:
    """Columns of a CSV as float arrays ``[R]``: {"N", "D", "loss"} (and "C" when given).

    Either ``d`` names a tokens column, or ``c`` names a compute column and D = C / (6N) (Kaplan's
    C ≈ 6ND, the only rule that needs no architecture). Rows with a missing or non-positive value
    in a used column are refused with their line number, not dropped.
    """
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise GenlabError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}",
                          "pass the path of a CSV with one row per run") from None
    if not rows:
        raise GenlabError(f"{path}: no rows", "pass a CSV with a header line and one row per run")
    wanted = [k for k in (n, d, loss, c) if k]
    missing = [k for k in wanted if k not in rows[0]]
    if missing:
        raise GenlabError(f"{path}: no column(s) {missing}; the columns are {list(rows[0])}",
                          "name the columns with --n, --d (or --c) and --loss")
    out = {}
    for key, col in (("N", n), ("D", d), ("loss", loss), ("C", c)):
        if not col:
            continue
        try:
            x = np.array([float(r[col]) for r in rows])
        except ValueError as e:
            raise GenlabError(f"{path}: column {col!r} is not numeric ({e})", "fix or drop that row") from None
        bad = np.flatnonzero(~(np.isfinite(x) & (x > 0)))
        if bad.size:
            raise GenlabError(f"{path}: column {col!r} has non-positive or missing values on line(s) "
                              f"{(bad + 2).tolist()[:10]}", "a scaling fit needs N, D, C and loss > 0")
        out[key] = x
    if "D" not in out:
        if "C" not in out:
            raise GenlabError("need a tokens column (--d) or a compute column (--c)", "pass one of them")
        out["D"] = out["C"] / (6 * out["N"])
    out.setdefault("C", 6 * out["N"] * out["D"])
    return out


def fit_power_law(x: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """L = (x_c / x)^α: least squares of log L = α log x_c − α log x. Returns (α, x_c)."""
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    alpha = -slope
    return float(alpha), float(np.exp(intercept / alpha))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    """Summed Huber loss of log-loss residuals and its gradient; θ = (a, b, e, α, β) ``[5]`` or a grid ``[G, 5]``.

    Returns (value ``[G]``, gradient ``[G, 5]``).
    """
    theta = np.atleast_2d(theta)
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))                  # each [G, 1]
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, a.shape[:1] + log_n.shape)])
    top = terms.max(axis=0)
    ex = np.exp(terms - top)
    total = ex.sum(axis=0)
    r = top + np.log(total) - log_l                                                # LSE − log L: [G, R] residuals
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum(-1)  # Huber, summed over runs
    dr = np.where(small, r, delta * np.sign(r))                                     # dHuber/dr
    w = ex / total                                                                  # dLSE/d(term) [3, G, R]
    grad = np.stack([(dr * w[0]).sum(-1), (dr * w[1]).sum(-1), (dr * w[2]).sum(-1),
                     -(dr * w[0] * log_n).sum(-1), -(dr * w[1] * log_d).sum(-1)], axis=-1)
    return value, grad


def fit_chinchilla(n, d, loss, delta: float = 1e-3, n_starts: int = 16, extra_starts=()) -> dict:
    """L(N, D) = E + A/N^α + B/D^β fitted to runs ``n, d, loss`` ``[R]``. Returns {E, A, alpha, B, beta, objective}.

    The whole grid is scored with ``_objective``; ``scipy.optimize.minimize(method="L-BFGS-B",
    jac=True)`` then starts from its ``n_starts`` best points (plus ``extra_starts``, e.g. a previous
    fit) and the lowest objective wins. α, β are bounded to [0, 5] (a law whose terms grow with N or D
    is not a scaling law); a, b, e are free.
    """
    args = (np.log(n), np.log(d), np.log(loss), delta)
    scores, _ = _objective(GRID, *args)
    starts = np.array([*GRID[np.argsort(scores)[:n_starts]], *extra_starts])

    def fun(theta):                                                        # one start: (f, grad [5])
        value, grad = _objective(theta, *args)
        return value[0], grad[0]

    bounds = [(None, None)] * 3 + [(0.0, 5.0)] * 2
    best = None
    # one BLAS thread: L-BFGS-B's many tiny vector ops are ~30× slower when a BLAS pool wakes for each
    with threadpool_limits(1), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for x0 in starts:
            res = scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                                          options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
    a, b, e, alpha, beta = best.x
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha), "B": float(np.exp(b)),
            "beta": float(beta), "objective": float(best.fun)}


def predict(fit: dict, n, d) -> np.ndarray:
    return fit["E"] + fit["A"] / np.asarray(n, float) ** fit["alpha"] + fit["B"] / np.asarray(d, float) ** fit["beta"]


def theta_of(fit: dict) -> np.ndarray:
    return np.array([np.log(fit["A"]), np.log(fit["B"]), np.log(fit["E"]), fit["alpha"], fit["beta"]])


def exponents(fit: dict) -> dict[str, float]:
    """Compute-optimal exponents under C ∝ ND: N* ∝ C^a, D* ∝ C^b, a = β/(α+β), b = α/(α+β) (Hoffmann Eq. 4)."""
    s = fit["alpha"] + fit["beta"]
    return {"a": fit["beta"] / s, "b": fit["alpha"] / s}


def bootstrap_fits(n, d, loss, fit: dict, n_boot: int = 200, delta: float = 1e-3, n_starts: int = 4,
                   seed: int = 0) -> list[dict]:
    """Refits on runs resampled with replacement ``[n_boot]`` (each warm-started from ``fit`` and the
    ``n_starts`` best grid points of its resample), each with its exponents a, b."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(n), len(n))
        f = fit_chinchilla(n[i], d[i], loss[i], delta, n_starts, extra_starts=[theta_of(fit)])
        draws.append(f | exponents(f))
    return draws


def percentile_ci(values, ci: float) -> list[float]:
    """Percentile interval [q_{(1−ci)/2}, q_{(1+ci)/2}] of bootstrap draws ``[n_boot]``."""
    lo, hi = np.percentile(np.asarray(values, float), [50 * (1 - ci), 50 * (1 + ci)])
    return [float(lo), float(hi)]


def bootstrap_ci(n, d, loss, fit: dict, n_boot: int = 200, ci: float = 0.9, delta: float = 1e-3,
                 n_starts: int = 4, seed: int = 0) -> dict[str, list[float]]:
    """Percentile CIs of E, A, α, B, β and the exponents a, b over ``bootstrap_fits``."""
    draws = bootstrap_fits(n, d, loss, fit, n_boot, delta, n_starts, seed)
    return {k: percentile_ci([f[k] for f in draws], ci) for k in (*NAMES, "a", "b")}


def compute_optimal(fit: dict, c) -> tuple[np.ndarray, np.ndarray]:
    """N*(C) = G (C/6)^{β/(α+β)}, D*(C) = G⁻¹ (C/6)^{α/(α+β)}, G = (αA / βB)^{1/(α+β)} (Hoffmann Eq. 4)."""
    alpha, beta, s = fit["alpha"], fit["beta"], fit["alpha"] + fit["beta"]
    g = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / s)
    c6 = np.asarray(c, float) / 6
    return g * c6 ** (beta / s), c6 ** (alpha / s) / g


def isoflop_minimum(n, loss) -> tuple[float, float, list[float]]:
    """Vertex of L ≈ p₀ + p₁ x + p₂ x², x = log N, through one IsoFLOP profile ``[k]`` (Hoffmann approach 2).

    Returns (N_opt, L_opt, [p₂, p₁, p₀]). With fewer than 3 distinct sizes or a profile that is not
    convex (p₂ ≤ 0), or a vertex outside the sizes tried, the best run itself is returned: a parabola
    does not extrapolate a minimum it never bracketed.
    """
    x, loss = np.log(np.asarray(n, float)), np.asarray(loss, float)
    best = int(np.argmin(loss))
    if len(np.unique(x)) < 3:
        return float(np.exp(x[best])), float(loss[best]), [float("nan")] * 3
    p = np.polyfit(x, loss, 2)
    if p[0] <= 0:
        return float(np.exp(x[best])), float(loss[best]), p.tolist()
    vertex = -p[1] / (2 * p[0])
    if not x.min() <= vertex <= x.max():
        return float(np.exp(x[best])), float(loss[best]), p.tolist()
    return float(np.exp(vertex)), float(np.polyval(p, vertex)), p.tolist()
