"""Stage `flow_matching`: conditional flow matching — 2D couplings vs the CNF and the true density, and
class-conditional Gaussian → MNIST.

* 2D: every coupling in ``model.flow_matching.couplings`` (I-CFM, OT-CFM, Lipman's Gaussian path) on the
  CNF's toy set, one replicate per seed in ``seeds`` (a pool of single-thread workers). The exact NLL
  (integrated divergence) is evaluated on the *validation* split every ``toy.eval_every`` steps; the test
  split is scored once on the final (EMA) weights. Against the true density (gaussians8: closed form):
  training steps/seconds until the validation NLL first reaches true + δ for each δ in ``nll_deltas``, for
  FM and for the CNF (whose seconds include its divergence VJPs and backward pass), per seed. The older
  single-target ratios (``fm_over_cnf_*_to_nll``: time/NFE to the CNF's final validation NLL) are kept.
* MNIST: the shared U-Net, independent coupling, label dropout for classifier-free guidance
  ṽ = (1+w)·v(x,c) − w·v(x,∅) (a guided step is two network evaluations). The guidance grid ``guidance_ws``
  (w = 0 included) is sampled on ``n_select`` images under the training seed and scored against the
  *validation* images; the rule of ``genlab.evaluate.selection.choose_guidance`` picks w. Test samples are
  then drawn fresh, under ``selection.test_seed``: w = 0 and the chosen w at ``nfe`` steps, and the NFE sweep.
  They go to ``models/flow_matching/samples.{npz,json}`` for ``generative_eval`` (which scores them on the
  test images): per run key ``<sampler><steps>_w<w>`` arrays ``<key>_x`` float32 [N,28,28] in [0,1] and
  ``<key>_y`` int64 [N]; meta lists the runs and the validation guidance curve.

Writes ``models/flow_matching/{toy_<coupling>,mnist}.pt``, ``reports/metrics/flow_matching.json``,
``reports/plots/flow_matching/*.csv`` and figures (densities CNF vs FM vs data, trajectories, sample grids).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from omegaconf import OmegaConf

from genlab import runner
from genlab.data.loader import loader
from genlab.data import prepared, toy2d
from genlab.evaluate import ode, stats
from genlab.evaluate.fid import SampleScorer, choose_guidance, load_cnn
from genlab.io import load_model, read_json, save_arrays, save_model
from genlab.models import matchers
from genlab.models.clock import TrainClock
from genlab.models.flow_matching import FlowMatching
from genlab.nn.unet import UNet
from genlab.nn.vector_field import VectorField
from genlab.evaluate.selection import Split, selectable, test_seed
from genlab.parallel import run_many
from genlab.precision import autocast
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.flows import density_figure, log_density_on_grid, trajectory_figure
from genlab.saved import cnf as saved_cnf
from genlab.saved.flow_matching import mnist_config

N_CLASSES = 10


def section(cfg, *keys: str) -> dict:
    c = OmegaConf.to_container(cfg.model.flow_matching, resolve=True)
    return {k: c[k] for k in keys}


# --- 2D: couplings vs the CNF and the true density ------------------------------------

def train_toy(cfg, coupling: str, data: dict[str, Split]) -> tuple[FlowMatching, TrainClock]:
    """Fit one 2D model; its TrainClock holds the *validation* NLL vs training time."""
    c, s = cfg.model.flow_matching, cfg.model.flow_matching.toy
    runner.seed_all(cfg)
    train_x, val_x = data["train"].x, data["val"].x
    module = FlowMatching(VectorField(2, s.width, s.depth, s.activation),
                          matchers.build(coupling, c.sigma, c.sigma_min, c.ot_block),
                          s.lr, rtol=c.rtol, atol=c.atol)
    clock = TrainClock("val/nll")
    run_config = [section(cfg, "sigma", "sigma_min", "ot_block", "rtol", "atol", "ema", "toy"), coupling, len(train_x)]
    run = f"toy_{coupling}" if cfg.seed == 0 else f"toy_{coupling}-seed{cfg.seed}"
    with runner.torch_threads(s.threads), \
            runner.session(cfg, stage="flow_matching", run=run, run_config=run_config,
                           max_steps=s.steps, callbacks=[EMAWeightAveraging(decay=c.ema), clock],
                           inference_mode=False) as trainer:
        runner.fit(trainer, module, loader(train_x, batch_size=s.batch_size, seed=cfg.seed,
                                           batches_per_epoch=s.eval_every),
                   loader(val_x, batch_size=len(val_x), train=False))
        if not clock.history or clock.history[-1]["step"] != s.steps:
            trainer.validate(module, loader(val_x, batch_size=len(val_x), train=False), verbose=False)
    return module, clock


def toy_replicate(cfg, coupling: str, seed: int, data: dict[str, Split], keep: bool = False) -> dict:
    """One (coupling, seed) 2D replicate (a ``run_many`` job): validation curve, test NLL of the final (EMA)
    weights, training cost; with ``keep`` the weights."""
    cfg = cfg.copy()
    cfg.seed = seed
    module, clock = train_toy(cfg, coupling, data)
    module.eval()
    with torch.no_grad():
        test_nll = float(-module.log_prob(data["test"].x).mean())
    out = {"test_nll": test_nll, "val_nll": clock.history[-1]["val/nll"], "sec_per_iter": clock.sec_per_iter,
           "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds,
           "curve": [{"step": h["step"], "seconds": h["seconds"], "cpu_seconds": h["cpu_seconds"],
                      "val_nll": h["val/nll"]} for h in clock.history]}
    if keep:
        out["state_dict"] = module.net.state_dict()
    return out


def first_reached(curve: list[dict], nll: float, key: str) -> float | None:
    """``key`` (step | seconds | cpu_seconds) at the first evaluation with validation NLL ≤ ``nll``; None if never."""
    selectable("val", "the time to an NLL")        # the curves are validation curves by construction
    return next((h[key] for h in curve if h["val_nll"] <= nll), None)


def time_to_thresholds(fm_runs: list[dict], cnf_runs: list[dict], true_val: float | None, deltas) -> list[dict]:
    """Per threshold (true validation NLL + δ): for FM and the CNF, per seed, the steps, wall and CPU seconds of
    training until the validation NLL first reaches it (None: never), and the FM/CNF CPU-time ratio over seeds
    where both reached it (the CNF's seconds include its exact-divergence VJPs and the backward pass)."""
    if true_val is None:
        return []
    rows = []
    for d in deltas:
        nll = true_val + d
        fm = [{k: first_reached(r["curve"], nll, k) for k in ("step", "seconds", "cpu_seconds")} for r in fm_runs]
        cnf = [{k: first_reached(r["curve"], nll, k) for k in ("step", "seconds", "cpu_seconds")} for r in cnf_runs]
        ratios = [f["cpu_seconds"] / c["cpu_seconds"] for f, c in zip(fm, cnf)
                  if f["cpu_seconds"] is not None and c["cpu_seconds"]]
        rows.append({"delta": d, "val_nll": nll, "fm": fm, "cnf": cnf,
                     "fm_reached": sum(f["step"] is not None for f in fm),
                     "cnf_reached": sum(c["step"] is not None for c in cnf),
                     "fm_over_cnf_cpu": stats.summarize(ratios) if ratios else None})
    return rows


def toy(cfg) -> tuple[dict, list]:
    c, seeds = cfg.model.flow_matching, list(cfg.seeds)
    cnf_metrics = read_json(Path(cfg.paths.reports) / "metrics" / "cnf.json")["cnf_toy"]
    dataset = cnf_metrics["dataset"]
    arrays, _ = prepared.load(cfg, "toy2d")
    data = toy2d.splits(arrays, dataset)
    true = {s: toy2d.true_nll(dataset, data[s].x.numpy(), cfg.data.toy2d.noise) for s in ("val", "test")}
    jobs = [{"cfg": cfg, "coupling": k, "seed": s, "data": data, "keep": s == cfg.seed}
            for k in c.couplings for s in seeds]
    results = run_many(toy_replicate, jobs, desc="flow matching 2D seeds")

    cnf_field = VectorField(2, cfg.model.cnf.toy.width, cfg.model.cnf.toy.depth, cfg.model.cnf.toy.activation)
    cnf_field.load_state_dict(load_model(Path(cfg.paths.models) / "cnf" / "toy.pt",
                                         expect_config=saved_cnf.model_config(cfg, "toy"))["state_dict"])
    torch.manual_seed(cfg.seed)
    with ode.NFE(cnf_field) as nfe:
        path = ode.sample(cnf_field, torch.randn(300, 2), "dopri5", rtol=c.rtol, atol=c.atol, n_save=25)
    out, models, paths, n = {}, {}, {f"CNF (dopri5, {nfe.n} NFE)": path}, 80
    cnf_runs = [cnf_metrics["per_seed"][str(s)] for s in seeds if str(s) in cnf_metrics["per_seed"]]
    target = cnf_metrics["val_nll"]                 # the CNF's final validation NLL, mean over seeds
    for coupling in c.couplings:
        runs = [r for j, r in zip(jobs, results) if j["coupling"] == coupling]
        kept = next(r for j, r in zip(jobs, results) if j["coupling"] == coupling and j["keep"])
        module = FlowMatching(VectorField(2, c.toy.width, c.toy.depth, c.toy.activation),
                              matchers.build(coupling, c.sigma, c.sigma_min, c.ot_block), c.toy.lr,
                              rtol=c.rtol, atol=c.atol)
        module.net.load_state_dict(kept["state_dict"])
        module.eval()
        save_model(Path(cfg.paths.models) / "flow_matching" / f"toy_{coupling}.pt", module.net.state_dict(),
                   {"coupling": coupling, "dataset": dataset, **section(cfg, "sigma", "sigma_min", "ot_block", "ema", "toy")})
        write_csv(plots_dir(cfg, "flow_matching") / f"toy_{coupling}_nll.csv", kept["curve"])
        torch.manual_seed(cfg.seed)
        with ode.NFE(module.net) as nfe:
            path = module.sample(300, (2,), "dopri5", n_save=25)
        paths[f"FM {coupling} (dopri5, {nfe.n} NFE)"] = path
        seconds, cpu, steps = (first_reached(kept["curve"], target, k) for k in ("seconds", "cpu_seconds", "step"))
        test = stats.summarize([r["test_nll"] for r in runs])
        out[coupling] = {"test_nll": test["mean"], "test_nll_sd": test["sd"], "test_nll_ci95": test["ci"],
                         "val_nll": float(np.mean([r["val_nll"] for r in runs])),
                         "per_seed_test_nll": [r["test_nll"] for r in runs],
                         "sec_per_iter": float(np.mean([r["sec_per_iter"] for r in runs])),
                         "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
                         "train_cpu_seconds": float(np.mean([r["train_cpu_seconds"] for r in runs])),
                         "threads": runner.thread_count(c.toy.threads), "steps": c.toy.steps, "n_seeds": len(runs),
                         "sample_nfe_dopri5": nfe.n, "steps_to_cnf_nll": steps, "seconds_to_cnf_nll": seconds,
                         "cpu_seconds_to_cnf_nll": cpu,
                         "time_to_true_nll": time_to_thresholds(runs, cnf_runs, true["val"], c.nll_deltas)}
        models[coupling] = (module, runs)
        print(f"[genlab] flow_matching/toy_{coupling} ({dataset}): test NLL "
              f"{stats.format_difference(test, 'NLL')} (true density {true['test']}, CNF {cnf_metrics['test_nll']:.4g})")

    log_probs = {"CNF": log_density_on_grid(lambda x: ode.log_likelihood(cnf_field, x, rtol=c.rtol, atol=c.atol), n)}
    log_probs |= {f"FM {k}": log_density_on_grid(m.log_prob, n) for k, (m, _) in models.items()}
    figures = figures_dir(cfg, "flow_matching")
    save_figure(density_figure(data["test"].x.numpy(), log_probs, n), figures / "toy_density.png")
    save_figure(trajectory_figure(paths), figures / "toy_trajectories.png")

    main = out[c.coupling]
    seconds, cpu, steps = main["seconds_to_cnf_nll"], main["cpu_seconds_to_cnf_nll"], main["steps_to_cnf_nll"]
    claims = []
    if true["test"] is not None:
        tol = c.true_nll_tolerance
        claims.append(claim_from_difference(
            f"fm_toy_within_{tol:g}_of_true_nll", "flow_matching",
            f"Flow matching ({c.coupling} path) reaches the true {dataset} test NLL within {tol:g} nats.",
            stats.summarize([v - true["test"] for v in main["per_seed_test_nll"]]),
            statistic="NLL(FM) − NLL(true density), test, nats, over training seeds", direction="within",
            tolerance=tol, baseline=f"true test NLL {true['test']:.4f}; CNF {cnf_metrics['test_nll']:.4f}"))
        cnf_nll = [cnf_metrics["per_seed"][str(s)]["test_nll"] for s in seeds]
        claims.append(claim_from_difference(
            "fm_toy_nll_below_cnf", "flow_matching",
            f"Flow matching reaches a lower {dataset} test NLL than the CNF at the configured budgets.",
            stats.paired_difference(cnf_nll, main["per_seed_test_nll"]),
            statistic="NLL(CNF) − NLL(FM), test, paired by seed", baseline=f"true test NLL {true['test']:.4f}"))
    return {"fm_toy": {"dataset": dataset, "coupling": c.coupling, **main},
            "true_val_nll": true["val"], "true_test_nll": true["test"],
            "fm_minus_cnf_nll": main["test_nll"] - cnf_metrics["test_nll"],
            "fm_minus_true_nll": None if true["test"] is None else main["test_nll"] - true["test"],
            "fm_over_cnf_time_to_nll": None if seconds is None else seconds / cnf_metrics["train_seconds"],
            "fm_over_cnf_cpu_time_to_nll": None if cpu is None else cpu / cnf_metrics["train_cpu_seconds"],
            "fm_over_cnf_nfe_to_nll": None if steps is None else
            steps * c.toy.batch_size / (cnf_metrics["steps"] * cnf_metrics["nfe"] * cfg.model.cnf.toy.batch_size),
            "cnf_toy_nll": cnf_metrics["test_nll"], "couplings": out}, claims


# --- class-conditional Gaussian → MNIST ---------------------------------------------------

def train_mnist(cfg, arrays: dict[str, np.ndarray]) -> tuple[FlowMatching, TrainClock]:
    m = cfg.model.flow_matching.mnist
    x = torch.from_numpy(arrays["train_x"]).float().div(127.5).sub(1.0).unsqueeze(1)   # [N, 1, 28, 28] in [−1, 1]
    y = torch.from_numpy(arrays["train_y"])
    runner.seed_all(cfg)
    module = FlowMatching(UNet.from_config(m.unet, N_CLASSES), matchers.IndependentCFM(0.0, m.t_sampling), m.lr,
                          n_classes=N_CLASSES, label_dropout=m.label_dropout, rtol=cfg.model.flow_matching.rtol,
                          atol=cfg.model.flow_matching.atol, one_cycle=True)
    clock = TrainClock()
    average = EMAWeightAveraging(decay=m.ema, update_starting_at_step=m.steps // 2)
    with runner.session(cfg, stage="flow_matching", run="mnist", run_config=[mnist_config(cfg), cfg.data.mnist],
                        max_steps=m.steps, callbacks=[average, clock], precision=m.precision) as trainer:
        runner.fit(trainer, module, loader(x, y, batch_size=m.batch_size, seed=cfg.seed))
    return module, clock


def grid(ws) -> list[float]:
    """The guidance grid with w = 0 first (always sampled: the unguided reference)."""
    return [0.0, *sorted(float(w) for w in ws if w)]


def selection_runs(m) -> list[dict]:
    """The guidance grid on validation: one run per w in ``guidance_ws`` (0 included), ``nfe`` sampler steps,
    ``n_select`` samples, sampling seed ``seed``."""
    return [{"key": f"{m.sampler}{m.nfe}_w{w:g}", "steps": m.nfe, "w": float(w), "n": m.n_select}
            for w in grid(m.guidance_ws)]


def test_runs(m, best_w: float) -> list[dict]:
    """Fresh test runs (sampling seed ``test_seed``): w = 0 and the chosen w at the main steps, and the
    quality-vs-NFE sweep at w = 0; ``n_samples`` each."""
    runs = {}
    for steps, w in [(m.nfe, 0.0), (m.nfe, best_w), *[(k, 0.0) for k in m.sweep_nfe]]:
        runs.setdefault(f"{m.sampler}{steps}_w{w:g}", {"steps": steps, "w": float(w), "n": m.n_samples})
    return [{"key": k, **r} for k, r in runs.items()]


def generate(module: FlowMatching, sampler: str, runs: list[dict], seed: int,
             precision: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Every run from the same noise (``seed``), labels 0..9 in equal blocks, under the autocast of ``precision``
    (the training precision); images in [0, 1].

    A run's ``nfe`` counts network evaluations per sample: a guided step evaluates the conditional and the
    unconditional field (one batched call of twice the batch), so it counts 2."""
    arrays, meta = {}, []
    module.eval()
    for r in runs:
        labels = torch.arange(N_CLASSES).repeat_interleave(-(-r["n"] // N_CLASSES))[: r["n"]]
        torch.manual_seed(seed)
        start = time.perf_counter()
        with ode.NFE(module.net) as calls, autocast(precision, module.device.type):
            x = module.sample(labels, (1, 28, 28), sampler, r["steps"], r["w"])[-1]
        seconds = time.perf_counter() - start
        key = r["key"]
        arrays[f"{key}_x"] = x.add(1).div(2).clamp(0, 1).squeeze(1).numpy().astype(np.float32)
        arrays[f"{key}_y"] = labels.numpy().astype(np.int64)
        nfe = calls.n * (2 if r["w"] else 1)
        meta.append({"key": key, "sampler": sampler, "steps": calls.n, "nfe": nfe, "guidance_w": r["w"],
                     "n": r["n"], "seed": seed, "seconds": round(seconds, 3)})
        print(f"[genlab] flow_matching/mnist: {key}: {r['n']} samples, {nfe} NFE, {seconds:.1f} s")
    return arrays, meta


def class_grid(images: np.ndarray, labels: np.ndarray, title: str, per_class: int = 10):
    """``per_class`` samples of each digit, one row per class."""
    rows = [images[labels == c][:per_class] for c in range(N_CLASSES)]
    return image_grid(np.concatenate(rows), nrow=N_CLASSES, title=title)


def mnist(cfg) -> dict:
    m = cfg.model.flow_matching.mnist
    data, _ = prepared.load(cfg, "mnist")
    scorer = SampleScorer(load_cnn(cfg), torch.from_numpy(data["val_x"]).float() / 255, split="val")   # chooses w
    module, clock = train_mnist(cfg, data)
    out = Path(cfg.paths.models) / "flow_matching"
    save_model(out / "mnist.pt", module.net.state_dict(), mnist_config(cfg))
    val_arrays, selection = generate(module, m.sampler, selection_runs(m), cfg.seed, m.precision)
    best_w = choose_guidance(scorer, val_arrays, selection, m.accuracy_bar)
    arrays, runs = generate(module, m.sampler, test_runs(m, best_w), test_seed(cfg.seed), m.precision)
    save_arrays(out / "samples", arrays, {"runs": runs, "main_steps": m.nfe, "best_w": best_w,
                                          "selection": selection, "accuracy_bar": m.accuracy_bar})
    figures = figures_dir(cfg, "flow_matching")
    for w in dict.fromkeys((0.0, best_w)):
        key = f"{m.sampler}{m.nfe}_w{w:g}"
        save_figure(class_grid(arrays[f"{key}_x"], arrays[f"{key}_y"], f"FM {m.sampler}, {m.nfe} steps, w = {w:g}"),
                    figures / f"mnist_samples_w{w:g}.png")
    sweep = [f"{m.sampler}{k}_w0" for k in m.sweep_nfe]
    save_figure(image_grid(np.concatenate([arrays[f"{k}_x"][:: max(1, len(arrays[f"{k}_x"]) // N_CLASSES)][:N_CLASSES]
                                           for k in sweep]), nrow=len(sweep),
                           title=f"same noise, w = 0; rows: NFE {list(m.sweep_nfe)}"), figures / "mnist_nfe_sweep.png")
    write_csv(plots_dir(cfg, "flow_matching") / "mnist_sampling.csv", runs)
    write_csv(plots_dir(cfg, "flow_matching") / "guidance.csv",
              [{k: r[k] for k in ("guidance_w", "nfe", "val_fid", "val_accuracy")} for r in selection])
    return {"steps": m.steps, "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds,
            "sec_per_iter": clock.sec_per_iter, "parameters": sum(p.numel() for p in module.net.parameters()),
            "sample_steps": m.nfe, "sampler": m.sampler, "guidance_w": best_w, "accuracy_bar": m.accuracy_bar,
            "n_samples": m.n_samples, "n_select": m.n_select, "training_seeds": 1,
            "guidance_curve_val": [{k: r[k] for k in ("guidance_w", "nfe", "val_fid", "val_accuracy")} for r in selection],
            "sampling_seconds": {r["key"]: r["seconds"] for r in selection + runs}}


def run(cfg) -> None:
    metrics, claims = toy(cfg)
    metrics["mnist"] = mnist(cfg)
    write_metrics(cfg, "flow_matching", add_conclusions(metrics, claims))
