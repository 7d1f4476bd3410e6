"""Lightning's overhead against a plain PyTorch loop: same model, data, optimiser, schedule, augmentation.

    python benchmarks/lightning_overhead.py [--arch mlp|cnn] [--epochs 3] [--repeats 3]

Runs are interleaved (plain, lightning, plain, …) and the fastest of each is kept, so
background load affects both alike. Prints seconds per epoch and the ratio (goal ≤ 1.10).
Needs `genlab prepare` (reads data/mnist).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from genlab import runner
from genlab.config import validate
from genlab.data.loader import loader
from genlab.models.classifier import Classifier, random_shift, to_images
from genlab.nn.classifiers import build
from genlab.stages.classifier import load_mnist

ROOT = Path(__file__).resolve().parents[1]


def plain(cfg, arch: str, data, epochs: int) -> float:
    c = cfg.model.classifier
    runner.seed_all(cfg)
    net = build(arch, c[arch])
    train = loader(data["train_x"], data["train_y"], batch_size=c.batch_size, seed=cfg.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=epochs * len(train))
    start = time.perf_counter()
    for epoch in range(epochs):
        train.batch_sampler.set_epoch(epoch)
        net.train()
        for x, y in train:
            loss = F.cross_entropy(net(random_shift(to_images(x), c.shift)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return (time.perf_counter() - start) / epochs


def lightning(cfg, arch: str, data, epochs: int) -> float:
    c = cfg.model.classifier
    runner.seed_all(cfg)
    module = Classifier(build(arch, c[arch]), c.lr, c.weight_decay, c.shift)
    train = loader(data["train_x"], data["train_y"], batch_size=c.batch_size, seed=cfg.seed)
    with runner.session(cfg, stage="bench", run=arch, run_config=time.time(), max_epochs=epochs) as trainer:
        start = time.perf_counter()
        runner.fit(trainer, module, train)
        return (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # a private checkpoint folder: a fixed /tmp path is shared by every user and run on the machine
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as scratch:
        with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
            cfg = validate(compose("config", ["logger=disabled", "logger.csv=false", "trainer.progress_bar=false",
                                              f"paths.checkpoints={scratch}"]))
        data = load_mnist(cfg)
        times = {"plain": [], "lightning": []}
        for _ in range(args.repeats):
            times["plain"].append(plain(cfg, args.arch, data, args.epochs))
            times["lightning"].append(lightning(cfg, args.arch, data, args.epochs))
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.arch}: plain {best['plain']:.3f} s/epoch, lightning {best['lightning']:.3f} s/epoch, "
          f"ratio {best['lightning'] / best['plain']:.3f} (goal ≤ 1.10)")


if __name__ == "__main__":
    main()
