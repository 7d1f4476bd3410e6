"""2D toy densities used by the CNF and flow-matching stages (as in FFJORD's toy experiments), with
train / val / test draws and the closed-form density of ``gaussians8`` (its true NLL is the floor of
every model's test NLL)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.datasets import make_moons

from genlab.errors import GenlabError
from genlab.evaluate.selection import Split

GAUSSIANS8_RADIUS = 2.0


def sample(name: str, n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Draw ``n`` points ``[n, 2]`` (float32), roughly standardised to [-4, 4]."""
    if name == "moons":
        x, _ = make_moons(n, noise=noise, random_state=int(rng.integers(2**31)))
        x = (x - np.array([0.5, 0.25])) * 2.0
    elif name == "gaussians8":
        angles = 2 * np.pi * rng.integers(0, 8, n) / 8
        x = GAUSSIANS8_RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1) + rng.normal(0, 0.2 + noise, (n, 2))
    elif name == "checkerboard":
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
        x = np.stack([x1, x2], 1) * 1.5
    elif name == "spirals":
        t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
        sign = rng.choice([-1.0, 1.0], n)
        x = sign[:, None] * np.stack([t * np.cos(t), t * np.sin(t)], 1) / 3.0 + rng.normal(0, noise * 2, (n, 2))
    else:
        raise ValueError(name)
    return x.astype(np.float32)


def gaussians8_log_prob(x: np.ndarray, noise: float) -> np.ndarray:
    """log p(x) ``[N]`` of the generating mixture for points ``[N, 2]``: eight equally weighted isotropic
    Gaussians, means r·(cos 2πk/8, sin 2πk/8), r = 2, standard deviation σ = 0.2 + noise:
    log p(x) = log Σ_k (1/8) N(x; μ_k, σ²I) = logsumexp_k(−‖x − μ_k‖²/2σ²) − log 8 − log(2πσ²)."""
    sigma = 0.2 + noise
    k = 2 * np.pi * np.arange(8) / 8
    mu = GAUSSIANS8_RADIUS * np.stack([np.cos(k), np.sin(k)], 1)                  # [8, 2]
    sq = ((np.asarray(x, dtype=np.float64)[:, None, :] - mu[None]) ** 2).sum(-1)  # [N, 8]
    return logsumexp(-sq / (2 * sigma**2), axis=1) - math.log(8) - math.log(2 * math.pi * sigma**2)


def true_nll(name: str, x: np.ndarray, noise: float) -> float | None:
    """Mean −log p(x) under the generating density, where it has a closed form (gaussians8); else None."""
    return float(-gaussians8_log_prob(x, noise).mean()) if name == "gaussians8" else None


def prepare(cfg, seed: int) -> dict[str, np.ndarray]:
    """``<name>_{train,val,test}`` ``[n, 2]`` float32 for every set in ``cfg.names``, independent draws."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in cfg.names:
        out[f"{name}_train"] = sample(name, cfg.n_train, rng, cfg.noise)
        out[f"{name}_test"] = sample(name, cfg.n_test, rng, cfg.noise)
        out[f"{name}_val"] = sample(name, cfg.n_val, rng, cfg.noise)   # drawn last: train/test stay as before
    return out


def splits(arrays: dict[str, np.ndarray], name: str) -> dict[str, Split]:
    """One prepared set as tagged tensor splits {train, val, test}, each ``[n, 2]``."""
    if f"{name}_val" not in arrays:
        raise GenlabError(f"toy2d set '{name}' was not prepared with a validation split "
                          f"(have: {sorted({k.rsplit('_', 1)[0] for k in arrays})})",
                          "add it to data.toy2d.names and re-run `genlab prepare`")
    return {s: Split(s, torch.from_numpy(arrays[f"{name}_{s}"])) for s in ("train", "val", "test")}
