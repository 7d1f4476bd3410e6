"""Stage `classifier`: MLP and CNN on MNIST → test accuracy/ECE, confusion matrices, weights.

Writes ``models/classifier/<arch>.pt`` (the CNN's penultimate layer is the FID
feature space of the generative stages), ``reports/metrics/classifier.json`` and
``reports/plots/classifier/``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from genlab.data.prepared import load_mnist
from genlab.io import save_model
from genlab.recipes.classifier import train_one
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.saved.classifier import model_config


def confusion_figure(matrix: torch.Tensor, title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4, 3.6))
    im = ax.imshow(matrix, cmap="Blues")
    for i in range(10):
        for j in range(10):
            v = int(matrix[i, j])
            ax.text(j, i, v, ha="center", va="center", fontsize=6, color="white" if v > matrix.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title, xticks=range(10), yticks=range(10))
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def run(cfg) -> None:
    data = load_mnist(cfg)
    curves, figures = plots_dir(cfg, "classifier"), figures_dir(cfg, "classifier")
    metrics = {}
    for arch in cfg.model.classifier.archs:
        module, metrics[arch] = train_one(cfg, arch, data)
        save_model(Path(cfg.paths.models) / "classifier" / f"{arch}.pt", module.net.state_dict(),
                   model_config(cfg, arch))
        write_csv(curves / f"{arch}_curve.csv", module.history)
        save_figure(confusion_figure(module.confusion.compute(), f"{arch}: test confusion"),
                    figures / f"{arch}_confusion.png")
        print(f"[genlab] classifier/{arch}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics[arch].items()))
    write_metrics(cfg, "classifier", metrics)
