"""Emergent-ability metrics for answers of a sequence model, and Schaeffer's toy model of "emergence".

Discontinuous vs continuous metrics of the same predictions (Schaeffer, Miranda & Koyejo 2023,
"Are Emergent Abilities of Large Language Models a Mirage?"):

* exact match          1 if the whole greedy answer is right — a nonlinear, all-or-nothing score;
* per-digit accuracy   fraction of answer positions right (linear in per-token accuracy);
* token edit distance  Levenshtein distance between generated and true answer tokens (linear);
* answer log-prob      log p(answer | prompt) under teacher forcing, and the per-token Brier
                       score Σ_v (p_v − 1[v = y])² — continuous, they move before accuracy does.

Toy model (Schaeffer et al. 2023, Sec. 2): with per-token cross-entropy L_CE, a token is right
with probability p = exp(−L_CE); if tokens were independent, an answer of L tokens is exactly
right with probability p^L. A smooth power law L_CE(N) = (N/c)^α then gives the sharp-looking
exact match exp(−L·(N/c)^α) although nothing about the model changes abruptly.

Answers are strings of single-character tokens (``genlab.data.arithmetic``), so the string
edit distance is the token edit distance.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torchmetrics.functional.text import edit_distance


# --- metrics of generated answers (lists of N strings) ------------------------------------

def exact_match(pred: list[str], target: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """``[N]`` 1.0 where the generated answer equals the true one (length included), on ``device``."""
    return torch.tensor([float(p == t) for p, t in zip(pred, target, strict=True)], device=device)


def per_digit_accuracy(pred: list[str], target: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """``[N]`` fraction of the true answer's positions that the generated answer has right, on ``device``.

    Position-aligned (position i is the same power of ten in both); a missing position is wrong,
    extra generated tokens are not counted (edit distance sees them).
    """
    return torch.tensor([sum(a == b for a, b in zip(p, t)) / len(t) for p, t in zip(pred, target, strict=True)],
                        device=device)


def token_edit_distance(pred: list[str], target: list[str]) -> torch.Tensor:
    """``[N]`` Levenshtein distance (insert/delete/substitute, cost 1) in tokens (torchmetrics)."""
    return edit_distance(pred, target, reduction="none").float()


# --- continuous scores under teacher forcing ----------------------------------------------

def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits upcast to float32 for the softmax; float32 and float64 kept as they are."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def answer_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` log p(answer) = Σ_t log softmax(logits_t)[y_t] over the answer positions.

    logits ``[N, T, V]`` predict targets ``[N, T]``; mask ``[N, T]`` (bool) marks the answer tokens.
    """
    logp = F.log_softmax(_at_least_float32(logits), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def token_brier(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` mean over answer positions of the Brier score Σ_v (p_v − 1[v = y])² ∈ [0, 2] (Brier 1950)."""
    probs = _at_least_float32(logits).softmax(-1)
    per_token = (probs - F.one_hot(targets, probs.shape[-1])).pow(2).sum(-1)
    return (per_token * mask).sum(-1) / mask.sum(-1)


# --- Schaeffer et al. (2023) toy model -----------------------------------------------------

def token_p(token_loss: float | np.ndarray) -> float | np.ndarray:
    """Per-token probability of the right token, p = exp(−L_CE) (Schaeffer et al. 2023, Sec. 2)."""
    return np.exp(-np.asarray(token_loss, dtype=float))


def toy_exact_match(p: float | np.ndarray, length: float | np.ndarray) -> float | np.ndarray:
    """Exact match of an answer of ``length`` independent tokens, each right with probability p: p^L."""
    return np.asarray(p, dtype=float) ** np.asarray(length, dtype=float)


def fit_token_p(lengths: np.ndarray, exact: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The p of ``exact ≈ p^L`` across answer lengths: weighted least squares on exact match, p ∈ [0, 1]."""
    lengths, exact = np.asarray(lengths, dtype=float), np.asarray(exact, dtype=float)
    w = np.ones_like(exact) if weights is None else np.asarray(weights, dtype=float)
    res = minimize_scalar(lambda p: float(np.sum(w * (p ** lengths - exact) ** 2)), bounds=(0.0, 1.0),
                          method="bounded", options={"xatol": 1e-10})
    return float(res.x)


def fit_loss_power_law(n_params: np.ndarray, token_loss: np.ndarray) -> tuple[float, float]:
    """(c, α) of L_CE(N) = (N/c)^α (Schaeffer et al. 2023, Eq. 1) by least squares in log-log space:
    log L = α log N − α log c."""
    alpha, intercept = np.polyfit(np.log(np.asarray(n_params, dtype=float)),
                                  np.log(np.asarray(token_loss, dtype=float)), 1)
    return float(np.exp(-intercept / alpha)), float(alpha)
