"""Pairwise preference losses: Bradley–Terry reward modelling and the ΨPO family.

Bradley & Terry (1952): P(c ≻ r) = σ(r_c − r_r). Reward-model loss (Ouyang et al. 2022, eq. 1)
−log σ(r_c − r_r − m) with an optional margin m (Touvron et al. 2023, Llama 2 eq. 2) and a
reward-centering penalty η·(r_c + r_r)² (Eisenstein et al. 2023).

Direct preference losses act on h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r)):
  dpo    −log σ(β·h)                      (Rafailov et al. 2023, eq. 7)
  ipo    (h − 1/(2β))²                    (Azar et al. 2023, eq. 17, with τ = β)
  hinge  max(0, 1 − β·h)                  (SLiC, Zhao et al. 2023)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0,
                       center: float = 0.0) -> torch.Tensor:
    """Mean over ``[B]`` pairs of −log σ(r_c − r_r − m) + η·(r_c + r_r)²."""
    loss = -F.logsigmoid(r_chosen - r_rejected - margin)
    return (loss + center * (r_chosen + r_rejected) ** 2).mean()


def preference_loss(kind: str, h: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over ``[B]`` pairs of the DPO / IPO / hinge loss of the log-ratio difference ``h``."""
    if kind == "dpo":
        return -F.logsigmoid(beta * h).mean()
    if kind == "ipo":
        return ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    if kind == "hinge":
        return F.relu(1.0 - beta * h).mean()
    raise ValueError(f"unknown preference loss {kind!r}")
