"""Stage `cnf`: FFJORD-style continuous normalizing flows (2D toy set, 64-D digits) over ``seeds`` → test NLL
with 95% CIs, beside closed-form baselines and floors.

* toy: ``model.cnf.dataset`` from data/toy2d, exact divergence; NLL in nats. Floor: the generating
  density's own NLL where it has a closed form (gaussians8, ``genlab.data.toy2d.true_nll``).
* digits: scikit-learn 8×8 digits (17 levels) dequantized + logit transform, Hutchinson divergence;
  NLL in bits/dim of the dequantized pixels. Baselines under the same dequantization, fitted on train
  in closed form: a full-covariance Gaussian in the logit space and independent per-pixel categoricals
  (``genlab.evaluate.likelihood_baselines``); uniform over 17 levels = log2 17 ≈ 4.09.

Every (part, seed) is one replicate, run in a pool of single-thread workers (``genlab.parallel.run_many``).
During training the NLL is evaluated on the *validation* split only (the NLL-vs-time curve that steps and
thresholds are read from); the test split is scored once, on the final weights. The replicate under
``seed`` is saved: ``models/cnf/{toy,digits}.pt``. Writes ``reports/metrics/cnf.json`` (``cnf_toy``: what
flow matching compares against, incl. per-seed validation curves), ``reports/plots/cnf/*_nll.csv`` (validation
NLL vs training seconds, saved seed) and figures: density vs data, sample trajectories, digit samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from genlab import runner
from genlab.data import prepared, toy2d
from genlab.data.digits import splits as digit_splits
from genlab.data.loader import loader
from genlab.evaluate import ode, stats
from genlab.evaluate.likelihood_baselines import categorical_bpd, gaussian_bpd
from genlab.evaluate.selection import Split
from genlab.io import save_model
from genlab.models.clock import TrainClock
from genlab.models.cnf import CNF, LogitDequantize
from genlab.nn.vector_field import VectorField
from genlab.parallel import run_many
from genlab.precision import DENSITY_PRECISION
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.report.flows import density_figure, log_density_on_grid, trajectory_figure
from genlab.saved.cnf import model_config

DIGIT_LEVELS = 17                  # sklearn digits: integer intensities 0..16
BITS = 64 * math.log(2)            # digits: nats per image → bits per dimension


def build(cfg, part: str, dims: int) -> CNF:
    c, s = cfg.model.cnf, cfg.model.cnf[part]
    transform = LogitDequantize(DIGIT_LEVELS, c.logit_alpha) if part == "digits" else None
    return CNF(VectorField(dims, s.width, s.depth, s.activation), s.lr, c.weight_decay, c.rtol, c.atol, c.adjoint,
               part == "toy", transform)


@torch.no_grad()
def nll(module: CNF, data: Split, batch_size: int = 1000) -> float:
    """Mean −log p over a split ``[N, D]`` (Hutchinson-estimated for digits; noise seeded by the caller)."""
    return float(torch.cat([-module.log_prob(xb) for xb in torch.as_tensor(data.x).split(batch_size)]).mean())


def train(cfg, part: str, data: dict[str, Split]) -> tuple[CNF, TrainClock, dict]:
    """Fit one CNF; the TrainClock holds its validation-NLL-vs-training-time history; test once at the end."""
    c, s = cfg.model.cnf, cfg.model.cnf[part]
    runner.seed_all(cfg)
    train_x, val_x = (torch.as_tensor(data[k].x) for k in ("train", "val"))
    module = build(cfg, part, train_x.shape[1])
    clock = TrainClock("val/nll")
    with runner.torch_threads(s.threads), \
            runner.session(cfg, stage="cnf", run=part if cfg.seed == 0 else f"{part}-seed{cfg.seed}",
                           run_config=model_config(cfg, part), max_steps=s.steps,
                           callbacks=[clock], inference_mode=False, precision=DENSITY_PRECISION) as trainer:
        runner.fit(trainer, module, loader(train_x, batch_size=s.batch_size, seed=cfg.seed,
                                           batches_per_epoch=s.eval_every),
                   loader(val_x, batch_size=len(val_x), train=False))
        if not clock.history or clock.history[-1]["step"] != s.steps:   # evaluate the final weights
            trainer.validate(module, loader(val_x, batch_size=len(val_x), train=False), verbose=False)
    module.eval()
    torch.manual_seed(cfg.seed + 10_000)       # test-time Hutchinson/dequantization noise: a seed no selection used
    tail = max(1, len(module.nfe_forward) // 10)
    result = {"test_nll": nll(module, data["test"]), "val_nll": clock.history[-1]["val/nll"],
              "sec_per_iter": clock.sec_per_iter, "train_seconds": clock.seconds,
              "train_cpu_seconds": clock.cpu_seconds, "threads": runner.thread_count(s.threads), "steps": s.steps,
              "nfe": float(np.mean(module.nfe_forward)), "nfe_final": float(np.mean(module.nfe_forward[-tail:])),
              "nfe_backward": float(np.mean(module.nfe_backward)) if c.adjoint else 0.0,
              "backward": "adjoint" if c.adjoint else "direct", "divergence": "hutchinson" if part == "digits" else
              "exact", "parameters": sum(p.numel() for p in module.field.parameters())}
    return module, clock, result


def curve(clock: TrainClock) -> list[dict]:
    return [{"step": h["step"], "seconds": h["seconds"], "cpu_seconds": h["cpu_seconds"], "val_nll": h["val/nll"]}
            for h in clock.history]


def replicate(cfg, part: str, seed: int, data: dict[str, Split], keep: bool = False) -> dict:
    """One (part, seed) replicate (a ``run_many`` job): its metrics and validation curve; with ``keep`` the weights."""
    cfg = cfg.copy()
    cfg.seed = seed
    module, clock, result = train(cfg, part, data)
    result["curve"] = curve(clock)
    if keep:
        result["state_dict"] = module.field.state_dict()
    return result


SUMMARIZED = ("test_nll", "val_nll", "train_seconds", "train_cpu_seconds", "sec_per_iter", "nfe")


def summary(runs: list[dict], scale: float = 1.0) -> dict:
    """Mean over seeds of each key (divided by ``scale``), with ``<key>_sd`` and ``<key>_ci95``."""
    out = {k: runs[0][k] for k in ("steps", "threads", "backward", "divergence", "parameters", "nfe_backward")}
    for key in SUMMARIZED:
        s = stats.summarize([r[key] / (scale if "nll" in key else 1.0) for r in runs])
        name = key.replace("nll", "bpd") if scale != 1.0 else key
        out |= {name: s["mean"], f"{name}_sd": s["sd"], f"{name}_ci95": s["ci"]}
    return out | {"n_seeds": len(runs)}


def claims(digit_bpd: list[float], baselines: dict, toy_nll: list[float], true_nll: float | None) -> list:
    floor = f"seed sd of the CNF's test bits/dim: {np.std(digit_bpd, ddof=1):.4f}" if len(digit_bpd) > 1 else None
    base = f"Gaussian {baselines['gaussian_bpd']:.4f} / categorical {baselines['categorical_bpd']:.4f} bits/dim"
    rows = [claim_from_difference(
        f"cnf_digits_beats_{name}", "cnf", f"The digits CNF has a lower test bits/dim than the closed-form {name} "
        "baseline (same dequantization, fitted on train).",
        stats.summarize([baselines[f"{name}_bpd"] - b for b in digit_bpd]),
        statistic=f"bpd({name}) − bpd(CNF), test, over CNF training seeds", baseline=base, noise_floor=floor)
        for name in ("gaussian", "categorical")]
    if true_nll is not None:
        rows.append(claim_from_difference(
            "cnf_toy_within_0.05_of_true_nll", "cnf", "The toy CNF's test NLL is within 0.05 nats of the "
            "generating density's.", stats.summarize([v - true_nll for v in toy_nll]),
            statistic="NLL(CNF) − NLL(true density), test, nats", direction="within", tolerance=0.05,
            baseline=f"true test NLL {true_nll:.4f}"))
    return rows


def run(cfg) -> None:
    c, seeds = cfg.model.cnf, list(cfg.seeds)
    figures, models = figures_dir(cfg, "cnf"), Path(cfg.paths.models) / "cnf"
    toy_arrays, _ = prepared.load(cfg, "toy2d")
    toy_data = toy2d.splits(toy_arrays, c.dataset)
    digit_arrays, _ = prepared.load(cfg, "digits")
    digit_data = digit_splits(digit_arrays)
    jobs = [{"cfg": cfg, "part": part, "seed": s, "data": data, "keep": s == cfg.seed}
            for part, data in (("toy", toy_data), ("digits", digit_data)) for s in seeds]
    results = run_many(replicate, jobs, desc="cnf seeds")
    runs = {part: [r for j, r in zip(jobs, results) if j["part"] == part] for part in ("toy", "digits")}
    kept = {j["part"]: r for j, r in zip(jobs, results) if j["keep"]}

    # --- toy ----------------------------------------------------------------------------
    noise = cfg.data.toy2d.noise
    true = {s: toy2d.true_nll(c.dataset, toy_data[s].x.numpy(), noise) for s in ("val", "test")}
    toy = build(cfg, "toy", 2)
    toy.field.load_state_dict(kept["toy"]["state_dict"])
    save_model(models / "toy.pt", toy.field.state_dict(), model_config(cfg, "toy"))
    write_csv(plots_dir(cfg, "cnf") / "toy_nll.csv", kept["toy"]["curve"])
    n = 80
    save_figure(density_figure(toy_data["test"].x.numpy(), {"CNF": log_density_on_grid(toy.log_prob, n)}, n),
                figures / "toy_density.png")
    torch.manual_seed(cfg.seed)
    with ode.NFE(toy.field) as nfe:
        path = ode.sample(toy.field, torch.randn(300, 2), "dopri5", rtol=c.rtol, atol=c.atol, n_save=25)
    save_figure(trajectory_figure({f"CNF (dopri5, {nfe.n} NFE)": path}), figures / "toy_trajectories.png")
    toy_metrics = {"dataset": c.dataset, **summary(runs["toy"]), "true_val_nll": true["val"],
                   "true_test_nll": true["test"], "seeds": seeds,
                   "per_seed": {str(s): {k: r[k] for k in ("test_nll", "val_nll", "train_seconds", "nfe", "curve")}
                                for s, r in zip(seeds, runs["toy"])}}
    print(f"[genlab] cnf/toy ({c.dataset}): test NLL {stats.format_difference(stats.summarize([r['test_nll'] for r in runs['toy']]), 'NLL')}"
          f"; true density {true['test']}")

    # --- digits -------------------------------------------------------------------------
    train_k, val_k, test_k = (digit_arrays[f"{s}_x"].astype(np.int64) for s in ("train", "val", "test"))
    baselines = {"gaussian_bpd": float(gaussian_bpd(train_k, test_k, DIGIT_LEVELS, c.logit_alpha, cfg.seed).mean()),
                 "categorical_bpd": float(categorical_bpd(train_k, test_k, DIGIT_LEVELS).mean()),
                 "gaussian_val_bpd": float(gaussian_bpd(train_k, val_k, DIGIT_LEVELS, c.logit_alpha, cfg.seed).mean()),
                 "categorical_val_bpd": float(categorical_bpd(train_k, val_k, DIGIT_LEVELS).mean()),
                 "uniform_bpd": math.log2(DIGIT_LEVELS)}
    digits = build(cfg, "digits", 64)
    digits.field.load_state_dict(kept["digits"]["state_dict"])
    save_model(models / "digits.pt", digits.field.state_dict(), model_config(cfg, "digits"))
    write_csv(plots_dir(cfg, "cnf") / "digits_nll.csv", kept["digits"]["curve"])
    digit_metrics = summary(runs["digits"], BITS) | baselines | {"seeds": seeds, "n_train": len(train_k)}
    digit_bpd = [r["test_nll"] / BITS for r in runs["digits"]]
    torch.manual_seed(cfg.seed)
    samples = ode.sample(digits.field, torch.randn(40, 64), "dopri5", rtol=c.rtol, atol=c.atol)[-1]
    save_figure(image_grid(digits.transform.inverse(samples).reshape(-1, 8, 8).numpy(), nrow=4,
                           title=f"CNF digits samples (test {digit_metrics['test_bpd']:.3f} bits/dim)"),
                figures / "digits_samples.png")
    print(f"[genlab] cnf/digits: test bits/dim {stats.format_difference(stats.summarize(digit_bpd), 'bpd')}; "
          f"Gaussian {baselines['gaussian_bpd']:.4f}, categorical {baselines['categorical_bpd']:.4f}")
    rows = claims(digit_bpd, baselines, [r["test_nll"] for r in runs["toy"]], true["test"])
    write_metrics(cfg, "cnf", add_conclusions({"cnf_toy": toy_metrics, "digits": digit_metrics}, rows))
