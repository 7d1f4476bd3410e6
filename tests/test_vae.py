"""VAE mathematics (ELBO ≤ IWAE_k ≤ log p on a linear-Gaussian model with an analytic marginal, exactness at the true
posterior, closed-form KL), training on a 2D toy, and the logit-dequantized likelihood."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from genlab.data import toy2d
from genlab.models.cnf import LogitDequantize
from genlab.models.vae import VAE, kl_to_standard_normal, log_normal
from genlab.nn.gaussian_mlp import GaussianMLP


class LinearGaussian(nn.Module):
    """u ``[B, n]`` → (u Aᵀ + c, log-variance ``[B, m]``, constant in u): a linear encoder or decoder."""

    def __init__(self, a: torch.Tensor, c: torch.Tensor, logvar: torch.Tensor):
        super().__init__()
        self.a, self.c, self.logvar = nn.Parameter(a), nn.Parameter(c), nn.Parameter(logvar)

    def forward(self, u):
        return u @ self.a.T + self.c, self.logvar.expand(len(u), -1)


def linear_model(w: torch.Tensor, b: torch.Tensor, sigma2: float, encoder: nn.Module) -> tuple[VAE, torch.Tensor]:
    """VAE with decoder p(x|z) = N(Wz + b, σ²I) and the marginal's covariance WWᵀ + σ²I."""
    d_x, d_z = w.shape
    decoder = LinearGaussian(w, b, torch.full((d_x,), math.log(sigma2), dtype=w.dtype))
    model = VAE(encoder, decoder, latent_dim=d_z, lr=1e-3).double()
    return model, w @ w.T + sigma2 * torch.eye(d_x, dtype=w.dtype)


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def exact_posterior(w: torch.Tensor, b: torch.Tensor, sigma2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """p(z|x) = N(A x + c, Σ) of the linear-Gaussian model: Σ = (I + WᵀW/σ²)⁻¹, A = Σ Wᵀ/σ², c = −A b."""
    cov = torch.linalg.inv(torch.eye(w.shape[1], dtype=w.dtype) + w.T @ w / sigma2)
    a = cov @ w.T / sigma2
    return a, -a @ b, cov


def test_elbo_below_iwae_increasing_in_k_below_the_analytic_log_likelihood():
    """Non-optimal linear encoder (the exact posterior's map, perturbed, and too wide); all bounds on the same points,
    so per-point differences carry the comparisons."""
    torch.manual_seed(0)
    d_x, d_z, sigma2, n = 5, 2, 0.3, 20000
    w, b = torch.randn(d_x, d_z, dtype=torch.float64), torch.randn(d_x, dtype=torch.float64)
    a, c, cov_post = exact_posterior(w, b, sigma2)
    encoder = LinearGaussian(a + 0.2 * torch.randn(d_z, d_x, dtype=torch.float64),
                             c + 0.2 * torch.randn(d_z, dtype=torch.float64), cov_post.diag().log() + 0.5)
    model, cov = linear_model(w, b, sigma2, encoder)
    marginal = torch.distributions.MultivariateNormal(b, cov)
    x = marginal.sample((n,))
    with torch.no_grad():
        log_p = marginal.log_prob(x)
        elbo = model.elbo(x)
        iw = {k: model.iwae(x, k) for k in (1, 8, 64)}
    for lower, upper in [(elbo, iw[8]), (iw[8], iw[64]), (iw[64], log_p)]:   # each strictly below the next
        diff, se = mean_and_se(upper - lower)
        assert diff > 8 * se and diff > 0.1
    diff, se = mean_and_se(iw[1] - elbo)
    assert abs(diff) < 4 * se and se < 0.05   # L_1 = L: the same mean (the ELBO's KL is exact, not sampled)
    assert (iw[1] - elbo).std() > 1                             # two different estimators, not one value twice


def test_iwae_value_does_not_depend_on_the_chunk_size():
    torch.manual_seed(1)
    encoder = LinearGaussian(torch.randn(2, 3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                             torch.zeros(2, dtype=torch.float64))
    model, _ = linear_model(torch.randn(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0.5, encoder)
    x = torch.randn(7, 3, dtype=torch.float64)
    values = []
    for chunk in (3, 10, 64):
        torch.manual_seed(2)
        values.append(model.iwae(x, 10, chunk=chunk))
    torch.testing.assert_close(values[0], values[1], rtol=0, atol=1e-12)
    torch.testing.assert_close(values[0], values[2], rtol=0, atol=1e-12)


def test_exact_posterior_makes_the_bounds_tight_and_the_sampled_one_zero_variance():
    """W = Q diag(s) with orthonormal Q: p(z|x) = N(Σ Wᵀ(x − b)/σ², Σ), Σ = (I + WᵀW/σ²)⁻¹ diagonal, so a
    diagonal-Gaussian encoder can be exact; then log p(x, z) − log q(z|x) = log p(x) for every z, so every IWAE_k
    draw (k = 1 included) is log p(x) exactly. The ELBO's estimator with the KL in closed form is NOT zero-variance
    there: it keeps log p(x|z) sampled, log p(x|z) − KL = log p(x) + [log q(z|x) − log p(z) − KL], and the bracket
    only has mean 0. Its mean is log p(x) (the gap KL(q ‖ p(z|x)) is 0)."""
    torch.manual_seed(3)
    d_x, d_z, sigma2 = 6, 3, 0.2
    q, _ = torch.linalg.qr(torch.randn(d_x, d_z, dtype=torch.float64))
    w = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    b = torch.randn(d_x, dtype=torch.float64)
    a, c, cov_post = exact_posterior(w, b, sigma2)
    torch.testing.assert_close(cov_post, cov_post.diag().diag())   # WᵀW diagonal ⇒ so is Σ
    model, cov = linear_model(w, b, sigma2, LinearGaussian(a, c, cov_post.diag().log()))
    x = torch.distributions.MultivariateNormal(b, cov).sample((20,))
    log_p = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(model.iwae(x, 1), log_p, rtol=0, atol=1e-6)
        torch.testing.assert_close(model.iwae(x, 10, chunk=3), log_p, rtol=0, atol=1e-6)
        torch.testing.assert_close(model.log_prob(x), log_p, rtol=0, atol=1e-6)
        elbo = torch.stack([model.elbo(x) for _ in range(4000)])   # [R, 20]
    mean, se = elbo.mean(0), elbo.std(0) / math.sqrt(len(elbo))
    assert (abs(mean - log_p) < 5 * se).all()                      # unbiased for log p(x): the bound is tight
    diff, se_all = mean_and_se((elbo - log_p).flatten())
    assert abs(diff) < 4 * se_all
    assert (elbo.std(0) > 0.1).all()                               # yet not zero-variance (see the docstring)


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(4)
    mean, logvar = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    closed = kl_to_standard_normal(mean, logvar)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(200_000, 4, 3, dtype=torch.float64)
    log_ratio = log_normal(z, mean, logvar) - log_normal(z, torch.zeros_like(z), torch.zeros_like(z))   # [M, 4]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    assert (abs(mc - closed) < 4 * se).all()
    assert (closed > 0.1).all()   # non-trivial distributions, not KL = 0 on both sides
    std = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    reference = torch.distributions.kl_divergence(std, torch.distributions.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(closed, reference)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")   # no Trainer: logging is a no-op
def test_training_improves_held_out_iwae_nll_on_gaussians8():
    rng = np.random.default_rng(0)
    train = torch.from_numpy(toy2d.sample("gaussians8", 4000, rng))
    held_out = torch.from_numpy(toy2d.sample("gaussians8", 1000, rng))
    torch.manual_seed(5)
    model = VAE(GaussianMLP(2, 2, 64, 2), GaussianMLP(2, 2, 64, 2), latent_dim=2, lr=3e-3, iw_samples=64)

    def held_out_nll() -> float:
        torch.manual_seed(6)
        with torch.no_grad():
            return -model.log_prob(held_out).mean().item()

    before = held_out_nll()
    optimizer = model.configure_optimizers()
    for step in range(600):
        batch = train[torch.randint(0, len(train), (256,))]
        loss = model.training_step((batch,), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_nll()
    assert math.isfinite(after) and after < before - 0.8, (before, after)
    assert after > toy2d.true_nll("gaussians8", held_out.numpy(), 0.05) - 0.1   # a bound: not below the true NLL
    torch.manual_seed(6)
    with torch.no_grad():
        model.validation_step((held_out,), 0)
    assert model.val_nll.compute().item() == after                               # val/nll is −log_prob


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_logit_dequantized_log_prob_is_the_bound_of_z_plus_log_jacobian():
    torch.manual_seed(7)
    d_x, transform = 8, LogitDequantize(17, 0.05)
    model = VAE(GaussianMLP(d_x, 2, 32, 1), GaussianMLP(2, d_x, 32, 1), latent_dim=2, lr=1e-3, iw_samples=16,
                transform=transform)
    pixels = torch.randint(0, 17, (32, d_x))
    torch.manual_seed(8)
    with torch.no_grad():
        log_p = model.log_prob(pixels)
    torch.manual_seed(8)   # the same dequantization noise, then the same importance samples
    z, log_jac = transform(pixels, model.dtype)
    with torch.no_grad():
        bound = model.iwae(z, 16)
    assert torch.isfinite(log_p).all() and log_p.shape == (32,)
    torch.testing.assert_close(log_p, bound + log_jac)
    assert (log_jac.abs() > 1).all()   # the Jacobian term matters: it is not bound(z) alone
    torch.manual_seed(9)
    loss = model.training_step((pixels,), 0)
    torch.manual_seed(9)
    z, log_jac = transform(pixels, model.dtype)
    torch.testing.assert_close(loss, -(model.elbo(z) + log_jac).mean())   # training sees the same transform
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.sample(5).shape == (5, d_x) and model.sample(5, mean=True).shape == (5, d_x)
    assert model.reconstruct(z).shape == (32, d_x)


def test_gaussian_mlp_log_variance_is_softly_bounded():
    """Well inside (logvar_min, logvar_max) the head's raw output passes ≈ unchanged; far outside it saturates at the
    bounds with a gradient that does not vanish (a hard clamp's would be 0)."""
    net = GaussianMLP(3, 4, width=8, depth=1, logvar_min=-9.0, logvar_max=4.0)
    raw = torch.tensor([-1e3, -30.0, -2.0, 0.0, 30.0], requires_grad=True)
    out = net.soft_clamp(raw)
    assert (out >= -9.0).all() and (out <= 4.0 + 1e-5).all()   # float32: saturated ends round onto the bound
    torch.testing.assert_close(out[2:4], raw[2:4].detach(), rtol=0, atol=0.05)
    (grad,) = torch.autograd.grad(out.sum(), raw)
    assert (grad[1:] > 0).all() and (torch.diff(out)[1:] > 0).all() and (torch.diff(out) >= 0).all()
    mean, logvar = net(1e4 * torch.randn(5, 3))
    assert mean.shape == logvar.shape == (5, 4) and torch.isfinite(logvar.exp()).all() and (logvar.exp() > 0).all()
