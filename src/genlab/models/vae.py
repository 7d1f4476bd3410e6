"""Variational autoencoder (Kingma & Welling 2014) with the importance-weighted likelihood bound (IWAE, Burda et al.
2016), for continuous vector data ``[B, D]``.

Model: p(z) = N(0, I), p(x|z) = N(μ_x(z), diag σ²_x(z)); approximate posterior q(z|x) = N(μ_q(x), diag σ²_q(x)).
Training maximises the one-sample reparameterised ELBO (K&W 2014, eq. 3 with the estimator B of eq. 7),
    L(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)),   z = μ_q + σ_q ⊙ ε, ε ~ N(0, I),
    −KL = ½ Σ_j (1 + log σ²_{q,j} − μ²_{q,j} − σ²_{q,j})                      (K&W 2014, eq. 10 / App. B),
so only the reconstruction term is sampled. The likelihood is reported through the k-sample bound
    L_k(x) = E[log (1/k) Σ_i w_i],  w_i = p(x, z_i) / q(z_i|x),  z_i ~ q(z|x)   (Burda et al. 2016, eq. 8),
with L_1 = L ≤ L_k ≤ L_{k+1} ≤ log p(x) and L_k → log p(x) as k → ∞ (their Theorem 1): one draw of it is a
stochastic lower bound of log p(x) (in expectation), tighter as k grows, and the reported NLL an upper bound.

Digits live in a logit space (``cnf.LogitDequantize``, as for the CNF): the bound of the dequantized,
logit-transformed point plus the transform's log-Jacobian bounds the pixel-space density.
"""
from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from genlab.models.cnf import LogitDequantize

LOG_2PI = math.log(2 * math.pi)


def log_normal(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag e^logvar) summed over the last dim: ``[..., D]`` → ``[...]`` (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar)).sum(-1)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag e^logvar) ‖ N(0, I)) ``[B]`` for ``[B, d_z]`` in closed form (K&W 2014, App. B)."""
    return 0.5 * (mean**2 + torch.exp(logvar) - 1 - logvar).sum(-1)


class VAE(pl.LightningModule):
    """``encoder(x [B, D]) → (μ_q, log σ²_q)`` ``[B, d_z]`` each; ``decoder(z [B, d_z]) → (μ_x, log σ²_x)`` ``[B, D]``
    each; prior N(0, I_{d_z}). ``transform`` (digits): pixels → logit space, applied before every loss and bound."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, lr: float, weight_decay: float = 0.0,
                 iw_samples: int = 64, transform: LogitDequantize | None = None):
        super().__init__()
        self.encoder, self.decoder, self.transform = encoder, decoder, transform
        self.latent_dim, self.lr, self.weight_decay, self.iw_samples = latent_dim, lr, weight_decay, iw_samples
        self.val_nll = MeanMetric()   # the validation split: selection only, never test

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """One-sample reparameterised ELBO ``[B]`` of x ``[B, D]``: log p(x|z) − KL(q(z|x) ‖ p(z)), z ~ q(z|x)."""
        mean_q, logvar_q = self.encoder(x)
        z = mean_q + torch.exp(0.5 * logvar_q) * torch.randn_like(mean_q)
        mean_x, logvar_x = self.decoder(z)
        return log_normal(x, mean_x, logvar_x) - kl_to_standard_normal(mean_q, logvar_q)

    def iwae(self, x: torch.Tensor, k: int, chunk: int = 16) -> torch.Tensor:
        """IWAE bound ``[B]`` of x ``[B, D]``: log (1/k) Σ_i p(x, z_i)/q(z_i|x), z_i ~ q(z|x) (Burda et al. eq. 8).

        All k·B noise vectors ``[k, B, d_z]`` are drawn at once (small: d_z ≪ D) and decoded ``chunk`` samples at a
        time, so memory is bounded by chunk·B decoder rows and the value does not depend on ``chunk``."""
        mean_q, logvar_q = self.encoder(x)
        std_q = torch.exp(0.5 * logvar_q)
        eps = torch.randn(k, *mean_q.shape, dtype=mean_q.dtype, device=mean_q.device)   # [k, B, d_z]
        lse = []   # log Σ_{i in chunk} w_i, each [B]
        for e in eps.split(chunk):
            z = mean_q + std_q * e                                                       # [c, B, d_z]
            mean_x, logvar_x = self.decoder(z.reshape(-1, z.shape[-1]))                  # [c·B, D]
            log_px_z = log_normal(x, mean_x.view(*z.shape[:2], -1), logvar_x.view(*z.shape[:2], -1))
            log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
            log_qz = -0.5 * (LOG_2PI + logvar_q + e**2).sum(-1)   # log q(z|x) = log N(ε; 0, I) − Σ log σ_q
            lse.append(torch.logsumexp(log_px_z + log_pz - log_qz, dim=0))               # [B]
        return torch.logsumexp(torch.stack(lse), dim=0) - math.log(k)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """IWAE bound with ``iw_samples`` draws, ``[B]``: a stochastic lower bound of log p(x) (in expectation) that
        tightens as k grows (in the space of x: pixels, with fresh dequantization noise, for a dequantized model)."""
        z, log_jac = self.transform(x, self.dtype) if self.transform is not None else (x, 0.0)
        return self.iwae(z, self.iw_samples) + log_jac

    @torch.no_grad()
    def sample(self, n: int, mean: bool = False) -> torch.Tensor:
        """``[n, D]`` in the model's (logit, for digits) space: z ~ p(z), then x ~ p(x|z), a draw from the very
        density that ``log_prob`` bounds (the decoder mean alone is a sharper, different distribution: on 2D toys the
        push-forward of a d_z-dimensional prior); ``mean=True``: μ_x(z), the usual picture (no per-pixel noise)."""
        z = torch.randn(n, self.latent_dim, dtype=self.dtype, device=self.device)
        mean_x, logvar_x = self.decoder(z)
        return mean_x if mean else mean_x + torch.exp(0.5 * logvar_x) * torch.randn_like(mean_x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """μ_x(μ_q(x)) ``[B, D]``: decoder mean at the encoder mean, x ``[B, D]`` in the model's (post-transform)
        space."""
        return self.decoder(self.encoder(x)[0])[0]

    def training_step(self, batch, batch_idx):
        z, log_jac = self.transform(batch[0], self.dtype) if self.transform is not None else (batch[0], 0.0)
        elbo = self.elbo(z) + log_jac   # log_jac: no parameters, same gradient; logs a pixel-space ELBO
        loss = -elbo.mean()
        self.log("train/elbo", -loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_nll.update(-self.log_prob(batch[0]))
        self.log("val/nll", self.val_nll, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
