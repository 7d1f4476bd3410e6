"""MNIST classifiers. Input: images ``[B, 1, 28, 28]`` in [0, 1]; output: logits ``[B, 10]``.

``features(x)`` returns the penultimate activations ``[B, d]``; the CNN's serve as
the feature space for FID in the generative stages (no hub weights needed).
"""
from __future__ import annotations

import torch
from torch import nn

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class MLP(nn.Module):
    """Linear 784→h → SiLU → Linear h→h → SiLU → Linear h→10 over flattened pixels."""

    def __init__(self, hidden: int = 64, dropout: float = 0.0, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.SiLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout))
        self.head = nn.Linear(hidden, n_classes)
        self.n_features = hidden

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - MNIST_MEAN) / MNIST_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNN(nn.Module):
    """Two conv blocks (c, 2c channels; 28→14→7) → Linear 7·7·2c→128 → Linear 128→10."""

    def __init__(self, channels: int = 32, dropout: float = 0.0, n_classes: int = 10, n_features: int = 128):
        super().__init__()
        c = channels

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU(),
                                 nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, c), block(c, 2 * c), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(7 * 7 * 2 * c, n_features), nn.SiLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, n_classes))
        self.n_features = n_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - MNIST_MEAN) / MNIST_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(arch: str, cfg) -> nn.Module:
    """Network for ``arch`` ("mlp" | "cnn") from its ``model.classifier.<arch>`` section."""
    return {"mlp": MLP, "cnn": CNN}[arch](cfg.width, cfg.dropout)
