"""Scaling-law fitter: recovers planted power laws and Chinchilla constants; L-BFGS; compute-optimal closed form."""
from __future__ import annotations

import numpy as np
import pytest

from genlab.evaluate.scaling import (_objective, bootstrap_ci, compute_optimal, fit_chinchilla, fit_power_law, lbfgs,
                                     predict, read_runs)

TRUE = {"E": 1.2, "A": 60.0, "alpha": 0.35, "B": 900.0, "beta": 0.42}


def synthetic(noise: float, seed: int = 0):
    n, d = np.meshgrid(np.geomspace(1e4, 1e6, 7), np.geomspace(1e5, 1e7, 6))
    n, d = n.ravel(), d.ravel()
    loss = predict(TRUE, n, d) * np.exp(np.random.default_rng(seed).normal(0, noise, n.shape))
    return n, d, loss


def test_power_law_recovers_a_known_exponent():
    x = np.geomspace(1e3, 1e7, 12)
    loss = (8.8e13 / x) ** 0.076 * np.exp(np.random.default_rng(1).normal(0, 0.002, x.shape))
    alpha, x_c = fit_power_law(x, loss)
    assert alpha == pytest.approx(0.076, abs=0.002)
    assert np.log10(x_c) == pytest.approx(np.log10(8.8e13), abs=0.5)


def test_chinchilla_fit_is_exact_without_noise():
    n, d, loss = synthetic(noise=0.0)
    fit = fit_chinchilla(n, d, loss)
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-3), k


def test_chinchilla_fit_recovers_constants_from_noisy_data():
    """0.3% multiplicative noise on 42 runs: E within 5%, exponents within 0.03, A and B within a factor 1.5."""
    n, d, loss = synthetic(noise=0.003, seed=2)
    fit = fit_chinchilla(n, d, loss)
    assert fit["E"] == pytest.approx(TRUE["E"], rel=0.05)
    assert fit["alpha"] == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit["beta"] == pytest.approx(TRUE["beta"], abs=0.03)
    for k in ("A", "B"):
        assert 1 / 1.5 < fit[k] / TRUE[k] < 1.5, k
    ci = bootstrap_ci(n, d, loss, fit, n_boot=20, ci=0.9)
    assert all(lo <= fit[k] * 1.0001 and fit[k] <= hi * 1.0001 for k, (lo, hi) in ci.items())


def test_objective_gradient_matches_finite_differences_and_huber_is_summed():
    n, d, loss = synthetic(noise=0.01)
    args = (np.log(n), np.log(d), np.log(loss), 0.05)
    theta = np.array([4.0, 6.0, 0.2, 0.4, 0.5])
    value, grad = _objective(theta, *args)
    eye = np.eye(5) * 1e-6
    numeric = [(_objective(theta + e, *args)[0] - _objective(theta - e, *args)[0])[0] / 2e-6 for e in eye]
    assert np.allclose(grad[0], numeric, rtol=1e-5, atol=1e-8)
    half, _ = _objective(theta, *(a[:21] for a in args[:3]), 0.05)
    other, _ = _objective(theta, *(a[21:] for a in args[:3]), 0.05)
    assert value[0] == pytest.approx(half[0] + other[0])          # summed over runs, not averaged


def test_lbfgs_minimises_a_rosenbrock_batch():
    def rosen(x):
        a, b = x[:, 0], x[:, 1]
        f = (1 - a) ** 2 + 100 * (b - a**2) ** 2
        return f, np.stack([-2 * (1 - a) - 400 * a * (b - a**2), 200 * (b - a**2)], -1)

    f, x = lbfgs(rosen, np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0]]), max_iter=2000)
    assert np.allclose(x, 1.0, atol=1e-4) and (f < 1e-8).all()


def test_compute_optimal_minimises_loss_at_fixed_compute():
    c = 1e18
    n_opt, d_opt = compute_optimal(TRUE, c)
    assert 6 * n_opt * d_opt == pytest.approx(c, rel=1e-9)
    n_grid = np.geomspace(n_opt / 10, n_opt * 10, 2001)
    brute = n_grid[np.argmin(predict(TRUE, n_grid, c / (6 * n_grid)))]
    assert brute == pytest.approx(n_opt, rel=0.01)


def test_read_runs_accepts_loss_or_val_loss(tmp_path):
    (tmp_path / "a.csv").write_text("N,D,val_loss,size\n1e4,1e5,2.5,x\n2e4,1e5,2.4,y\n")
    n, d, loss = read_runs(tmp_path / "a.csv")
    assert n.tolist() == [1e4, 2e4] and d.tolist() == [1e5, 1e5] and loss.tolist() == [2.5, 2.4]
