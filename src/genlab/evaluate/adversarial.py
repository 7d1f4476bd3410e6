"""L∞ adversarial examples against an image classifier: FGSM and PGD.

Inputs are images ``[B, 1, 28, 28]`` in [0, 1]; ``net`` maps them to logits ``[B, K]`` and is
put in eval mode (BatchNorm running statistics, no dropout) for the attack.

The [0, 1] box: an adversarial image must still be an image, so every step is clipped to
[0, 1]. Where the box binds (a black background pixel pushed down, a white one pushed up) the
perturbation is smaller than ε; everywhere else FGSM moves a pixel by exactly ±ε (or 0
where ∂J/∂x is exactly 0), so ‖δ‖∞ = ε.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from genlab.nn import rng


def input_gradient(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ J(θ, x, y) for the summed cross-entropy J; ``[B, ...]`` like ``x`` (weights get no grad)."""
    with torch.enable_grad():   # also when called under no_grad
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(net(x), y, reduction="sum")   # sum: each image's gradient is its own loss's
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015, eq. 3): x̃ = clip₀¹(x + ε·sign(∇ₓJ))."""
    net.eval()
    return (x + eps * input_gradient(net, x, y).sign()).clamp(0.0, 1.0)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection onto {‖x' − x‖∞ ≤ ε} ∩ [0, 1]ᵈ: both are boxes, so it is a clamp."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def pgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step_size: float,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent on −J (Madry et al. 2018, eq. 2.1) from a uniform random start
    in the ε-ball: x ← Π(x + α·sign(∇ₓJ)), ``steps`` times. Returns ``[B, ...]`` within the ball."""
    net.eval()
    noise = rng.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator) * 2 - 1
    x_adv = project(x + eps * noise, x, eps)
    for _ in range(steps):
        x_adv = project(x_adv + step_size * input_gradient(net, x_adv, y).sign(), x, eps)
    return x_adv


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    logits = net(x)
    return multiclass_accuracy(logits, y, logits.shape[-1], average="micro").item()
