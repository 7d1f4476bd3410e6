"""Causal language modelling on selected target tokens: pretraining (every token) and
supervised fine-tuning (response tokens only; Ouyang et al. 2022, §3.5).

Batch: ``seq [B, L]`` token ids and ``targets [B, L−1]`` (1.0 where token t+1 is trained on).
Loss: −Σ targets·log p(seq[t+1] | seq[≤t]) / Σ targets.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from genlab.models.optim import adamw_one_cycle
from genlab.nn.transformer import Transformer


class CausalLM(pl.LightningModule):
    def __init__(self, net: Transformer, lr: float, weight_decay: float):
        super().__init__()
        self.net, self.lr, self.weight_decay = net, lr, weight_decay
        self.history: list[dict] = []

    def loss(self, seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.net(seq[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), seq[:, 1:], reduction="none")
        return (nll * targets).sum() / targets.sum()

    def training_step(self, batch, batch_idx):
        loss = self.loss(*batch)
        self.log("train/loss", loss, prog_bar=True)
        if batch_idx % 25 == 0:
            self.history.append({"step": self.global_step, "train_loss": float(loss.detach())})
        return loss

    def configure_optimizers(self):
        return adamw_one_cycle(self, self.parameters(), self.lr, self.weight_decay)
