"""2D toy densities used by the CNF and flow-matching stages (as in FFJORD's toy experiments)."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons


def sample(name: str, n: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """Draw ``n`` points ``[n, 2]`` (float32), roughly standardised to [-4, 4]."""
    if name == "moons":
        x, _ = make_moons(n, noise=noise, random_state=int(rng.integers(2**31)))
        x = (x - np.array([0.5, 0.25])) * 2.0
    elif name == "gaussians8":
        angles = 2 * np.pi * rng.integers(0, 8, n) / 8
        x = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1) + rng.normal(0, 0.2 + noise, (n, 2))
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


def prepare(cfg, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name in cfg.names:
        out[f"{name}_train"] = sample(name, cfg.n_train, rng, cfg.noise)
        out[f"{name}_test"] = sample(name, cfg.n_test, rng, cfg.noise)
    return out
