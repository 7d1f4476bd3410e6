"""Affine coupling flow (RealNVP): identity at init, exact log-determinants, invertibility, a normalised density,
maximum likelihood beating a Gaussian, and the dequantized density in pixel space."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from genlab.data import toy2d
from genlab.evaluate.ode import standard_normal_logpdf
from genlab.models.cnf import LogitDequantize
from genlab.models.coupling_flow import AffineCoupling, CouplingFlow
from genlab.nn.coupling import CouplingNet


def perturb(flow: CouplingFlow, std: float) -> CouplingFlow:
    """Random non-zero last layers (they start at zero, where every coupling is the identity)."""
    with torch.no_grad():
        for layer in flow.layers:
            layer.net.out.weight.normal_(0, std)
            layer.net.out.bias.normal_(0, std)
    return flow


def test_fresh_flow_is_the_identity_and_its_density_the_base():
    torch.manual_seed(0)
    flow = CouplingFlow(6, n_layers=4, width=16, depth=2, lr=1e-3)
    x = 3 * torch.randn(32, 6)
    z, log_det = flow(x)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(32))
    torch.testing.assert_close(flow.log_prob(x), standard_normal_logpdf(x))
    assert flow.layers[0].mask.tolist() == [1, 0, 1, 0, 1, 0] and flow.layers[1].mask.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("dim", [2, 6])
def test_log_det_is_the_log_abs_det_of_the_jacobian(dim):
    torch.manual_seed(dim)
    flow = perturb(CouplingFlow(dim, n_layers=4, width=16, depth=2, lr=1e-3), std=0.5).double()
    x = 1.5 * torch.randn(5, dim, dtype=torch.float64)
    for name, fn in [("coupling", flow.layers[1]), ("flow", flow)]:
        _, log_det = fn(x)
        assert log_det.abs().min() > 1e-2, name   # non-trivial: the scales are not all zero
        for i in range(len(x)):
            jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], x[i])
            sign, logabsdet = torch.linalg.slogdet(jac)
            assert sign.item() == 1.0, name   # det = exp(Σ s) > 0: orientation preserving
            assert log_det[i].item() == pytest.approx(logabsdet.item(), abs=1e-6), name


def test_coupling_leaves_the_conditioning_half_unchanged():
    torch.manual_seed(3)
    coupling = AffineCoupling(torch.tensor([1.0, 0.0, 0.0, 1.0]), CouplingNet(4, width=16, depth=2))
    torch.nn.init.normal_(coupling.net.out.weight, std=0.5)
    x = torch.randn(10, 4)
    y, _ = coupling(x)
    assert torch.equal(y[:, [0, 3]], x[:, [0, 3]])
    assert (y[:, [1, 2]] - x[:, [1, 2]]).abs().min() > 0


def test_inverse_undoes_forward_and_sample_runs_the_inverse():
    torch.manual_seed(4)
    flow = perturb(CouplingFlow(6, n_layers=6, width=32, depth=2, lr=1e-3), std=0.1)
    x = 2 * torch.randn(256, 6)
    z, _ = flow(x)
    assert (z - x).abs().max() > 1.0   # a non-trivial map
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flow(flow.inverse(x))[0], x, atol=1e-5, rtol=1e-5)
    torch.manual_seed(5)
    samples = flow.sample(100)
    torch.manual_seed(5)
    assert samples.shape == (100, 6)
    torch.testing.assert_close(flow(samples)[0], torch.randn(100, 6), atol=1e-5, rtol=1e-5)


def test_density_integrates_to_one_in_2d():
    torch.manual_seed(6)
    flow = perturb(CouplingFlow(2, n_layers=4, width=32, depth=2, lr=1e-3), std=0.2).double()
    h = 0.04
    grid = torch.arange(-10, 10, h, dtype=torch.float64) + h / 2   # midpoint rule on [-10, 10]²
    xy = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        p, base = flow.log_prob(xy).exp(), standard_normal_logpdf(xy).exp()
    assert (p - base).abs().sum().item() * h * h > 0.5   # far from the base density (L1 distance ≤ 2)
    assert p.sum().item() * h * h == pytest.approx(1.0, abs=1e-3)


@pytest.mark.filterwarnings("ignore:You are trying to .self.log")   # no Trainer: logging is a no-op
def test_maximum_likelihood_beats_the_best_gaussian_on_gaussians8():
    rng = np.random.default_rng(0)
    train, test = toy2d.sample("gaussians8", 4000, rng), toy2d.sample("gaussians8", 2000, rng)
    gauss_nll = -multivariate_normal(train.mean(0), np.cov(train.T, bias=True)).logpdf(test).mean()
    torch.manual_seed(7)
    flow = CouplingFlow(2, n_layers=8, width=64, depth=2, lr=3e-3)
    opt = flow.configure_optimizers()
    x = torch.from_numpy(train)
    for step in range(400):
        loss = flow.training_step((x[torch.randint(0, len(x), (256,))],), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        flow_nll = -flow.log_prob(torch.from_numpy(test)).mean().item()
    assert math.isfinite(flow_nll)
    assert flow_nll < gauss_nll - 0.3, (flow_nll, gauss_nll)


def test_dequantized_log_prob_is_flow_log_prob_of_logits_plus_log_jacobian():
    torch.manual_seed(8)
    transform = LogitDequantize(17, 0.05)
    flow = perturb(CouplingFlow(8, n_layers=4, width=16, depth=2, lr=1e-3, transform=transform), std=0.3)
    k = torch.randint(0, 17, (64, 8))
    k[0], k[1] = 0, 16   # the extreme pixel values
    torch.manual_seed(9)
    log_p = flow.log_prob(k)
    torch.manual_seed(9)
    z, log_jac = transform(k, flow.dtype)
    flow.transform = None
    expected = flow.log_prob(z) + log_jac
    flow.transform = transform
    assert log_p.shape == (64,) and torch.isfinite(log_p).all()
    torch.testing.assert_close(log_p, expected)
    assert not torch.equal(flow.log_prob(k), log_p)   # fresh dequantization noise per call
