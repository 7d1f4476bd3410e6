"""Scaling-law fitter: recovers planted power laws and Chinchilla constants (also from a noisy IsoFLOP design);
compute-optimal closed form; IsoFLOP parabola minima; FLOPs per token; reading any CSV."""
from __future__ import annotations

import numpy as np
import pytest

from genlab.evaluate.flops import flops_per_token, non_embedding_params
from genlab.evaluate.scaling import (_objective, bootstrap_ci, compute_optimal, exponents, fit_chinchilla,
                                     fit_power_law, isoflop_minimum, predict, read_table)

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
    point = fit | exponents(fit)
    assert all(lo <= point[k] * 1.0001 and point[k] <= hi * 1.0001 for k, (lo, hi) in ci.items())


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


def test_compute_optimal_minimises_loss_at_fixed_compute():
    c = 1e18
    n_opt, d_opt = compute_optimal(TRUE, c)
    assert 6 * n_opt * d_opt == pytest.approx(c, rel=1e-9)
    n_grid = np.geomspace(n_opt / 10, n_opt * 10, 2001)
    brute = n_grid[np.argmin(predict(TRUE, n_grid, c / (6 * n_grid)))]
    assert brute == pytest.approx(n_opt, rel=0.01)


def test_read_table_takes_named_columns_or_compute_and_refuses_bad_rows(tmp_path):
    from genlab.errors import GenlabError

    (tmp_path / "a.csv").write_text("params,tokens,val_loss,size\n1e4,1e5,2.5,x\n2e4,1e5,2.4,y\n")
    t = read_table(tmp_path / "a.csv", n="params", d="tokens", loss="val_loss")
    assert t["N"].tolist() == [1e4, 2e4] and t["D"].tolist() == [1e5, 1e5] and t["loss"].tolist() == [2.5, 2.4]
    (tmp_path / "b.csv").write_text("N,flops,loss\n1e4,6e9,2.5\n")
    assert read_table(tmp_path / "b.csv", d=None, c="flops")["D"].tolist() == [1e5]      # D = C / 6N
    (tmp_path / "c.csv").write_text("N,D,loss\n1e4,1e5,2.5\n1e4,0,2.4\n")
    with pytest.raises(GenlabError, match="line"):
        read_table(tmp_path / "c.csv")


# an IsoFLOP design like the stage's: 5 budgets over 2 decades, 5 sizes each, D = C / 6N
PLANTED = {"E": 1.1, "A": 22.0, "alpha": 0.35, "B": 49.0, "beta": 0.35}


def isoflop_design(noise: float, seed: int = 0):
    n, d = [], []
    for i, c in enumerate(np.geomspace(3e9, 3e11, 5)):
        for size in np.geomspace(3e3, 3e4, 5) * 10 ** (0.25 * i):
            n.append(size)
            d.append(c / (6 * size))
    n, d = np.array(n), np.array(d)
    return n, d, predict(PLANTED, n, d) * np.exp(np.random.default_rng(seed).normal(0, noise, n.shape))


def test_fitter_recovers_planted_constants_from_noisy_isoflop_profiles():
    """0.5% seed-like noise on 25 IsoFLOP runs: E within 10%, α and β within 0.08, a within 0.1, CI covers E."""
    n, d, loss = isoflop_design(noise=0.005, seed=3)
    fit = fit_chinchilla(n, d, loss)
    assert fit["E"] == pytest.approx(PLANTED["E"], rel=0.1)
    assert fit["alpha"] == pytest.approx(PLANTED["alpha"], abs=0.08)
    assert fit["beta"] == pytest.approx(PLANTED["beta"], abs=0.08)
    assert exponents(fit)["a"] == pytest.approx(0.5, abs=0.1)
    ci = bootstrap_ci(n, d, loss, fit, n_boot=40, ci=0.9, seed=1)
    assert ci["E"][0] < PLANTED["E"] < ci["E"][1] and ci["E"][0] > 0.5


def test_isoflop_parabola_finds_the_planted_optimum():
    c = 1e11
    n = np.geomspace(1e3, 1e6, 7)
    n_opt, l_opt, p = isoflop_minimum(n, predict(PLANTED, n, c / (6 * n)))
    brute = np.geomspace(1e3, 1e6, 20001)
    truth = brute[np.argmin(predict(PLANTED, brute, c / (6 * brute)))]
    assert p[0] > 0 and np.log(n_opt) == pytest.approx(np.log(truth), abs=0.15)
    n_best, _, _ = isoflop_minimum(n[:3], predict(PLANTED, n[:3], c / (6 * n[:3])))   # not bracketed: best run
    assert n_best == pytest.approx(n[2])


def test_flops_per_token_counts_attention_and_output_layer():
    from genlab.nn.transformer import Transformer, TransformerConfig

    net = Transformer(TransformerConfig(vocab_size=65, block_size=64, n_layer=3, n_head=4, n_embd=64, bias=False))
    n = net.n_params(non_embedding=True)
    assert n == non_embedding_params(3, 64)
    assert flops_per_token(n, 3, 64, 64, 65) == 6 * n + 6 * 3 * 64 * 64 + 6 * 65 * 64
