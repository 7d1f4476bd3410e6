"""The same GPT (nanoGPT "baby" recipe, ``model/gpt=baby``) trained by a plain PyTorch loop and by genlab's
Lightning path (``stages.gpt.train_lm``): best val loss, wall time, tokens/s, overhead ratio; then sampling
tokens/s with and without the KV cache.

    python benchmarks/gpt_vs_plain.py [--iters 2000] [--threads 1]

The plain loop is nanoGPT's train.py reduced to CPU: random windows, AdamW(0.9, 0.99) with weight decay on
matrices, warmup + cosine lr, clip 1.0, evaluation every ``eval_interval`` steps. Both evaluate on the whole
validation split (the same windows) and keep the best. Goal: Lightning step time / plain step time ≤ 1.05
(issue 28), in process-CPU seconds of the steps — wall time swings with whatever else runs on the
machine; the script exits non-zero when it is missed.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from genlab.cli import compose
from genlab.models.gpt import lr_factor, windows
from genlab.nn.transformer import Transformer
from genlab.stages.gpt import load_text, net_config, sampling_speed, train_lm

GOAL = 1.05   # Lightning's step time over the plain loop's


@torch.no_grad()
def val_loss(net: Transformer, val: torch.Tensor) -> float:
    net.eval()
    total = sum(F.cross_entropy(net(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten(), reduction="sum").item()
                for b in val.split(64))
    net.train()
    return total / (val.size(0) * (val.size(1) - 1))


def plain(cfg, data, vocab) -> dict:
    c, o = cfg.model.gpt, cfg.model.gpt.optim
    torch.manual_seed(cfg.seed)
    net = Transformer(net_config(cfg, len(vocab)))
    decay = [p for p in net.parameters() if p.dim() >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": [p for p in net.parameters() if p.dim() < 2], "weight_decay": 0.0}],
                            lr=o.lr, betas=(0.9, o.beta2), fused=True)
    train = windows(data["train"], c.arch.block_size)
    val = windows(data["val"], c.arch.block_size, stride=c.arch.block_size)
    best, step_seconds, step_cpu, start = math.inf, 0.0, 0.0, time.perf_counter()
    for it in range(c.max_iters):
        t0, cpu0 = time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = o.lr * lr_factor(it, o.warmup_iters, c.lr_decay_iters, o.min_lr / o.lr)
        batch = train[torch.randint(len(train), (o.batch_size,))]
        loss = F.cross_entropy(net(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
        opt.step()
        step_seconds += time.perf_counter() - t0
        step_cpu += time.process_time() - cpu0
        if (it + 1) % c.eval_interval == 0 or it + 1 == c.max_iters:
            best = min(best, val_loss(net, val))
    tokens = c.max_iters * o.batch_size * c.arch.block_size
    return {"val_loss": best, "seconds": time.perf_counter() - start, "tokens_per_sec": tokens / step_seconds,
            "step_cpu_seconds": step_cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    cfg = compose(["model/gpt=baby", f"model.gpt.max_iters={args.iters}", f"model.gpt.lr_decay_iters={args.iters}",
                   f"trainer.threads={args.threads}", "logger.wandb.mode=disabled", "logger.csv=false",
                   "trainer.progress_bar=false", *(f"paths.{k}={tmp}/{k}" for k in ("models", "checkpoints", "logs"))])
    torch.set_num_threads(args.threads)
    data, vocab = load_text(cfg)
    cpu0 = time.process_time()
    ref = plain(cfg, data, vocab)
    ref["cpu_seconds"] = time.process_time() - cpu0
    c = cfg.model.gpt
    cpu0, start = time.process_time(), time.perf_counter()
    module = train_lm(cfg, stage="gpt_bench", run="baby", net_cfg=net_config(cfg, len(vocab)), optim=c.optim,
                      max_iters=c.max_iters, lr_decay_iters=c.lr_decay_iters, eval_interval=c.eval_interval,
                      val_tokens=0, data=data, run_config=["bench", args.iters])
    lit = {"val_loss": module.best_loss, "seconds": time.perf_counter() - start,
           "tokens_per_sec": module.train_tokens / module.train_seconds, "cpu_seconds": time.process_time() - cpu0,
           "step_cpu_seconds": module.train_cpu_seconds}
    for name, r in (("plain loop", ref), ("lightning", lit)):
        print(f"{name:>10}: best val loss {r['val_loss']:.4f} nats/char, {r['seconds']:.1f}s wall "
              f"({r['cpu_seconds']:.1f}s CPU), {r['tokens_per_sec']:.0f} train tokens/s")
    step_cpu = lit["step_cpu_seconds"] / ref["step_cpu_seconds"]
    print(f"overhead lightning/plain: wall {lit['seconds'] / ref['seconds']:.3f}, "
          f"CPU {lit['cpu_seconds'] / ref['cpu_seconds']:.3f}, step wall "
          f"{ref['tokens_per_sec'] / lit['tokens_per_sec']:.3f}, step CPU {step_cpu:.3f} (goal ≤ {GOAL})")
    n = c.arch.block_size - 1
    for cache in (True, False):
        print(f"sampling {n} tokens, KV cache {'on ' if cache else 'off'}: "
              f"{sampling_speed(module.net, n, use_cache=cache):.0f} tokens/s")
    sys.exit(0 if step_cpu <= GOAL else 1)


if __name__ == "__main__":
    main()
