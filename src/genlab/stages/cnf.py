"""Stage `cnf`: FFJORD-style continuous normalizing flows (2D toy set, 64-D digits) → test NLL, NFE, cost.

* toy: ``model.cnf.dataset`` from data/toy2d, exact divergence; test NLL in nats.
* digits: scikit-learn 8×8 digits (17 levels) dequantized + logit transform, Hutchinson divergence;
  test NLL in bits/dim of the dequantized pixels (uniform over 17 levels = log2 17 ≈ 4.09).

Writes ``models/cnf/{toy,digits}.pt``, ``reports/metrics/cnf.json`` (``cnf_toy``: what flow matching's
time-to-NLL compares against), ``reports/plots/cnf/*_nll.csv`` (test NLL vs training seconds) and
figures: density vs data, sample trajectories, digit samples.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.data import prepared
from genlab.data.prepared import toy_split
from genlab.evaluate import ode
from genlab.io import save_model
from genlab.models.clock import TrainClock
from genlab.models.cnf import CNF, LogitDequantize
from genlab.nn.vector_field import VectorField
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.flows import density_figure, log_density_on_grid, trajectory_figure
from genlab.saved.cnf import model_config

DIGIT_LEVELS = 17   # sklearn digits: integer intensities 0..16


def train(cfg, part: str, train_x: torch.Tensor, test_x: torch.Tensor, exact: bool,
          transform: LogitDequantize | None) -> tuple[CNF, TrainClock, dict]:
    """Fit one CNF; the TrainClock holds its test-NLL-vs-training-time history."""
    c, s = cfg.model.cnf, cfg.model.cnf[part]
    runner.seed_all(cfg)
    module = CNF(VectorField(train_x.shape[1], s.width, s.depth, s.activation), s.lr, c.weight_decay, c.rtol, c.atol,
                 c.adjoint, exact, transform)
    clock = TrainClock("test/nll")
    with runner.torch_threads(s.threads), \
            runner.session(cfg, stage="cnf", run=part, run_config=model_config(cfg, part), max_steps=s.steps,
                           callbacks=[clock], inference_mode=False) as trainer:
        runner.fit(trainer, module, loader(train_x, batch_size=s.batch_size, seed=cfg.seed,
                                           batches_per_epoch=s.eval_every),
                   loader(test_x, batch_size=len(test_x), train=False))
        if not clock.history or clock.history[-1]["step"] != s.steps:   # evaluate the final weights
            trainer.validate(module, loader(test_x, batch_size=len(test_x), train=False), verbose=False)
    tail = max(1, len(module.nfe_forward) // 10)
    stats = {"test_nll": clock.history[-1]["test/nll"], "sec_per_iter": clock.sec_per_iter,
             "train_seconds": clock.seconds, "train_cpu_seconds": clock.cpu_seconds,
             "threads": runner.thread_count(s.threads), "steps": s.steps,
             "nfe": float(np.mean(module.nfe_forward)), "nfe_final": float(np.mean(module.nfe_forward[-tail:])),
             "nfe_backward": float(np.mean(module.nfe_backward)) if c.adjoint else 0.0,
             "backward": "adjoint" if c.adjoint else "direct", "divergence": "exact" if exact else "hutchinson",
             "parameters": sum(p.numel() for p in module.field.parameters())}
    return module, clock, stats


def curve(clock: TrainClock) -> list[dict]:
    return [{"step": h["step"], "seconds": h["seconds"], "cpu_seconds": h["cpu_seconds"], "test_nll": h["test/nll"]}
            for h in clock.history]


def run(cfg) -> None:
    c = cfg.model.cnf
    figures, models = figures_dir(cfg, "cnf"), Path(cfg.paths.models) / "cnf"

    train_x, test_x = toy_split(cfg, c.dataset)
    toy, clock, toy_stats = train(cfg, "toy", train_x, test_x, exact=True, transform=None)
    save_model(models / "toy.pt", toy.field.state_dict(), model_config(cfg, "toy"))
    write_csv(plots_dir(cfg, "cnf") / "toy_nll.csv", curve(clock))
    n = 80
    save_figure(density_figure(test_x.numpy(), {"CNF": log_density_on_grid(toy.log_prob, n)}, n),
                figures / "toy_density.png")
    with ode.NFE(toy.field) as nfe:
        path = ode.sample(toy.field, torch.randn(300, 2), "dopri5", rtol=c.rtol, atol=c.atol, n_save=25)
    save_figure(trajectory_figure({f"CNF (dopri5, {nfe.n} NFE)": path}), figures / "toy_trajectories.png")
    print(f"[genlab] cnf/toy ({c.dataset}): " + ", ".join(f"{k}={v:.4g}" for k, v in toy_stats.items()
                                                         if isinstance(v, float)))

    arrays, _ = prepared.load(cfg, "digits")
    dequant = LogitDequantize(DIGIT_LEVELS, c.logit_alpha)
    digits, clock, digit_stats = train(cfg, "digits", torch.from_numpy(arrays["train_x"]),
                                       torch.from_numpy(arrays["test_x"]), exact=False, transform=dequant)
    save_model(models / "digits.pt", digits.field.state_dict(), model_config(cfg, "digits"))
    write_csv(plots_dir(cfg, "cnf") / "digits_nll.csv", curve(clock))
    bits = 64 * math.log(2)   # nats per image → bits per dimension
    digit_stats["test_bpd"] = digit_stats["test_nll"] / bits
    digit_stats["uniform_bpd"] = math.log2(DIGIT_LEVELS)
    samples = ode.sample(digits.field, torch.randn(40, 64), "dopri5", rtol=c.rtol, atol=c.atol)[-1]
    save_figure(image_grid(dequant.inverse(samples).reshape(-1, 8, 8).numpy(), nrow=4,
                           title=f"CNF digits samples (test {digit_stats['test_bpd']:.3f} bits/dim)"),
                figures / "digits_samples.png")
    print(f"[genlab] cnf/digits: test_bpd={digit_stats['test_bpd']:.4g}, nfe={digit_stats['nfe']:.3g}, "
          f"sec_per_iter={digit_stats['sec_per_iter']:.3g}")
    write_metrics(cfg, "cnf", {"cnf_toy": {"dataset": c.dataset, **toy_stats}, "digits": digit_stats})
