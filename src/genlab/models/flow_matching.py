"""Conditional flow matching over any field network, optionally class-conditional with guidance.

Loss (Lipman et al. 2023, eq. 9; Tong et al. 2024, eq. 9):  E_{t, z, x_t} ‖v_θ(x_t, t[, y]) − u_t(x_t | z)‖²,
with (t, x_t, u_t) from a ``genlab.models.matchers`` object. Class-conditional training drops the
label to the null class with probability ``label_dropout`` so one network learns both v(x, c) and
v(x, ∅) (classifier-free guidance, Ho & Salimans 2022); sampling uses
    ṽ = (1 + w)·v(x, c) − w·v(x, ∅)        (w = 0: purely conditional; GLIDE's scale s = w + 1),
with the conditional and unconditional halves batched into ONE network evaluation.

An optional ``transform`` (``genlab.models.cnf.LogitDequantize``) maps discrete pixels to a continuous space
before the flow, as for the CNF: training pairs noise with freshly dequantized data, and ``log_prob`` adds the
transform's log-Jacobian, so the likelihood is that of the dequantized pixels.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from genlab.evaluate import ode
from genlab.models.matchers import IndependentCFM
from genlab.models.optim import adamw_one_cycle


class FlowMatching(pl.LightningModule):
    """``net(x, t)`` (``n_classes=0``) or ``net(x, t, y)`` with ``y = n_classes`` the null label; x ``[B, …]``, t ``[B]``."""

    def __init__(self, net: nn.Module, matcher: IndependentCFM, lr: float, weight_decay: float = 0.0,
                 n_classes: int = 0, label_dropout: float = 0.2, rtol: float = 1e-5, atol: float = 1e-5,
                 one_cycle: bool = False, transform: nn.Module | None = None, exact_trace: bool = True):
        super().__init__()
        self.transform, self.exact_trace = transform, exact_trace
        self.net, self.matcher, self.n_classes, self.label_dropout = net, matcher, n_classes, label_dropout
        self.lr, self.weight_decay, self.rtol, self.atol, self.one_cycle = lr, weight_decay, rtol, atol, one_cycle
        self.val_nll = MeanMetric()   # the validation split: selection only, never test

    def velocity(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, w: float = 0.0) -> torch.Tensor:
        """Guided velocity ṽ ``[B, …]`` in x's dtype (under autocast the network's output is lower precision; the
        guidance arithmetic and the ODE state stay in x's); one network call (cond and uncond halves share the
        batch when w ≠ 0)."""
        if not self.n_classes:
            return self.net(x, t).to(x.dtype)
        if w == 0:
            return self.net(x, t, y).to(x.dtype)
        null = torch.full_like(y, self.n_classes)
        v_cond, v_uncond = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).to(x.dtype).chunk(2)
        return (1 + w) * v_cond - w * v_uncond

    def training_step(self, batch, batch_idx):
        x1 = batch[0] if self.transform is None else self.transform(batch[0], self.dtype)[0]
        t, x_t, u_t = self.matcher.sample(torch.randn_like(x1), x1)
        if self.n_classes:
            y = batch[1].masked_fill(torch.rand(len(x1), device=x1.device) < self.label_dropout, self.n_classes)
            v = self.net(x_t, t, y)
        else:
            v = self.net(x_t, t)
        loss = F.mse_loss(v, u_t)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def sample(self, n_or_labels: int | torch.Tensor, shape: tuple[int, ...], sampler: str = "euler", nfe: int = 10,
               w: float = 0.0, n_save: int = 2) -> torch.Tensor:
        """Generate from N(0, I): ``n`` unconditional samples or one per label ``[N]``; path ``[n_save, N, *shape]``."""
        y = n_or_labels.to(self.device) if torch.is_tensor(n_or_labels) else None   # labels may come from the CPU
        x0 = torch.randn(len(y) if y is not None else n_or_labels, *shape, dtype=self.dtype, device=self.device)
        return ode.sample(lambda x, t: self.velocity(x, t, y, w), x0, sampler, nfe, self.rtol, self.atol, n_save)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p_1(x) ``[B]`` of the learned flow (unconditional vector data ``[B, D]``): exact trace, or
        Hutchinson's unbiased estimate with ``exact_trace=False``; in pixel space when there is a transform."""
        z, log_jac = self.transform(x, self.dtype) if self.transform is not None else (x, 0.0)
        return ode.log_likelihood(self.net, z, exact=self.exact_trace, rtol=self.rtol, atol=self.atol) + log_jac

    def validation_step(self, batch, batch_idx):
        self.val_nll.update(-self.log_prob(batch[0]))
        self.log("val/nll", self.val_nll, on_epoch=True)

    def configure_optimizers(self):
        if not self.one_cycle:   # constant rate: the NLL-vs-time curve does not depend on the run's length
            return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return adamw_one_cycle(self, self.parameters(), self.lr, self.weight_decay)
