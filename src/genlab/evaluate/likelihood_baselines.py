"""Closed-form density baselines for the digits CNF, under the CNF's own dequantization.

The CNF models y = k + u (pixels k ∈ {0…L−1}, u ~ U[0,1)^D) and reports −log p(y) in bits per
dimension. A model must beat these, fitted on the training split in closed form and scored on the
same (val or test) pixels with the same dequantization noise:

* **Gaussian (full covariance) in the CNF's logit space.** z = logit(α + (1−2α)·y/L) as in
  ``genlab.models.cnf.LogitDequantize``; the maximum-likelihood N(μ, Σ) of the training z (Σ plus a
  small ridge), so log p(y) = log N(z; μ, Σ) + Σ_d log|dz_d/dy_d|. It is the CNF with a linear flow.
* **Independent per-pixel categorical.** p(k_d) per pixel from training counts with add-½ smoothing
  (Krichevsky–Trofimov); the dequantized density is constant on [k, k+1), so −log p(y) = −Σ_d log p(k_d)
  exactly (no dequantization noise enters).

Pixels are ``[N, D]`` integer arrays; results are bits per dimension, mean over images, with the
per-image values for intervals.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from genlab.models.cnf import LogitDequantize


def _bits(nats_per_image: np.ndarray, dims: int) -> np.ndarray:
    return nats_per_image / (dims * math.log(2))


def gaussian_bpd(train: np.ndarray, evaluate: np.ndarray, levels: int, alpha: float, seed: int = 0,
                 ridge: float = 1e-3) -> np.ndarray:
    """Per-image bits/dim ``[M]`` of ``evaluate`` ``[M, D]`` under a full-covariance Gaussian fitted to the
    dequantized, logit-transformed ``train`` ``[N, D]`` (float64; one dequantization draw each, seeded)."""
    dequant = LogitDequantize(levels, alpha)
    g = torch.Generator().manual_seed(seed)

    def logit(k: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.from_numpy(k).double()
        return dequant.logit(y + torch.rand(y.shape, generator=g, dtype=y.dtype))   # device: cpu-only (numpy in)

    z_train, _ = logit(train)
    z, log_jac = logit(evaluate)
    mu = z_train.mean(0)
    cov = torch.cov(z_train.T, correction=0)
    cov = cov + ridge * torch.eye(len(mu), dtype=cov.dtype)   # device: cpu-only (numpy in)
    log_p = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov).log_prob(z) + log_jac
    return _bits(-log_p.numpy(), train.shape[1])   # device: cpu-only (numpy in, numpy out)


def categorical_bpd(train: np.ndarray, evaluate: np.ndarray, levels: int, prior: float = 0.5) -> np.ndarray:
    """Per-image bits/dim ``[M]`` of ``evaluate`` under independent per-pixel categoricals fitted to ``train``:
    p_d(k) = (count_d(k) + prior) / (N + L·prior)."""
    n, dims = train.shape
    counts = np.stack([np.bincount(train[:, d], minlength=levels) for d in range(dims)])   # [D, L]
    log_p = np.log((counts + prior) / (n + levels * prior))
    return _bits(-log_p[np.arange(dims)[None, :], evaluate].sum(1), dims)
