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

Which p? The toy model needs each (size, length) cell's *own* per-token probability. Two
estimates are compared here (``cell_predictions``): the token accuracy p_tok (share of answer tokens
whose argmax is right under teacher forcing) and exp(−L_CE) of that cell. exp(−L_CE) is the
geometric mean of p(y_t): a confident greedy decoder gets a token right whenever the true token has
the largest probability, even at p(y_t) = 0.6, so exp(−L_CE)^L underestimates exact match once the
model is confident, and is too high while the model is near uniform. p_tok^L is exact for independent
token errors; errors that cluster in the same answers (a carry chain) make measured exact match
higher than p_tok^L.

Abrupt or smooth (``largest_change``): the share of a metric's whole range over the size grid that
it covers within one *size interval* — two sizes at most a factor ``window`` apart in N. Above one half
the metric is abrupt there. A power law m = a·N^(−α) covers log(window)/log(N_max/N_min) of its log
range in any such interval; on a linear scale, a shallow power law is spread too (a planted law is
the test). The CI of the share is Welch's over seeds for the difference of the interval's two end
sizes, divided by the range of the seed-mean curve (treated as fixed).

Answers are strings of single-character tokens (``genlab.data.arithmetic``), so the string
edit distance is the token edit distance.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from torchmetrics.functional.text import edit_distance

from genlab.evaluate import stats


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


# --- the Schaeffer test per (size, length) cell --------------------------------------------

def cell_predictions(exact: np.ndarray, token_accuracy: np.ndarray, token_loss: np.ndarray,
                     lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Predicted exact match of every cell from that cell's own per-token p, two ways.

    exact, token_accuracy, token_loss ``[..., K]`` (any leading axes: sizes, seeds), lengths ``[K]``
    answer tokens L of the K lengths. Returns ``[..., K]`` arrays: ``p_tok`` = token_accuracy^L,
    ``exp_ce`` = exp(−L_CE)^L, and their errors ``err_p_tok`` = p_tok^L − exact, ``err_exp_ce``.
    """
    lengths = np.asarray(lengths, dtype=float)
    p_tok = toy_exact_match(token_accuracy, lengths)
    exp_ce = toy_exact_match(token_p(token_loss), lengths)
    exact = np.asarray(exact, dtype=float)
    return {"p_tok": p_tok, "exp_ce": exp_ce, "err_p_tok": p_tok - exact, "err_exp_ce": exp_ce - exact}


def transition_cells(mean_exact: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """``[S, K]`` bool: cells whose seed-mean exact match lies strictly inside ``band`` (in transition);
    the rest are saturated — at the floor or at the ceiling, where any p ≈ 0 or ≈ 1 predicts well."""
    lo, hi = band
    return (mean_exact > lo) & (mean_exact < hi)


def per_seed_mean_abs_error(errors: np.ndarray, cells: np.ndarray) -> np.ndarray | None:
    """errors ``[S, R, K]`` (sizes, seeds, lengths), cells ``[S, K]`` bool → ``[R]`` mean |error| over the
    chosen cells for each seed (the unit of the CI), or None when no cell is chosen."""
    if not cells.any():
        return None
    return np.array([np.abs(errors[:, r, :][cells]).mean() for r in range(errors.shape[1])])


def largest_change(n_params: np.ndarray, values: np.ndarray, window: float, higher_is_better: bool = True,
                   log: bool = False, interval: tuple[int, int] | None = None) -> dict:
    """How much of its range a metric covers within one size interval (N_j / N_i ≤ ``window``).

    n_params ``[S]`` ascending, values ``[S, R]`` (sizes × seeds). On ``log`` scale the values are
    log-transformed first (a loss: a power law is then a straight line in log N). With the seed means
    m̄_i and range R = max m̄ − min m̄, the share of interval (i, j) is (m̄_j − m̄_i)/R, signed so that
    improvement is positive. The interval with the largest share is chosen (or ``interval`` is used);
    its CI is Welch's t-interval of m̄_j − m̄_i over seeds, divided by R.

    Verdict: "abrupt" if the CI lies above 1/2, "smooth" if below, "inconclusive" if it straddles 1/2;
    "flat" when the range is 0 (no change to share). Returns {"share", "ci", "interval": [N_i, N_j],
    "index": [i, j], "range", "verdict", "method"}.
    """
    n = np.asarray(n_params, dtype=float)
    v = np.asarray(values, dtype=float)
    if log:
        v = np.log(np.maximum(v, 1e-12))
    if not higher_is_better:
        v = -v
    mean = v.mean(1)
    span = float(mean.max() - mean.min())
    if span <= 0:
        return {"share": 0.0, "ci": [0.0, 0.0], "interval": None, "index": None, "range": 0.0, "verdict": "flat",
                "method": "no change over the size grid"}
    if interval is None:
        pairs = [(i, j) for i in range(len(n)) for j in range(i + 1, len(n)) if n[j] / n[i] <= window * (1 + 1e-9)]
        if not pairs:
            pairs = [(i, i + 1) for i in range(len(n) - 1)]     # a grid coarser than the window: neighbours
        interval = max(pairs, key=lambda ij: mean[ij[1]] - mean[ij[0]])
    i, j = interval
    share = float((mean[j] - mean[i]) / span)
    if v.shape[1] >= 2:
        diff = stats.unpaired_difference(v[j], v[i])
        ci = None if diff["ci"] is None else [diff["ci"][0] / span, diff["ci"][1] / span]
        method = diff["method"] + ", divided by the range of the seed-mean curve"
    else:
        ci, method = None, "one seed: no interval"
    verdict = stats.verdict(ci, 0.5, "greater")
    word = {"holds": "abrupt", "does not hold": "smooth", "inconclusive": "inconclusive"}[verdict]
    return {"share": share, "ci": ci, "interval": [float(n[i]), float(n[j])], "index": [int(i), int(j)],
            "range": span, "verdict": word, "method": method}
