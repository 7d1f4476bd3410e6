"""Stage `emergence_eval`: every metric vs model size per answer length over seeds, the Schaeffer test
per (size, length) cell, abrupt vs smooth with CIs, and the stage's claims.

Collects ``models/emergence/w<width>.pt`` (every seed's test results, written by `emergence`) and
writes ``reports/metrics/emergence.json``:

* ``sizes``: per width and digit count, each metric's mean, sd and 95% t-CI over seeds, the steps
  each seed trained, why it stopped, and steps-to-threshold.
* ``schaeffer``: the toy model of Schaeffer, Miranda & Koyejo (2023, "Are Emergent Abilities of
  Large Language Models a Mirage?"), exact match ≈ p^L, tested per cell with that cell's own p — the
  token accuracy p_tok and exp(−L_CE) (``genlab.evaluate.emergence.cell_predictions``). Mean |error|
  over seeds is reported separately for cells *in transition* (mean exact match inside
  ``transition_band``) and *saturated* cells, where any p near 0 or 1 predicts well.
* ``transition``: per metric and length, the largest share of the metric's range covered within one
  size interval (N ratio ≤ ``window``), with its CI over seeds (``largest_change``): "abrupt" above one
  half, "smooth" below. Token loss is tested on a log scale (a power law is then a line). The stage
  verdict: if some continuous metric is abrupt, "a real transition, sharpened by the metric"; if every
  continuous metric is smooth, "a mirage of the metric"; otherwise inconclusive.
* ``conclusions``: the claims rows (``genlab.report.conclusions``), at the *claim length* — the
  longest digit count whose seed-mean exact match spans at least half of [0, 1] over the size grid.

Figures (``reports/figures/emergence``): every metric vs N per length with seed bands, measured vs
predicted exact match, exact match vs L at fixed size with p_tok^L, and validation curves per size
and seed. CSVs (``reports/plots/emergence``): the same numbers, for ``dvc plots``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from genlab.evaluate import emergence as em
from genlab.evaluate import stats
from genlab.io import load_model
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.saved.emergence import model_config

HIGHER_IS_BETTER = {"exact_match": True, "token_accuracy": True, "per_digit_accuracy": True,
                    "edit_distance": False, "answer_logprob": True, "brier": False, "token_loss": False}
CONTINUOUS = ("token_accuracy", "per_digit_accuracy", "edit_distance", "answer_logprob", "brier", "token_loss")
LOG_SCALE = {"token_loss"}
LABELS = {"exact_match": "exact match", "token_accuracy": "token accuracy p_tok (teacher forced)",
          "per_digit_accuracy": "per-digit accuracy (greedy)", "edit_distance": "token edit distance",
          "answer_logprob": "log p(answer) [nats]", "brier": "Brier score / token", "token_loss": "loss / token [nats]"}


def load_runs(cfg) -> list[dict]:
    """Per width (ascending N): {"width", "n_params", "runs": [per-seed results]}."""
    sizes = []
    for width in cfg.model.emergence.widths:
        payload = load_model(Path(cfg.paths.models) / "emergence" / f"w{width}.pt",
                             expect_config=model_config(cfg, width))
        res = payload["results"]
        sizes.append({"width": width, "n_params": res["n_params"],
                      "runs": [res["seeds"][k] for k in sorted(res["seeds"], key=int)]})
    return sorted(sizes, key=lambda s: s["n_params"])


def table(sizes: list[dict], digits: list[str], metric: str) -> np.ndarray:
    """``[S, R, K]``: sizes × seeds × digit counts."""
    return np.array([[[r["by_digits"][d][metric] for d in digits] for r in s["runs"]] for s in sizes], dtype=float)


def summary_cell(values: np.ndarray) -> dict:
    s = stats.summarize(values)
    return {"mean": s["mean"], "sd": s["sd"], "ci95": s["ci"]}


def schaeffer(tables: dict, lengths: np.ndarray, cells: np.ndarray) -> dict:
    """Mean |p^L − exact match| per seed, at transition and saturated cells, for both estimates of p."""
    pred = em.cell_predictions(tables["exact_match"], tables["token_accuracy"], tables["token_loss"], lengths)
    out = {"n_transition_cells": int(cells.sum()), "n_saturated_cells": int((~cells).sum())}
    for name in ("p_tok", "exp_ce"):
        for where, chosen in (("transition", cells), ("saturated", ~cells), ("all", np.ones_like(cells))):
            per_seed = em.per_seed_mean_abs_error(pred[f"err_{name}"], chosen)
            out.setdefault(where, {})[name] = None if per_seed is None else \
                stats.summarize(per_seed) | {"per_seed": per_seed.tolist()}
    out["predicted"] = pred
    return out


def transitions(n: np.ndarray, tables: dict, digits: list[str], window: float) -> dict:
    """Per metric and digit count: ``largest_change`` over the size grid."""
    return {m: {d: em.largest_change(n, tables[m][:, :, k], window, HIGHER_IS_BETTER[m], log=m in LOG_SCALE)
                for k, d in enumerate(digits)} for m in HIGHER_IS_BETTER}


def stage_verdict(shape: dict, d: str) -> str:
    words = [shape[m][d]["verdict"] for m in CONTINUOUS]
    if "abrupt" in words:
        return "a real transition, sharpened by the metric"
    if all(w in ("smooth", "flat") for w in words):
        return "a mirage of the metric"
    return "inconclusive"


def claims(n: np.ndarray, tables: dict, digits: list[str], d: str, sch: dict, c) -> list:
    """The claim rows at digit count ``d``: exact match abrupt; each continuous metric smooth across the same
    size interval; p_tok^L within ``tolerance`` at transition cells; p_tok^L closer than exp(−L_CE)^L."""
    k = digits.index(d)
    jump = em.largest_change(n, tables["exact_match"][:, :, k], c.window)
    if jump["index"] is None:
        return []
    i, j = jump["index"]
    where = f"N {n[i]:.0f} → {n[j]:.0f}, {d}-digit answers"
    rows = [claim_from_difference(
        "emergence_exact_match_abrupt", "emergence",
        f"Exact match emerges abruptly: it covers more than half its range within one size interval "
        f"(N ratio ≤ {c.window:g}).",
        {"estimate": jump["share"], "ci": jump["ci"], "n": tables["exact_match"].shape[1], "method": jump["method"]},
        statistic=f"share of exact match's range covered at {where}", null=0.5,
        baseline="1/2 of the range", noise_floor=f"{c.window:g}× in N; grid of {len(n)} sizes")]
    for m in CONTINUOUS:
        shape = em.largest_change(n, tables[m][:, :, k], c.window, HIGHER_IS_BETTER[m], log=m in LOG_SCALE,
                                  interval=(i, j))
        if shape["ci"] is None:
            continue
        rows.append(claim_from_difference(
            f"emergence_{m}_smooth", "emergence",
            f"{LABELS[m]} is smooth across the sizes where exact match jumps (< half its range there).",
            {"estimate": shape["share"], "ci": shape["ci"], "n": tables[m].shape[1], "method": shape["method"]},
            statistic=f"share of {m}{' (log)' if m in LOG_SCALE else ''} range covered at {where}",
            direction="less", null=0.5, baseline="1/2 of the range"))
    tr = sch["transition"]
    if tr["p_tok"] is not None:
        rows.append(claim_from_difference(
            "emergence_p_tok_predicts_exact_match", "emergence",
            f"Per-cell token accuracy p_tok^L predicts exact match within {c.tolerance:g} at transition cells.",
            tr["p_tok"], statistic=f"mean |p_tok^L − exact match| over {sch['n_transition_cells']} transition cells",
            direction="less", null=c.tolerance, baseline=f"exp(−L_CE)^L: {tr['exp_ce']['mean']:.3f}"))
        diff = stats.paired_difference(tr["exp_ce"]["per_seed"], tr["p_tok"]["per_seed"])
        rows.append(claim_from_difference(
            "emergence_p_tok_beats_exp_ce", "emergence",
            "p_tok^L predicts exact match better than exp(−L_CE)^L at transition cells.",
            diff, statistic="mean |exp(−L_CE)^L − EM| − mean |p_tok^L − EM|, paired by seed"))
    return rows


def metric_panels(sizes: list[dict], tables: dict, digits: list[str]) -> plt.Figure:
    """One panel per metric vs N, one line per digit count (the seed mean), band: the range over seeds.

    The band is the seeds' min–max, not the 95% t-CI: with 3 seeds t_{0.975,2} = 4.3 makes the CI span
    most of the axis; the CIs are in emergence.json."""
    n = np.array([s["n_params"] for s in sizes], dtype=float)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(digits)))
    for ax, m in zip(axes.flat, HIGHER_IS_BETTER):
        for k, (colour, d) in enumerate(zip(colours, digits)):
            v = tables[m][:, :, k]
            mean, lo, hi = v.mean(1), v.min(1), v.max(1)
            ax.plot(n, mean, "o-", color=colour, ms=3, label=f"{d} digits (L={int(d) + 2})")
            ax.fill_between(n, lo, hi, color=colour, alpha=0.2)
        ax.set(xscale="log", xlabel="non-embedding parameters N", title=LABELS[m],
               yscale="log" if m in LOG_SCALE else "linear")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())   # log axis: label decades only
        ax.grid(alpha=0.3)
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"emergence on addition: every metric vs size, mean and range over "
                 f"{tables['exact_match'].shape[1]} seeds")
    fig.tight_layout()
    return fig


def prediction_figure(tables: dict, sch: dict, digits: list[str]) -> plt.Figure:
    """Measured vs predicted exact match per (size, seed, length) cell, for both estimates of p."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(digits)))
    for ax, name, title in zip(axes, ("p_tok", "exp_ce"), ("p = token accuracy of the cell", "p = exp(−L_CE) of the cell")):
        for k, (colour, d) in enumerate(zip(colours, digits)):
            ax.scatter(tables["exact_match"][:, :, k].ravel(), sch["predicted"][name][:, :, k].ravel(), s=10,
                       color=colour, label=f"{d} digits")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlabel="measured exact match", ylabel="predicted p^L", title=title, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Schaeffer's p^L per (size, seed, length) cell")
    fig.tight_layout()
    return fig


def length_figure(sizes: list[dict], tables: dict, digits: list[str]) -> plt.Figure:
    """Exact match vs answer length L at each size (points: mean over seeds), with p_tok^L (dashed)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    lengths = np.array([int(d) + 2 for d in digits])
    for s_i, (colour, s) in enumerate(zip(plt.cm.viridis(np.linspace(0, 0.9, len(sizes))), sizes)):
        exact = tables["exact_match"][s_i].mean(0)
        pred = (tables["token_accuracy"][s_i] ** lengths).mean(0)
        ax.plot(lengths, exact, "o-", color=colour, ms=4, label=f"w{s['width']} (N={s['n_params']})")
        ax.plot(lengths, pred, "--", color=colour, lw=1)
    ax.set(xlabel="answer length L [tokens]", ylabel="exact match", title="exact match vs L (dashed: p_tok^L)",
           xticks=lengths)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(sizes: list[dict]) -> plt.Figure:
    """Validation loss vs step, one line per seed, one colour per size."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for colour, s in zip(plt.cm.viridis(np.linspace(0, 0.9, len(sizes))), sizes):
        for i, r in enumerate(s["runs"]):
            ax.plot([h["step"] for h in r["val_history"]], [h["val_loss"] for h in r["val_history"]], color=colour,
                    alpha=0.8, lw=1, label=f"w{s['width']} (N={s['n_params']})" if i == 0 else None)
    ax.set(xlabel="step", ylabel="validation answer loss / token [nats]", yscale="log",
           title="validation curves (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def run(cfg) -> None:
    c = cfg.model.emergence
    sizes = load_runs(cfg)
    digits = [str(d) for d in c.digits]
    lengths = np.array([int(d) + 2 for d in digits], dtype=float)
    n = np.array([s["n_params"] for s in sizes], dtype=float)
    tables = {m: table(sizes, digits, m) for m in HIGHER_IS_BETTER}
    cells = em.transition_cells(tables["exact_match"].mean(1), tuple(c.transition_band))
    sch = schaeffer(tables, lengths, cells)
    shape = transitions(n, tables, digits, c.window)
    spans = {d: np.ptp(tables["exact_match"][:, :, k].mean(1)) for k, d in enumerate(digits)}
    claim_digits = max((d for d in digits if spans[d] >= 0.5), key=int, default=None)
    verdicts = {d: stage_verdict(shape, d) for d in digits}

    per_size = {}
    for s_i, s in enumerate(sizes):
        per_size[f"w{s['width']}"] = {
            "n_params": s["n_params"], "seeds": [r["seed"] for r in s["runs"]],
            "steps": [r["steps"] for r in s["runs"]], "stopped": [r["stopped"] for r in s["runs"]],
            "train_seconds": float(np.sum([r["train_seconds"] for r in s["runs"]])),
            "steps_to_threshold": {d: [r["steps_to_threshold"][d] for r in s["runs"]] for d in digits},
            "by_digits": {d: {m: summary_cell(tables[m][s_i, :, k]) for m in HIGHER_IS_BETTER}
                          | {"answer_tokens": int(lengths[k]), "transition": bool(cells[s_i, k])}
                          for k, d in enumerate(digits)}}
    schaeffer_out = {k: v for k, v in sch.items() if k != "predicted"}
    metrics = {"seeds": [r["seed"] for r in sizes[0]["runs"]], "digits": digits,
               "sizes": per_size, "schaeffer": schaeffer_out, "transition": shape, "verdict_by_digits": verdicts,
               "claim_digits": claim_digits, "verdict": verdicts.get(claim_digits, "no length emerges on this grid")}
    rows = claims(n, tables, digits, claim_digits, sch, c) if claim_digits is not None else []
    write_metrics(cfg, "emergence", add_conclusions(metrics, rows))

    plots, figures = plots_dir(cfg, "emergence"), figures_dir(cfg, "emergence")
    write_csv(plots / "metrics_vs_size.csv", [
        {"width": s["width"], "n_params": s["n_params"], "digits": d, "answer_tokens": int(lengths[k]),
         **{m: float(tables[m][s_i, :, k].mean()) for m in HIGHER_IS_BETTER},
         **{f"{m}_sd": float(tables[m][s_i, :, k].std(ddof=1)) if tables[m].shape[1] > 1 else 0.0
            for m in HIGHER_IS_BETTER},
         "predicted_p_tok": float(sch["predicted"]["p_tok"][s_i, :, k].mean()),
         "predicted_exp_ce": float(sch["predicted"]["exp_ce"][s_i, :, k].mean()), "transition": bool(cells[s_i, k])}
        for s_i, s in enumerate(sizes) for k, d in enumerate(digits)])
    write_csv(plots / "runs.csv", [
        {"width": s["width"], "n_params": s["n_params"], "seed": r["seed"], "digits": d,
         **{m: r["by_digits"][d][m] for m in HIGHER_IS_BETTER}, "steps": r["steps"], "stopped": r["stopped"],
         "steps_to_threshold": r["steps_to_threshold"][d]}
        for s in sizes for r in s["runs"] for d in digits])
    write_csv(plots / "train_curves.csv", [{"width": s["width"], "seed": r["seed"], **h}
                                           for s in sizes for r in s["runs"] for h in r["history"]])
    write_csv(plots / "val_curves.csv", [{"width": s["width"], "seed": r["seed"], **h}
                                         for s in sizes for r in s["runs"] for h in r["val_history"]])
    save_figure(metric_panels(sizes, tables, digits), figures / "metrics_vs_size.png")
    save_figure(prediction_figure(tables, sch, digits), figures / "predicted_vs_measured.png")
    save_figure(length_figure(sizes, tables, digits), figures / "exact_match_vs_length.png")
    save_figure(curves_figure(sizes), figures / "val_curves.png")

    for s_i, s in enumerate(sizes):
        steps = per_size[f"w{s['width']}"]["steps"]
        print(f"[genlab] emergence: w{s['width']} N={s['n_params']} steps {steps}: EM "
              + " ".join(f"{d}d={tables['exact_match'][s_i, :, k].mean():.2f}" for k, d in enumerate(digits)))
    for where in ("transition", "saturated"):
        parts = [f"{p}={sch[where][p]['mean']:.3f}" for p in ("p_tok", "exp_ce") if sch[where][p] is not None]
        print(f"[genlab] emergence: mean |p^L − EM| at {where} cells: " + (", ".join(parts) or "none"))
    print(f"[genlab] emergence: verdict at {claim_digits} digits: {metrics['verdict']}")
