"""Stage `emergence_eval`: each metric vs model size and vs digits; Schaeffer's toy model vs measured.

Collects ``models/emergence/w<width>.pt`` (written by the `emergence` family) and writes
``reports/metrics/emergence.json``: per size the four metrics (exact match, per-digit accuracy,
token edit distance, answer log-prob; plus Brier score and per-token loss), overall and per
digit count; how sharp each metric's rise with size is; and the toy model of Schaeffer et al.
(2023) — per-token p = exp(−L_CE) from the measured per-token loss, exact match ≈ p^L with L
the answer length in tokens — next to the measured exact match.

"Sharpness" of a metric is the share of its whole change over the size grid that happens
between one pair of neighbouring sizes (1: a single jump; 1/(sizes−1): evenly spread).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from genlab.evaluate import emergence as em
from genlab.io import load_model
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.saved.emergence import METRICS, model_config

HIGHER_IS_BETTER = {"exact_match": True, "per_digit_accuracy": True, "edit_distance": False,
                    "answer_logprob": True, "brier": False, "token_loss": False}
LABELS = {"exact_match": "exact match", "per_digit_accuracy": "per-digit accuracy",
          "edit_distance": "token edit distance", "answer_logprob": "log p(answer) [nats]",
          "brier": "Brier score / token", "token_loss": "loss / token [nats]"}


def pooled(by_digits: dict) -> dict:
    """Metrics over all test problems (weighted by count); per-token loss over all answer tokens."""
    n = np.array([r["n_problems"] for r in by_digits.values()], dtype=float)
    out = {k: float(np.average([r[k] for r in by_digits.values()], weights=n)) for k in METRICS}
    tokens = sum(r["n_problems"] * r["answer_tokens"] for r in by_digits.values())
    out["token_loss"] = -out["answer_logprob"] * n.sum() / tokens
    return out


def sharpness(values: np.ndarray, higher_is_better: bool) -> dict:
    """Largest neighbour-to-neighbour share of the total change, and where the metric gets worse with size."""
    v = values if higher_is_better else -values
    steps = np.diff(v)
    span = v.max() - v.min()
    return {"largest_step_share": float(steps.max() / span) if span > 0 else 0.0,
            "monotone": bool((steps >= 0).all()), "decreases_at": [int(i + 1) for i in np.nonzero(steps < 0)[0]]}


def toy_model(sizes: list[dict]) -> dict:
    """Schaeffer et al. (2023): p = exp(−L_CE) per size, exact match ≈ p^L per digit count; the
    power law L_CE(N) = (N/c)^α over sizes; and the p that best fits measured exact match vs L."""
    n = np.array([s["n_params"] for s in sizes], dtype=float)
    loss = np.array([s["all"]["token_loss"] for s in sizes])
    c, alpha = em.fit_loss_power_law(n, loss)
    per_size, errors = {}, []
    for s, p in zip(sizes, em.token_p(loss)):
        rows = s["by_digits"]
        lengths = np.array([r["answer_tokens"] for r in rows.values()], dtype=float)
        measured = np.array([r["exact_match"] for r in rows.values()])
        predicted = em.toy_exact_match(p, lengths)
        errors += list(np.abs(predicted - measured))
        per_size[f"w{s['width']}"] = {
            "token_p": float(p), "token_p_fit_to_exact_match": em.fit_token_p(
                lengths, measured, weights=[r["n_problems"] for r in rows.values()]),
            "predicted_exact_match": {d: float(x) for d, x in zip(rows, predicted)},
            "measured_exact_match": {d: float(x) for d, x in zip(rows, measured)}}
    return {"loss_power_law": {"c": c, "alpha": alpha}, "mean_abs_error": float(np.mean(errors)), "sizes": per_size}


def metric_panels(sizes: list[dict], metrics: tuple[str, ...], by: str) -> plt.Figure:
    """One panel per metric: vs N (one line per digit count + all) or vs digits (one line per size)."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    digits = list(sizes[0]["by_digits"])
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(sizes) if by == "digits" else len(digits)))
    n = [s["n_params"] for s in sizes]
    for ax, metric in zip(axes.flat, metrics):
        if by == "size":
            for colour, d in zip(colours, digits):
                ax.plot(n, [s["by_digits"][d][metric] for s in sizes], "o-", color=colour, ms=3, label=f"{d} digits")
            ax.plot(n, [s["all"][metric] for s in sizes], "k.-", lw=2, label="all")
            ax.set(xscale="log", xlabel="non-embedding parameters N")
        else:
            for colour, s in zip(colours, sizes):
                ax.plot([int(d) for d in digits], [s["by_digits"][d][metric] for d in digits], "o-", color=colour,
                        ms=3, label=f"w{s['width']} (N={s['n_params']})")
            ax.set(xlabel="digits per operand", xticks=[int(d) for d in digits])
        ax.set(title=LABELS[metric])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())   # log axis: label decades only
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"emergence on addition: every metric vs {'model size' if by == 'size' else 'digits'}")
    fig.tight_layout()
    return fig


def schaeffer_figure(sizes: list[dict], toy: dict) -> plt.Figure:
    fig, (ax_loss, ax_em) = plt.subplots(1, 2, figsize=(10, 4))
    n = np.array([s["n_params"] for s in sizes], dtype=float)
    grid = np.logspace(np.log10(n.min()), np.log10(n.max()), 100)
    law = toy["loss_power_law"]
    ax_loss.plot(n, [s["all"]["token_loss"] for s in sizes], "ko", label="measured")
    ax_loss.plot(grid, (grid / law["c"]) ** law["alpha"], "k--", label=f"(N/c)^α, α={law['alpha']:.2f}")
    ax_loss.set(xscale="log", yscale="log", xlabel="N", title="per-token answer loss L_CE")
    for colour, d in zip(plt.cm.viridis(np.linspace(0, 0.9, len(sizes[0]["by_digits"]))), sizes[0]["by_digits"]):
        length = sizes[0]["by_digits"][d]["answer_tokens"]
        ax_em.plot(n, [s["by_digits"][d]["exact_match"] for s in sizes], "o", color=colour, label=f"{d} digits: measured")
        ax_em.plot(n, [toy["sizes"][f"w{s['width']}"]["predicted_exact_match"][d] for s in sizes], "-", color=colour,
                   label=f"p^{length}, p = exp(−L_CE)")
        ax_em.plot(grid, em.toy_exact_match(em.token_p((grid / law["c"]) ** law["alpha"]), length), ":", color=colour)
    ax_em.set(xscale="log", xlabel="N", title="exact match: measured vs toy model (dotted: power-law loss)")
    for ax in (ax_loss, ax_em):
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(sizes: list[dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    for colour, s in zip(plt.cm.viridis(np.linspace(0, 0.9, len(sizes))), sizes):
        ax.plot([h["step"] for h in s["history"]], [h["train_loss"] for h in s["history"]], color=colour,
                label=f"w{s['width']} (N={s['n_params']})")
    ax.set(xlabel="step", ylabel="answer loss / token [nats]", yscale="log", title="training curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def run(cfg) -> None:
    sizes = []
    for width in cfg.model.emergence.widths:
        payload = load_model(Path(cfg.paths.models) / "emergence" / f"w{width}.pt",
                             expect_config=model_config(cfg, width))
        sizes.append(payload["results"] | {"all": pooled(payload["results"]["by_digits"]),
                                           "history": payload["history"]})
    sizes.sort(key=lambda s: s["n_params"])
    toy = toy_model(sizes)
    shape = {m: sharpness(np.array([s["all"][m] for s in sizes]), HIGHER_IS_BETTER[m]) for m in HIGHER_IS_BETTER}
    write_metrics(cfg, "emergence", {
        "sizes": {f"w{s['width']}": {"n_params": s["n_params"], **s["all"], "by_digits": s["by_digits"],
                                     "train_seconds": s["train_seconds"]} for s in sizes},
        "sharpness": shape, "schaeffer": toy})

    plots, figures = plots_dir(cfg, "emergence"), figures_dir(cfg, "emergence")
    write_csv(plots / "metrics_vs_size.csv", [
        {"width": s["width"], "n_params": s["n_params"], "digits": d, **{m: r[m] for m in HIGHER_IS_BETTER}}
        for s in sizes for d, r in [*s["by_digits"].items(), ("all", s["all"])]])
    write_csv(plots / "train_curves.csv", [{"width": s["width"], **h} for s in sizes for h in s["history"]])
    panels = ("exact_match", "per_digit_accuracy", "edit_distance", "answer_logprob", "brier", "token_loss")
    save_figure(metric_panels(sizes, panels, "size"), figures / "metrics_vs_size.png")
    save_figure(metric_panels(sizes, panels, "digits"), figures / "metrics_vs_digits.png")
    save_figure(schaeffer_figure(sizes, toy), figures / "schaeffer_toy_model.png")
    save_figure(curves_figure(sizes), figures / "train_curves.png")
    for s in sizes:
        print(f"[genlab] emergence: w{s['width']} N={s['n_params']}: " + ", ".join(
            f"{m}={s['all'][m]:.3f}" for m in HIGHER_IS_BETTER))
    print("[genlab] emergence: largest-step share " + ", ".join(
        f"{m}={v['largest_step_share']:.2f}" for m, v in shape.items()))
