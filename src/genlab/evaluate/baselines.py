"""Classical baselines a classifier must beat, fitted on the same split: logistic regression and k-NN
on raw pixels (scikit-learn), each with its one hyper-parameter chosen on the validation split.

Inputs are NumPy arrays: images ``[N, H, W]`` (or ``[N, D]``) with intensities in 0..255 and labels ``[N]``.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

LOGREG_C = (0.01, 0.1, 1.0)     # inverse L2 strength, chosen on validation
KNN_K = (1, 3, 5, 9)            # neighbours, chosen on validation


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float64) / 255.0


def _select(make, grid, data: dict[str, np.ndarray]) -> dict:
    """Fit ``make(h)`` for each h in ``grid`` on train, keep the best on val, report it on test."""
    train_x, val_x, test_x = (_flat(data[f"{s}_x"]) for s in ("train", "val", "test"))
    val_scores = {}
    for h in grid:
        val_scores[h] = make(h).fit(train_x, data["train_y"]).score(val_x, data["val_y"])
    best = max(grid, key=lambda h: (val_scores[h], -grid.index(h)))   # ties: the first (simplest) setting
    model = make(best).fit(train_x, data["train_y"])
    return {"chosen_on_val": best, "val_accuracy": float(val_scores[best]),
            "test_accuracy": float(model.score(test_x, data["test_y"]))}


def pixel_baselines(data: dict[str, np.ndarray]) -> dict[str, dict]:
    """{"logistic_regression": …, "knn": …}: each {chosen_on_val, val_accuracy, test_accuracy}.

    ``data`` holds ``{train,val,test}_x`` and ``_y``. Both models are deterministic given the data, so
    they carry no seed variance: their noise is the test set's (``binomial_se``).
    """
    return {"logistic_regression": _select(lambda c: LogisticRegression(C=c, max_iter=300), LOGREG_C, data),
            "knn": _select(lambda k: KNeighborsClassifier(n_neighbors=k), KNN_K, data)}


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent test examples: √(p(1−p)/n)."""
    return float(np.sqrt(accuracy * (1 - accuracy) / n))
