"""Predictive uncertainty of a deep ensemble, and out-of-distribution detection with it.

A deep ensemble (Lakshminarayanan et al. 2017, eq. 5) predicts p(y|x) = 1/M Σ_m p_θm(y|x);
its predictive entropy H[p] = −Σ_y p(y|x) log p(y|x) is high where the members disagree or are
each unsure. If uncertainty means anything, H is higher on inputs unlike the training data:
the AUROC of H as a score separating OOD (positive) from in-distribution test inputs
(Hendrycks & Gimpel 2017) measures that — 0.5 is chance, 1 perfect, below 0.5 means the
model is *more* confident off-distribution.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from genlab.nn import rng

OOD_KINDS = ("rotated", "noise")


@torch.no_grad()
def ensemble_probs(nets: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Mean softmax of the members (eval mode) on images ``[B, 1, H, W]`` → ``[B, K]``."""
    return torch.stack([net.eval()(x).softmax(-1) for net in nets]).mean(0)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy in nats of ``[N, K]`` probabilities → ``[N]`` (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def ood_inputs(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """OOD images like ``x`` ``[B, 1, H, W]``: digits rotated by 90°, or uniform noise in [0, 1]."""
    if kind == "rotated":
        return torch.rot90(x, 1, dims=(2, 3))
    if kind == "noise":
        return rng.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    raise ValueError(f"unknown OOD kind {kind!r}; use one of {OOD_KINDS}")


def ood_auroc(score_in: torch.Tensor, score_out: torch.Tensor) -> float:
    """AUROC of a score ``[N_in]`` vs ``[N_out]`` with OOD as the positive class (= P(s_out > s_in))."""
    scores = torch.cat([score_in, score_out])
    target = torch.cat([torch.zeros(len(score_in), dtype=torch.long, device=score_in.device),
                        torch.ones(len(score_out), dtype=torch.long, device=score_out.device)])
    return binary_auroc(scores, target).item()
