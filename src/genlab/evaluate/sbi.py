"""Scoring a posterior estimate against a reference: C2ST and simulation-based calibration.

* **C2ST** (classifier two-sample test; Lopez-Paz & Oquab 2017, as sbibm scores NPE: Lueckmann et al. 2021, §3):
  label the estimate's samples 0 and the reference's 1, and report the cross-validated accuracy of a classifier
  telling them apart. 0.5: indistinguishable; 1: disjoint. The classifier is sbibm's: an MLP with two hidden layers
  of 10·dim units on inputs standardised by the pooled samples, accuracy from stratified k-fold cross-validation
  (scikit-learn ``MLPClassifier``, ``cross_val_score``).
* **SBC** (simulation-based calibration; Talts et al. 2018, Alg. 1): draw θ* ~ p(θ), x ~ p(x | θ*) and L draws
  θ_1..L of the posterior estimate for that x; the rank r = #{l : θ_l < θ*} (per dimension) is uniform on
  {0, …, L} for every θ* whenever the estimate equals the true posterior (Talts et al. 2018, Thm. 1). Ties are
  broken, and the ranks made continuous, by the randomised normalised rank u = (r + U)/(L + 1), U ~ U(0, 1), which
  is exactly U(0, 1) under calibration; uniformity is tested per dimension by Kolmogorov–Smirnov
  (``scipy.stats.kstest``), and the rank histograms (B bins) by Pearson's χ² (``scipy.stats.chisquare``).
"""
from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def c2st(a: np.ndarray, b: np.ndarray, seed: int = 0, folds: int = 5, max_iter: int = 1000) -> float:
    """Cross-validated accuracy of an MLP separating samples ``a`` ``[N, D]`` from ``b`` ``[M, D]`` (module doc)."""
    x = np.concatenate([a, b]).astype(np.float64)
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    width = 10 * x.shape[1]
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(width, width), activation="relu",
                                                        max_iter=max_iter, solver="adam", early_stopping=True,
                                                        random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, x, y, cv=cv, scoring="accuracy")))


def sbc_ranks(theta_true: np.ndarray, posterior_samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomised normalised ranks u ``[N, D]`` in (0, 1) of θ* ``[N, D]`` among L posterior draws ``[N, L, D]``."""
    below = (posterior_samples < theta_true[:, None, :]).sum(axis=1)   # r ∈ {0, …, L}  [N, D]
    return (below + rng.uniform(size=below.shape)) / (posterior_samples.shape[1] + 1)


def sbc_test(ranks: np.ndarray, bins: int = 10) -> dict:
    """Uniformity of normalised ranks ``[N, D]``, per dimension: KS distance and p-value, χ² p-value of ``bins``
    equal bins, and the bin counts ``[D][bins]`` (the rank histograms)."""
    counts = np.stack([np.histogram(ranks[:, d], bins=bins, range=(0.0, 1.0))[0] for d in range(ranks.shape[1])])
    ks = [scipy.stats.kstest(ranks[:, d], "uniform") for d in range(ranks.shape[1])]
    return {"ks_stat": [float(k.statistic) for k in ks], "ks_p": [float(k.pvalue) for k in ks],
            "chi2_p": [float(scipy.stats.chisquare(c).pvalue) for c in counts], "counts": counts.tolist(),
            "n": int(ranks.shape[0])}


def ks_critical(n: int, dims: int, alpha: float = 0.05) -> float:
    """The KS distance above which uniformity of ``n`` ranks is rejected at level α in any of ``dims`` dimensions
    (Bonferroni: each at α/dims): the 1 − α/dims quantile of the exact one-sample KS distribution."""
    return float(scipy.stats.kstwo.ppf(1.0 - alpha / dims, n))
