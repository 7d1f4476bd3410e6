"""FGSM adversarial training: the classifier recipe with the loss of Goodfellow et al. 2015, eq. 6,

    J̃(θ, x, y) = α·J(θ, x, y) + (1 − α)·J(θ, x + ε·sign(∇ₓJ(θ, x, y)), y),   α = ½,

where the adversarial images are recomputed for the current weights at every step (and
clipped to [0, 1]); ∇ₓJ is treated as a constant (no gradient through the attack).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from genlab.evaluate.adversarial import input_gradient
from genlab.models.classifier import Classifier, random_shift, to_images


class FGSMTrained(Classifier):
    def __init__(self, net: nn.Module, lr: float, weight_decay: float, shift: int, eps: float, alpha: float = 0.5):
        super().__init__(net, lr, weight_decay, shift)
        self.eps, self.alpha = eps, alpha

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = random_shift(to_images(x, self.dtype), self.shift)                       # [B, 1, 28, 28]
        x_adv = (x + self.eps * input_gradient(self.net, x, y).sign()).clamp(0.0, 1.0)
        loss = self.alpha * F.cross_entropy(self.net(x), y) + (1 - self.alpha) * F.cross_entropy(self.net(x_adv), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss
