"""Continuous normalizing flow trained by maximum likelihood (Chen et al. 2018; FFJORD, Grathwohl et al. 2019).

Every training step solves the ODE of ``evaluate.ode.log_likelihood`` (dopri5, tolerances
from config) for the batch and backpropagates through the solver (``adjoint=False``) or by
the adjoint ODE (``adjoint=True``). The divergence is exact (D = 2) or Hutchinson's estimate
with one Rademacher probe per solve (D > 2). NFE of the forward solve and of the backward pass
(adjoint only: direct backprop re-uses the forward graph and evaluates nothing) are recorded.
"""
from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from genlab.evaluate.ode import log_likelihood


class LogitDequantize(nn.Module):
    """Discrete pixels k ∈ {0, …, L−1} ``[B, D]`` → continuous logit space, with its log-Jacobian.

    y = k + u, u ~ U[0, 1)^D (uniform dequantization: −log p(y) bounds the discrete NLL; Theis et al. 2016),
    z = logit(α + (1−2α)·y/L) (RealNVP's logit transform, Dinh et al. 2017 §4.1), so
    log p(y) = log p_z(z) + Σ_d log |dz_d/dy_d|,  dz/dy = (1−2α) / (L·s·(1−s)),  s = α + (1−2α)·y/L.
    """

    def __init__(self, levels: int, alpha: float = 0.05):
        super().__init__()
        self.levels, self.alpha = levels, alpha

    def forward(self, k: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(z ``[B, D]``, Σ_d log |dz_d/dy_d| ``[B]``) in ``dtype`` (the field's) for pixels k ``[B, D]``, with fresh
        dequantization noise."""
        y = k.to(dtype)
        return self.logit(y + torch.rand_like(y))

    def logit(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * y / self.levels
        log_jac = math.log(1 - 2 * self.alpha) - math.log(self.levels) - torch.log(s) - torch.log1p(-s)
        return torch.logit(s), log_jac.sum(1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Logit space → pixel intensity in [0, 1] (for pictures of samples)."""
        return ((torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)).clamp(0, 1)


class CNF(pl.LightningModule):
    """Maximum-likelihood CNF over data ``[B, D]``; ``field(x [B, D], t [B]) → [B, D]``."""

    def __init__(self, field: nn.Module, lr: float, weight_decay: float, rtol: float, atol: float,
                 adjoint: bool, exact_trace: bool, transform: LogitDequantize | None = None):
        super().__init__()
        self.field, self.transform = field, transform
        self.lr, self.weight_decay, self.rtol, self.atol = lr, weight_decay, rtol, atol
        self.adjoint, self.exact_trace = adjoint, exact_trace
        self.val_nll = MeanMetric()   # the validation split: selection only, never test
        self.calls, self.nfe_forward, self.nfe_backward = 0, [], []   # NFE per training step
        field.register_forward_pre_hook(self._count)

    def _count(self, *_) -> None:
        self.calls += 1

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) ``[B]`` (in the space of x: pixels for a dequantized model)."""
        z, log_jac = self.transform(x, self.dtype) if self.transform is not None else (x, 0.0)
        return log_likelihood(self.field, z, self.exact_trace, self.rtol, self.atol, self.adjoint) + log_jac

    def training_step(self, batch, batch_idx):
        start = self.calls
        loss = -self.log_prob(batch[0]).mean()
        self.nfe_forward.append(self.calls - start)
        self.log("train/nll", loss, prog_bar=True)
        self.log("train/nfe", float(self.nfe_forward[-1]), prog_bar=True)
        return loss

    def on_before_backward(self, loss):
        self._calls_before_backward = self.calls

    def on_after_backward(self):
        self.nfe_backward.append(self.calls - self._calls_before_backward)

    def validation_step(self, batch, batch_idx):
        self.val_nll.update(-self.log_prob(batch[0]))
        self.log("val/nll", self.val_nll, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
