"""Affine coupling flow trained by maximum likelihood (RealNVP, Dinh et al. 2017).

One coupling with binary mask m ``[D]`` (eq. 9) and conditioner (s, t) = ``CouplingNet``(m⊙x):
    y = m⊙x + (1−m)⊙(x⊙exp(s(m⊙x)) + t(m⊙x)),      x = m⊙y + (1−m)⊙(y − t(m⊙y))⊙exp(−s(m⊙y)),
whose Jacobian is triangular with diagonal 1 on m and exp(s) on 1−m, so log|det J| = Σ_d (1−m)⊙s (eq. 6).
The flow f = f_K ∘ … ∘ f_1 maps data x to z with base N(0, I), and by the change of variables (§3.1)
    log p(x) = log N(f(x); 0, I) + Σ_k log|det ∂f_k/∂h_{k−1}|,
exact in one pass; sampling runs the inverses from z ~ N(0, I). Successive layers use complementary masks
(eq. 9 leaves m⊙x unchanged, so each coordinate must be transformed by some layer): the parity of the flat
index, [1, 0, 1, 0, …] then [0, 1, 0, 1, …] (for D = 2: [1, 0], [0, 1]; RealNVP's checkerboard for a row of
odd length, column stripes for even-width images). An even number of layers transforms every coordinate equally.

Conditional flow (``context_dim`` > 0): every conditioner also reads a context c ``[B, C]`` (an observation x, for
neural posterior estimation of q(θ | x): Papamakarios & Murray 2016, §2; Greenberg et al. 2019), (s, t) =
``CouplingNet``(m⊙h, c). c is constant along the flow, so each coupling is still triangular in h with the same
log|det J| = Σ_d (1−m)⊙s(m⊙h, c), and log q(θ | c) = log N(f(θ; c); 0, I) + Σ_k log|det ∂f_k/∂h_{k−1}| for every c.
Without a context (``context_dim`` = 0, ``context=None``) the flow and its parameters are the unconditional ones.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from genlab.evaluate.ode import standard_normal_logpdf
from genlab.models.cnf import LogitDequantize
from genlab.nn.coupling import CouplingNet


class AffineCoupling(nn.Module):
    """RealNVP affine coupling (eq. 9) over x ``[B, D]``: the coordinates with m = 1 condition the others."""

    def __init__(self, mask: torch.Tensor, net: CouplingNet, scale_bound: float = 2.0):
        super().__init__()
        self.register_buffer("mask", mask.float())   # a buffer: follows the module's dtype and device
        self.net, self.scale_bound = net, scale_bound

    def _scale_shift(self, h: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, t) ``[B, D]`` of the conditioning part h = m⊙x (and the context ``[B, C]``), zero where m = 1."""
        log_scale_raw, shift = self.net(self.mask * h, context)
        # s = bound·tanh(raw): an unbounded exp(s) can overflow or collapse early in training (one large raw value
        # is a factor e^raw on a coordinate and on the density); tanh keeps |s| ≤ bound, and is ≈ raw near 0
        s = self.scale_bound * torch.tanh(log_scale_raw)
        return (1 - self.mask) * s, (1 - self.mask) * shift

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y ``[B, D]``, log|det ∂y/∂x| ``[B]``) (eq. 9 and eq. 6), given the context ``[B, C]`` if any."""
        s, t = self._scale_shift(x, context)
        y = self.mask * x + (1 - self.mask) * (x * torch.exp(s) + t)
        return y, s.sum(1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x ``[B, D]`` with forward(x) = y: m⊙y = m⊙x, so (s, t) are recomputed exactly from y (and the context)."""
        s, t = self._scale_shift(y, context)
        return self.mask * y + (1 - self.mask) * (y - t) * torch.exp(-s)


class CouplingFlow(pl.LightningModule):
    """Maximum-likelihood stack of ``n_layers`` affine couplings over data ``[B, dim]``, each with a
    ``CouplingNet(dim, width, depth, context_dim)``; ``transform`` (optional) dequantizes pixels to the flow's space,
    as in ``CNF``. With ``context_dim`` > 0 it is a conditional density q(x | c), c ``[B, context_dim]``."""

    def __init__(self, dim: int, n_layers: int, width: int, depth: int, lr: float, weight_decay: float = 0.0,
                 transform: LogitDequantize | None = None, context_dim: int = 0):
        super().__init__()
        parity = torch.arange(dim) % 2   # device: cpu-only (builds the mask buffers; .to() moves them)
        self.layers = nn.ModuleList(AffineCoupling((parity == k % 2).float(), CouplingNet(dim, width, depth,
                                                                                           context_dim))
                                    for k in range(n_layers))
        self.context_dim = context_dim
        self.dim, self.transform = dim, transform
        self.lr, self.weight_decay = lr, weight_decay
        self.val_nll = MeanMetric()   # the validation split: selection only, never test

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z = f(x; c) ``[B, D]``, log|det ∂f/∂x| ``[B]``) through every coupling; c ``[B, C]`` or None."""
        log_det = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, ld = layer(x, context)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """f⁻¹(z; c) ``[B, D]``: the couplings' inverses in reverse order."""
        for layer in reversed(self.layers):
            z = layer.inverse(z, context)
        return z

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) ``[B]`` (in the space of x: pixels for a dequantized model, with fresh noise per call);
        log q(x | c) given a context ``[B, C]``."""
        z, log_jac = self.transform(x, self.dtype) if self.transform is not None else (x, 0.0)
        u, log_det = self(z, context)
        return standard_normal_logpdf(u) + log_det + log_jac

    @torch.no_grad()
    def sample(self, n: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` samples ``[n, D]`` in the flow's space (logits for a dequantized model: ``transform.inverse`` maps
        them to pixel intensities); of q(· | c) given a context ``[n, C]`` (one row per sample)."""
        return self.inverse(torch.randn(n, self.dim, dtype=self.dtype, device=self.device), context)

    def training_step(self, batch, batch_idx):
        loss = -self.log_prob(batch[0]).mean()
        self.log("train/nll", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_nll.update(-self.log_prob(batch[0]))
        self.log("val/nll", self.val_nll, on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
