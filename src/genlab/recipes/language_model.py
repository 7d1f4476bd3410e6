"""The language-model recipe: a GPT on random training windows with best-on-validation weights, run by
`gpt` (one model) and `gpt_scaling` (one run per size and token budget)."""
from __future__ import annotations

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.errors import GenlabError
from genlab.models.gpt import GPT, windows
from genlab.nn.transformer import Transformer, TransformerConfig


def train_lm(cfg, *, stage: str, run: str, net_cfg: TransformerConfig, optim, max_iters: int, lr_decay_iters: int,
             eval_interval: int, val_tokens: int, data: dict[str, torch.Tensor], run_config) -> GPT:
    """Train a GPT on random training windows; validate every ``eval_interval`` steps; return the
    module with its best-on-validation weights loaded."""
    for split, ids in (("train", data["train"]), ("val", data["val"])):
        if len(ids) < net_cfg.block_size + 1:   # one window is block_size inputs plus the next-token target
            raise GenlabError(f"the {split} text has {len(ids)} tokens, fewer than one window of block_size + 1 = "
                              f"{net_cfg.block_size + 1}", "use a larger corpus (or data.text.val_fraction), "
                              f"or a smaller {stage} block_size")
    runner.seed_all(cfg)
    module = GPT(Transformer(net_cfg), optim.lr, optim.min_lr, optim.warmup_iters, lr_decay_iters,
                 optim.weight_decay, optim.beta2)
    val_ids = data["val"][:val_tokens] if val_tokens else data["val"]
    train = loader(windows(data["train"], net_cfg.block_size), batch_size=optim.batch_size, seed=cfg.seed,
                   batches_per_epoch=eval_interval)
    val = loader(windows(val_ids, net_cfg.block_size, stride=net_cfg.block_size), batch_size=64, train=False)
    with runner.session(cfg, stage=stage, run=run, run_config=run_config, max_steps=max_iters,
                        gradient_clip_val=optim.grad_clip) as trainer:
        runner.fit(trainer, module, train, val)
        if module.history[-1]["step"] < max_iters:   # max_iters is not a multiple of eval_interval
            trainer.validate(module, val, verbose=False)
    module.restore_best()
    return module.eval()
