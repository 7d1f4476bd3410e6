"""Calibration: is a classifier's confidence its accuracy? (Guo et al. 2017, "On Calibration of
Modern Neural Networks").

* ECE (§2, eq. 3): Σ_m |B_m|/n · |acc(B_m) − conf(B_m)| over equal-width confidence bins —
  torchmetrics' ``multiclass_calibration_error`` (l1 norm).
* Reliability diagram data: per bin, mean confidence, accuracy and count, binned exactly like
  torchmetrics (bin m holds confidences in [m/M, (m+1)/M); a confidence of exactly 1 goes in the last bin).
* Temperature scaling (§4.2): one scalar T > 0 for all logits, softmax(z / T), fitted by
  minimising the NLL on held-out (validation) data with L-BFGS. Dividing by T is monotone,
  so the arg-max — and hence accuracy — never changes.
* A paired bootstrap (Efron & Tibshirani 1993, §16) of ECE(after) − ECE(before) over the same resampled
  test points: with ~1,000 test images ECE itself has a noise floor of ~0.005, so a change smaller than
  that is no change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error


def ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error of probabilities ``[N, K]`` against labels ``[N]``."""
    return multiclass_calibration_error(probs, labels, probs.shape[-1], n_bins=n_bins, norm="l1").item()


def reliability(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> list[dict]:
    """One row per confidence bin: {bin_lo, bin_hi, confidence, accuracy, count} (empty bins: NaN)."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).to(confidence.dtype)
    dtype, device = confidence.dtype, confidence.device
    edges = torch.linspace(0, 1, n_bins + 1, dtype=dtype, device=device)
    index = torch.bucketize(confidence, edges[1:-1], right=True)          # [N] in 0..n_bins-1
    count = torch.zeros(n_bins, dtype=dtype, device=device).index_add_(0, index, torch.ones_like(confidence))
    conf_sum = torch.zeros(n_bins, dtype=dtype, device=device).index_add_(0, index, confidence)
    acc_sum = torch.zeros(n_bins, dtype=dtype, device=device).index_add_(0, index, correct)
    return [{"bin_lo": edges[m].item(), "bin_hi": edges[m + 1].item(), "count": int(count[m]),
             "confidence": (conf_sum[m] / count[m]).item() if count[m] else float("nan"),
             "accuracy": (acc_sum[m] / count[m]).item() if count[m] else float("nan")} for m in range(n_bins)]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """argmin_T NLL(softmax(logits / T), labels) for logits ``[N, K]``; optimised over log T (T > 0)."""
    logits = logits.detach()
    log_t = torch.zeros(1, device=logits.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return log_t.exp().item()


def ece_change_ci(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor, n_bins: int = 15,
                  n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ECE(after) − ECE(before) for probabilities ``[N, K]`` of the same points."""
    g = torch.Generator().manual_seed(seed)
    diffs = []
    for _ in range(n_boot):
        i = torch.randint(0, len(labels), (len(labels),), generator=g, device=g.device).to(labels.device)   # drawn where g is
        diffs.append(ece(after[i], labels[i], n_bins) - ece(before[i], labels[i], n_bins))
    # device: cpu-only (a summary of Python floats)
    lo, hi = torch.tensor(diffs).quantile(torch.tensor([0.025, 0.975])).tolist()
    return lo, hi
