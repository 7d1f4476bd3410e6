"""Stage `classifier`: MLP and CNN on MNIST → test accuracy/ECE, confusion matrices, weights.

Writes ``models/classifier/<arch>.pt`` (the CNN's penultimate layer is the FID
feature space of the generative stages), ``reports/metrics/classifier.json`` and
``reports/plots/classifier/``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from omegaconf import OmegaConf

from genlab import runner
from genlab.data.loader import loader
from genlab.io import load_arrays, save_model
from genlab.models.classifier import Classifier
from genlab.nn.classifiers import build
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics


def load_mnist(cfg) -> dict[str, torch.Tensor]:
    arrays, _ = load_arrays(Path(cfg.paths.data) / "mnist")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def model_config(cfg, arch: str) -> dict:
    """What a saved classifier depends on (checked again when a later stage loads it)."""
    c = OmegaConf.to_container(cfg.model.classifier, resolve=True)
    return {"arch": arch, **c[arch], **{k: v for k, v in c.items() if k not in ("archs", "mlp", "cnn")}}


def fit_and_test(cfg, module: Classifier, data: dict[str, torch.Tensor], *, stage: str, run: str, run_config,
                 epochs: int, batch_size: int, callbacks: list | None = None) -> dict:
    """Train ``module`` on ``train_x/y`` (validated on ``val_x/y`` each epoch), then test on ``test_x/y``."""
    train = loader(data["train_x"], data["train_y"], batch_size=batch_size, seed=cfg.seed)
    val = loader(data["val_x"], data["val_y"], batch_size=1000, train=False)
    with runner.session(cfg, stage=stage, run=run, run_config=run_config, max_epochs=epochs,
                        callbacks=callbacks) as trainer:
        clock = runner.fit(trainer, module, train, val)
        test = trainer.test(module, loader(data["test_x"], data["test_y"], batch_size=1000, train=False),
                            verbose=False)[0]
    return {"test_accuracy": test["test/acc"], "test_ece": test["test/ece"], "test_loss": test["test/loss"],
            "parameters": sum(p.numel() for p in module.net.parameters()), "train_seconds": clock.seconds}


def train_one(cfg, arch: str, data: dict[str, torch.Tensor], stage: str = "classifier",
              run: str | None = None) -> tuple[Classifier, dict]:
    """The classifier recipe for ``arch`` (``run`` names the run under ``stage``; default: the arch)."""
    c = cfg.model.classifier
    runner.seed_all(cfg)
    module = Classifier(build(arch, c[arch]), c.lr, c.weight_decay, c.shift)
    return module, fit_and_test(cfg, module, data, stage=stage, run=run or arch,
                                run_config=[model_config(cfg, arch), cfg.data.mnist], epochs=c[arch].epochs,
                                batch_size=c.batch_size)


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
