"""Inpainting with a trained flow: sample the hidden pixels of an image given its visible ones.

Replacement (the "imputation" of Song et al. 2021, App. I.2; RePaint, Lugmayr et al. 2022, without its
resampling): integrate the flow's ODE from noise x0 (t = 0) to data (t = 1) with Euler steps, and before every
step overwrite the visible pixels with where the conditional path puts the observation at that time. For
flow matching with the independent coupling and σ = 0 that path is the straight line
    x_t = t·x_obs + (1 − t)·x0                                    (Lipman et al. 2023; Tong et al. 2024, eq. 14)
from the same noise, so the visible part of the state is exactly on the path the model was trained on, and the
field moves the hidden part to agree with it. The result is not an exact sample of p(hidden | visible): early,
while the visible evidence is still weak, the noise in the hidden part can commit the sample to a completion the
visible part does not favour (RePaint's resampling — re-noising and repeating steps — reduces this; it is not
done here). It needs no retraining and one network call per step.
"""
from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def inpaint(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_obs: torch.Tensor, mask: torch.Tensor,
            x0: torch.Tensor, nfe: int) -> torch.Tensor:
    """Complete ``x_obs`` ``[B, …]`` where ``mask`` (broadcastable, 1 = visible, 0 = to fill) is 0.

    ``velocity(x [B, …], t [B]) → [B, …]`` is the flow's field (t = 0 noise, t = 1 data); ``x0`` ``[B, …]`` the
    noise; ``nfe`` Euler steps. Returns ``[B, …]`` equal to ``x_obs`` on the visible pixels.
    """
    if nfe < 1:
        raise ValueError(f"inpainting needs nfe ≥ 1 (got {nfe})")
    mask = mask.to(x_obs.dtype)
    x, dt = x0.clone(), 1.0 / nfe
    for k in range(nfe):
        t = torch.full((len(x),), k * dt, dtype=x.dtype, device=x.device)
        x = mask * (k * dt * x_obs + (1 - k * dt) * x0) + (1 - mask) * x   # visible pixels: on the path at t
        x = x + dt * velocity(x, t)
    return mask * x_obs + (1 - mask) * x
