"""Stage `diffusion`: class-conditional DDPM on MNIST with classifier-free guidance; DDIM/DDPM sample runs.

Trains ``genlab.models.diffusion.Diffusion`` on the shared U-Net, then samples ``n_samples`` images
(equally many per class, the same initial noise for every run):
  * ``ddim<k>_w<w>``: DDIM (noise η = ``ddim_eta``) with k = ``sample_steps`` network evaluations (= flow matching's main
    NFE) for w = 0 and each w in ``guidance_ws``, and k in ``sweep_steps`` at w = 0 (quality vs NFE);
  * ``ddpm<T>_w0``: ancestral DDPM with all T steps, the reference.
The guidance weight ``best_w`` is chosen by FID against the *validation* images (the test images are
kept for `generative_eval`). Writes ``models/diffusion/{unet.pt, samples.npz}``,
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
from genlab.evaluate.fid import SampleScorer, choose_guidance, load_cnn
from genlab.io import save_arrays, save_model
from genlab.models.diffusion import Diffusion
from genlab.nn.unet import UNet
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics


def train(cfg, data: dict[str, torch.Tensor]) -> tuple[Diffusion, float]:
    c = cfg.model.diffusion
    runner.seed_all(cfg)
    module = Diffusion(UNet.from_config(c.unet), c.timesteps, c.schedule, c.label_dropout, c.lr, c.ema,
                       snr_gamma=c.snr_gamma, prediction=c.prediction)
    with runner.session(cfg, stage="diffusion", run="mnist", run_config=[c, cfg.data.mnist],
                        max_steps=c.steps, max_epochs=-1) as trainer:
        clock = runner.fit(trainer, module, loader(data["train_x"], data["train_y"], batch_size=c.batch_size,
                                                   seed=cfg.seed))
    return module.eval(), clock.seconds


def sample_runs(cfg, module: Diffusion) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Every sampling run: arrays ``<key>_x`` [N,28,28] float32 in [0,1], ``<key>_y`` [N] int64; run records."""
    c = cfg.model.diffusion
    y = torch.arange(c.n_samples) % 10
    plan = [("ddim", c.sample_steps, w) for w in [0.0, *c.guidance_ws]] + \
        [("ddim", k, 0.0) for k in c.sweep_steps if k != c.sample_steps] + [("ddpm", c.timesteps, 0.0)]
    arrays, runs = {}, []
    for sampler, nfe, w in plan:
        key = f"{sampler}{nfe}_w{w:g}"
        gen = torch.Generator().manual_seed(cfg.seed)      # common random numbers across runs
        start = time.perf_counter()
        x = module.sample_ddim(y, nfe, w, gen, c.ddim_eta) if sampler == "ddim" else module.sample_ddpm(y, w, gen)
        seconds = time.perf_counter() - start
        arrays[f"{key}_x"] = ((x.squeeze(1) + 1) / 2).clamp(0, 1).numpy().astype(np.float32)
        arrays[f"{key}_y"] = y.numpy().astype(np.int64)
        runs.append({"key": key, "sampler": sampler, "nfe": nfe, "guidance_w": w, "seconds": round(seconds, 2)})
        print(f"[genlab] diffusion: {key} ({nfe} NFE) sampled in {seconds:.1f}s")
    return arrays, runs


def run(cfg) -> None:
    c = cfg.model.diffusion
    data = load_mnist(cfg)
    scorer = SampleScorer(load_cnn(cfg), data["val_x"].float() / 255)     # w is selected on validation images
    module, train_seconds = train(cfg, data)
    out = Path(cfg.paths.models) / "diffusion"
    save_model(out / "unet.pt", module.ema.state_dict(), OmegaConf.to_container(c, resolve=True))
    arrays, runs = sample_runs(cfg, module)
    best_w = choose_guidance(scorer, arrays, runs)
    save_arrays(out / "samples", arrays, {"runs": runs, "main_nfe": c.sample_steps, "best_w": best_w})

    figures, curves = figures_dir(cfg, "diffusion"), plots_dir(cfg, "diffusion")
    write_csv(curves / "loss.csv", module.history)
    write_csv(curves / "guidance.csv", [{"guidance_w": r["guidance_w"], "val_fid": r["val_fid"],
                                         "val_accuracy": r["val_accuracy"]} for r in runs
                                        if r["sampler"] == "ddim" and r["nfe"] == c.sample_steps])
    for r in runs:
        if r["guidance_w"] in (0.0, best_w) and r["nfe"] in (c.sample_steps, c.timesteps):
            picks = np.concatenate([np.flatnonzero(arrays[f"{r['key']}_y"] == k)[:10] for k in range(10)])
            save_figure(image_grid(arrays[f"{r['key']}_x"][picks], nrow=10,
                                   title=f"diffusion {r['sampler']}, {r['nfe']} NFE, w={r['guidance_w']:g} "
                                         "(row = class)"), figures / f"samples_{r['key']}.png")
    write_metrics(cfg, "diffusion", {
        "train_seconds": round(train_seconds, 1), "final_loss": module.history[-1]["loss"] if module.history else None,
        "parameters": sum(p.numel() for p in module.net.parameters()), "best_w": best_w,
        "runs": {r["key"]: {k: v for k, v in r.items() if k != "key"} for r in runs}})
