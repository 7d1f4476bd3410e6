"""DDPM (Ho et al. 2020), classifier-free guidance (Ho & Salimans 2022), DDIM sampling (Song et al. 2021).

Parameterisation (``prediction``): the network predicts ε (Ho et al.) or v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0
(Salimans & Ho 2022, §4 and App. D). Both give x̂0 and ε̂ in closed form:
    ε:  x̂0 = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t                  — divides by √ᾱ_t ≈ 1e−3 at t = T (cosine, T = 50),
    v:  x̂0 = √ᾱ_t·x_t − √(1 − ᾱ_t)·v̂,  ε̂ = √(1 − ᾱ_t)·x_t + √ᾱ_t·v̂   — bounded for every t,
so with ε the first steps of a short DDIM run amplify the network's error ~1000× (then x̂0 is clipped to
noise), while v stays well conditioned: the reason v is the default for 10-step sampling.

Loss weighting: L_simple weights every t equally in ε-space, where the nearly clean steps (high SNR) have the
largest error and dominate the gradient while the class and layout are decided at low SNR. ``snr_gamma = γ``
applies Min-SNR-γ (Hang et al. 2023, eq. 8): in x0-error terms w_t = min(SNR_t, γ), i.e. min(SNR_t, γ)/SNR_t on
the ε-loss and min(SNR_t, γ)/(SNR_t + 1) on the v-loss, SNR_t = ᾱ_t / (1 − ᾱ_t); ``snr_gamma = 0`` is the plain
(unweighted) MSE of the predicted quantity.

Notation (Ho et al. 2020): steps t = 1…T, β_t the noise schedule, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s.
Buffers are indexed ``[t − 1]``; the network sees continuous time ``t / T`` ∈ (0, 1] (``genlab.nn.unet``).
Images live in [−1, 1]: ``x0 = 2·pixel − 1``, shape ``[B, 1, 28, 28]``.

Guidance convention (stated once, used everywhere here):
    ε̃(x, c) = (1 + w)·ε(x, c) − w·ε(x, ∅)
w = 0 is the purely conditional model, w > 0 pushes away from the unconditional one; in the GLIDE
convention ε̃ = ε(x, ∅) + s·(ε(x, c) − ε(x, ∅)) this is s = w + 1. For w ≠ 0 the conditional and
unconditional inputs go through the network as ONE batch of 2B, counted as one network evaluation (NFE).
"""
from __future__ import annotations

import copy
import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from genlab.models.optim import adamw_one_cycle
from genlab.nn import rng


def linear_betas(T: int) -> torch.Tensor:
    """Ho et al. 2020 §4: β linear from 1e-4 to 0.02 at T = 1000; endpoints scaled by 1000/T for other T
    (Nichol & Dhariwal 2021's code), so ᾱ_T stays ≈ 0. Returns ``[T]`` float64 on the CPU (``Diffusion`` keeps
    the schedule as buffers, which follow the module's device)."""
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)   # device: cpu-only


def cosine_betas(T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021 eq. 17: ᾱ_t = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)); β_t = 1 − ᾱ_t/ᾱ_{t−1},
    clipped at 0.999. Returns ``[T]`` float64 on the CPU (as ``linear_betas``)."""
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2   # device: cpu-only
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


class Diffusion(pl.LightningModule):
    """DDPM around ``net(x [B,1,28,28], t [B] in [0,1], y [B]) → ε̂ or v̂ [B,1,28,28]``.

    ``net`` is trained; ``ema`` (its exponential moving average, decay ``ema_decay``) is what samples."""

    def __init__(self, net: nn.Module, T: int = 1000, schedule: str = "cosine", p_uncond: float = 0.2,
                 lr: float = 2e-3, ema_decay: float = 0.999, weight_decay: float = 0.0, snr_gamma: float = 0.0,
                 prediction: str = "eps"):
        super().__init__()
        self.net, self.T, self.p_uncond, self.lr, self.weight_decay = net, T, p_uncond, lr, weight_decay
        self.snr_gamma, self.prediction = snr_gamma, prediction
        self.ema, self.ema_decay = copy.deepcopy(net).requires_grad_(False), ema_decay
        # the schedule is computed once on the CPU in float64; as buffers its values follow the module's device
        betas = {"linear": linear_betas, "cosine": cosine_betas}[schedule](T)
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64, device=betas.device), alpha_bar[:-1]])
        snr = alpha_bar / (1 - alpha_bar)
        for name, value in {"betas": betas, "alpha_bar": alpha_bar, "alpha_bar_prev": alpha_bar_prev,
                            "loss_weight": snr.clamp(max=snr_gamma) / (snr + (prediction == "v")) if snr_gamma > 0
                            else torch.ones(T, device=betas.device),
                            # Ho et al. eq. 7: posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I)
                            "post_var": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
                            "post_c0": alpha_bar_prev.sqrt() * betas / (1 - alpha_bar),
                            "post_ct": (1 - betas).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar)}.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.history: list[dict] = []

    # --- forward process and posterior ---------------------------------------------------

    @staticmethod
    def _at(buf: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Buffer value for integer steps ``t`` ``[B]`` (1…T) as ``[B, 1, 1, 1]``."""
        return buf[t - 1].view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Ho et al. eq. 4: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε."""
        ab = self._at(self.alpha_bar, t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ho et al. eq. 6–7: mean μ̃_t(x_t, x0) ``[B,1,28,28]`` and variance β̃_t ``[B,1,1,1]``."""
        return self._at(self.post_c0, t) * x0 + self._at(self.post_ct, t) * xt, self._at(self.post_var, t)

    # --- training ----------------------------------------------------------------------------

    def loss(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Ho et al. eq. 14 (L_simple): E w_t ‖target − net(x_t, t)‖², t ~ U{1…T}, target ε or
        v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0 (w_t = 1, or Min-SNR-γ); labels dropped to ∅ w.p. p_uncond."""
        t = torch.randint(1, self.T + 1, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        drop = torch.rand(y.shape, device=y.device) < self.p_uncond
        y = torch.where(drop, torch.full_like(y, self.net.null_class), y)
        ab = self._at(self.alpha_bar, t)
        target = noise if self.prediction == "eps" else ab.sqrt() * noise - (1 - ab).sqrt() * x0
        err = F.mse_loss(self.net(self.q_sample(x0, t, noise), t.to(x0.dtype) / self.T, y), target, reduction="none")
        return (self._at(self.loss_weight, t) * err).mean()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(x.to(self.dtype).div(127.5).sub(1).unsqueeze(1), y)   # uint8 [B,28,28] → [−1,1] [B,1,28,28]
        self.log("train/loss", loss, prog_bar=True)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.history.append({"step": self.global_step, "loss": float(loss.detach())})
        return loss

    def optimizer_step(self, *args, **kwargs):
        """The optimiser step, then the EMA update — here, not in on_train_batch_end: ModelCheckpoint
        saves in its own on_train_batch_end, which Lightning runs first, so a later update would be
        missing from the checkpoint of that step."""
        super().optimizer_step(*args, **kwargs)
        # decay warmed up as min(d, (1+n)/(10+n)) so short runs are not dominated by the initial weights
        n = self.global_step   # not yet incremented: n = 0 after the first step
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.net.parameters()):
                e.lerp_(p, 1 - decay)

    def configure_optimizers(self):
        return adamw_one_cycle(self, self.net.parameters(), self.lr, self.weight_decay)

    # --- sampling ----------------------------------------------------------------------------

    def guided(self, x: torch.Tensor, t: int, y: torch.Tensor, w: float) -> torch.Tensor:
        """Guided output (1 + w)·net(x, y) − w·net(x, ∅) of the EMA net at integer step ``t`` — ε̃, or ṽ with
        v-prediction (ε and v are affine in each other at fixed x_t, so guiding either is the same): ONE call
        (batch 2B if w ≠ 0)."""
        time = torch.full((x.shape[0],), t / self.T, dtype=x.dtype, device=x.device)
        if w == 0:
            return self.ema(x, time, y).to(x.dtype)      # under autocast the net's output is lower precision
        null = torch.full_like(y, self.ema.null_class)
        out = self.ema(torch.cat([x, x]), torch.cat([time, time]), torch.cat([y, null])).to(x.dtype)
        e_cond, e_uncond = out.chunk(2)
        return (1 + w) * e_cond - w * e_uncond

    def denoise(self, x: torch.Tensor, t: int, y: torch.Tensor, w: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0 clipped to [−1, 1], ε̂ consistent with it) at integer step ``t``, from the guided prediction."""
        ab = self.alpha_bar[t - 1]
        out = self.guided(x, t, y, w)
        if self.prediction == "eps":
            x0 = (x - (1 - ab).sqrt() * out) / ab.sqrt()          # invert eq. 4
        else:
            x0 = ab.sqrt() * x - (1 - ab).sqrt() * out             # Salimans & Ho eq. for x̂0 from v̂
        x0 = x0.clamp(-1, 1)
        return x0, (x - ab.sqrt() * x0) / (1 - ab).sqrt()

    @torch.no_grad()
    def sample_ddpm(self, y: torch.Tensor, w: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling (Ho et al. Algorithm 2) with σ_t² = β̃_t, T network evaluations.

        ``y`` ``[N]`` → images ``[N, 1, 28, 28]`` in [−1, 1] (x̂0 clipped to [−1, 1] at each step)."""
        x = rng.randn((len(y), 1, 28, 28), dtype=self.dtype, device=self.device, generator=generator)
        y = y.to(self.device)                                  # labels may come from the CPU
        for t in range(self.T, 0, -1):
            steps = torch.full((len(y),), t, device=x.device)
            mean, var = self.posterior(self.denoise(x, t, y, w)[0], x, steps)
            noise = (rng.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator) if t > 1
                     else torch.zeros_like(x))
            x = mean + var.sqrt() * noise
        return x

    def ddim_steps(self, n_steps: int) -> list[int]:
        """Evenly spaced sub-sequence τ of {1…T} (Song et al. §4.2), descending from T (to 1 if n_steps > 1)."""
        return [int(t) for t in torch.linspace(self.T, 1, n_steps, dtype=torch.float64).round()]   # device: cpu-only

    @torch.no_grad()
    def sample_ddim(self, y: torch.Tensor, n_steps: int, w: float = 0.0, generator: torch.Generator | None = None,
                    eta: float = 0.0) -> torch.Tensor:
        """DDIM (Song et al. 2021 eq. 12) over ``n_steps`` network evaluations; η = 0 is deterministic.

        x_{τ−1} = √ᾱ_{τ−1} · x̂0 + √(1 − ᾱ_{τ−1} − σ²) · ε̂ + σ·z  (x̂0, ε̂ from ``denoise``), with
        σ = η·√((1 − ᾱ_{τ−1})/(1 − ᾱ_τ))·√(1 − ᾱ_τ/ᾱ_{τ−1})
        (eq. 16; η = 1: DDPM's posterior over the sub-sequence); the last step goes to ᾱ = 1."""
        x = rng.randn((len(y), 1, 28, 28), dtype=self.dtype, device=self.device, generator=generator)
        y = y.to(self.device)                                  # labels may come from the CPU
        taus = self.ddim_steps(n_steps)
        for i, t in enumerate(taus):
            ab = self.alpha_bar[t - 1]
            ab_next = self.alpha_bar[taus[i + 1] - 1] if i + 1 < len(taus) else torch.ones_like(ab)
            x0, e = self.denoise(x, t, y, w)
            sigma = eta * ((1 - ab_next) / (1 - ab) * (1 - ab / ab_next)).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next - sigma ** 2).clamp(min=0).sqrt() * e
            if eta > 0:
                x = x + sigma * rng.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        return x
