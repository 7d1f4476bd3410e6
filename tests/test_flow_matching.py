"""Flow matching: conditional paths and targets, OT coupling, guidance, sampler NFE, and the stage end to end."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from genlab.evaluate.ode import NFE, sample
from genlab.models import matchers
from genlab.models.flow_matching import FlowMatching
from genlab.nn.vector_field import VectorField


@pytest.mark.parametrize("coupling", matchers.COUPLINGS)
def test_path_and_target_at_the_ends_and_target_is_the_path_velocity(coupling):
    torch.manual_seed(0)
    m = matchers.build(coupling, sigma=0.0, sigma_min=0.01)
    x0, x1, eps = torch.randn(3, 16, 2).unbind(0)
    ones, zeros = torch.ones(16), torch.zeros(16)
    sigma_min = 0.01 if coupling == "gaussian" else 0.0
    torch.testing.assert_close(m.path(x0, x1, zeros, eps), x0)                      # t = 0: the noise
    torch.testing.assert_close(m.path(x0, x1, ones, eps), x1 + sigma_min * x0)      # t = 1: data (± σ_min)
    torch.testing.assert_close(m.target(x0, x1), x1 - (1 - sigma_min) * x0)
    t, h = torch.full((16,), 0.37), 1e-3                                            # u_t = d/dt x_t
    velocity = (m.path(x0, x1, t + h, eps) - m.path(x0, x1, t - h, eps)) / (2 * h)
    torch.testing.assert_close(velocity, m.target(x0, x1), rtol=1e-3, atol=1e-3)


def test_icfm_noise_sigma_enters_the_path_only():
    m = matchers.IndependentCFM(sigma=0.5)
    x0, x1, eps = torch.zeros(4, 2), torch.ones(4, 2), torch.full((4, 2), 2.0)
    torch.testing.assert_close(m.path(x0, x1, torch.full((4,), 0.5), eps), torch.full((4, 2), 1.5))
    torch.testing.assert_close(m.target(x0, x1), torch.ones(4, 2))


@pytest.mark.parametrize("t_sampling", ["uniform", "logit_normal"])
def test_training_times_follow_their_distribution(t_sampling):
    """U[0, 1], or t = sigmoid(n), n ~ N(0, 1) (Esser et al. 2024): logit(t) has mean 0 and sd 1 (5σ bounds)."""
    torch.manual_seed(0)
    t, _, _ = matchers.IndependentCFM(0.0, t_sampling).sample(torch.randn(20000, 2), torch.randn(20000, 2))
    assert ((t > 0) & (t < 1)).all()
    if t_sampling == "uniform":
        assert t.mean().item() == pytest.approx(0.5, abs=5 * 0.289 / 20000 ** 0.5)
        assert t.var().item() == pytest.approx(1 / 12, abs=0.003)
    else:
        logit = torch.log(t / (1 - t))
        assert logit.mean().item() == pytest.approx(0.0, abs=5 / 20000 ** 0.5)
        assert logit.std().item() == pytest.approx(1.0, abs=0.03)
        assert ((t > 0.25) & (t < 0.75)).float().mean() > 0.7           # vs 0.5 for uniform: the middle is favoured


def test_ot_coupling_is_the_exact_minimiser_and_beats_random_pairing():
    torch.manual_seed(1)
    cost = lambda x0, x1: (x0 - x1).pow(2).sum(1).mean().item()
    x0, x1 = torch.randn(6, 2), torch.randn(6, 2) + 1.0
    best = min(cost(x0[list(p)], x1) for p in itertools.permutations(range(6)))
    assert cost(matchers.OTCFM().pair(x0, x1), x1) == pytest.approx(best, rel=1e-6)
    x0, x1 = torch.randn(256, 2), torch.randn(256, 2) * 0.5 + 2.0
    paired = matchers.OTCFM().pair(x0, x1)
    assert cost(paired, x1) < 0.8 * cost(x0, x1)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, x0.tolist()))   # a permutation of the noise
    blocked = matchers.OTCFM(block=64).pair(x0, x1)                  # each block of 64 is its own exact plan
    for start in range(0, 256, 64):
        part = slice(start, start + 64)
        assert sorted(map(tuple, blocked[part].tolist())) == sorted(map(tuple, x0[part].tolist()))
        assert cost(blocked[part], x1[part]) == pytest.approx(cost(matchers.OTCFM().pair(x0[part], x1[part]), x1[part]))
    assert cost(paired, x1) <= cost(blocked, x1) < 0.8 * cost(x0, x1)


class Spy(nn.Module):
    """v(x, t, y) = x·(y+1) + t; records the labels it sees and counts nothing itself."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.labels: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        self.labels.append(y)
        return self.w * x * (y + 1).view(-1, *[1] * (x.dim() - 1)).float() + t.view(-1, *[1] * (x.dim() - 1))


def test_guidance_w0_is_the_conditional_prediction_and_w_combines_in_one_call():
    net = Spy()
    fm = FlowMatching(net, matchers.IndependentCFM(), 1e-3, n_classes=10)
    x, t, y = torch.randn(4, 3), torch.rand(4), torch.tensor([0, 3, 7, 9])
    torch.testing.assert_close(fm.velocity(x, t, y, w=0.0), net(x, t, y))
    with NFE(net) as nfe:
        guided = fm.velocity(x, t, y, w=2.0)
    assert nfe.n == 1                                                    # cond + uncond batched together
    null = torch.full_like(y, 10)
    torch.testing.assert_close(guided, 3.0 * net(x, t, y) - 2.0 * net(x, t, null))


def test_label_dropout_rate_in_training():
    torch.manual_seed(2)
    net = Spy()
    fm = FlowMatching(net, matchers.IndependentCFM(), 1e-3, n_classes=10, label_dropout=0.2)
    fm.training_step((torch.randn(20000, 2), torch.randint(0, 10, (20000,))), 0)
    dropped = (net.labels[-1] == 10).float().mean().item()
    assert dropped == pytest.approx(0.2, abs=0.015)


@pytest.mark.parametrize("sampler, nfe", [("euler", 1), ("euler", 7), ("midpoint", 2), ("midpoint", 10)])
def test_samplers_call_the_network_nfe_times_and_integrate_correctly(sampler, nfe):
    """dx/dt = −x: Euler gives x0·(1 − h)^n, midpoint x0·(1 − h + h²/2)^n with h = 1/n steps."""
    class Decay(nn.Module):
        def forward(self, x, t):
            return -x

    net, x0 = Decay(), torch.ones(3, 2)
    with NFE(net) as count:
        x1 = sample(net, x0, sampler, nfe)[-1]
    assert count.n == nfe
    steps = nfe if sampler == "euler" else nfe // 2
    h = 1.0 / steps
    factor = (1 - h) ** steps if sampler == "euler" else (1 - h + h * h / 2) ** steps
    torch.testing.assert_close(x1, x0 * factor)


def test_dopri5_sampler_is_accurate_and_guided_sampling_counts_one_call_per_step():
    class Decay(nn.Module):
        def forward(self, x, t):
            return -x

    x1 = sample(Decay(), torch.ones(2, 2), "dopri5", rtol=1e-8, atol=1e-8)[-1]
    torch.testing.assert_close(x1, torch.full((2, 2), float(np.exp(-1.0))), rtol=1e-6, atol=1e-6)
    net = Spy()
    fm = FlowMatching(net, matchers.IndependentCFM(), 1e-3, n_classes=10)
    with NFE(net) as count:
        out = fm.sample(torch.arange(10), (3,), "euler", nfe=5, w=1.5)
    assert count.n == 5 and out.shape == (2, 10, 3)
    with pytest.raises(ValueError, match="even"):
        sample(net, torch.ones(1, 1), "midpoint", 3)


def test_fm_regression_learns_a_translation_field():
    """N(0, I) → N(c, I): the marginal field at t = ½ is exactly c (for OT and independent coupling alike:
    E[x1 − x0 | x_t] = c + (2t−1)/((1−t)² + t²)·(x − t·c)); regression recovers it."""
    torch.manual_seed(3)
    c = torch.tensor([1.5, -0.5])
    net = VectorField(2, 16, 1, "silu")
    fm = FlowMatching(net, matchers.OTCFM(), 1e-2)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(300):
        loss = fm.training_step((torch.randn(256, 2) + c,), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        v = net(torch.randn(512, 2) + 0.5 * c, torch.full((512,), 0.5))
    torch.testing.assert_close(v.mean(0), c, atol=0.1, rtol=0.0)


def test_flow_matching_stage_smoke(make_cfg, prepared, tmp_path):
    from genlab.io import load_arrays, read_json, save_model
    from genlab.nn.classifiers import build
    from genlab.stages import classifier, cnf, flow_matching

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}", "model.flow_matching.mnist.guidance_ws=[0,1,3]")
    save_model(tmp_path / "models" / "classifier" / "cnn.pt", build("cnn", cfg.model.classifier.cnn).state_dict(),
               classifier.model_config(cfg, "cnn"))                         # an untrained CNN: plumbing only
    cnf.run(cfg)
    flow_matching.run(cfg)
    metrics = read_json(tmp_path / "reports" / "metrics" / "flow_matching.json")
    assert set(metrics["couplings"]) == set(cfg.model.flow_matching.couplings)
    assert metrics["fm_toy"]["coupling"] == cfg.model.flow_matching.coupling
    assert metrics["fm_toy"]["dataset"] == read_json(tmp_path / "reports" / "metrics" / "cnf.json")["cnf_toy"]["dataset"]
    assert "fm_over_cnf_time_to_nll" in metrics and metrics["fm_toy"]["test_nll"] > 0
    assert metrics["fm_toy"]["n_seeds"] == len(cfg.seeds) and len(metrics["fm_toy"]["per_seed_test_nll"]) == len(cfg.seeds)
    assert [r["delta"] for r in metrics["fm_toy"]["time_to_true_nll"]] == list(cfg.model.flow_matching.nll_deltas)
    assert {c["id"] for c in metrics["conclusions"]} >= {"fm_toy_nll_below_cnf"}
    assert metrics["fm_toy"]["threads"] == cfg.model.flow_matching.toy.threads == 1
    arrays, meta = load_arrays(tmp_path / "models" / "flow_matching" / "samples")
    m = cfg.model.flow_matching.mnist
    # w chosen on validation runs under the training seed; test runs are fresh, under another seed
    assert [r["guidance_w"] for r in meta["selection"]] == [0.0, 1.0, 3.0]
    assert all(r["seed"] == cfg.seed and r["n"] == m.n_select for r in meta["selection"])
    assert all(r["seed"] == cfg.seed + 10_000 for r in meta["runs"])
    assert meta["best_w"] == metrics["mnist"]["guidance_w"] and meta["main_steps"] == m.nfe
    keys = {r["key"] for r in meta["runs"]}
    assert {f"euler{m.nfe}_w0", f"euler{m.nfe}_w{meta['best_w']:g}"} | {f"euler{k}_w0" for k in m.sweep_nfe} <= keys
    for r in meta["runs"] + meta["selection"]:
        assert r["nfe"] == r["steps"] * (2 if r["guidance_w"] else 1)      # a guided step is 2 evaluations
    for r in meta["runs"]:
        x, y = arrays[f"{r['key']}_x"], arrays[f"{r['key']}_y"]
        assert x.dtype == np.float32 and x.shape[1:] == (28, 28) and 0 <= x.min() and x.max() <= 1
        assert y.dtype == np.int64 and len(y) == len(x) == r["n"]
    figures = {p.name for p in (tmp_path / "reports" / "figures" / "flow_matching").iterdir()}
    assert {"toy_density.png", "toy_trajectories.png", "mnist_samples_w0.png", f"mnist_samples_w{meta['best_w']:g}.png",
            "mnist_nfe_sweep.png"} <= figures
