"""Reward model trained on preference pairs with the Bradley–Terry loss (``rl.preference``).

Batch: chosen / rejected sequences ``[B, L]``, their last-token indices ``[B]`` and margins ``[B]``.
"""
from __future__ import annotations

import lightning.pytorch as pl

from genlab.models.optim import adamw_one_cycle
from genlab.nn.heads import RewardModel
from genlab.rl.preference import bradley_terry_loss


class RewardModelling(pl.LightningModule):
    def __init__(self, model: RewardModel, lr: float, center: float, weight_decay: float = 0.01):
        super().__init__()
        self.model, self.lr, self.center, self.weight_decay = model, lr, center, weight_decay
        self.history: list[dict] = []

    def training_step(self, batch, batch_idx):
        seq_c, seq_r, last_c, last_r, margin = batch
        r_c, r_r = self.model(seq_c, last_c), self.model(seq_r, last_r)
        loss = bradley_terry_loss(r_c, r_r, margin, self.center)
        accuracy = (r_c > r_r).float().mean()
        self.log_dict({"train/loss": loss, "train/label_accuracy": accuracy}, prog_bar=True)
        if batch_idx % 25 == 0:
            self.history.append({"step": self.global_step, "train_loss": float(loss.detach()),
                                 "train_label_accuracy": float(accuracy)})
        return loss

    def configure_optimizers(self):
        return adamw_one_cycle(self, self.parameters(), self.lr, self.weight_decay)
