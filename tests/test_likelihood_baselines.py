"""Closed-form density baselines of the digits CNF."""
import math

import numpy as np

from genlab.evaluate.likelihood_baselines import categorical_bpd, gaussian_bpd


def test_categorical_is_exact_on_a_known_distribution():
    rng = np.random.default_rng(0)
    p = np.array([0.5, 0.25, 0.25])
    train = rng.choice(3, size=(20000, 4), p=p)
    test = rng.choice(3, size=(5000, 4), p=p)
    entropy_bits = -(p * np.log2(p)).sum()
    assert abs(categorical_bpd(train, test, 3).mean() - entropy_bits) < 0.02


def test_gaussian_beats_uniform_and_is_finite():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 17, size=(1, 8))
    train = np.clip(base + rng.integers(-1, 2, size=(2000, 8)), 0, 16)
    test = np.clip(base + rng.integers(-1, 2, size=(500, 8)), 0, 16)
    bpd = gaussian_bpd(train, test, 17, 0.05)
    assert np.isfinite(bpd).all() and bpd.mean() < math.log2(17)
