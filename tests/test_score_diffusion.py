"""VP score diffusion: schedule, PF-ODE likelihood and samples of the exact Gaussian score, training, dequantization."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from genlab.data import toy2d
from genlab.evaluate import ode
from genlab.models.cnf import LogitDequantize
from genlab.models.score_diffusion import ScoreDiffusion, VPSDE
from genlab.nn.vector_field import VectorField

F64 = torch.float64


class GaussianEps(nn.Module):
    """The exact ε-predictor of data N(μ, Σ): x_τ ~ N(α μ, V(τ)), V = α²Σ + σ²I, so ∇log p_τ = −V⁻¹(x − α μ) and
    ε*(x, τ) = −σ ∇log p_τ = σ V⁻¹(x − α μ) (for Σ = s²I: σ(x − α μ) / (α²s² + σ²)). No parameters."""

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor, sde: VPSDE):
        super().__init__()
        self.register_buffer("mu", mu)
        self.register_buffer("cov", cov)
        self.sde = sde

    def variance(self, tau: torch.Tensor) -> torch.Tensor:
        """V(τ) ``[B, D, D]``."""
        a, s = self.sde.alpha(tau)[:, None, None], self.sde.sigma(tau)[:, None, None]
        return a**2 * self.cov + s**2 * torch.eye(len(self.mu), dtype=self.cov.dtype)

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        centred = x - self.sde.alpha(tau)[:, None] * self.mu
        return self.sde.sigma(tau)[:, None] * torch.linalg.solve(self.variance(tau), centred[..., None])[..., 0]


def gaussian_model(mu: torch.Tensor, cov: torch.Tensor, beta_max: float = 20.0, tol: float = 1e-7) -> ScoreDiffusion:
    model = ScoreDiffusion(GaussianEps(mu, cov, VPSDE(0.1, beta_max)), lr=1e-3, beta_max=beta_max, rtol=tol, atol=tol)
    return model.double()


def pullback_log_prob(model: ScoreDiffusion, x: torch.Tensor) -> torch.Tensor:
    """What the PF-ODE model of N(μ, Σ) computes, in closed form: all V(τ) share Σ's eigenvectors Q, so the flow from
    τ = eps to 1 is the affine x₁ = α(1)μ + Q diag(√(v₁/v_eps)) Qᵀ (x − α(eps)μ), v = α²λ + σ² per eigenvalue λ,
    and log p(x) = log N(x₁; 0, I) + ½ Σ log(v₁/v_eps) — N(0, I) as the prior, not the true N(α(1)μ, V(1))."""
    net, sde = model.net, model.sde
    lam, q = torch.linalg.eigh(net.cov)
    tau = torch.tensor([model.eps, 1.0], dtype=F64)
    a, s = sde.alpha(tau), sde.sigma(tau)
    v_eps, v_1 = a[0] ** 2 * lam + s[0] ** 2, a[1] ** 2 * lam + s[1] ** 2
    x1 = a[1] * net.mu + ((x - a[0] * net.mu) @ q) * (v_1 / v_eps).sqrt() @ q.T
    return ode.standard_normal_logpdf(x1) + 0.5 * (v_1 / v_eps).log().sum()


def random_gaussian(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """μ ``[d]`` and a well-conditioned full covariance ``[d, d]`` (d = 2: isotropic, s = 0.5)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=F64)
    if d == 2:
        return mu, 0.25 * torch.eye(2, dtype=F64)
    a = 0.5 * torch.randn(d, d, generator=g, dtype=F64)
    return mu, a @ a.T + 0.1 * torch.eye(d, dtype=F64)


def test_schedule_matches_the_closed_form_integral():
    sde = VPSDE(0.1, 20.0)
    tau = torch.linspace(0, 1, 101, dtype=F64)
    torch.testing.assert_close(sde.alpha(tau) ** 2 + sde.sigma(tau) ** 2, torch.ones_like(tau))
    # α(τ) = exp(−½∫₀^τ β) by the trapezoid rule on a fine grid (exact for a linear β)
    grid = torch.linspace(0, 0.7, 1001, dtype=F64)
    integral = torch.trapezoid(sde.beta(grid), grid)
    assert sde.alpha(torch.tensor(0.7, dtype=F64)).item() == pytest.approx(math.exp(-0.5 * integral.item()), rel=1e-10)
    # d log α / dτ = −½β(τ) by central differences
    h, inner = 1e-5, tau[1:-1]
    slope = (sde.log_alpha(inner + h) - sde.log_alpha(inner - h)) / (2 * h)
    torch.testing.assert_close(slope, -0.5 * sde.beta(inner), rtol=1e-8, atol=1e-8)
    assert sde.alpha(torch.tensor(0.0)).item() == 1.0 and sde.sigma(torch.tensor(0.0)).item() == 0.0
    # near τ = 0, σ² ≈ β_min τ ≈ 1e-6: float32 keeps its digits (1 − α² would round it to multiples of 6e-8)
    small = torch.tensor([1e-5, 1e-4])
    torch.testing.assert_close(sde.sigma(small).double(), sde.sigma(small.double()), rtol=1e-5, atol=0)


@pytest.mark.parametrize("d", [2, 5])
def test_pf_ode_likelihood_of_the_exact_gaussian_score(d):
    """log_prob of the exact ε* is (a) the closed-form pullback of N(0, I) through the PF flow to solver precision,
    and (b) the data density N(μ, Σ) up to the prior mismatch at τ = 1. That mismatch is
    log N(x₁; 0, I) − log N(x₁; α(1)μ, V(1)) ≈ −α(1) μ·x₁ + O(α(1)²) with α(1) = e^(−5.025) ≈ 6.6e-3 (β_max = 20),
    i.e. ~1e-2 per point for |μ| ~ 1, |x₁| ~ 2: with default β_max a 1e-3 agreement with N(μ, Σ) holds only for
    |μ| ≲ 0.1, hence (b) at 0.05, and the 1e-3 comparison in the next test at β_max = 40."""
    mu, cov = random_gaussian(d, seed=d)
    torch.manual_seed(d)
    model = gaussian_model(mu, cov)
    x = torch.distributions.MultivariateNormal(mu, cov).sample((48,))
    with torch.no_grad():
        log_p = model.log_prob(x)
    torch.testing.assert_close(log_p, pullback_log_prob(model, x), rtol=0, atol=1e-5)
    true = torch.distributions.MultivariateNormal(mu, cov).log_prob(x)
    assert (log_p - true).abs().max() < 0.05
    assert (log_p - true).abs().max() > 1e-4   # the mismatch is real: N(0, I) is not the true prior


def test_isotropic_gaussian_density_within_1e3_once_the_prior_mismatch_vanishes():
    """β_max = 40: α(1) = e^(−10.025) ≈ 4.4e-5, so the prior mismatch is ≲ 4.4e-5·|μ|·|x₁| ≈ 1e-4 and the PF-ODE
    log-likelihood is the data density N(μ, s²I) to 1e-3 per point (p_eps vs p_0 differs by O(σ(eps)²) ≈ 1e-6)."""
    mu, cov = random_gaussian(2, seed=2)
    model = gaussian_model(mu, cov, beta_max=40.0)
    x = mu + 0.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with torch.no_grad():
        log_p = model.log_prob(x)
    torch.testing.assert_close(log_p, torch.distributions.Normal(mu, 0.5).log_prob(x).sum(-1), rtol=0, atol=1e-3)


def test_hutchinson_log_prob_averages_to_the_exact_trace():
    """D = 5, full Σ: the Jacobian of dx/ds is non-diagonal, so a Rademacher probe's εᵀJε varies (for a diagonal one
    it is exactly the trace); the mean of many one-probe estimates is the exact-trace log p within 4 SE."""
    mu, cov = random_gaussian(5, seed=5)
    torch.manual_seed(5)   # the point and the probes
    model = gaussian_model(mu, cov, tol=1e-6)
    x = torch.distributions.MultivariateNormal(mu, cov).sample((1,))
    rows = x.expand(2000, 5)
    with torch.no_grad():
        exact = model.log_prob(x, exact=True)
        hutch = model.log_prob(rows, exact=False)
    assert hutch.std() > 0.1   # a real estimate, not the exact trace in disguise
    assert abs(hutch.mean() - exact[0]) < 4 * hutch.std() / math.sqrt(len(rows))


def test_dopri5_samples_of_the_exact_score_are_the_data_gaussian():
    mu, cov = torch.tensor([1.0, -0.5], dtype=F64), 0.25 * torch.eye(2, dtype=F64)
    model = gaussian_model(mu, cov, tol=1e-6)
    n = 4000
    torch.manual_seed(0)
    x = model.sample(n, 2, sampler="dopri5")[-1]
    torch.manual_seed(0)
    z = torch.randn(n, 2, dtype=F64)
    # per sample: the PF flow is the affine map inverse to pullback_log_prob's, x = α(eps)μ + √(v_eps/v₁)(z − α(1)μ)
    tau = torch.tensor([model.eps, 1.0], dtype=F64)
    a, v = model.sde.alpha(tau), model.net.variance(tau)[:, 0, 0]
    torch.testing.assert_close(x, a[0] * mu + (v[0] / v[1]).sqrt() * (z - a[1] * mu), rtol=0, atol=1e-4)
    # in distribution: mean μ (up to the α(1)·s·μ ≈ 3e-3·μ prior bias) and variance s² = 0.25, within ~4 SE
    torch.testing.assert_close(x.mean(0), mu, rtol=0, atol=4 * 0.5 / math.sqrt(n) + 0.01)
    torch.testing.assert_close(x.var(0), torch.full((2,), 0.25, dtype=F64), rtol=0, atol=4 * 0.25 * math.sqrt(2 / n))


def test_training_beats_the_untrained_model_and_a_fitted_gaussian():
    rng = np.random.default_rng(0)
    train = torch.from_numpy(toy2d.sample("gaussians8", 4096, rng))
    held_out = torch.from_numpy(toy2d.sample("gaussians8", 256, rng))
    torch.manual_seed(0)
    model = ScoreDiffusion(VectorField(2, 64, 3, "silu"), lr=3e-3, rtol=1e-4, atol=1e-4)
    model.log = lambda *args, **kwargs: None   # no Trainer attached

    def nll() -> float:
        return -model.log_prob(held_out).mean().item()

    untrained = nll()
    opt = model.configure_optimizers()
    losses = []
    for step in range(600):
        batch = train[torch.randint(0, len(train), (256,))]
        loss = model.training_step((batch,), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    trained = nll()
    mean, var = train.mean(0), train.var(0)
    gaussian = -torch.distributions.Normal(mean, var.sqrt()).log_prob(held_out).sum(-1).mean().item()   # ≈ 3.6
    true = toy2d.true_nll("gaussians8", held_out.numpy(), noise=0.05)                                    # ≈ 2.2
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
    assert trained < untrained - 1.0
    assert trained < gaussian - 0.3
    assert trained > true - 0.2   # a likelihood bound, not below the generating density (up to sampling noise)


def test_dequantized_log_prob_is_the_pf_likelihood_of_z_plus_the_log_jacobian():
    torch.manual_seed(0)
    deq = LogitDequantize(17, 0.05)
    model = ScoreDiffusion(VectorField(4, 16, 2, "silu"), lr=1e-3, rtol=1e-4, atol=1e-4, transform=deq)
    pixels = torch.randint(0, 17, (16, 4))
    with torch.no_grad():
        torch.manual_seed(1)
        log_p = model.log_prob(pixels)
        torch.manual_seed(1)
        z, log_jac = deq(pixels, model.dtype)
        by_hand = ode.log_likelihood(model.pf_field(), z, True, model.rtol, model.atol) + log_jac
    assert log_p.shape == (16,) and torch.isfinite(log_p).all()
    torch.testing.assert_close(log_p, by_hand)
    assert (log_jac != 0).all()   # the Jacobian term is there to be added


def test_likelihood_weighting_samples_tau_from_beta_over_sigma_squared():
    """``sample_tau(weighting="likelihood")`` draws from q(τ) ∝ β(τ)/σ(τ)² on [eps, 1]: its empirical CDF matches
    the numerically integrated one (Kolmogorov–Smirnov), and the uniform draws are not from it."""
    from scipy import stats as sps

    sde, eps = VPSDE(0.1, 20.0), 1e-3
    grid = torch.linspace(eps, 1, 400_001, dtype=F64)
    density = sde.beta(grid) / sde.sigma(grid) ** 2
    cdf = torch.cumulative_trapezoid(density, grid)
    cdf = torch.cat([torch.zeros(1, dtype=F64), cdf / cdf[-1]]).numpy()

    def F(t):
        return np.interp(t, grid.numpy(), cdf)

    g = torch.Generator().manual_seed(0)
    likelihood = sde.sample_tau(20_000, eps, "likelihood", F64, generator=g).numpy()
    uniform = sde.sample_tau(20_000, eps, "uniform", F64, generator=g).numpy()
    assert likelihood.min() >= eps and likelihood.max() <= 1
    assert sps.kstest(likelihood, F).pvalue > 0.01
    assert sps.kstest(uniform, F).pvalue < 1e-6
    assert np.allclose(sde.integral_inverse(sde.integral(grid[::1000])).numpy(), grid[::1000].numpy(), atol=1e-12)


def test_importance_sampled_loss_is_the_likelihood_weighted_objective():
    """Song, Durkan et al. 2021 §4: with τ ~ q ∝ β/σ², Z·E_q‖ε̂ − ε‖² = ∫ β/σ² E‖ε̂ − ε‖² dτ, the λ = β objective,
    which plain uniform τ estimates as (1 − eps)·E_U[β/σ² ‖ε̂ − ε‖²]. Both Monte Carlo estimates agree."""
    torch.manual_seed(0)
    sde, eps = VPSDE(0.1, 20.0), 1e-2
    net = VectorField(2, 16, 2, "silu").double()
    x0 = torch.randn(1, 2, dtype=F64).expand(200_000, 2)
    z = (sde.integral(torch.tensor(1.0, dtype=F64)).expm1().log() - sde.integral(torch.tensor(eps, dtype=F64)).expm1().log())

    def errors(weighting):
        tau = sde.sample_tau(len(x0), eps, weighting, F64)
        noise = torch.randn_like(x0)
        x_tau = sde.alpha(tau)[:, None] * x0 + sde.sigma(tau)[:, None] * noise
        with torch.no_grad():
            return tau, (net(x_tau, tau) - noise).pow(2).sum(1)

    _, e_q = errors("likelihood")
    tau_u, e_u = errors("uniform")
    w_u = (1 - eps) * sde.beta(tau_u) / sde.sigma(tau_u) ** 2 * e_u
    est_q, est_u = z * e_q.mean(), w_u.mean()
    se = math.sqrt((z**2 * e_q.var() + w_u.var()).item() / len(x0))
    assert abs(est_q - est_u) < 4 * se
    assert z * e_q.std() < w_u.std()     # the point of importance sampling: a lower-variance estimate
