"""Simulators of the SBI benchmark with exact reference posteriors (Lueckmann et al. 2021, sbibm).

Each task is a prior p(θ), a simulator x ~ p(x | θ), and a sampler of the true posterior p(θ | x) for one x, against
which a neural posterior estimate is scored. All arrays are numpy float64; randomness comes from an explicit
``np.random.Generator``.

* **Gaussian linear** (sbibm "gaussian_linear", here in ``dim`` dimensions): θ ~ N(0, σ₀²I), x | θ ~ N(θ, σ²I) with
  σ₀² = σ² = 0.1. Conjugate, so the posterior is N(μ, s²I) with s² = (1/σ₀² + 1/σ²)⁻¹ and μ = s² x/σ²
  (Bishop 2006, eq. 2.116–2.117): here N(x/2, 0.05·I).
* **Two moons** (Greenberg et al. 2019, App. A.1; sbibm "two_moons"): θ ~ U[−1, 1]², a ~ U(−π/2, π/2),
  r ~ N(0.1, 0.01²), p = (r cos a + 0.25, r sin a), and
      x = p + g(θ),    g(θ) = (−|θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2).
  The likelihood is analytic: q = x − g(θ) − (0.25, 0) is the point (r cos a, r sin a), whose density by the change
  of variables to polar coordinates (dq = r dr da) is
      p(x | θ) = N(|q|; 0.1, 0.01²) · (1/π) / |q| · 1[q₁ > 0]
  (q₁ > 0 is a ∈ (−π/2, π/2); r < 0 has probability ~1e−23 and is ignored).

**Two-moons reference posterior: exact rejection sampling** (``two_moons_posterior``). Write θ in the rotated
coordinates s = (θ₁ + θ₂)/√2, v = (θ₂ − θ₁)/√2 (a rotation: the uniform prior stays uniform, on the rotated square),
so g(θ) = (−|s|, v) and p(θ | x) ∝ 1[θ ∈ [−1, 1]²] · p_q(x − (0.25, 0) − (−|s|, v)), with p_q the density of q.
Draw q from its own distribution (fresh a and r), set (u, v) = x − (0.25, 0) − q; this (u, v) has density
p_q(x − (0.25, 0) − (u, v)) (a translation of q). A draw with u > 0 has no θ (−|s| ≤ 0) and is rejected; otherwise
s = ±|u| with probability ½ each (both branches have the same likelihood), θ = rotation back, and θ outside the
prior box is rejected. The accepted θ have density ∝ 1[θ ∈ box] · p_q(x − (0.25, 0) − g(θ)): the posterior, exactly
(no tolerance, no grid).
"""
from __future__ import annotations

import math

import numpy as np

TASKS = ("two_moons", "gaussian_linear")
GAUSSIAN_LINEAR_VAR = 0.1          # σ₀² = σ² of the Gaussian-linear prior and noise
MOON_R_MEAN, MOON_R_STD, MOON_SHIFT = 0.1, 0.01, 0.25


class Task:
    """One benchmark task: θ ``[N, theta_dim]``, x ``[N, x_dim]``."""
    name: str
    theta_dim: int
    x_dim: int

    def prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """θ ~ p(θ) ``[n, theta_dim]``."""
        raise NotImplementedError

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x ~ p(x | θ) ``[N, x_dim]``, one per row of θ ``[N, theta_dim]``."""
        raise NotImplementedError

    def posterior(self, x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws ``[n, theta_dim]`` of the reference posterior p(θ | x) for one observation x ``[x_dim]``."""
        raise NotImplementedError


class GaussianLinear(Task):
    """θ ~ N(0, 0.1·I), x | θ ~ N(θ, 0.1·I) in ``dim`` dimensions; posterior N(x/2, 0.05·I) (module doc)."""
    name = "gaussian_linear"

    def __init__(self, dim: int):
        self.theta_dim = self.x_dim = dim

    def prior(self, n, rng):
        return rng.normal(0.0, math.sqrt(GAUSSIAN_LINEAR_VAR), (n, self.theta_dim))

    def simulate(self, theta, rng):
        return theta + rng.normal(0.0, math.sqrt(GAUSSIAN_LINEAR_VAR), theta.shape)

    def posterior_mean_var(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """(μ ``[..., dim]``, s²) of N(μ, s²I) = p(θ | x), x ``[..., dim]`` (Bishop 2006, eq. 2.116–2.117)."""
        var = 1.0 / (1.0 / GAUSSIAN_LINEAR_VAR + 1.0 / GAUSSIAN_LINEAR_VAR)
        return var * np.asarray(x) / GAUSSIAN_LINEAR_VAR, var

    def posterior(self, x, n, rng):
        mean, var = self.posterior_mean_var(x)
        return mean + math.sqrt(var) * rng.standard_normal((n, self.theta_dim))


def moons_offset(theta: np.ndarray) -> np.ndarray:
    """g(θ) = (−|θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2) ``[N, 2]`` of θ ``[N, 2]`` (Greenberg et al. 2019, App. A.1)."""
    return np.stack([-np.abs(theta[:, 0] + theta[:, 1]), theta[:, 1] - theta[:, 0]], axis=1) / math.sqrt(2.0)


def moons_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """q = (r cos a, r sin a) ``[n, 2]``, a ~ U(−π/2, π/2), r ~ N(0.1, 0.01²)."""
    a = rng.uniform(-math.pi / 2, math.pi / 2, n)
    r = rng.normal(MOON_R_MEAN, MOON_R_STD, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


class TwoMoons(Task):
    """θ ~ U[−1, 1]², x = (0.25, 0) + q + g(θ) (module doc); exact posterior by rejection."""
    name, theta_dim, x_dim = "two_moons", 2, 2

    def prior(self, n, rng):
        return rng.uniform(-1.0, 1.0, (n, 2))

    def simulate(self, theta, rng):
        return moons_noise(len(theta), rng) + np.array([MOON_SHIFT, 0.0]) + moons_offset(theta)

    def log_likelihood(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """log p(x | θ) ``[N]`` for θ ``[N, 2]`` and x ``[2]`` or ``[N, 2]`` (broadcast): the polar change of
        variables (module doc)."""
        q = x - np.array([MOON_SHIFT, 0.0]) - moons_offset(theta)
        r = np.linalg.norm(q, axis=1)
        log_normal = -0.5 * ((r - MOON_R_MEAN) / MOON_R_STD) ** 2 - math.log(MOON_R_STD * math.sqrt(2 * math.pi))
        with np.errstate(divide="ignore"):
            return np.where(q[:, 0] > 0, log_normal - math.log(math.pi) - np.log(r), -np.inf)

    def posterior(self, x, n, rng, max_rounds: int = 1000):
        """Exact rejection sampling (module doc): proposals in batches until ``n`` are accepted."""
        kept, have = [], 0
        for _ in range(max_rounds):
            m = max(2 * (n - have), 1000)
            u, v = (np.asarray(x) - np.array([MOON_SHIFT, 0.0]) - moons_noise(m, rng)).T
            s = np.abs(u) * rng.choice([-1.0, 1.0], m)
            theta = np.stack([s - v, s + v], axis=1) / math.sqrt(2.0)    # inverse of (s, v) = R θ
            ok = (u <= 0) & (np.abs(theta) <= 1).all(axis=1)
            kept.append(theta[ok])
            have += int(ok.sum())
            if have >= n:
                return np.concatenate(kept)[:n]
        raise RuntimeError(f"two moons: rejection accepted {have} of {n} draws for x = {x} (x outside the support?)")


def make_task(name: str, gaussian_dim: int = 5) -> Task:
    """The task called ``name`` (one of ``TASKS``)."""
    if name == "two_moons":
        return TwoMoons()
    if name == "gaussian_linear":
        return GaussianLinear(gaussian_dim)
    raise ValueError(f"unknown SBI task {name!r}; known: {TASKS}")
