"""Per-token KL(π‖π_ref) estimators and the KL-penalty coefficient controllers.

Schulman (2020), "Approximating KL divergence": with tokens x ~ π and
log r = log π_ref(x) − log π(x),
    k1 = −log r                 (unbiased, high variance, can be negative)
    k3 = (r − 1) − log r        (unbiased, ≥ 0, low variance)
"""
from __future__ import annotations

import torch


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate ``[B, T]`` from log-probs of the sampled tokens under π and π_ref."""
    log_r = ref_logp - logp
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}")


class KLController:
    """β of the penalty −β·KL. Fixed when ``target`` is None, else adaptive
    (Ziegler et al. 2019, §2.2): e = clip(KL/target − 1, ±0.2), β ← β·(1 + e·n/horizon)."""

    def __init__(self, beta: float, target: float | None = None, horizon: int = 10000):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta
