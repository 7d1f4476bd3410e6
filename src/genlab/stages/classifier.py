"""Stage `classifier`: MLP and CNN on MNIST over ``seeds`` → test accuracy/ECE with 95% CIs, pixel
baselines, confusion matrices, weights, and the stage's claims.

Each (arch, seed) is one replicate, run in a pool of single-thread workers. The replicate under
``seed`` is the reported model: its weights go to ``models/classifier/<arch>.pt`` (the CNN's
penultimate layer is the FID feature space of the generative stages). Logistic regression and k-NN on
raw pixels (hyper-parameters chosen on validation) are the baselines; the test set's binomial standard
error is the noise floor. Writes ``reports/metrics/classifier.json`` and ``reports/plots/classifier/``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from genlab.data.prepared import load_mnist
from genlab.evaluate import stats
from genlab.evaluate.baselines import binomial_se, pixel_baselines
from genlab.io import save_model
from genlab.parallel import run_many
from genlab.recipes.classifier import seed_run
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.saved.classifier import model_config

SUMMARIZED = ("test_accuracy", "test_ece", "test_loss", "train_seconds")


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


def ci_text(ci: list[float] | None) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "n/a: one seed"


def summary(runs: list[dict]) -> dict:
    """Per-arch metrics over seeds: each key's mean, with ``<key>_sd`` and ``<key>_ci95`` beside it."""
    out = {"n_seeds": len(runs), "parameters": runs[0]["parameters"]}
    for key in SUMMARIZED:
        s = stats.summarize([r[key] for r in runs])
        out |= {key: s["mean"], f"{key}_sd": s["sd"], f"{key}_ci95": s["ci"]}
    return out


def claims(acc: dict[str, list[float]], baselines: dict, n_test: int) -> list:
    best = max(baselines, key=lambda b: baselines[b]["test_accuracy"])
    base = baselines[best]["test_accuracy"]
    floor = f"binomial SE of one test accuracy: {binomial_se(base, n_test):.4f} (n_test={n_test})"
    rows = [claim_from_difference(
        "cnn_beats_mlp_accuracy", "classifier", "The CNN classifies MNIST more accurately than the MLP.",
        stats.paired_difference(acc["cnn"], acc["mlp"]), statistic="accuracy(CNN) − accuracy(MLP), paired by seed",
        baseline=f"{best} on pixels {base:.4f}", noise_floor=floor)] if {"cnn", "mlp"} <= acc.keys() else []
    for arch, values in acc.items():
        rows.append(claim_from_difference(
            f"{arch}_beats_pixel_baseline", "classifier",
            f"The {arch.upper()} beats the best pixel baseline ({best}, chosen on validation).",
            stats.summarize([v - base for v in values]), statistic=f"accuracy({arch.upper()}) − accuracy({best})",
            baseline=f"{best} {base:.4f}", noise_floor=floor))
    return rows


def run(cfg) -> None:
    data = load_mnist(cfg)
    archs, seeds = list(cfg.model.classifier.archs), list(cfg.seeds)
    # the CNN's runs (the long ones) first: the short MLP runs then fill the other worker's queue
    jobs = [{"cfg": cfg, "arch": a, "seed": s, "data": data, "keep": s == cfg.seed}
            for a in sorted(archs, key=lambda a: a != "cnn") for s in seeds]
    results = run_many(seed_run, jobs, desc="classifier seeds")
    baselines = pixel_baselines({k: v.numpy() for k, v in data.items()})

    curves, figures = plots_dir(cfg, "classifier"), figures_dir(cfg, "classifier")
    metrics, acc = {"seeds": seeds, "baselines": baselines}, {}
    for arch in archs:
        runs = [r for j, r in zip(jobs, results) if j["arch"] == arch]
        kept = next(r for j, r in zip(jobs, results) if j["arch"] == arch and j["keep"])
        save_model(Path(cfg.paths.models) / "classifier" / f"{arch}.pt", kept.pop("state_dict"),
                   model_config(cfg, arch))
        write_csv(curves / f"{arch}_curve.csv", kept.pop("history"))
        save_figure(confusion_figure(kept.pop("confusion"), f"{arch}: test confusion (seed {cfg.seed})"),
                    figures / f"{arch}_confusion.png")
        metrics[arch] = summary(runs) | {"saved_seed": cfg.seed, "saved_test_accuracy": kept["test_accuracy"]}
        acc[arch] = [r["test_accuracy"] for r in runs]
        m = metrics[arch]
        print(f"[genlab] classifier/{arch}: test accuracy {m['test_accuracy']:.4f} "
              f"(95% CI {ci_text(m['test_accuracy_ci95'])}, {len(seeds)} seeds), ECE {m['test_ece']:.4f}")
    for name, b in baselines.items():
        print(f"[genlab] classifier/{name} (pixels): test accuracy {b['test_accuracy']:.4f} "
              f"(chosen on val: {b['chosen_on_val']})")
    write_metrics(cfg, "classifier", add_conclusions(metrics, claims(acc, baselines, len(data["test_y"]))))
