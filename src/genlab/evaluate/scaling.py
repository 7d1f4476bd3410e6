"""Scaling-law fits on any table of runs (N params, D tokens, loss): plain numpy/scipy functions.

* ``fit_power_law(x, L)``: Kaplan et al. 2020 form L = (x_c / x)^α (Eqs. 1.1–1.3), least squares
  in log–log space; used for L(N), L(D) and L(C).
* ``fit_chinchilla(N, D, L)``: Hoffmann et al. 2022 Eq. 2, L(N, D) = E + A/N^α + B/D^β, fitted as
  in their App. D.2 and Epoch AI's replication (Besiroglu et al. 2024): parameters (a, b, e, α, β)
  with A = eᵃ, B = eᵇ, E = eᵉ; the model's log-loss is LSE(a − α log N, b − β log D, e);
  minimise the Huber loss (δ = 1e-3) of log-loss residuals **summed** over runs (averaging
  shrinks the gradients until L-BFGS stops early) with L-BFGS from a grid of initialisations,
  keeping the best. The whole grid is scored first; L-BFGS (``lbfgs``: all starts at once, vectorised)
  starts from its ``n_starts`` best points.
* ``bootstrap_ci``: percentile intervals from refits on runs resampled with replacement.
* ``compute_optimal(fit, C)``: N*(C), D*(C) minimising L under C = 6ND (Hoffmann Eq. 4).
* ``read_runs(csv)``: columns N, D and loss (or val_loss) of any CSV.
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np

NAMES = ("E", "A", "alpha", "B", "beta")
# Epoch AI's grid: a, b ∈ {0, 5, …, 25}, e ∈ {−1, −0.5, …, 1}, α, β ∈ {0, 0.5, …, 2}  (6·6·5·5·5 points)
GRID = np.array(list(itertools.product(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
                                       np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))))


def read_runs(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss) arrays from a CSV with columns ``N``, ``D`` and ``loss`` or ``val_loss``."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    key = "loss" if "loss" in rows[0] else "val_loss"
    return tuple(np.array([float(r[k]) for r in rows]) for k in ("N", "D", key))


def fit_power_law(x: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """L = (x_c / x)^α: least squares of log L = α log x_c − α log x. Returns (α, x_c)."""
    slope, intercept = np.polyfit(np.log(x), np.log(loss), 1)
    alpha = -slope
    return float(alpha), float(np.exp(intercept / alpha))


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float):
    """Summed Huber loss of log-loss residuals and its gradient; θ = (a, b, e, α, β) ``[5]`` or a grid ``[G, 5]``."""
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


def lbfgs(fun, x0: np.ndarray, max_iter: int = 1000, history: int = 10, tol: float = 1e-13
          ) -> tuple[np.ndarray, np.ndarray]:
    """L-BFGS (Nocedal & Wright 2006, Alg. 7.4/7.5) run on G starting points at once.

    ``fun(x [G, P]) -> (f [G], grad [G, P])``; backtracking (Armijo) line search; a start stops
    when its step changes f by less than ``tol``·max(1, |f|). Returns (f [G], x [G, P]).
    """
    x = np.array(x0, float)
    f, g = fun(x)
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []          # (s, y, ρ) each [G, P], [G]
    active = np.ones(len(x), bool)
    for _ in range(max_iter):
        q, coef = g.copy(), []
        for s, y, rho in reversed(pairs):                                 # two-loop recursion: d = −H g
            a = rho * (s * q).sum(-1)
            q -= a[:, None] * y
            coef.append(a)
        if pairs:
            s, y, rho = pairs[-1]
            q *= np.where(rho > 0, (s * y).sum(-1) / np.maximum((y * y).sum(-1), 1e-300), 1.0)[:, None]
        else:
            q /= np.maximum(1.0, np.abs(g).max(-1))[:, None]
        for (s, y, rho), a in zip(pairs, reversed(coef)):
            q += s * (a - rho * (y * q).sum(-1))[:, None]
        d = np.where(((g * q).sum(-1) > 0)[:, None], -q, -g) * active[:, None]
        slope, t = (g * d).sum(-1), np.ones(len(x))
        for _ in range(50):                                               # Armijo backtracking
            f_new, g_new = fun(x + t[:, None] * d)
            ok = f_new <= f + 1e-4 * t * slope
            if ok.all():
                break
            t = np.where(ok, t, 0.5 * t)
        ok = np.isfinite(f_new) & (f_new <= f)
        x_new = np.where(ok[:, None], x + t[:, None] * d, x)
        f_new, g_new = np.where(ok, f_new, f), np.where(ok[:, None], g_new, g)
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(-1)
        pairs = [*pairs[-(history - 1):], (s, y, np.where(sy > 1e-300, 1.0 / np.where(sy > 1e-300, sy, 1.0), 0.0))]
        active &= np.abs(f - f_new) > tol * np.maximum(1.0, np.abs(f))
        x, f, g = x_new, f_new, g_new
        if not active.any():
            break
    return f, x


def fit_chinchilla(n, d, loss, delta: float = 1e-3, n_starts: int = 64, extra_starts=()) -> dict:
    """L(N, D) = E + A/N^α + B/D^β. Returns {E, A, alpha, B, beta, objective}."""
    args = (np.log(n), np.log(d), np.log(loss), delta)
    scores, _ = _objective(GRID, *args)
    starts = np.array([*GRID[np.argsort(scores)[:n_starts]], *extra_starts])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # poor starts may overflow: rejected
        values, thetas = lbfgs(lambda t: _objective(t, *args), starts)
    best = int(np.nanargmin(values))
    a, b, e, alpha, beta = thetas[best]
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "alpha": float(alpha), "B": float(np.exp(b)),
            "beta": float(beta), "objective": float(values[best])}


def predict(fit: dict, n, d) -> np.ndarray:
    return fit["E"] + fit["A"] / np.asarray(n, float) ** fit["alpha"] + fit["B"] / np.asarray(d, float) ** fit["beta"]


def theta_of(fit: dict) -> np.ndarray:
    return np.array([np.log(fit["A"]), np.log(fit["B"]), np.log(fit["E"]), fit["alpha"], fit["beta"]])


def bootstrap_ci(n, d, loss, fit: dict, n_boot: int = 200, ci: float = 0.9, delta: float = 1e-3,
                 n_starts: int = 4, seed: int = 0) -> dict[str, list[float]]:
    """Percentile CIs of the Chinchilla parameters over refits on resampled runs (each warm-started
    from ``fit`` and the ``n_starts`` best grid points of its resample)."""
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(n), len(n))
        f = fit_chinchilla(n[i], d[i], loss[i], delta, n_starts, extra_starts=[theta_of(fit)])
        draws.append([f[k] for k in NAMES])
    lo, hi = np.percentile(np.array(draws), [50 * (1 - ci), 50 * (1 + ci)], axis=0)
    return {k: [float(lo[j]), float(hi[j])] for j, k in enumerate(NAMES)}


def compute_optimal(fit: dict, c) -> tuple[np.ndarray, np.ndarray]:
    """N*(C) = G (C/6)^{β/(α+β)}, D*(C) = G⁻¹ (C/6)^{α/(α+β)}, G = (αA / βB)^{1/(α+β)} (Hoffmann Eq. 4)."""
    alpha, beta, s = fit["alpha"], fit["beta"], fit["alpha"] + fit["beta"]
    g = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / s)
    c6 = np.asarray(c, float) / 6
    return g * c6 ** (beta / s), c6 ** (alpha / s) / g
