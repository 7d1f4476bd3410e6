"""Training-step time of the default image networks in float32 and under the precision their config sets
(``model.diffusion.precision`` for the U-Net, ``model.classifier.cnn.precision`` for the CNN): alternating
pairs in one process, median ratio. The U-Net runs with 2 threads (as its stages do), the CNN with 1 (as a
pool worker does); the U-Net's sampling forward pass (500 images) is timed the same way.

    python benchmarks/precision.py [--pairs 3] [--steps 10] [--json out.json]

Goal: the configured precision's training step ≤ 0.8× the float32 step for both networks (issue 28); the
script exits non-zero when it is missed. On a CPU without bfloat16 instructions the goal is expected to fail:
the configs' precision is then a cost, not a saving.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from genlab.cli import compose
from genlab.nn.classifiers import build
from genlab.nn.unet import UNet
from genlab.precision import autocast

GOAL = 0.8


def step_time(step, precision: str, steps: int) -> float:
    """Mean seconds of ``step()`` under ``precision``'s autocast, after 2 warm-up calls."""
    with autocast(precision):
        for _ in range(2):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
    return (time.perf_counter() - start) / steps


def training_step(net: torch.nn.Module, make_loss):
    opt = torch.optim.AdamW(net.parameters(), 1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        make_loss().backward()
        opt.step()
    return step


def pairs(step, precision: str, n_pairs: int, steps: int) -> dict:
    """Alternating (float32, ``precision``) timings; the median of the per-pair ratios."""
    rows = [(step_time(step, "32-true", steps), step_time(step, precision, steps)) for _ in range(n_pairs)]
    return {"precision": precision, "float32_ms": [round(a * 1e3, 2) for a, _ in rows],
            "configured_ms": [round(b * 1e3, 2) for _, b in rows],
            "median_ratio": statistics.median(b / a for a, b in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="precision.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    cfg = compose([])
    torch.manual_seed(0)
    out = {}

    torch.set_num_threads(2)
    d = cfg.model.diffusion
    unet = UNet.from_config(d.unet, 10)
    x, t, y = torch.randn(d.batch_size, 1, 28, 28), torch.rand(d.batch_size), torch.randint(0, 10, (d.batch_size,))
    out["unet_train"] = pairs(training_step(unet, lambda: (unet(x, t, y).float() - x).pow(2).mean()),
                              d.precision, args.pairs, args.steps)
    xs, ts, ys = torch.randn(500, 1, 28, 28), torch.rand(500), torch.randint(0, 10, (500,))

    def sample_pass():
        with torch.no_grad():
            unet(xs, ts, ys)
    out["unet_sampling_forward"] = pairs(sample_pass, d.precision, args.pairs, max(2, args.steps // 5))

    torch.set_num_threads(1)
    c = cfg.model.classifier
    cnn = build("cnn", c.cnn)
    xc, yc = torch.randn(c.batch_size, 1, 28, 28), torch.randint(0, 10, (c.batch_size,))
    out["cnn_train"] = pairs(training_step(cnn, lambda: F.cross_entropy(cnn(xc).float(), yc)),
                             c.cnn.precision, args.pairs, args.steps)

    for name, r in out.items():
        print(f"{name:<22} {r['precision']:<11} float32 {statistics.median(r['float32_ms']):7.1f} ms  configured "
              f"{statistics.median(r['configured_ms']):7.1f} ms  ratio {r['median_ratio']:.2f}")
    missed = [k for k in ("unet_train", "cnn_train") if out[k]["median_ratio"] > GOAL]
    print(f"goal: configured/float32 training step ≤ {GOAL} — {'missed by ' + ', '.join(missed) if missed else 'met'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out | {"goal": GOAL, "met": not missed}, fh, indent=2)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
