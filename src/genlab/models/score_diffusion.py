"""Continuous-time VP diffusion for vector data, with likelihoods through the probability-flow ODE.

SDE (Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 11 and App. B): on diffusion time
τ ∈ [0, 1] (τ = 0 data, τ = 1 noise), dx = −½β(τ)x dτ + √β(τ) dw with linear β(τ) = β_min + τ(β_max − β_min), so
    x_τ | x0 ~ N(α(τ)x0, σ(τ)²I),  α(τ) = exp(−½∫₀^τ β) = exp(−¼τ²(β_max − β_min) − ½τβ_min),  σ(τ)² = 1 − α(τ)².

Training: ε-matching (Ho et al. 2020, eq. 14, in continuous time), x_τ = α x0 + σ ε, loss E ‖ε̂(x_τ, τ) − ε‖²:
denoising score matching (Song et al. eq. 7) with weight λ(τ) = σ(τ)², since the score of x_τ | x0 is −ε/σ and
the network's score estimate is s(x, τ) = −ε̂(x, τ)/σ(τ). Two choices of the time distribution:
* ``uniform``: τ ~ U(eps, 1), the weighting λ = σ² of Ho et al.;
* ``likelihood``: the likelihood weighting λ(τ) = β(τ) = g(τ)², under which the score-matching loss bounds
  the KL from the data to the model's SDE (Song, Durkan et al. 2021, "Maximum Likelihood Training of
  Score-Based Diffusion Models", Thm. 1). Its ε-form weight λ/σ² = β/σ² is taken into the sampling of τ
  (their §4, importance sampling): τ ~ q(τ) ∝ β(τ)/σ(τ)² on [eps, 1], and the loss stays ‖ε̂ − ε‖². With
  u(τ) = ∫₀^τ β = −2 log α, β/σ² dτ = du/(1 − e^{−u}) = d log(e^u − 1), so q's CDF is affine in
  log expm1(u(τ)) and its inverse is closed form (``sample_tau``).

Likelihood: the probability-flow ODE (Song et al. eq. 13), dx/dτ = −½β(τ)[x + ∇log p_τ(x)], has the same
marginals p_τ as the SDE and is a CNF, so ``genlab.evaluate.ode.log_likelihood`` gives its exact log-density
(exact trace or Hutchinson; Song et al. App. D.2). ``ode`` integrates s ∈ [0, 1] from N(0, I) at s = 0 to the
data at s = 1, so ``ProbabilityFlow`` re-parameterises τ(s) = 1 − (1 − eps)s: dx/ds = −(1 − eps)·dx/dτ.
"""
from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from genlab.evaluate import ode
from genlab.models.cnf import LogitDequantize


class VPSDE:
    """Schedule of the VP SDE with linear β; every method maps τ ``[B]`` (or a scalar tensor) to a tensor like τ."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, tau: torch.Tensor) -> torch.Tensor:
        return self.beta_min + tau * (self.beta_max - self.beta_min)

    def log_alpha(self, tau: torch.Tensor) -> torch.Tensor:
        """log α(τ) = −½∫₀^τ β(u) du, in closed form."""
        return -0.25 * tau**2 * (self.beta_max - self.beta_min) - 0.5 * tau * self.beta_min

    def alpha(self, tau: torch.Tensor) -> torch.Tensor:
        return self.log_alpha(tau).exp()

    def sigma(self, tau: torch.Tensor) -> torch.Tensor:
        """σ(τ) = √(1 − α²) via expm1: in float32, 1 − α² rounds to multiples of 2⁻²⁴ while σ(eps)² ≈ β_min·eps."""
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(tau)))

    def integral(self, tau: torch.Tensor) -> torch.Tensor:
        """u(τ) = ∫₀^τ β(v) dv = β_min·τ + ½(β_max − β_min)·τ² (= −2 log α(τ))."""
        return self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau**2

    def integral_inverse(self, u: torch.Tensor) -> torch.Tensor:
        """τ with u(τ) = u: the positive root of ½(β_max − β_min)τ² + β_min τ − u = 0, written without cancellation."""
        a = 0.5 * (self.beta_max - self.beta_min)
        return 2 * u / (self.beta_min + torch.sqrt(self.beta_min**2 + 4 * a * u))

    def sample_tau(self, n: int, eps: float, weighting: str, dtype=torch.float32, device=None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` diffusion times ``[n]`` on [eps, 1]: uniform, or from q(τ) ∝ β(τ)/σ(τ)² (``likelihood``) by
        inverting its CDF, F(τ) ∝ log expm1(u(τ)) − log expm1(u(eps))."""
        if weighting == "uniform":
            return eps + (1 - eps) * torch.rand(n, dtype=dtype, device=device, generator=generator)
        r = torch.rand(n, dtype=torch.float64, device=device, generator=generator)
        lo, hi = (math.log(math.expm1(self.integral(t))) for t in (eps, 1.0))   # Python floats: scalars of the schedule
        y = lo + r * (hi - lo)                         # log(e^u − 1), uniform between its values at eps and 1
        u = torch.nn.functional.softplus(y)            # u = log(1 + e^y)
        return self.integral_inverse(u).clamp(eps, 1.0).to(dtype)


class ProbabilityFlow(nn.Module):
    """The probability-flow ODE as a field ``(x [B, D], s [B]) → dx/ds [B, D]`` in ``genlab.evaluate.ode``'s convention.

    With τ(s) = 1 − (1 − eps)s and ∇log p_τ(x) ≈ −ε̂(x, τ)/σ(τ):
        dx/ds = −(1 − eps)·dx/dτ = (1 − eps)·½β(τ)·[x − ε̂(x, τ)/σ(τ)].
    Two approximations make the likelihood that of a model rather than of the SDE exactly:
    the prior at τ = 1 is taken as N(0, I), while the true marginal is N(α(1)x0, σ(1)²I) mixed over the data
    (α(1) ≈ 6.6e-3 for β_min = 0.1, β_max = 20); and the density is that of p_eps at τ = eps, not of the data at
    τ = 0 (integrating on to τ = 0 would divide ε̂ by σ(0) = 0).
    """

    def __init__(self, net: nn.Module, sde: VPSDE, eps: float):
        super().__init__()
        self.net, self.sde, self.eps = net, sde, eps

    def tau(self, s: torch.Tensor) -> torch.Tensor:
        """τ(s) = 1 − (1 − eps)s, held at eps past s = 1: dopri5 (torchdiffeq) steps beyond the last output time and
        interpolates back, and at τ < eps σ(τ) → 0 (then 1 − α² < 0 and σ is NaN for τ < 0)."""
        return (1 - (1 - self.eps) * s).clamp(min=self.eps)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        tau = self.tau(torch.as_tensor(s, dtype=x.dtype, device=x.device).expand(len(x)))
        score_term = self.net(x, tau) / self.sde.sigma(tau)[:, None]   # = −∇log p_τ(x)
        return (1 - self.eps) * 0.5 * self.sde.beta(tau)[:, None] * (x - score_term)


class ScoreDiffusion(pl.LightningModule):
    """VP diffusion over data ``[B, D]``; ``net(x [B, D], τ [B]) → ε̂ [B, D]`` predicts the noise of x_τ.

    ``transform`` (a ``LogitDequantize``) maps discrete pixels to the continuous space the diffusion lives in;
    training then sees freshly dequantized z and ``log_prob`` adds the transform's log-Jacobian, as the CNF does.
    ``exact_trace``: the divergence of validation log-likelihoods (exact, or Hutchinson with one probe per solve).
    ``weighting``: ``uniform`` (τ ~ U) or ``likelihood`` (τ importance-sampled for the likelihood weighting).
    """

    def __init__(self, net: nn.Module, lr: float, weight_decay: float = 0.0, beta_min: float = 0.1,
                 beta_max: float = 20.0, eps: float = 1e-5, rtol: float = 1e-5, atol: float = 1e-5,
                 transform: LogitDequantize | None = None, exact_trace: bool = True, weighting: str = "uniform"):
        super().__init__()
        if weighting not in ("uniform", "likelihood"):
            raise ValueError(f"weighting must be uniform or likelihood, got {weighting!r}")
        self.net, self.transform, self.sde = net, transform, VPSDE(beta_min, beta_max)
        self.lr, self.weight_decay, self.eps, self.rtol, self.atol = lr, weight_decay, eps, rtol, atol
        self.exact_trace, self.weighting = exact_trace, weighting
        self.val_nll = MeanMetric()   # the validation split: selection only, never test

    def pf_field(self) -> ProbabilityFlow:
        """The probability-flow ODE of the current network, usable by ``ode.log_likelihood`` and ``ode.sample``."""
        return ProbabilityFlow(self.net, self.sde, self.eps)

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """E_{τ, ε} ‖ε̂(α x0 + σ ε, τ) − ε‖² (summed over D, averaged over the batch) for x0 ``[B, D]``, τ drawn
        as ``weighting`` says."""
        tau = self.sde.sample_tau(len(x0), self.eps, self.weighting, x0.dtype, x0.device)
        noise = torch.randn_like(x0)
        x_tau = self.sde.alpha(tau)[:, None] * x0 + self.sde.sigma(tau)[:, None] * noise
        return (self.net(x_tau, tau) - noise).pow(2).sum(1).mean()

    def training_step(self, batch, batch_idx):
        x0 = batch[0]
        if self.transform is not None:
            x0, _ = self.transform(x0, self.dtype)
        loss = self.loss(x0)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def log_prob(self, x: torch.Tensor, exact: bool | None = None) -> torch.Tensor:
        """log p_eps(x) ``[B]`` under the PF ODE from N(0, I) (in the space of x: pixels for a dequantized model);
        ``exact=None`` follows ``exact_trace``, ``False`` is Hutchinson's unbiased estimate."""
        exact = self.exact_trace if exact is None else exact
        z, log_jac = self.transform(x, self.dtype) if self.transform is not None else (x, 0.0)
        return ode.log_likelihood(self.pf_field(), z, exact, self.rtol, self.atol) + log_jac

    @torch.no_grad()
    def sample(self, n: int, dim: int, sampler: str = "dopri5", nfe: int = 100, n_save: int = 2) -> torch.Tensor:
        """``n`` draws from N(0, I) at τ = 1 carried by the PF ODE to τ = eps; path ``[n_save, n, dim]``
        (in the transform's continuous space: ``transform.inverse`` gives pixel intensities)."""
        x0 = torch.randn(n, dim, dtype=self.dtype, device=self.device)
        return ode.sample(self.pf_field(), x0, sampler, nfe, self.rtol, self.atol, n_save)

    def validation_step(self, batch, batch_idx):
        self.val_nll.update(-self.log_prob(batch[0]))
        self.log("val/nll", self.val_nll, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
