"""Autoregressive language modelling: next-token cross-entropy on a ``nn.transformer.Transformer``.

Optimisation follows nanoGPT: AdamW (weight decay on matrices only), linear warmup then
cosine decay to ``min_lr`` (Loshchilov & Hutter 2017); gradient clipping is the Trainer's
``gradient_clip_val``. Validation loss is averaged over a fixed set of windows (the whole
validation split by default), and the weights of the best validation step are kept —
small char-level corpora overfit — also across a resume (they ride in the checkpoint).
Training throughput (tokens/s of optimiser steps, evaluation excluded) is measured here, in wall and
process-CPU seconds (CPU seconds are what a step costs even when other processes share the cores).
"""
from __future__ import annotations

import copy
import math
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from genlab.nn.transformer import Transformer


def windows(ids: torch.Tensor, block_size: int, stride: int = 1) -> torch.Tensor:
    """Token ids ``[N]`` → every window of ``block_size + 1`` tokens ``[M, block_size + 1]`` (a strided view).

    stride 1 serves training (random windows, as nanoGPT's ``get_batch``); stride ``block_size``
    tiles validation so each token is predicted exactly once.
    """
    return ids.unfold(0, block_size + 1, stride)


def lr_factor(step: int, warmup: int, decay_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak lr: linear warmup, cosine to ``min_ratio`` at ``decay_steps``, then flat."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if step >= decay_steps:
        return min_ratio
    progress = (step - warmup) / max(1, decay_steps - warmup)
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_ratio)


class GPT(pl.LightningModule):
    """Batches are windows ``[B, T+1]`` of token ids: inputs ``[:, :-1]``, targets ``[:, 1:]``."""

    def __init__(self, net: Transformer, lr: float, min_lr: float, warmup_iters: int, lr_decay_iters: int,
                 weight_decay: float, beta2: float):
        super().__init__()
        self.net = net
        self.lr, self.min_lr, self.warmup, self.decay_steps = lr, min_lr, warmup_iters, lr_decay_iters
        self.weight_decay, self.beta2 = weight_decay, beta2
        self.history: list[dict] = []
        self.best_loss, self.best_state, self.best_step = math.inf, None, -1
        self.train_tokens, self.train_seconds, self.train_cpu_seconds = 0, 0.0, 0.0
        self.train_curve: list[list[float]] = []        # [tokens seen, training loss] ~50 times per run
        self._val_sum = self._val_count = 0.0

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats/token) of windows ``[B, T+1]``."""
        logits = self.net(batch[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    def on_train_batch_start(self, batch, batch_idx):
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    def training_step(self, batch, batch_idx):
        (batch,) = batch
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        # counted (and the curve point kept) here, not in on_train_batch_end: ModelCheckpoint saves in its own
        # on_train_batch_end, which runs first, so a count made later would miss this batch in the checkpoint
        self.train_tokens += batch.numel() - batch.size(0)
        if self.global_step % max(1, self.trainer.max_steps // 50) == 0:
            self.train_curve.append([self.train_tokens, loss.item()])
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):   # after backward + optimiser step
        self.train_seconds += time.perf_counter() - self._t0
        self.train_cpu_seconds += time.process_time() - self._cpu0

    def validation_step(self, batch, batch_idx):
        (batch,) = batch
        n = batch.numel() - batch.size(0)
        self._val_sum += self.loss(batch).item() * n          # token-weighted: exact mean over the split
        self._val_count += n

    def on_validation_epoch_end(self):
        val = torch.tensor(self._val_sum / self._val_count, device=self.device)
        self._val_sum = self._val_count = 0.0
        self.log("val/loss", val, sync_dist=True)
        val = float(self.trainer.callback_metrics["val/loss"])
        train = self.trainer.callback_metrics.get("train/loss")
        self.history.append({"step": self.global_step, "tokens": self.train_tokens,
                             "train_loss": float(train) if train is not None else float("nan"), "val_loss": val})
        if val < self.best_loss:
            self.best_loss, self.best_step = val, self.global_step
            self.best_state = copy.deepcopy(self.net.state_dict())

    def restore_best(self) -> None:
        """Load the best-on-validation weights into ``self.net`` (no-op before any validation)."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["gpt"] = {"best_loss": self.best_loss, "best_step": self.best_step, "best_state": self.best_state,
                             "train_curve": self.train_curve,
                             "train_tokens": self.train_tokens, "train_seconds": self.train_seconds,
                             "train_cpu_seconds": self.train_cpu_seconds}

    def on_load_checkpoint(self, checkpoint):
        s = checkpoint["gpt"]
        self.best_loss, self.best_step, self.best_state = s["best_loss"], s["best_step"], s["best_state"]
        self.train_curve = s["train_curve"]
        self.train_tokens, self.train_seconds = s["train_tokens"], s["train_seconds"]
        self.train_cpu_seconds = s.get("train_cpu_seconds", 0.0)   # absent from checkpoints of older code

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        # the fused kernel updates every tensor in one pass (the same update): far cheaper than the for-loop
        # on a small model, where the optimiser step is a visible part of each training step
        opt = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, self.beta2), fused=self.device.type in ("cpu", "cuda"))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, self.warmup, self.decay_steps, self.min_lr / self.lr))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
