"""Stage `sbi`: simulation-based inference — neural posterior estimation on SBI-benchmark simulators, scored by C2ST
against exact reference posteriors and by simulation-based calibration.

Tasks (``genlab.data.simulators``): two moons (exact reference posterior by rejection) and Gaussian linear (closed-form
posterior). Per (task, seed), in a pool of single-thread workers:

1. simulate ``n_train`` + ``n_val`` pairs (θ, x) ~ p(θ) p(x | θ) under the seed;
2. fit a conditional RealNVP flow q(θ | x) by maximum likelihood (``genlab.models.npe``; Papamakarios & Murray
   2016), with the fixed hyper-parameters of ``model.sbi.<task>``, which were chosen on the validation NLL of θ
   under q(θ | x) — the validation NLL of every run is reported;
3. C2ST (``genlab.evaluate.sbi.c2st``) of n_posterior draws of q(θ | x_o) against as many reference draws, for each
   of ``n_obs`` test observations x_o — simulated under the test seed (``selection.test_seed(seed)``), shared by
   every training seed so the seeds differ only in their training;
4. SBC (Talts et al. 2018) on ``sbc_runs`` fresh pairs (θ*, x) from the seed's test stream.

Baselines, per task (one more pool job each): the C2ST of the prior against the reference posterior (what an
estimator that ignores x scores), of the reference against an independent reference draw (the noise floor, ≈ 0.5),
and the SBC of the exact reference posterior and of the prior (both calibrated: SBC alone cannot tell the prior
from the posterior, which is why C2ST stands beside it).

Claims, per task: (a) mean C2ST over test observations, per seed, then a Student-t CI over seeds, below
``c2st_threshold``; (b) calibration: the largest per-dimension KS distance of the SBC ranks from uniform, per seed,
then a CI over seeds, below the Bonferroni 5% critical value — so "holds" says the mean over seeds sits, with 95%
confidence, below the distance at which a single seed's uniformity test would reject.

Writes ``reports/metrics/sbi.json``, ``reports/plots/sbi/c2st.csv``, ``reports/figures/sbi/`` (posterior samples vs
reference for one test observation per task; SBC rank histograms) and ``models/sbi/<task>.pt``.
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
import torch
from omegaconf import OmegaConf

from genlab import runner
from genlab.data.loader import loader
from genlab.data.simulators import Task, make_task
from genlab.evaluate import stats
from genlab.evaluate.sbi import c2st, ks_critical, sbc_ranks, sbc_test
from genlab.evaluate.selection import test_seed
from genlab.io import save_model
from genlab.models.clock import TrainClock
from genlab.models.npe import NPE
from genlab.parallel import run_many
from genlab.precision import DENSITY_PRECISION
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference

NAMES = {"two_moons": "two moons", "gaussian_linear": "Gaussian linear"}


def task_of(cfg, name: str) -> Task:
    return make_task(name, cfg.model.sbi.gaussian_dim)


def model_config(cfg, name: str) -> dict:
    """What a run's result depends on (its checkpoint key, and the config saved with its weights)."""
    s = OmegaConf.to_container(cfg.model.sbi, resolve=True)
    return {"task": name, "gaussian_dim": s["gaussian_dim"], **s[name]}


def simulations(task: Task, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ ``[n, theta_dim]``, x ``[n, x_dim]``) float32 pairs from the joint p(θ) p(x | θ)."""
    theta = task.prior(n, rng)
    return torch.as_tensor(theta, dtype=torch.float32), torch.as_tensor(task.simulate(theta, rng), dtype=torch.float32)


def test_observations(cfg, name: str) -> dict[str, np.ndarray]:
    """The task's test set, from the test seed of ``cfg.seed``: θ_o ``[n_obs, d]``, x_o ``[n_obs, x_dim]``, and for
    each x_o two independent reference-posterior draws ``[n_obs, n_posterior, d]`` (the second for the noise floor)."""
    s, task = cfg.model.sbi, task_of(cfg, name)
    rng = np.random.default_rng([test_seed(cfg.seed), s.tasks.index(name)])
    theta = task.prior(s.n_obs, rng)
    x = task.simulate(theta, rng)
    refs = [np.stack([task.posterior(xo, s.n_posterior, rng) for xo in x]) for _ in range(2)]
    return {"theta": theta, "x": x, "reference": refs[0], "reference2": refs[1]}


def sbc(task: Task, sample: callable, runs: int, draws: int, bins: int, rng: np.random.Generator) -> dict:
    """SBC of a posterior sampler ``sample(x [x_dim], L) → [L, d]`` over ``runs`` fresh (θ*, x): the uniformity
    tests of ``sbc_test`` and the largest KS distance over dimensions."""
    theta = task.prior(runs, rng)
    x = task.simulate(theta, rng)
    post = sample(x, draws)                                    # [runs, L, d]
    out = sbc_test(sbc_ranks(theta, post, rng), bins)
    return out | {"ks_max": max(out["ks_stat"])}


def npe_sampler(module: NPE):
    """``sample(x [N, x_dim], L) → [N, L, d]``: L draws of q(θ | x) per row of x, in one batched inverse pass."""
    def sample(x: np.ndarray, draws: int) -> np.ndarray:
        return module.sample_posterior(torch.as_tensor(x, dtype=torch.float32), draws).numpy().astype(np.float64)
    return sample


def replicate(cfg, name: str, seed: int, test: dict[str, np.ndarray], keep: bool = False) -> dict:
    """Train q(θ | x) for one (task, seed); its validation NLL, C2ST per test observation, SBC, and with ``keep``
    its weights and posterior draws for the figure."""
    cfg = cfg.copy()
    cfg.seed = seed
    runner.seed_all(cfg)
    s, task = cfg.model.sbi[name], task_of(cfg, name)
    rng = np.random.default_rng([seed, cfg.model.sbi.tasks.index(name)])
    train, val = simulations(task, s.n_train, rng), simulations(task, s.n_val, rng)
    module = NPE(task.theta_dim, task.x_dim, s.n_layers, s.width, s.depth, s.lr,
                 theta_stats=(train[0].mean(0), train[0].std(0)), x_stats=(train[1].mean(0), train[1].std(0)))
    clock = TrainClock("val/nll")
    with runner.session(cfg, stage="sbi", run=f"{name}-seed{seed}", run_config=model_config(cfg, name),
                        max_steps=s.steps, callbacks=[clock], inference_mode=False,
                        precision=DENSITY_PRECISION) as trainer:
        runner.fit(trainer, module, loader(*train, batch_size=s.batch_size, seed=seed, batches_per_epoch=s.steps),
                   loader(*val, batch_size=len(val[0]), train=False))
        if not clock.history or clock.history[-1]["step"] != s.steps:   # validate the final weights
            trainer.validate(module, loader(*val, batch_size=len(val[0]), train=False), verbose=False)
    module.eval()
    sb = cfg.model.sbi
    start = time.process_time()
    torch.manual_seed(test_seed(seed))                   # test-time sampling: a seed no selection used
    sample = npe_sampler(module)
    draws = sample(test["x"], sb.n_posterior)            # [n_obs, n_posterior, d]
    scores = [c2st(q, r, seed=seed, folds=sb.c2st_folds) for q, r in zip(draws, test["reference"])]
    calib = sbc(task, sample, sb.sbc_runs, sb.sbc_samples, sb.sbc_bins, np.random.default_rng(test_seed(seed)))
    result = {"c2st": scores, "c2st_mean": float(np.mean(scores)), "sbc": calib,
              "val_nll": clock.history[-1]["val/nll"], "train_seconds": clock.seconds,
              "train_cpu_seconds": clock.cpu_seconds, "eval_cpu_seconds": time.process_time() - start,
              "parameters": sum(p.numel() for p in module.parameters())}
    if keep:
        result |= {"state_dict": module.state_dict(), "draws": draws[0]}
    return result


def baselines(cfg, name: str, test: dict[str, np.ndarray]) -> dict:
    """The task's reference points: C2ST of the prior and of a second reference draw against the reference, per
    test observation; SBC of the exact reference posterior and of the prior."""
    sb, task = cfg.model.sbi, task_of(cfg, name)
    rng = np.random.default_rng([test_seed(cfg.seed), sb.tasks.index(name), 1])
    prior = [c2st(task.prior(sb.n_posterior, rng), r, seed=cfg.seed, folds=sb.c2st_folds) for r in test["reference"]]
    floor = [c2st(a, b, seed=cfg.seed, folds=sb.c2st_folds) for a, b in zip(test["reference2"], test["reference"])]
    reference = sbc(task, lambda x, n: np.stack([task.posterior(xo, n, rng) for xo in x]), sb.sbc_runs,
                    sb.sbc_samples, sb.sbc_bins, rng)
    prior_sbc = sbc(task, lambda x, n: task.prior(len(x) * n, rng).reshape(len(x), n, -1), sb.sbc_runs,
                    sb.sbc_samples, sb.sbc_bins, rng)
    return {"c2st_prior": prior, "c2st_reference": floor, "sbc_reference": reference, "sbc_prior": prior_sbc}


def run_job(kind: str, **job) -> dict:
    """One pool job: a training run or a task's baselines (one module-level function, so the pool can pickle it)."""
    return replicate(**job) if kind == "npe" else baselines(**job)


def claims(cfg, name: str, runs: list[dict], base: dict, dims: int) -> list:
    sb = cfg.model.sbi
    label = NAMES[name]
    c2st_seeds = [r["c2st_mean"] for r in runs]
    crit = ks_critical(sb.sbc_runs, dims)
    median_max = float(scipy.stats.kstwo.ppf(0.5 ** (1.0 / dims), sb.sbc_runs))   # median of the max of d KS draws
    return [
        claim_from_difference(
            f"sbi_{name}_npe_c2st_below_{sb.c2st_threshold}", "sbi",
            f"On {label}, NPE's posterior is close to the reference: C2ST accuracy below {sb.c2st_threshold}.",
            stats.summarize(c2st_seeds), statistic=f"C2ST accuracy of q(θ|x_o) vs reference, mean over "
            f"{sb.n_obs} test observations per seed, over training seeds", direction="less", null=sb.c2st_threshold,
            baseline=f"prior vs reference {np.mean(base['c2st_prior']):.3f}",
            noise_floor=f"reference vs reference {np.mean(base['c2st_reference']):.3f}"),
        claim_from_difference(
            f"sbi_{name}_npe_calibrated", "sbi",
            f"On {label}, NPE is calibrated: the SBC ranks' distance from uniform is below the 5% rejection level.",
            stats.summarize([r["sbc"]["ks_max"] for r in runs]),
            statistic=f"largest per-dimension KS distance of {sb.sbc_runs} SBC ranks (L = {sb.sbc_samples}) from "
            f"U(0, 1), over training seeds; allowed: below the Bonferroni 5% critical value {crit:.4f}",
            direction="less", null=crit,
            baseline=f"exact reference posterior {base['sbc_reference']['ks_max']:.4f}; prior "
                     f"{base['sbc_prior']['ks_max']:.4f} (the prior is calibrated too)",
            noise_floor=f"median under exact calibration {median_max:.4f}")]


def posterior_figure(name: str, test: dict[str, np.ndarray], draws: np.ndarray) -> plt.Figure:
    """NPE draws vs reference draws for test observation 0 (θ dimensions 0 and 1)."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ref = test["reference"][0]
    ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.4, label="reference posterior")
    ax.scatter(draws[:, 0], draws[:, 1], s=2, alpha=0.4, label="NPE q(θ | x_o)")
    ax.scatter(*test["theta"][0][:2], marker="*", s=40, c="k", label="θ_o (generated x_o)")
    ax.set(xlabel="θ₁", ylabel="θ₂", title=f"{NAMES[name]}: posterior for test observation 0")
    ax.legend(fontsize=7, markerscale=2)
    return fig


def sbc_figure(results: dict[str, dict], runs: int, bins: int) -> plt.Figure:
    """SBC rank histograms of the saved seed's NPE, one panel per (task, dimension), with the central 99% band of a
    bin count under uniformity (Binomial(runs, 1/bins); Talts et al. 2018, Fig. 1)."""
    panels = [(name, d, counts) for name, r in results.items() for d, counts in enumerate(r["sbc"]["counts"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.4), squeeze=False)
    lo, hi = scipy.stats.binom.ppf([0.005, 0.995], runs, 1.0 / bins)
    for ax, (name, d, counts) in zip(axes[0], panels):
        ax.axhspan(lo, hi, color="0.85")
        ax.bar(np.arange(bins), counts, width=1.0, edgecolor="k", linewidth=0.3)
        ax.set(title=f"{NAMES[name]} θ{d + 1}", xticks=[], yticks=[], ylim=(0, max(hi, max(counts)) * 1.1))
        ax.title.set_fontsize(8)
    fig.suptitle("SBC rank histograms (NPE, saved seed; grey: 99% band under uniformity)", fontsize=9, y=1.06)
    return fig


def run(cfg) -> None:
    sb, seeds = cfg.model.sbi, list(cfg.seeds)
    tests = {name: test_observations(cfg, name) for name in sb.tasks}
    jobs = [{"kind": "npe", "cfg": cfg, "name": n, "seed": s, "test": tests[n], "keep": s == cfg.seed}
            for n in sb.tasks for s in seeds] + [{"kind": "baseline", "cfg": cfg, "name": n, "test": tests[n]}
                                                 for n in sb.tasks]
    results = run_many(run_job, jobs, desc="sbi runs")
    metrics, rows, claim_rows, kept = {"seeds": seeds, "tasks": list(sb.tasks)}, [], [], {}
    for name in sb.tasks:
        runs = [r for j, r in zip(jobs, results) if j["name"] == name and j["kind"] == "npe"]
        base = next(r for j, r in zip(jobs, results) if j["name"] == name and j["kind"] == "baseline")
        keep = next(r for j, r in zip(jobs, results) if j["name"] == name and j.get("keep"))
        save_model(Path(cfg.paths.models) / "sbi" / f"{name}.pt", keep.pop("state_dict"), model_config(cfg, name))
        kept[name] = keep
        dims = len(runs[0]["sbc"]["ks_stat"])
        c2st_seeds = stats.summarize([r["c2st_mean"] for r in runs])
        metrics[name] = {
            "theta_dim": dims, "n_obs": sb.n_obs,
            "c2st": c2st_seeds["mean"], "c2st_ci95": c2st_seeds["ci"],
            "c2st_prior": float(np.mean(base["c2st_prior"])), "c2st_reference": float(np.mean(base["c2st_reference"])),
            "sbc_ks_max": float(np.mean([r["sbc"]["ks_max"] for r in runs])),
            "sbc_ks_critical": ks_critical(sb.sbc_runs, dims),
            "val_nll": float(np.mean([r["val_nll"] for r in runs])),
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
            "parameters": runs[0]["parameters"],
            "per_seed": {k: [r[k] for r in runs] for k in ("c2st_mean", "c2st", "val_nll", "train_seconds",
                                                             "eval_cpu_seconds")}
                        | {f"sbc_{k}": [r["sbc"][k] for r in runs] for k in ("ks_stat", "ks_p", "chi2_p", "ks_max")},
            "baselines": {"c2st_prior": base["c2st_prior"], "c2st_reference": base["c2st_reference"],
                          **{f"{b}_{k}": base[b][k] for b in ("sbc_reference", "sbc_prior")
                             for k in ("ks_stat", "ks_p", "chi2_p", "ks_max")}}}
        for estimator, values in (("NPE", [r["c2st_mean"] for r in runs]), ("prior", base["c2st_prior"]),
                                  ("reference", base["c2st_reference"])):
            s = stats.summarize(values, unit="seeds" if estimator == "NPE" else "observations")
            rows.append({"task": name, "estimator": estimator, "c2st": s["mean"],
                         "ci_low": s["ci"][0] if s["ci"] else None, "ci_high": s["ci"][1] if s["ci"] else None})
        claim_rows += claims(cfg, name, runs, base, dims)
        save_figure(posterior_figure(name, tests[name], keep["draws"]),
                    figures_dir(cfg, "sbi") / f"{name}_posterior.png")
    save_figure(sbc_figure(kept, sb.sbc_runs, sb.sbc_bins), figures_dir(cfg, "sbi") / "sbc_ranks.png")
    write_csv(plots_dir(cfg, "sbi") / "c2st.csv", rows)
    for name in sb.tasks:
        m = metrics[name]
        print(f"[genlab] sbi {name}: C2ST {m['c2st']:.3f} {m['c2st_ci95']} (prior {m['c2st_prior']:.3f}, reference "
              f"{m['c2st_reference']:.3f}); SBC max KS {m['sbc_ks_max']:.4f} (critical {m['sbc_ks_critical']:.4f})")
    write_metrics(cfg, "sbi", add_conclusions(metrics, claim_rows))
