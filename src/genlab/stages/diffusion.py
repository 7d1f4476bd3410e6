"""Stage `diffusion`: class-conditional DDPM on MNIST with classifier-free guidance; DDIM/DDPM sample runs.

Trains ``genlab.models.diffusion.Diffusion`` on the shared U-Net, then
  1. selects on the *validation* images, from ``n_select`` samples under the training seed: the DDIM noise η
     (lowest FID at w = 0 over ``ddim_etas``, on this v-prediction model), then the guidance weight over the
     fixed grid ``guidance_ws`` at that η (``genlab.evaluate.selection.choose_guidance``'s rule);
  2. draws fresh test samples under ``selection.test_seed`` (``n_samples`` each, equally many per class, the same
     initial noise for every run): ``ddim<k>_eta<η>_w<w>`` — DDIM η = 0 at w = 0 (deterministic, beside flow
     matching's Euler), the chosen η at w = 0 and at the chosen w with k = ``sample_steps``, the chosen η at each
     k in ``sweep_steps`` (quality vs NFE) — and ``ddpm<T>_w0``, ancestral DDPM with all T steps, the reference.
A run's ``nfe`` counts network evaluations: a guided step counts 2. The test images are kept for
`generative_eval`. Writes ``models/diffusion/{unet.pt, samples.npz}``,
``reports/metrics/diffusion.json``, ``reports/plots/diffusion/`` and ``reports/figures/diffusion/``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from genlab import runner
from genlab.data.loader import loader
from genlab.data.prepared import load_mnist
from genlab.evaluate.fid import SampleScorer, choose_guidance, load_cnn, score_runs
from genlab.evaluate.selection import choose_lowest, test_seed
from genlab.io import save_arrays, save_model
from genlab.models.diffusion import Diffusion
from genlab.nn.unet import UNet
from genlab.precision import autocast
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics


def train(cfg, data: dict[str, torch.Tensor]) -> tuple[Diffusion, float]:
    c = cfg.model.diffusion
    runner.seed_all(cfg)
    module = Diffusion(UNet.from_config(c.unet), c.timesteps, c.schedule, c.label_dropout, c.lr, c.ema,
                       snr_gamma=c.snr_gamma, prediction=c.prediction)
    with runner.session(cfg, stage="diffusion", run="mnist", run_config=[c, cfg.data.mnist],
                        max_steps=c.steps, max_epochs=-1, precision=c.precision) as trainer:
        clock = runner.fit(trainer, module, loader(data["train_x"], data["train_y"], batch_size=c.batch_size,
                                                   seed=cfg.seed))
    return module.eval(), clock.seconds


def sample_runs(cfg, module: Diffusion, plan: list[dict], seed: int, n: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Sampling runs ``plan`` ({sampler, steps, w, eta}) from the same initial noise (``seed``: common random numbers
    across runs), ``n`` images each, labels 0..9 in turn. Arrays ``<key>_x`` [N,28,28] float32 in [0,1], ``<key>_y``
    [N] int64; run records. ``nfe`` counts network evaluations per sample: a guided step counts 2."""
    y = torch.arange(n) % 10
    arrays, runs = {}, []
    for p in plan:
        key = run_key(p)
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        with autocast(cfg.model.diffusion.precision, module.device.type):   # as in training
            x = (module.sample_ddim(y, p["steps"], p["w"], gen, p["eta"]) if p["sampler"] == "ddim"
                 else module.sample_ddpm(y, p["w"], gen))
        seconds = time.perf_counter() - start
        arrays[f"{key}_x"] = ((x.squeeze(1) + 1) / 2).clamp(0, 1).numpy().astype(np.float32)
        arrays[f"{key}_y"] = y.numpy().astype(np.int64)
        nfe = p["steps"] * (2 if p["w"] else 1)
        runs.append({"key": key, "sampler": p["sampler"], "steps": p["steps"], "nfe": nfe, "guidance_w": p["w"],
                     "eta": p["eta"], "n": n, "seed": seed, "seconds": round(seconds, 2)})
        print(f"[genlab] diffusion: {key} ({nfe} NFE, {n} samples) sampled in {seconds:.1f}s")
    return arrays, runs


def run_key(p: dict) -> str:
    if p["sampler"] == "ddpm":
        return f"ddpm{p['steps']}_w{p['w']:g}"
    return f"ddim{p['steps']}_eta{p['eta']:g}_w{p['w']:g}"


def grid(ws) -> list[float]:
    """The guidance grid with w = 0 first (always sampled: the unguided reference)."""
    return [0.0, *sorted(float(w) for w in ws if w)]


def select(cfg, module: Diffusion, scorer: SampleScorer) -> tuple[float, float, list[dict], list[dict]]:
    """On validation, under the training seed: η at w = 0 (lowest FID over ``ddim_etas``), then w over the guidance
    grid at that η (``choose_guidance``'s rule). Returns (η, w, η rows, guidance rows)."""
    c = cfg.model.diffusion
    plan = [{"sampler": "ddim", "steps": c.sample_steps, "w": 0.0, "eta": float(e)} for e in c.ddim_etas]
    arrays, eta_runs = sample_runs(cfg, module, plan, cfg.seed, c.n_select)
    score_runs(scorer, arrays, eta_runs)
    eta = choose_lowest(eta_runs, "val_fid", scorer.split, "the DDIM η")["eta"]
    plan = [{"sampler": "ddim", "steps": c.sample_steps, "w": w, "eta": eta} for w in grid(c.guidance_ws) if w]
    guided, guided_runs = sample_runs(cfg, module, plan, cfg.seed, c.n_select)
    w0 = next(r for r in eta_runs if r["eta"] == eta)
    arrays |= guided
    w = choose_guidance(scorer, arrays, [w0, *guided_runs], c.accuracy_bar)
    return eta, w, eta_runs, [w0, *guided_runs]


def test_plan(c, eta: float, w: float) -> list[dict]:
    """Fresh test runs: DDIM η = 0 at w = 0 (the deterministic sampler), the chosen η at w = 0 and at the chosen w,
    the chosen η's step sweep at w = 0, and ancestral DDPM (all T steps) at w = 0."""
    plan = [{"sampler": "ddim", "steps": c.sample_steps, "w": 0.0, "eta": 0.0},
            {"sampler": "ddim", "steps": c.sample_steps, "w": 0.0, "eta": eta},
            {"sampler": "ddim", "steps": c.sample_steps, "w": w, "eta": eta},
            *[{"sampler": "ddim", "steps": k, "w": 0.0, "eta": eta} for k in c.sweep_steps],
            *([{"sampler": "ddpm", "steps": c.timesteps, "w": 0.0, "eta": 1.0}] if c.ddpm_reference else [])]
    return list({run_key(p): p for p in plan}.values())


def run(cfg) -> None:
    c = cfg.model.diffusion
    data = load_mnist(cfg)
    scorer = SampleScorer(load_cnn(cfg), data["val_x"].float() / 255, split="val")   # η and w are chosen on validation
    module, train_seconds = train(cfg, data)
    out = Path(cfg.paths.models) / "diffusion"
    save_model(out / "unet.pt", module.ema.state_dict(), OmegaConf.to_container(c, resolve=True))
    eta, best_w, eta_runs, selection = select(cfg, module, scorer)
    arrays, runs = sample_runs(cfg, module, test_plan(c, eta, best_w), test_seed(cfg.seed), c.n_samples)
    save_arrays(out / "samples", arrays, {"runs": runs, "main_steps": c.sample_steps, "best_w": best_w, "eta": eta,
                                          "selection": selection, "eta_selection": eta_runs})

    figures, curves = figures_dir(cfg, "diffusion"), plots_dir(cfg, "diffusion")
    write_csv(curves / "loss.csv", module.history)
    keep = ("guidance_w", "eta", "nfe", "val_fid", "val_accuracy")
    write_csv(curves / "guidance.csv", [{k: r[k] for k in keep} for r in selection])
    write_csv(curves / "eta.csv", [{k: r[k] for k in keep} for r in eta_runs])
    for r in runs:
        if r["steps"] in (c.sample_steps, c.timesteps):
            picks = np.concatenate([np.flatnonzero(arrays[f"{r['key']}_y"] == k)[:10] for k in range(10)])
            save_figure(image_grid(arrays[f"{r['key']}_x"][picks], nrow=10,
                                   title=f"diffusion {r['sampler']} η={r['eta']:g}, {r['steps']} steps, "
                                         f"w={r['guidance_w']:g} (row = class)"), figures / f"samples_{r['key']}.png")
    print(f"[genlab] diffusion: chose η = {eta:g} and w = {best_w:g} on validation")
    write_metrics(cfg, "diffusion", {
        "train_seconds": round(train_seconds, 1), "final_loss": module.history[-1]["loss"] if module.history else None,
        "parameters": sum(p.numel() for p in module.net.parameters()), "best_w": best_w, "eta": eta,
        "accuracy_bar": c.accuracy_bar, "n_select": c.n_select, "training_seeds": 1,
        "ema_final_decay": min(c.ema, (1 + c.steps - 1) / (10 + c.steps - 1)),
        "eta_curve_val": [{k: r[k] for k in keep} for r in eta_runs],
        "guidance_curve_val": [{k: r[k] for k in keep} for r in selection],
        "runs": {r["key"]: {k: v for k, v in r.items() if k != "key"} for r in runs}})
