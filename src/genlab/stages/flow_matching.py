"""Stage `flow_matching`: conditional flow matching — 2D couplings vs the CNF, and class-conditional Gaussian → MNIST.

* 2D: every coupling in ``model.flow_matching.couplings`` (I-CFM, OT-CFM, Lipman's Gaussian path) on the
  CNF's toy set (read from ``reports/metrics/cnf.json``); exact test NLL by integrating the divergence,
  evaluated every ``toy.eval_every`` steps, and the training time until it first reaches the CNF's final
  NLL, divided by the CNF's training time (``fm_over_cnf_time_to_nll``; both exclude evaluation). The same
  comparison counted in per-sample forward evaluations of the field (``fm_over_cnf_nfe_to_nll``: FM's steps to
  that NLL × its batch, one evaluation per step, over the CNF's steps × its mean dopri5 NFE per step × its batch)
  is deterministic, where the wall-time ratio moves with the machine's load while each model trains.
* MNIST: the shared U-Net, independent coupling, label dropout for classifier-free guidance
  ṽ = (1+w)·v(x,c) − w·v(x,∅), sampled at w = 0 and every w in ``guidance_ws``; as in `diffusion`, the
  reported w (``best_w``) has the lowest FID against the *validation* images. Samples for ``generative_eval``
  (which scores them on the test images) go to ``models/flow_matching/samples.{npz,json}``: per run key
  ``<sampler>_nfe<n>_w<w>`` arrays ``<key>_x`` float32 [N,28,28] in [0,1] and ``<key>_y`` int64 [N]; meta
  lists the runs.

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
from genlab.data import prepared
from genlab.data.prepared import toy_split
from genlab.evaluate import ode
from genlab.evaluate.fid import SampleScorer, choose_guidance, load_cnn
from genlab.io import load_model, read_json, save_arrays, save_model
from genlab.models import matchers
from genlab.models.clock import TrainClock
from genlab.models.flow_matching import FlowMatching
from genlab.nn.unet import UNet
from genlab.nn.vector_field import VectorField
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.flows import density_figure, log_density_on_grid, trajectory_figure
from genlab.saved import cnf as saved_cnf

N_CLASSES = 10


def section(cfg, *keys: str) -> dict:
    c = OmegaConf.to_container(cfg.model.flow_matching, resolve=True)
    return {k: c[k] for k in keys}


# --- 2D: couplings vs the CNF -----------------------------------------------------------

def train_toy(cfg, coupling: str, train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[FlowMatching, TrainClock]:
    c, s = cfg.model.flow_matching, cfg.model.flow_matching.toy
    runner.seed_all(cfg)
    module = FlowMatching(VectorField(2, s.width, s.depth, s.activation),
                          matchers.build(coupling, c.sigma, c.sigma_min, c.ot_block),
                          s.lr, rtol=c.rtol, atol=c.atol)
    clock = TrainClock("test/nll")
    run_config = [section(cfg, "sigma", "sigma_min", "ot_block", "rtol", "atol", "ema", "toy"), coupling, len(train_x)]
    with runner.torch_threads(s.threads), \
            runner.session(cfg, stage="flow_matching", run=f"toy_{coupling}", run_config=run_config,
                           max_steps=s.steps, callbacks=[EMAWeightAveraging(decay=c.ema), clock],
                           inference_mode=False) as trainer:
        runner.fit(trainer, module, loader(train_x, batch_size=s.batch_size, seed=cfg.seed,
                                           batches_per_epoch=s.eval_every),
                   loader(test_x, batch_size=len(test_x), train=False))
        if not clock.history or clock.history[-1]["step"] != s.steps:
            trainer.validate(module, loader(test_x, batch_size=len(test_x), train=False), verbose=False)
    return module, clock


def first_reached(history: list[dict], nll: float, key: str) -> float | None:
    """``key`` (step | seconds | cpu_seconds) at the first evaluation with test NLL ≤ ``nll``; None if never."""
    return next((h[key] for h in history if h["test/nll"] <= nll), None)


def toy(cfg) -> dict:
    c = cfg.model.flow_matching
    cnf_metrics = read_json(Path(cfg.paths.reports) / "metrics" / "cnf.json")["cnf_toy"]
    dataset, target = cnf_metrics["dataset"], cnf_metrics["test_nll"]
    train_x, test_x = toy_split(cfg, dataset)
    cnf_field = VectorField(2, cfg.model.cnf.toy.width, cfg.model.cnf.toy.depth, cfg.model.cnf.toy.activation)
    cnf_field.load_state_dict(load_model(Path(cfg.paths.models) / "cnf" / "toy.pt",
                                         expect_config=saved_cnf.model_config(cfg, "toy"))["state_dict"])
    torch.manual_seed(cfg.seed)
    with ode.NFE(cnf_field) as nfe:
        path = ode.sample(cnf_field, torch.randn(300, 2), "dopri5", rtol=c.rtol, atol=c.atol, n_save=25)
    out, models, paths, n = {}, {}, {f"CNF (dopri5, {nfe.n} NFE)": path}, 80
    for coupling in c.couplings:
        module, clock = train_toy(cfg, coupling, train_x, test_x)
        save_model(Path(cfg.paths.models) / "flow_matching" / f"toy_{coupling}.pt", module.net.state_dict(),
                   {"coupling": coupling, "dataset": dataset, **section(cfg, "sigma", "sigma_min", "ot_block", "ema", "toy")})
        write_csv(plots_dir(cfg, "flow_matching") / f"toy_{coupling}_nll.csv",
                  [{"step": h["step"], "seconds": h["seconds"], "cpu_seconds": h["cpu_seconds"],
                    "test_nll": h["test/nll"]} for h in clock.history])
        torch.manual_seed(cfg.seed)
        with ode.NFE(module.net) as nfe:
            path = module.sample(300, (2,), "dopri5", n_save=25)
        paths[f"FM {coupling} (dopri5, {nfe.n} NFE)"] = path
        seconds, cpu, steps = (first_reached(clock.history, target, k) for k in ("seconds", "cpu_seconds", "step"))
        out[coupling] = {"test_nll": clock.history[-1]["test/nll"], "sec_per_iter": clock.sec_per_iter,
                         "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds,
                         "threads": runner.thread_count(c.toy.threads), "steps": c.toy.steps,
                         "sample_nfe_dopri5": nfe.n,
                         "steps_to_cnf_nll": steps, "seconds_to_cnf_nll": seconds, "cpu_seconds_to_cnf_nll": cpu}
        models[coupling] = module
        print(f"[genlab] flow_matching/toy_{coupling} ({dataset}): test_nll={out[coupling]['test_nll']:.4g} "
              f"(CNF {target:.4g}), reached CNF's NLL after {seconds} s, sample NFE (dopri5) {nfe.n}")

    log_probs = {"CNF": log_density_on_grid(lambda x: ode.log_likelihood(cnf_field, x, rtol=c.rtol, atol=c.atol), n)}
    log_probs |= {f"FM {k}": log_density_on_grid(m.log_prob, n) for k, m in models.items()}
    figures = figures_dir(cfg, "flow_matching")
    save_figure(density_figure(test_x.numpy(), log_probs, n), figures / "toy_density.png")
    save_figure(trajectory_figure(paths), figures / "toy_trajectories.png")

    main = out[c.coupling]
    seconds, cpu, steps = main["seconds_to_cnf_nll"], main["cpu_seconds_to_cnf_nll"], main["steps_to_cnf_nll"]
    return {"fm_toy": {"dataset": dataset, "coupling": c.coupling, **main},
            "fm_minus_cnf_nll": main["test_nll"] - target,
            "fm_over_cnf_time_to_nll": None if seconds is None else seconds / cnf_metrics["train_seconds"],
            "fm_over_cnf_cpu_time_to_nll": None if cpu is None else cpu / cnf_metrics["train_cpu_seconds"],
            "fm_over_cnf_nfe_to_nll": None if steps is None else
            steps * c.toy.batch_size / (cnf_metrics["steps"] * cnf_metrics["nfe"] * cfg.model.cnf.toy.batch_size),
            "cnf_toy_nll": target, "couplings": out}


# --- class-conditional Gaussian → MNIST ---------------------------------------------------

def mnist_config(cfg) -> dict:
    """What the saved MNIST model depends on (training part of ``model.flow_matching.mnist``)."""
    m = OmegaConf.to_container(cfg.model.flow_matching.mnist, resolve=True)
    return {k: m[k] for k in ("unet", "steps", "batch_size", "lr", "ema", "label_dropout", "t_sampling")}


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
                        max_steps=m.steps, callbacks=[average, clock]) as trainer:
        runner.fit(trainer, module, loader(x, y, batch_size=m.batch_size, seed=cfg.seed))
    return module, clock


def sampling_runs(m) -> dict[str, dict]:
    """Run key → {nfe, w, n}: the main runs (w = 0 and each guided w) and the NFE sweep at w = 0."""
    runs = {}
    for nfe, w, n in [*[(m.nfe, w, m.n_samples) for w in [0.0, *m.guidance_ws]],
                      *[(k, 0.0, m.sweep_n) for k in m.sweep_nfe]]:
        runs.setdefault(f"{m.sampler}_nfe{nfe}_w{w:g}", {"nfe": nfe, "w": float(w), "n": n})
    return runs


def generate(cfg, module: FlowMatching) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Every sampling run from the same noise (seeded), labels 0..9 in equal blocks; images in [0, 1]."""
    m = cfg.model.flow_matching.mnist
    arrays, meta = {}, []
    module.eval()
    for key, r in sampling_runs(m).items():
        labels = torch.arange(N_CLASSES).repeat_interleave(-(-r["n"] // N_CLASSES))[: r["n"]]
        torch.manual_seed(cfg.seed)
        start = time.perf_counter()
        with ode.NFE(module.net) as nfe:
            x = module.sample(labels, (1, 28, 28), m.sampler, r["nfe"], r["w"])[-1]
        seconds = time.perf_counter() - start
        arrays[f"{key}_x"] = x.add(1).div(2).clamp(0, 1).squeeze(1).numpy().astype(np.float32)
        arrays[f"{key}_y"] = labels.numpy().astype(np.int64)
        meta.append({"key": key, "sampler": m.sampler, "nfe": nfe.n, "guidance_w": r["w"], "n": r["n"],
                     "seconds": round(seconds, 3)})
        print(f"[genlab] flow_matching/mnist: {key}: {r['n']} samples, {nfe.n} NFE, {seconds:.1f} s")
    return arrays, meta


def class_grid(images: np.ndarray, labels: np.ndarray, title: str, per_class: int = 10):
    """``per_class`` samples of each digit, one row per class."""
    rows = [images[labels == c][:per_class] for c in range(N_CLASSES)]
    return image_grid(np.concatenate(rows), nrow=N_CLASSES, title=title)


def mnist(cfg) -> dict:
    m = cfg.model.flow_matching.mnist
    data, _ = prepared.load(cfg, "mnist")
    scorer = SampleScorer(load_cnn(cfg), torch.from_numpy(data["val_x"]).float() / 255)   # chooses w
    module, clock = train_mnist(cfg, data)
    out = Path(cfg.paths.models) / "flow_matching"
    save_model(out / "mnist.pt", module.net.state_dict(), mnist_config(cfg))
    arrays, runs = generate(cfg, module)
    best_w = choose_guidance(scorer, arrays, runs)
    save_arrays(out / "samples", arrays, {"runs": runs, "main_nfe": m.nfe, "best_w": best_w, "sweep_n": m.sweep_n})
    figures = figures_dir(cfg, "flow_matching")
    for w in (0.0, best_w):
        key = f"{m.sampler}_nfe{m.nfe}_w{w:g}"
        save_figure(class_grid(arrays[f"{key}_x"], arrays[f"{key}_y"], f"FM {m.sampler}, {m.nfe} NFE, w = {w:g}"),
                    figures / f"mnist_samples_w{w:g}.png")
    sweep = [f"{m.sampler}_nfe{k}_w0" for k in m.sweep_nfe]
    save_figure(image_grid(np.concatenate([arrays[f"{k}_x"][:: max(1, len(arrays[f"{k}_x"]) // N_CLASSES)][:N_CLASSES]
                                           for k in sweep]), nrow=len(sweep),
                           title=f"same noise, w = 0; rows: NFE {list(m.sweep_nfe)}"), figures / "mnist_nfe_sweep.png")
    write_csv(plots_dir(cfg, "flow_matching") / "mnist_sampling.csv", runs)
    return {"steps": m.steps, "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds,
            "sec_per_iter": clock.sec_per_iter, "parameters": sum(p.numel() for p in module.net.parameters()),
            "nfe": m.nfe, "sampler": m.sampler, "guidance_w": best_w, "n_samples": m.n_samples,
            "sampling_seconds": {r["key"]: r["seconds"] for r in runs}}


def run(cfg) -> None:
    metrics = toy(cfg)
    metrics["mnist"] = mnist(cfg)
    write_metrics(cfg, "flow_matching", metrics)
