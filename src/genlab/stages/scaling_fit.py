"""Stage `scaling_fit`: scaling laws of the `gpt_scaling` family → L(N), L(D), L(C), Chinchilla L(N, D).

Reads ``models/gpt_scaling/<size>.json`` (one row per run), fits with
``genlab.evaluate.scaling``, and tests the fit the way it is used: the largest model
is held out, the law fitted on the others predicts its loss, and the relative error
is reported. Writes ``reports/metrics/scaling.json``, ``reports/plots/scaling/runs.csv``
and ``reports/figures/scaling/`` (loss vs N, D, C with the fits and the held-out point;
training curves of every run).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from genlab.evaluate.scaling import bootstrap_ci, compute_optimal, fit_chinchilla, fit_power_law, predict
from genlab.io import read_json
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics


def load_rows(cfg) -> list[dict]:
    return [row for size in cfg.model.gpt_scaling.sizes
            for row in read_json(Path(cfg.paths.models) / "gpt_scaling" / f"{size}.json")]


def frontier(rows: list[dict]) -> list[dict]:
    """Compute-efficient runs: lower loss than every run of less compute (Kaplan's L(C_min))."""
    out, best = [], math.inf
    for r in sorted(rows, key=lambda r: r["C"]):
        if r["val_loss"] < best:
            out.append(r)
            best = r["val_loss"]
    return out


def arrays(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.array([r[k] for r in rows], float) for k in ("N", "D", "val_loss"))


def figure(rows, main, fit, held, held_pred, power, front) -> plt.Figure:
    fig, (ax_n, ax_d, ax_c) = plt.subplots(1, 3, figsize=(13, 3.8))
    n_grid = np.geomspace(min(r["N"] for r in rows) / 1.5, held["N"] * 1.5, 100)
    d_main = held["D"]
    ax_n.scatter([r["N"] for r in main if r is not held], [r["val_loss"] for r in main if r is not held],
                 label=f"runs at D={d_main:.3g}")
    ax_n.plot(n_grid, predict(fit["holdout"], n_grid, d_main), "--", label="L(N, D) fit without held-out")
    ax_n.plot(n_grid, (power["N_c"] / n_grid) ** power["alpha_N"], ":",
              label=f"(N_c/N)^α, α={power['alpha_N']:.3f}")
    ax_n.scatter([held["N"]], [held["val_loss"]], marker="*", s=160, color="C3", label="held out (measured)")
    ax_n.scatter([held["N"]], [held_pred], marker="x", s=80, color="k", label="held out (predicted)")
    ax_n.set(xscale="log", yscale="log", xlabel="N (non-embedding parameters)", ylabel="val loss (nats/char)")
    ax_n.legend(fontsize=7)
    for i, size in enumerate(dict.fromkeys(r["size"] for r in rows)):
        sub = sorted((r for r in rows if r["size"] == size), key=lambda r: r["D"])
        if len(sub) > 1:
            d_grid = np.geomspace(sub[0]["D"] / 1.5, sub[-1]["D"] * 1.5, 50)
            ax_d.scatter([r["D"] for r in sub], [r["val_loss"] for r in sub], color=f"C{i}", label=size)
            ax_d.plot(d_grid, predict(fit["all"], sub[0]["N"], d_grid), "--", color=f"C{i}")
    ax_d.set(xscale="log", yscale="log", xlabel="D (tokens)", title="L(N, D) fit (all runs)")
    ax_d.legend(fontsize=7)
    c_grid = np.geomspace(min(r["C"] for r in rows) / 1.5, max(r["C"] for r in rows) * 1.5, 50)
    ax_c.scatter([r["C"] for r in rows], [r["val_loss"] for r in rows], color="grey", alpha=0.6, label="runs")
    ax_c.scatter([r["C"] for r in front], [r["val_loss"] for r in front], color="C1", label="compute frontier")
    ax_c.plot(c_grid, (power["C_c"] / c_grid) ** power["alpha_C"], ":", color="C1",
              label=f"(C_c/C)^α, α={power['alpha_C']:.3f}")
    ax_c.set(xscale="log", yscale="log", xlabel="C = 6ND (FLOPs)")
    ax_c.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(rows) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    labelled = set()
    for r in rows:
        tokens, loss = zip(*r["curve"]) if r["curve"] else ((), ())
        ax.plot(tokens, loss, color=f"C{sizes.index(r['size'])}", lw=1,
                label=None if r["size"] in labelled else r["size"])
        labelled.add(r["size"])
    ax.set(xscale="log", xlabel="tokens seen", ylabel="train loss (nats/char)", title="training curves")
    ax.legend(fontsize=7)
    return fig


def run(cfg) -> None:
    c, s = cfg.model.scaling_fit, cfg.model.gpt_scaling
    rows = load_rows(cfg)
    main = [r for r in rows if r["budget"] == s.tokens]
    n_all, d_all, l_all = arrays(rows)
    fit = {"all": fit_chinchilla(n_all, d_all, l_all, c.huber_delta, c.n_starts)}
    ci = bootstrap_ci(n_all, d_all, l_all, fit["all"], c.n_boot, c.ci, c.huber_delta, seed=cfg.seed)

    # hold out the largest model (all its runs); predict its main-budget loss from the rest
    held = max(main, key=lambda r: r["N"])
    rest = [r for r in rows if r["N"] != held["N"]]
    fit["holdout"] = fit_chinchilla(*arrays(rest), c.huber_delta, c.n_starts)
    held_pred = float(predict(fit["holdout"], held["N"], held["D"]))
    rest_main = [r for r in main if r is not held]
    alpha_rest, nc_rest = fit_power_law(*arrays(rest_main)[::2])
    pred_power = (nc_rest / held["N"]) ** alpha_rest

    power = {}
    power["alpha_N"], power["N_c"] = fit_power_law(*arrays(main)[::2])
    multi = max((r["N"] for r in rows if sum(q["N"] == r["N"] for q in rows) > 1), default=held["N"])
    by_d = [r for r in rows if r["N"] == multi]
    power["alpha_D"], power["D_c"] = fit_power_law(*arrays(by_d)[1:]) if len(by_d) > 1 else (math.nan, math.nan)
    front = frontier(rows)
    power["alpha_C"], power["C_c"] = fit_power_law(np.array([r["C"] for r in front]),
                                                    np.array([r["val_loss"] for r in front]))
    c_max = max(r["C"] for r in rows)
    n_opt, d_opt = compute_optimal(fit["all"], [c_max, 10 * c_max])
    total = fit["all"]["alpha"] + fit["all"]["beta"]

    metrics = {
        "n_models": len({r["N"] for r in rows}), "n_runs": len(rows),
        "param_span_decades": math.log10(max(n_all) / min(n_all)),
        "fit": {k: fit["all"][k] for k in ("E", "A", "alpha", "B", "beta")},
        "fit_ci": ci | {"level": c.ci, "n_boot": c.n_boot},
        "powerlaw": power,
        "holdout": {"size": held["size"], "N": held["N"], "D": held["D"], "loss": held["val_loss"],
                    "predicted": held_pred, "predicted_powerlaw_N": pred_power,
                    "fit": {k: fit["holdout"][k] for k in ("E", "A", "alpha", "B", "beta")}},
        "holdout_rel_error": abs(held_pred - held["val_loss"]) / held["val_loss"],
        "holdout_rel_error_powerlaw_N": abs(pred_power - held["val_loss"]) / held["val_loss"],
        "compute_optimal": {"N_exponent": fit["all"]["beta"] / total, "D_exponent": fit["all"]["alpha"] / total,
                            "C": [c_max, 10 * c_max], "N_opt": n_opt.tolist(), "D_opt": d_opt.tolist()},
    }
    write_metrics(cfg, "scaling", metrics)
    write_csv(plots_dir(cfg, "scaling") / "runs.csv",
              [{k: r[k] for k in ("size", "N", "D", "C", "val_loss")} |
               {"fit": float(predict(fit["all"], r["N"], r["D"]))} for r in rows])
    figures = figures_dir(cfg, "scaling")
    save_figure(figure(rows, main, fit, held, held_pred, power, front), figures / "scaling_laws.png")
    save_figure(curves_figure(rows), figures / "training_curves.png")
    f = fit["all"]
    print(f"[genlab] scaling: L = {f['E']:.3f} + {f['A']:.3g}/N^{f['alpha']:.3f} + {f['B']:.3g}/D^{f['beta']:.3f}; "
          f"held-out {held['size']}: measured {held['val_loss']:.4f}, predicted {held_pred:.4f} "
          f"(rel. error {metrics['holdout_rel_error']:.3%})")
