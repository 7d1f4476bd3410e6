"""Sample quality in the feature space of the pipeline's own MNIST CNN (no hub weights).

FID (Heusel et al. 2017): ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^{1/2}) between Gaussians fitted to
the CNN's penultimate activations (128-D) of real and generated images — torchmetrics'
``FrechetInceptionDistance`` with a custom ``feature`` module, which does not need torch-fidelity.
Class accuracy: the same CNN classifies each sample; compared with the label it was generated for.
Both take images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) in [0, 1].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.image.fid import FrechetInceptionDistance

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
    pass per batch. Batches of 100 images run ~2× faster than 500 on a 2-core CPU (activations stay in cache)."""

    def __init__(self, cnn: CNN, real: torch.Tensor, batch_size: int = 100):
        self.cnn, self.batch_size, self.features = cnn, batch_size, CNNFeatures(cnn)
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


def choose_guidance(scorer: SampleScorer, arrays: dict[str, np.ndarray], runs: list[dict]) -> float:
    """The guidance weight w > 0 whose run has the lowest FID on the scorer's real images — the *validation*
    images: the test set never chooses anything. Every run gets ``val_fid``, ``val_accuracy``, ``val_n`` in place.

    ``runs``: dicts with ``key`` and ``guidance_w``; ``arrays``: ``<key>_x`` [N, 28, 28] in [0, 1], ``<key>_y`` [N].
    """
    for r in runs:
        r.update({f"val_{k}": v for k, v in scorer(arrays[f"{r['key']}_x"], arrays[f"{r['key']}_y"]).items()})
    return min((r for r in runs if r["guidance_w"] > 0), key=lambda r: r["val_fid"])["guidance_w"]
