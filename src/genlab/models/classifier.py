"""Supervised classification: cross-entropy, AdamW + one-cycle LR, shift augmentation.

Metrics are torchmetrics objects (one instance per split, so they sync under DDP):
accuracy, expected calibration error (ECE, 15 bins; Guo et al. 2017), confusion matrix.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassConfusionMatrix

from genlab.models.optim import adamw_one_cycle


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image ``[B, C, H, W]`` by an integer offset in [-s, s]² (zero fill)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]   # [B, H, 1]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]   # [B, 1, W]
    return padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def to_images(x_uint8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, 28, 28]`` → ``dtype`` (the network's) ``[B, 1, 28, 28]`` in [0, 1]."""
    return x_uint8.to(dtype).div(255.0).unsqueeze(1)


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module, lr: float, weight_decay: float, shift: int, n_classes: int = 10):
        super().__init__()
        self.net, self.lr, self.weight_decay, self.shift = net, lr, weight_decay, shift
        self.metrics = nn.ModuleDict({
            split: nn.ModuleDict({"acc": MulticlassAccuracy(n_classes, average="micro"),
                                  "ece": MulticlassCalibrationError(n_classes, n_bins=15, norm="l1")})
            for split in ("val", "test")})
        self.confusion = MulticlassConfusionMatrix(n_classes)
        self.history: list[dict] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(random_shift(to_images(x, self.dtype), self.shift))
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch, split: str):
        x, y = batch
        logits = self.net(to_images(x, self.dtype))
        self.log(f"{split}/loss", F.cross_entropy(logits, y), sync_dist=True)
        probs = logits.softmax(-1)
        for name, metric in self.metrics[split].items():
            metric(probs, y)
            self.log(f"{split}/{name}", metric)
        if split == "test":
            self.confusion.update(probs, y)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self):
        m = self.trainer.callback_metrics
        self.history.append({"step": self.global_step, "epoch": self.current_epoch,
                             "train_loss": float(m.get("train/loss", float("nan"))),
                             "val_loss": float(m["val/loss"]), "val_accuracy": float(m["val/acc"])})

    def configure_optimizers(self):
        return adamw_one_cycle(self, self.parameters(), self.lr, self.weight_decay)
