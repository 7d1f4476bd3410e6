"""Stage `scaling_fit`: IsoFLOP profiles → L(N, D) with bootstrap CIs, compute-optimal exponents, held-out test.

Reads ``models/gpt_scaling/runs.json`` (one row per run and seed; ``gpt_scaling``). A run's loss is
its mean over seeds; the seed-to-seed sd of log-loss, pooled over the seeded runs, is the noise
floor. Then, with ``genlab.evaluate.scaling``:

* **approach 3** (Hoffmann et al. 2022, §3.3): L(N, D) = E + A/N^α + B/D^β, summed Huber on
  log-loss, on every run; 90% percentile-bootstrap CIs (runs resampled) of E, A, α, B, β and of
  the compute-optimal exponents a = β/(α+β) (N* ∝ C^a) and b = α/(α+β) (D* ∝ C^b).
* **approach 2** (§3.2): per budget, a parabola in log N through the IsoFLOP profile; its vertex
  N_opt(C); a, b from log-linear fits of N_opt, D_opt on C. CIs by a parametric bootstrap that
  perturbs every run's log-loss with the measured seed noise.
* **held out**: the ``holdout_budgets`` largest budgets are left out; L(N, D) fitted on the rest
  predicts every held-out run, and a plain power law L(C) = (C_c / C)^α_C (Kaplan et al. 2020,
  Eq. 1.3) through the best run of each smaller budget predicts the held-out budget's best run.
  The CI of the relative error combines the fit's bootstrap with the measured seed noise.

Claims (95% CIs, ``report.conclusions``): E is identified (E > ``e_floor``); a lies within
±``a_tolerance`` of Chinchilla's 0.5 / of Kaplan's 0.73; the held-out loss is predicted within
``holdout_tolerance``. Writes ``reports/metrics/scaling.json``, ``reports/plots/scaling/*.csv`` and
``reports/figures/scaling/scaling_laws.png``.
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from genlab.evaluate import stats
from genlab.evaluate.scaling import (bootstrap_fits, exponents, fit_chinchilla, fit_power_law, isoflop_minimum,
                                     percentile_ci, predict)
from genlab.io import read_json
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import Claim, add_conclusions

CHINCHILLA_A, KAPLAN_A = 0.5, 0.73       # N* ∝ C^a: Hoffmann et al. 2022 (Table 2); Kaplan et al. 2020 (Eq. 1.7)
PARAMS = ("E", "A", "alpha", "B", "beta")


def aggregate(rows: list[dict]) -> list[dict]:
    """One run per (size, budget): loss = mean over its seeds, with their sd of log-loss and count."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["size"], r["budget"])].append(r)
    out = []
    for (size, budget), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[1][0]["N"])):
        log_l = np.log([r["val_loss"] for r in rs])
        out.append({k: rs[0][k] for k in ("size", "budget", "N", "D", "C", "flops_per_token")} |
                   {"val_loss": float(np.exp(log_l).mean()), "n_seeds": len(rs),
                    "log_sd": float(log_l.std(ddof=1)) if len(rs) > 1 else None})
    return out


def seed_noise(runs: list[dict]) -> dict:
    """Pooled seed-to-seed sd of log-loss, √(Σ(n_i−1)s_i² / Σ(n_i−1)) over runs with ≥ 2 seeds (≈ relative sd)."""
    seeded = [r for r in runs if r["n_seeds"] > 1]
    if not seeded:
        return {"log_sd": None, "n_runs": 0, "summary": None}
    dof = sum(r["n_seeds"] - 1 for r in seeded)
    pooled = math.sqrt(sum((r["n_seeds"] - 1) * r["log_sd"] ** 2 for r in seeded) / dof)
    return {"log_sd": pooled, "n_runs": len(seeded), "n_seeds": max(r["n_seeds"] for r in seeded),
            "summary": stats.summarize([r["log_sd"] for r in seeded], unit="runs")}


def arrays(runs: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.array([r[k] for r in runs], float) for k in ("N", "D", "val_loss"))


def flops_of(runs: list[dict]):
    """FLOPs per token as a smooth function of N (quadratic in log–log through the runs), for frontiers."""
    n = np.log([r["N"] for r in runs])
    f = np.log([r["flops_per_token"] for r in runs])
    p = np.polyfit(n, f, min(2, len(set(n.tolist())) - 1))
    return lambda x: np.exp(np.polyval(p, np.log(x)))


def frontier(fit: dict, c, n_lo: float, n_hi: float, fpt) -> tuple[np.ndarray, np.ndarray]:
    """N*(C), L*(C): the size minimising the fitted L(N, C / fpt(N)) at each budget ``c`` ``[K]`` (grid search)."""
    n = np.geomspace(n_lo, n_hi, 400)
    loss = predict(fit, n[None, :], np.asarray(c, float)[:, None] / fpt(n)[None, :])      # [K, 400]
    i = loss.argmin(1)
    return n[i], loss[np.arange(len(i)), i]


def isoflops(runs: list[dict], log_loss_noise=None) -> list[dict]:
    """Approach 2: the parabola vertex of every budget's profile (``log_loss_noise`` ``[R]`` perturbs the runs)."""
    loss = np.array([r["val_loss"] for r in runs]) * np.exp(0 if log_loss_noise is None else log_loss_noise)
    out = []
    for budget in sorted({r["budget"] for r in runs}):
        i = [j for j, r in enumerate(runs) if r["budget"] == budget]
        n, d = np.array([runs[j]["N"] for j in i], float), np.array([runs[j]["D"] for j in i], float)
        n_opt, l_opt, parabola = isoflop_minimum(n, loss[i])
        order = np.argsort(n)
        d_opt = float(np.exp(np.interp(np.log(n_opt), np.log(n[order]), np.log(d[order]))))
        out.append({"budget": budget, "N_opt": n_opt, "D_opt": d_opt, "L_opt": l_opt, "parabola": parabola,
                    "n_sizes": len(i)})
    return out


def approach2_exponents(minima: list[dict]) -> dict[str, float]:
    """N_opt ∝ C^a, D_opt ∝ C^b: slopes of log N_opt, log D_opt on log C across budgets."""
    c = np.log([m["budget"] for m in minima])
    return {"a": float(np.polyfit(c, np.log([m["N_opt"] for m in minima]), 1)[0]),
            "b": float(np.polyfit(c, np.log([m["D_opt"] for m in minima]), 1)[0])}


def holdout(runs: list[dict], n_hold: int, c, draws_seed: int, noise: float) -> dict:
    """Fit on all but the ``n_hold`` largest budgets; predict the held-out runs (full law and plain L(C))."""
    budgets = sorted({r["budget"] for r in runs})
    held_budgets = set(budgets[-n_hold:])
    train = [r for r in runs if r["budget"] not in held_budgets]
    held = [r for r in runs if r["budget"] in held_budgets]
    fit = fit_chinchilla(*arrays(train), c.huber_delta, c.n_starts)
    best = min(held, key=lambda r: r["val_loss"])
    pred = predict(fit, *arrays(held)[:2])
    measured = np.array([r["val_loss"] for r in held])
    # plain power law L(C) through the best (lowest-loss) run of every training budget
    mins = [min((r for r in train if r["budget"] == b), key=lambda r: r["val_loss"]) for b in budgets[:-n_hold]]
    alpha_c, c_c = fit_power_law(np.array([r["C"] for r in mins]), np.array([r["val_loss"] for r in mins]))
    pred_best, pred_power = float(predict(fit, best["N"], best["D"])), float((c_c / best["C"]) ** alpha_c)

    # CI of the relative error: the fit's bootstrap, and the held-out run's own seed noise
    draws = bootstrap_fits(*arrays(train), fit, c.n_boot, c.huber_delta, seed=draws_seed)
    eps = np.random.default_rng(draws_seed + 1).normal(0.0, noise, len(draws))
    errs = np.array([float(predict(f, best["N"], best["D"])) for f in draws]) / (best["val_loss"] * np.exp(eps)) - 1
    return {"fit": {k: fit[k] for k in PARAMS}, "budgets": sorted(held_budgets), "n_train_runs": len(train),
            "best": {"size": best["size"], "N": best["N"], "D": best["D"], "C": best["C"],
                     "measured": best["val_loss"], "predicted": pred_best, "predicted_powerlaw_C": pred_power},
            "rel_error": pred_best / best["val_loss"] - 1, "rel_error_powerlaw_C": pred_power / best["val_loss"] - 1,
            "rel_error_draws": errs, "mean_abs_rel_error_runs": float(np.mean(np.abs(pred / measured - 1))),
            "powerlaw_C": {"alpha_C": alpha_c, "C_c": c_c},
            "runs": [{"size": r["size"], "N": r["N"], "D": r["D"], "C": r["C"], "measured": r["val_loss"],
                      "predicted": float(p), "predicted_powerlaw_C": float((c_c / r["C"]) ** alpha_c)}
                     for r, p in zip(held, pred)]}


def claims(fit_all, draws, held, noise, n_seeds: int, c) -> list[Claim]:
    ci95 = lambda key: percentile_ci([f[key] for f in draws], 0.95)          # noqa: E731
    method = f"percentile bootstrap over runs ({len(draws)} refits)"
    floor = f"seed sd of log-loss {noise['log_sd']:.4f}" if noise["log_sd"] is not None else None
    a = exponents(fit_all)["a"]
    rows = [Claim("scaling_e_identified", "scaling_fit",
                  f"The irreducible loss E of L(N, D) is identified: E > {c.e_floor} nats/token.",
                  "E of L(N, D) = E + A/N^α + B/D^β", fit_all["E"], ci95("E"), n_seeds, "greater", c.e_floor,
                  noise_floor=floor, method=method)]
    for ref, name in ((CHINCHILLA_A, "Chinchilla"), (KAPLAN_A, "Kaplan")):
        rows.append(Claim(f"scaling_exponent_a_{name.lower()}", "scaling_fit",
                          f"The compute-optimal exponent a (N* ∝ C^a) is within ±{c.a_tolerance} of {name}'s {ref}.",
                          "a = β/(α+β)", a, ci95("a"), n_seeds, "within", ref, c.a_tolerance,
                          baseline=f"{name} a = {ref}", noise_floor=floor, method=method))
    lo, hi = np.percentile(held["rel_error_draws"], [2.5, 97.5])
    rows.append(Claim("scaling_holdout_within", "scaling_fit",
                      f"L(N, D) fitted without the largest budget predicts its best run's loss within "
                      f"{c.holdout_tolerance:.0%}.", "predicted / measured − 1 (held-out best run)",
                      held["rel_error"], (float(lo), float(hi)), n_seeds, "within", 0.0, c.holdout_tolerance,
                      baseline=f"plain power law L(C): {held['rel_error_powerlaw_C']:+.2%}", noise_floor=floor,
                      method=method + " × seed noise of the held-out run"))
    return rows


def figure(runs, fit, minima, held, fpt) -> plt.Figure:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    ax_n, ax_d, ax_iso, ax_pred = axes
    n_all, d_all, _ = arrays(runs)
    n_grid = np.geomspace(n_all.min() / 2, n_all.max() * 4, 100)
    for i, d in enumerate(np.geomspace(d_all.min(), d_all.max(), 3)):
        ax_n.plot(n_grid, predict(fit, n_grid, d), color=f"C{i}", label=f"fit, D = {d:.2g}")
        ax_n.axhline(fit["E"] + fit["B"] / d ** fit["beta"], color=f"C{i}", ls=":", lw=0.8)
    sc = ax_n.scatter(n_all, [r["val_loss"] for r in runs], c=np.log10(d_all), cmap="viridis", s=18, zorder=3)
    fig.colorbar(sc, ax=ax_n, label="log10 D")
    ax_n.set(xscale="log", xlabel="N (non-embedding)", ylabel="val loss (nats/char)",
             title="L(N) at fixed D → E + B/D^β (dotted)")
    ax_n.legend(fontsize=7)
    sizes = [s for s in dict.fromkeys(r["size"] for r in runs) if sum(q["size"] == s for q in runs) > 1]
    for i, size in enumerate(sizes):
        sub = sorted((r for r in runs if r["size"] == size), key=lambda r: r["D"])
        d_grid = np.geomspace(sub[0]["D"] / 3, sub[-1]["D"] * 3, 50)
        ax_d.scatter([r["D"] for r in sub], [r["val_loss"] for r in sub], color=f"C{i % 10}", s=16)
        ax_d.plot(d_grid, predict(fit, sub[0]["N"], d_grid), color=f"C{i % 10}", lw=1, label=size)
    ax_d.axhline(fit["E"], color="k", ls=":", lw=0.8, label=f"E = {fit['E']:.2f}")
    ax_d.set(xscale="log", xlabel="D (tokens)", title="L(D) per size (fit of all runs)")
    ax_d.legend(fontsize=6, ncol=2)
    for i, m in enumerate(minima):
        sub = sorted((r for r in runs if r["budget"] == m["budget"]), key=lambda r: r["N"])
        x = np.geomspace(sub[0]["N"], sub[-1]["N"], 50)
        ax_iso.scatter([r["N"] for r in sub], [r["val_loss"] for r in sub], color=f"C{i}", s=16,
                       label=f"C = {m['budget']:.0e}")
        if np.isfinite(m["parabola"][0]):
            ax_iso.plot(x, np.polyval(m["parabola"], np.log(x)), color=f"C{i}", lw=1)
        ax_iso.scatter([m["N_opt"]], [m["L_opt"]], color=f"C{i}", marker="*", s=120, edgecolor="k", zorder=4)
    c_grid = np.geomspace(minima[0]["budget"], minima[-1]["budget"], 30)
    n_star, l_star = frontier(fit, c_grid, n_all.min() / 3, n_all.max() * 3, fpt)
    ax_iso.plot(n_star, l_star, "k--", lw=1, label="fitted frontier N*(C)")
    ax_iso.set(xscale="log", xlabel="N", title="IsoFLOP profiles, parabola minima (★)")
    ax_iso.legend(fontsize=6)
    hr = held["runs"]
    m_, p_, q_ = (np.array([r[k] for r in hr]) for k in ("measured", "predicted", "predicted_powerlaw_C"))
    lim = [min(m_.min(), p_.min(), q_.min()) * 0.97, max(m_.max(), p_.max(), q_.max()) * 1.03]
    ax_pred.plot(lim, lim, "k-", lw=0.8)
    ax_pred.fill_between(lim, [v * 0.97 for v in lim], [v * 1.03 for v in lim], color="grey", alpha=0.2, label="±3%")
    ax_pred.scatter(m_, p_, label="L(N, D) fit without this budget")
    ax_pred.scatter(m_, q_, marker="x", label="plain power law L(C)")
    ax_pred.set(xlim=lim, ylim=lim, xlabel="measured loss", ylabel="predicted loss",
                title=f"held-out budget C = {held['budgets'][-1]:.0e}")
    ax_pred.legend(fontsize=7)
    fig.tight_layout()
    return fig


def run(cfg) -> None:
    c = cfg.model.scaling_fit
    rows = read_json(Path(cfg.paths.models) / "gpt_scaling" / "runs.json")
    runs = aggregate(rows)
    noise = seed_noise(runs)
    sigma = noise["log_sd"] or 0.0
    n_seeds = max(r["n_seeds"] for r in runs)
    n, d, loss = arrays(runs)

    fit_all = fit_chinchilla(n, d, loss, c.huber_delta, c.n_starts)
    draws = bootstrap_fits(n, d, loss, fit_all, c.n_boot, c.huber_delta, seed=cfg.seed)
    ci = {k: percentile_ci([f[k] for f in draws], c.ci) for k in (*PARAMS, "a", "b")}
    exps = exponents(fit_all)
    residuals = np.log(loss) - np.log(predict(fit_all, n, d))

    minima = isoflops(runs)
    rng = np.random.default_rng(cfg.seed)
    a2_draws = [approach2_exponents(isoflops(runs, rng.normal(0.0, sigma, len(runs)))) for _ in range(c.n_boot)]
    a2 = approach2_exponents(minima)
    held = holdout(runs, c.holdout_budgets, c, cfg.seed, sigma)
    fpt = flops_of(runs)

    metrics = {
        "design": {"budgets": sorted({r["budget"] for r in runs}), "n_runs": len(runs), "n_trainings": len(rows),
                   "n_sizes": len({r["size"] for r in runs}),
                   "param_span_decades": math.log10(n.max() / n.min()), "D_span_decades": math.log10(d.max() / d.min()),
                   "flops": "6N + 6·n_layer·n_ctx·d + 6·V·d per token (evaluate/flops.py)"},
        "seed_noise": noise,
        "fit": {k: fit_all[k] for k in PARAMS}, "fit_ci": ci | {"level": c.ci, "n_boot": c.n_boot},
        "fit_rms_log_residual": float(np.sqrt(np.mean(residuals**2))),
        "compute_optimal": {
            "approach3": exps | {"a_ci": ci["a"], "b_ci": ci["b"]},
            "approach2": a2 | {"a_ci": percentile_ci([x["a"] for x in a2_draws], c.ci),
                               "b_ci": percentile_ci([x["b"] for x in a2_draws], c.ci),
                               "ci_method": "parametric bootstrap: run log-losses perturbed by the seed sd"},
            "reference": {"chinchilla_a": CHINCHILLA_A, "kaplan_a": KAPLAN_A}},
        "isoflop": minima,
        "holdout": {k: v for k, v in held.items() if k != "rel_error_draws"},
        "holdout_rel_error": abs(held["rel_error"]),
        "holdout_rel_error_powerlaw": abs(held["rel_error_powerlaw_C"]),
    }
    write_metrics(cfg, "scaling", add_conclusions(metrics, claims(fit_all, draws, held, noise, n_seeds, c)))
    plots = plots_dir(cfg, "scaling")
    write_csv(plots / "runs.csv", [{k: r[k] for k in ("size", "budget", "N", "D", "C", "val_loss", "n_seeds")} |
                                   {"fit": float(predict(fit_all, r["N"], r["D"]))} for r in runs])
    write_csv(plots / "isoflop.csv", [{k: m[k] for k in ("budget", "N_opt", "D_opt", "L_opt")} for m in minima])
    write_csv(plots / "heldout.csv", held["runs"])
    save_figure(figure(runs, fit_all, minima, held, fpt), figures_dir(cfg, "scaling") / "scaling_laws.png")

    f = fit_all
    print(f"[genlab] scaling: L = {f['E']:.3f} + {f['A']:.3g}/N^{f['alpha']:.3f} + {f['B']:.3g}/D^{f['beta']:.3f} "
          f"(E {c.ci:.0%} CI [{ci['E'][0]:.3f}, {ci['E'][1]:.3f}]); a = {exps['a']:.3f} "
          f"[{ci['a'][0]:.3f}, {ci['a'][1]:.3f}] (approach 2: {a2['a']:.3f}); Chinchilla 0.5, Kaplan 0.73")
    b = held["best"]
    print(f"[genlab] scaling: held-out {b['size']} at C={b['C']:.2g}: measured {b['measured']:.4f}, L(N, D) "
          f"{b['predicted']:.4f} ({held['rel_error']:+.2%}), power law L(C) {b['predicted_powerlaw_C']:.4f} "
          f"({held['rel_error_powerlaw_C']:+.2%})")
