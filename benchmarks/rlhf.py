"""RLHF speed: rollout tokens/s (sampling with the KV cache) and PPO iteration time (rollout + GAE +
epochs × minibatches of updates), on the default model.rlhf network, CPU, 1 thread.

    python benchmarks/rlhf.py [--rollouts 256] [--iters 5]

Prints wall and process-CPU seconds: other processes inflate wall time, CPU time is what the
work itself costs.
"""
from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from omegaconf import OmegaConf

from genlab.cli import compose
from genlab.data.arithmetic import VOCAB
from genlab.data.loader import loader
from genlab.data.rlhf_task import prompts, response_width
from genlab.models.ppo import PPO
from genlab.nn.heads import RewardModel
from genlab.nn.transformer import Transformer, TransformerConfig
from genlab.rl.rollout import response_mask, sample


def clock():
    return time.perf_counter(), time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollouts", type=int, default=256)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c = compose([]).model.rlhf                 # the default model.rlhf section of experiments/
    d = max(c.task.digits)
    width = response_width(d)

    def net() -> Transformer:
        return Transformer(TransformerConfig(vocab_size=len(VOCAB), block_size=2 * d + 2 + width,
                                             n_layer=c.net.n_layer, n_head=c.net.n_head, n_embd=c.net.n_embd))

    a, b = torch.randint(0, 10 ** d, (2, args.rollouts))
    p, pl_ = prompts(a, b, torch.full((args.rollouts,), d))
    policy = net()
    sample(policy, p, pl_, width, 1.0)                        # warm-up
    (w0, c0), tokens = clock(), 0
    for _ in range(args.iters):
        tokens += int(response_mask(sample(policy, p, pl_, width, 1.0)).sum())
    (w1, c1) = clock()
    print(f"rollout: {tokens / (w1 - w0):,.0f} response tokens/s wall, {tokens / (c1 - c0):,.0f} per CPU-second "
          f"(batch {args.rollouts}, {c.net.n_layer}×{c.net.n_embd} transformer)")

    ppo_cfg = OmegaConf.merge(c.ppo, {"rollouts": args.rollouts, "steps": args.iters})
    module = PPO(policy, net().requires_grad_(False), RewardModel(net()), ppo_cfg, width, 1.0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    data = loader(p, pl_, batch_size=args.rollouts, seed=0, batches_per_epoch=args.iters)
    w0, c0 = clock()
    trainer.fit(module, data)
    w1, c1 = clock()
    print(f"PPO iteration (rollout + {ppo_cfg.epochs} epochs × {ppo_cfg.minibatches} minibatches): "
          f"{(w1 - w0) / args.iters:.3f} s wall, {(c1 - c0) / args.iters:.3f} s CPU")


if __name__ == "__main__":
    main()
