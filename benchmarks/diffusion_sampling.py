"""Cost of the diffusion stage's pieces: one training step, and sampling seconds per network evaluation (NFE).

    python benchmarks/diffusion_sampling.py [key=value …]        # config overrides, e.g. model.diffusion.unet.channels=32

Uses the composed default config (``model.diffusion``). Prints wall and process-CPU seconds (CPU time is
the better guide when other jobs share the machine) for: a training step at the configured batch size,
one unguided and one guided (batched cond+uncond) network evaluation on ``n_samples`` images, and the
projected cost of the stage's sampling plan (DDIM at ``sample_steps`` for w = 0 and each guidance w, DDIM at
``sweep_steps`` for w = 0, ancestral DDPM over all T steps).
"""
from __future__ import annotations

import argparse
import time

import torch

from genlab.cli import compose
from genlab.models.diffusion import Diffusion
from genlab.nn.unet import UNet


def timed(fn, repeats: int = 3) -> tuple[float, float]:
    """Fastest (wall, cpu) seconds of ``repeats`` calls after one warm-up."""
    fn()
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - w, time.process_time() - c))
    return best


def main(overrides: list[str]) -> None:
    c = compose(overrides).model.diffusion
    torch.manual_seed(0)
    module = Diffusion(UNet.from_config(c.unet), c.timesteps, c.schedule, c.label_dropout, c.lr, c.ema,
                       snr_gamma=c.snr_gamma, prediction=c.prediction)
    opt = torch.optim.AdamW(module.net.parameters(), lr=c.lr)
    x0, y = torch.rand(c.batch_size, 1, 28, 28) * 2 - 1, torch.randint(0, 10, (c.batch_size,))

    def step():
        opt.zero_grad()
        module.loss(x0, y).backward()
        opt.step()

    n = c.n_samples
    xs, ys = torch.randn(n, 1, 28, 28), torch.arange(n) % 10
    with torch.no_grad():
        nfe = {w: timed(lambda w=w: module.guided(xs, c.timesteps // 2, ys, w), repeats=2) for w in (0.0, 1.0)}
    train = timed(step)
    print(f"U-Net {c.unet.channels}×{list(c.unet.channel_mults)}: {sum(p.numel() for p in module.net.parameters()):,} "
          f"parameters; torch threads {torch.get_num_threads()}")
    print(f"training step (batch {c.batch_size}): {train[0]:.3f} s wall, {train[1]:.3f} s CPU "
          f"→ {c.steps} steps ≈ {c.steps * train[0]:.0f} s wall, {c.steps * train[1]:.0f} s CPU")
    for w, (wall, cpu) in nfe.items():
        print(f"one NFE on {n} images, w={w:g}{' (cond+uncond batched)' if w else ''}: {wall:.3f} s wall, {cpu:.3f} s CPU")
    unguided = c.sample_steps + sum(k for k in c.sweep_steps if k != c.sample_steps) + c.timesteps
    plan = [unguided * nfe[0.0][i] + c.sample_steps * len(c.guidance_ws) * nfe[1.0][i] for i in (0, 1)]
    print(f"sampling plan (DDIM {c.sample_steps} × w∈{[0.0, *c.guidance_ws]}, DDIM {list(c.sweep_steps)} at w=0, "
          f"DDPM {c.timesteps}): ≈ {plan[0]:.0f} s wall, {plan[1]:.0f} s CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. model.diffusion.timesteps=100")
    main(parser.parse_args().overrides)
