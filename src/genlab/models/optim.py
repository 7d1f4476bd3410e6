"""The optimiser recipe the image and RLHF models share: AdamW with a one-cycle learning rate."""
from __future__ import annotations

from collections.abc import Iterable

import lightning.pytorch as pl
import torch


def adamw_one_cycle(module: pl.LightningModule, params: Iterable[torch.nn.Parameter], lr: float,
                    weight_decay: float) -> dict:
    """AdamW (Loshchilov & Hutter 2019) with one-cycle (Smith & Topin 2017): warm up to ``lr``, then anneal
    to ~0 over the run's ``estimated_stepping_batches``; the value of ``configure_optimizers``."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr,
                                                total_steps=int(module.trainer.estimated_stepping_batches))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
