"""Sample quality in the feature space of the pipeline's own MNIST CNN (no hub weights).

FID (Heusel et al. 2017): ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^{1/2}) between Gaussians fitted to
the CNN's penultimate activations (128-D) of real and generated images — torchmetrics'
``FrechetInceptionDistance`` with a custom ``feature`` module, which does not need torch-fidelity.
Class accuracy: the same CNN classifies each sample; compared with the label it was generated for.
Both take images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) in [0, 1].

Intervals and floors (``fid_ci``, ``real_vs_real``): FID is a biased, noisy statistic of N samples, so
a run's FID comes with a bootstrap interval over its samples (for its expected value at this N), and
beside it the FID of *real* images against the same reference at the same N — the noise floor no
generator can beat at that N.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance

from genlab.evaluate.selection import SPLITS, choose_guidance as guidance_rule
from genlab.io import load_model
from genlab.nn.classifiers import CNN, build
from genlab.saved.classifier import model_config


def load_cnn(cfg) -> CNN:
    """The CNN trained by the `classifier` stage (``models/classifier/cnn.pt``), in eval mode."""
    payload = load_model(Path(cfg.paths.models) / "classifier" / "cnn.pt", expect_config=model_config(cfg, "cnn"))
    net = build("cnn", cfg.model.classifier.cnn)
    net.load_state_dict(payload["state_dict"])
    return net.eval().requires_grad_(False)


class CNNFeatures(nn.Module):
    """``[B, 1, 28, 28]`` in [0, 1] → penultimate CNN activations ``[B, d]``; always in eval mode. Keeps the
    last batch's activations (``last``) so that the scorer classifies them without a second CNN pass."""

    def __init__(self, cnn: CNN):
        super().__init__()
        self.cnn, self.num_features = cnn, cnn.n_features
        self.last: torch.Tensor | None = None

    def train(self, mode: bool = True) -> "CNNFeatures":
        return super().train(False)        # BatchNorm/Dropout must not switch to training statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.cnn.features(x.float())
        return self.last


def as_images(x: torch.Tensor) -> torch.Tensor:
    """``[N, 28, 28]`` or ``[N, 1, 28, 28]`` → float ``[N, 1, 28, 28]`` clipped to [0, 1]."""
    x = torch.as_tensor(x).float()   # device: cpu-only (the scorer's CNN and FID statistics stay on the CPU)
    return (x.unsqueeze(1) if x.dim() == 3 else x).clamp(0, 1)


class SampleScorer:
    """FID against a fixed real set (features computed once) and CNN class accuracy of samples, from one CNN
    pass per batch. Small batches keep the activations in a CPU's cache."""

    def __init__(self, cnn: CNN, real: torch.Tensor, batch_size: int = 100, split: str = "val"):
        assert split in SPLITS, split
        self.cnn, self.batch_size, self.features, self.split = cnn, batch_size, CNNFeatures(cnn), split
        self.fid = FrechetInceptionDistance(feature=self.features, normalize=True, reset_real_features=False,
                                            input_img_size=(1, 28, 28))
        for chunk in as_images(real).split(batch_size):
            self.fid.update(chunk, real=True)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Samples ``x`` ``[N, 28, 28]`` in [0, 1] generated for labels ``y`` ``[N]`` → {fid, accuracy, n}."""
        self.fid.reset()                   # keeps the real statistics
        acc = MulticlassAccuracy(self.cnn.head[-1].out_features, average="micro")
        # device: cpu-only (as in as_images)
        for xb, yb in zip(as_images(x).split(self.batch_size), torch.as_tensor(y).split(self.batch_size)):
            self.fid.update(xb, real=False)
            acc.update(self.cnn.head(self.features.last), yb)     # = self.cnn(xb), from FID's features
        return {"fid": float(self.fid.compute()), "accuracy": float(acc.compute()), "n": len(x)}


def score_runs(scorer: SampleScorer, arrays: dict[str, np.ndarray], runs: list[dict]) -> None:
    """Every run gets ``<split>_fid``, ``<split>_accuracy``, ``<split>_n`` in place, scored against the scorer's
    real images. ``arrays``: ``<key>_x`` [N, 28, 28] in [0, 1], ``<key>_y`` [N]."""
    for r in runs:
        r.update({f"{scorer.split}_{k}": v for k, v in scorer(arrays[f"{r['key']}_x"], arrays[f"{r['key']}_y"]).items()})


def choose_guidance(scorer: SampleScorer, arrays: dict[str, np.ndarray], runs: list[dict], accuracy_bar: float) -> float:
    """The guidance weight chosen by ``genlab.evaluate.selection.choose_guidance`` (lowest FID among the runs whose
    class accuracy ≥ ``accuracy_bar``, else lowest FID) on the scorer's real images — the *validation* images: a
    test scorer is refused. Every run is scored in place (``score_runs``); ``runs`` holds one run per w."""
    score_runs(scorer, arrays, runs)
    rows = [{"guidance_w": r["guidance_w"], "fid": r[f"{scorer.split}_fid"], "accuracy": r[f"{scorer.split}_accuracy"]}
            for r in runs]
    return guidance_rule(rows, scorer.split, accuracy_bar)["guidance_w"]


# --- FID from features: intervals and the real-vs-real floor ---------------------------------

@torch.no_grad()
def features(cnn: CNN, x, batch_size: int = 100) -> np.ndarray:
    """Penultimate CNN activations ``[N, d]`` (float64) of images ``[N, 28, 28]`` in [0, 1]."""
    f = CNNFeatures(cnn)
    return torch.cat([f(xb) for xb in as_images(x).split(batch_size)]).double().numpy()   # device: cpu-only (as above)


class Reference:
    """Statistics of the real reference features ``[M, d]``, computed once: mean μ_r, covariance Σ_r and its
    symmetric square root S = Σ_r^{1/2} (eigendecomposition), so each FID needs one symmetric eigenproblem."""

    def __init__(self, real: np.ndarray):
        self.mu, self.cov = real.mean(0), np.cov(real, rowvar=False)
        vals, vecs = np.linalg.eigh(self.cov)
        self.sqrt = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
        self.n = len(real)


def frechet(a: np.ndarray, ref: Reference) -> float:
    """FID of features ``[N, d]`` against a ``Reference``: ‖μ_a − μ_r‖² + Tr(Σ_a + Σ_r − 2(Σ_r Σ_a)^{1/2})
    (Heusel et al. 2017, eq. 6), unbiased covariances as torchmetrics. Tr((Σ_r Σ_a)^{1/2}) = Tr((S Σ_a S)^{1/2})
    for S = Σ_r^{1/2} (the two products are similar matrices), and S Σ_a S is symmetric PSD: the sum of the
    square roots of its eigenvalues."""
    mu, cov = a.mean(0), np.cov(a, rowvar=False)
    root = np.sqrt(np.clip(np.linalg.eigvalsh(ref.sqrt @ cov @ ref.sqrt), 0, None)).sum()
    return float(((mu - ref.mu) ** 2).sum() + np.trace(cov) + np.trace(ref.cov) - 2 * root)


def centred_interval(estimate: float, boots: list[float], confidence: float = 0.95) -> list[float]:
    """A CI for E[θ̂] at this N from bootstrap replicates θ*: the spread of θ* − mean(θ*) laid around θ̂,
    [θ̂ − (q_hi − m), θ̂ + (m − q_lo)] with m = mean(θ*) and q the replicate quantiles.

    FID is a biased statistic and a resample repeats images (≈ 63% distinct), which inflates it further:
    the replicates sit above θ̂, so the percentile interval [q_lo, q_hi] can miss θ̂ altogether. The
    replicates' *spread* still estimates the estimator's sampling noise (the bootstrap's use here), and
    removing their shift gives an interval for the expected FID at this sample size — the quantity two
    runs, or a run and the real-vs-real floor, are compared on at equal N. It always contains θ̂."""
    b = np.asarray(boots, dtype=float)
    lo, hi = np.quantile(b, [(1 - confidence) / 2, (1 + confidence) / 2])
    m = b.mean()
    return [float(estimate - (hi - m)), float(estimate + (m - lo))]


def fid_ci(fake: np.ndarray, real: Reference, n_boot: int = 100, seed: int = 0) -> dict:
    """FID of ``fake`` features ``[N, d]`` against the ``real`` reference with a 95% bootstrap interval over the
    generated samples (resampled with replacement; the reference is fixed), centred as ``centred_interval``
    explains. The unit is a sample within one trained model, so the interval is sampling noise, not
    seed-to-seed variation."""
    rng = np.random.default_rng(seed)
    boots = [frechet(fake[rng.integers(0, len(fake), len(fake))], real) for _ in range(n_boot)]
    estimate = frechet(fake, real)
    return {"estimate": estimate, "ci": centred_interval(estimate, boots), "boot": boots, "n": len(fake),
            "confidence": 0.95, "method": f"bootstrap over {len(fake)} samples ({n_boot} resamples), "
                                          "replicate spread centred on the estimate"}


def fid_difference_ci(a: np.ndarray, b: np.ndarray, real: Reference, n_boot: int = 100, seed: int = 0) -> dict:
    """FID(a) − FID(b) against the same ``real`` features, with a 95% bootstrap interval resampling the two
    (independent) sample sets separately, centred as ``centred_interval`` explains (the resampling inflation
    of the two FIDs differs when their sample sets differ in spread)."""
    rng = np.random.default_rng(seed)
    boots = [frechet(a[rng.integers(0, len(a), len(a))], real) - frechet(b[rng.integers(0, len(b), len(b))], real)
             for _ in range(n_boot)]
    estimate = frechet(a, real) - frechet(b, real)
    return {"estimate": estimate, "ci": centred_interval(estimate, boots), "n": min(len(a), len(b)),
            "confidence": 0.95, "method": f"bootstrap over samples ({n_boot} resamples each set), "
                                          "replicate spread centred on the estimate"}


def real_vs_real(pool: np.ndarray, real: Reference, n: int, n_subsets: int = 20, seed: int = 0) -> dict:
    """The FID noise floor: FID of ``n`` real images drawn without replacement from ``pool`` features (images
    disjoint from the reference) against ``real``, over ``n_subsets`` random subsets: mean and 95% percentile
    interval. A generator whose FID is inside it is indistinguishable from real data at this N."""
    rng = np.random.default_rng(seed)
    if len(pool) < n:
        raise ValueError(f"real-vs-real FID needs {n} pool images, have {len(pool)}")
    values = [frechet(pool[rng.choice(len(pool), n, replace=False)], real) for _ in range(n_subsets)]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)), "ci95": [float(lo), float(hi)],
            "n": n, "n_subsets": n_subsets}
