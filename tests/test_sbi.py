"""Simulation-based inference: the simulators' likelihood and reference posteriors, C2ST, SBC, the conditional
coupling flow (exact log-det given a context; the unconditional path unchanged), NPE on Gaussian linear, and the
`sbi` stage's outputs."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from genlab.data.simulators import GaussianLinear, TwoMoons
from genlab.evaluate.sbi import c2st, ks_critical, sbc_ranks, sbc_test
from genlab.models.coupling_flow import CouplingFlow
from genlab.models.npe import NPE
from test_coupling_flow import perturb


def test_two_moons_likelihood_is_the_simulators_density():
    """The analytic p(x | θ) integrates to 1 over x and has the mean of simulated x."""
    task, rng = TwoMoons(), np.random.default_rng(0)
    theta = np.array([[0.3, -0.5]])
    sims = task.simulate(np.repeat(theta, 200_000, 0), rng)
    lo, hi = sims.min(0) - 0.02, sims.max(0) + 0.02
    g = [np.linspace(lo[d], hi[d], 600) for d in range(2)]
    xx = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 2)
    cell = (g[0][1] - g[0][0]) * (g[1][1] - g[1][0])
    dens = np.exp(task.log_likelihood(theta, xx))
    assert dens.sum() * cell == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose((dens[:, None] * xx).sum(0) * cell, sims.mean(0), atol=2e-3)


def test_two_moons_rejection_sampler_matches_the_grid_posterior():
    """The exact rejection sampler agrees with the likelihood × prior normalised on a fine θ grid: moments and the
    mass of each moon (θ₁ + θ₂ ≷ 0; the |θ₁ + θ₂| in the simulator makes the posterior two-moded)."""
    task, rng = TwoMoons(), np.random.default_rng(1)
    x = task.simulate(np.array([[0.4, 0.1]]), rng)[0]
    samples = task.posterior(x, 40_000, rng)
    assert (np.abs(samples) <= 1).all()
    g = np.linspace(-1, 1, 801)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    w = np.exp(task.log_likelihood(grid, x))
    w /= w.sum()
    for f in (lambda t: t[:, 0], lambda t: t[:, 1], lambda t: t[:, 0] ** 2, lambda t: t[:, 0] * t[:, 1],
              lambda t: (t.sum(1) > 0).astype(float)):
        se = f(samples).std() / math.sqrt(len(samples))
        assert f(samples).mean() == pytest.approx((w * f(grid)).sum(), abs=5 * se + 2e-3)
    assert 0.2 < (samples.sum(1) > 0).mean() < 0.8                     # both moons are there


def test_two_moons_reference_posterior_is_calibrated_against_the_simulator():
    """SBC of the reference sampler: θ* ~ prior, x ~ simulator, ranks among reference draws are uniform. A sampler
    that keeps one moon only (s = +|u|) fails the same test."""
    task, rng = TwoMoons(), np.random.default_rng(2)
    theta = task.prior(400, rng)
    x = task.simulate(theta, rng)
    post = np.stack([task.posterior(xo, 100, rng) for xo in x])
    assert min(sbc_test(sbc_ranks(theta, post, rng))["ks_p"]) > 0.01
    one_moon = post.copy()
    flip = one_moon.sum(2) < 0                                              # reflect θ ↦ (−θ₂, −θ₁): the other moon
    one_moon[flip] = -one_moon[flip][:, ::-1]
    assert min(sbc_test(sbc_ranks(theta, one_moon, rng))["ks_p"]) < 1e-3


def test_c2st_is_one_half_on_one_distribution_and_one_on_separated_ones():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))
    assert c2st(a, b) == pytest.approx(0.5, abs=0.05)
    assert c2st(a, b + 6.0) > 0.98
    assert 0.6 < c2st(a, b + 1.0) < 0.8          # overlapping: Φ(½) ≈ 0.69 is the Bayes accuracy


def test_sbc_accepts_the_exact_posterior_and_rejects_an_overconfident_one():
    task, rng = GaussianLinear(3), np.random.default_rng(4)
    theta = task.prior(1000, rng)
    x = task.simulate(theta, rng)
    mean, var = task.posterior_mean_var(x)
    noise = rng.standard_normal((1000, 100, 3))
    exact = sbc_test(sbc_ranks(theta, mean[:, None] + math.sqrt(var) * noise, rng))
    shrunk = sbc_test(sbc_ranks(theta, mean[:, None] + math.sqrt(0.25 * var) * noise, rng))   # covariance × 0.25
    crit = ks_critical(1000, 3)
    assert max(exact["ks_stat"]) < crit and min(exact["ks_p"]) > 0.01 and min(exact["chi2_p"]) > 0.01
    assert min(shrunk["ks_stat"]) > crit and max(shrunk["ks_p"]) < 1e-6 and max(shrunk["chi2_p"]) < 1e-6
    assert np.asarray(shrunk["counts"])[:, [0, -1]].min() > 2 * 100   # ∪-shaped: θ* falls outside the draws


def test_conditional_coupling_log_det_is_the_jacobian_log_det_given_a_context():
    torch.manual_seed(5)
    flow = perturb(CouplingFlow(3, n_layers=4, width=16, depth=2, lr=1e-3, context_dim=2), 0.5).double()
    theta, ctx = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    z, log_det = flow(theta, ctx)
    assert (z - flow(theta, ctx + 1.0)[0]).abs().max() > 1e-2                  # the context changes the map
    torch.testing.assert_close(flow.inverse(z, ctx), theta)
    for i in range(len(theta)):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None], ctx[i:i + 1])[0][0], theta[i])
        sign, logabsdet = torch.linalg.slogdet(jac)
        assert sign.item() == 1.0 and log_det[i].item() == pytest.approx(logabsdet.item(), abs=1e-8)


# parameters and outputs of the unconditional flow built by the code before contexts existed (same seed, same calls)
UNCONDITIONAL_PARAMETERS_SHA256 = "78bda5dd1d8613f40b0ad7fc9f6e96da7899bdf90c20ac2521ce8542c94c8d13"
UNCONDITIONAL_Z0 = [-0.7890955209732056, 0.7543946504592896, 0.10480347275733948, 0.19999653100967407]
UNCONDITIONAL_LOG_DET = [-1.1739146709442139, -1.0798306465148926, -1.297965168952942]


@pytest.mark.parametrize("context_dim", [None, 0])
def test_unconditional_flow_is_unchanged_by_the_context_option(context_dim):
    torch.manual_seed(0)
    kwargs = {} if context_dim is None else {"context_dim": context_dim}
    flow = CouplingFlow(4, n_layers=4, width=16, depth=2, lr=1e-3, **kwargs)
    torch.manual_seed(1)
    perturb(flow, 0.3)
    x = torch.randn(8, 4)
    h = hashlib.sha256()
    for p in flow.state_dict().values():
        h.update(p.detach().numpy().tobytes())
    assert h.hexdigest() == UNCONDITIONAL_PARAMETERS_SHA256
    z, log_det = flow(x)
    assert z[0].tolist() == pytest.approx(UNCONDITIONAL_Z0, abs=1e-6)
    assert log_det[:3].tolist() == pytest.approx(UNCONDITIONAL_LOG_DET, abs=1e-6)


def test_npe_recovers_the_gaussian_linear_posterior():
    """Maximum likelihood on simulations (Papamakarios & Murray 2016): q(θ | x) matches N(x/2, 0.05 I) in mean and
    spread at held-out observations."""
    torch.manual_seed(6)
    task, rng = GaussianLinear(2), np.random.default_rng(6)
    theta = torch.as_tensor(task.prior(4000, rng), dtype=torch.float32)
    x = torch.as_tensor(task.simulate(theta.numpy(), rng), dtype=torch.float32)
    npe = NPE(2, 2, n_layers=2, width=32, depth=2, lr=3e-3, theta_stats=(theta.mean(0), theta.std(0)),
              x_stats=(x.mean(0), x.std(0)))
    opt = torch.optim.Adam(npe.parameters(), lr=3e-3)
    for step in range(400):
        idx = torch.randint(0, len(theta), (256,))
        loss = -npe.posterior_log_prob(theta[idx], x[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for xo in np.array([[0.3, -0.2], [-0.5, 0.1], [0.0, 0.6]]):
        draws = npe.sample_posterior(torch.as_tensor(xo, dtype=torch.float32), 4000).numpy()
        mean, var = task.posterior_mean_var(xo)
        np.testing.assert_allclose(draws.mean(0), mean, atol=0.04)
        np.testing.assert_allclose(draws.std(0), math.sqrt(var), rtol=0.15)


def test_sbi_stage_writes_metrics_claims_figures_and_models(make_cfg, tmp_path, monkeypatch):
    from genlab.io import load_model, read_json
    from genlab.report.conclusions import Claim
    from genlab.stages import sbi

    monkeypatch.setenv("GENLAB_WORKERS", "1")
    cfg = make_cfg(tmp_path, "seeds=[0,1,2]", "logger.wandb.mode=disabled")
    sbi.run(cfg)
    m = read_json(tmp_path / "reports" / "metrics" / "sbi.json")
    for name in cfg.model.sbi.tasks:
        t = m[name]
        assert len(t["per_seed"]["c2st_mean"]) == 3 and 0 <= t["c2st"] <= 1 and 0 <= t["c2st_prior"] <= 1
        assert len(t["per_seed"]["sbc_ks_p"][0]) == t["theta_dim"]
        load_model(tmp_path / "models" / "sbi" / f"{name}.pt", expect_config=sbi.model_config(cfg, name))
        assert (tmp_path / "reports" / "figures" / "sbi" / f"{name}_posterior.png").exists()
    assert (tmp_path / "reports" / "figures" / "sbi" / "sbc_ranks.png").exists()
    ids = {r["id"] for r in m["conclusions"]}
    assert {"sbi_two_moons_npe_calibrated", "sbi_gaussian_linear_npe_calibrated"} <= ids
    for row in m["conclusions"]:
        assert Claim.from_row(row).verdict == row["verdict"] and row["n_seeds"] == 3
    csv = (tmp_path / "reports" / "plots" / "sbi" / "c2st.csv").read_text().splitlines()
    assert csv[0] == "task,estimator,c2st,ci_low,ci_high" and len(csv) == 1 + 3 * len(cfg.model.sbi.tasks)
