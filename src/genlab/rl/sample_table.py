"""Samples *during* training: a wandb table of the policy's answers to a few fixed prompts, logged by PPO
(and RLOO/GRPO) at its evaluation steps and by DPO/IPO/hinge every ``sample_every`` steps.

``sample_rows`` builds the sampler: ``sampler(policy)`` → one row (prompt, response, gold) per fixed prompt,
sampled with a generator re-seeded on every call, so rows of two steps differ only because the policy
did. ``log_sample_table`` logs them as ``[step, prompt, response, gold]`` to every logger that takes
tables (wandb's ``log_text``); with none (``logger.wandb.mode=disabled``) it returns before sampling.
"""
from __future__ import annotations

from typing import Callable

import lightning.pytorch as pl
import torch

from genlab.data.arithmetic import PAD, decode, render
from genlab.evaluate.gold_reward import gold_reward
from genlab.nn.transformer import Transformer
from genlab.rl.rollout import sample

COLUMNS = ["step", "prompt", "response", "gold"]

Sampler = Callable[[Transformer], list[list]]


def sample_rows(problems: dict, width: int, temperature: float, format_weight: float, seed: int,
                n: int = 8) -> Sampler:
    """``sampler(policy)``: (prompt, response, gold) of the first ``n`` of ``problems`` (a, b, digits,
    prompts ``[N, P]``, prompt_len ``[N]``), one answer each sampled at ``temperature`` under ``seed``
    (answers are written least-significant digit first; ⏎ = end of answer)."""
    few = {k: v[:n] for k, v in problems.items()}

    def sampler(policy: Transformer) -> list[list]:
        device = next(policy.parameters()).device
        y = sample(policy, few["prompts"].to(device), few["prompt_len"].to(device), width, temperature,
                   torch.Generator().manual_seed(seed)).cpu()
        gold = gold_reward(few["a"], few["b"], few["digits"], y, True, format_weight)
        return [[render(int(few["a"][i]), int(few["b"][i]), int(few["digits"][i]), True)[0],
                 decode(y[i][y[i] != PAD].tolist()).replace("\n", "⏎"), float(gold[i])] for i in range(len(y))]
    return sampler


def log_sample_table(module: pl.LightningModule, key: str, step: int, policy: Transformer,
                     sampler: Sampler | None) -> bool:
    """Log ``sampler(policy)`` as the table ``key`` at ``step`` (the wandb step is the module's global step).
    Returns whether anything was logged: never without a sampler or a logger that takes tables."""
    tables = [logger for logger in module.loggers if hasattr(logger, "log_text")]     # WandbLogger
    if sampler is None or not tables:
        return False
    rows = [[step, *row] for row in sampler(policy)]
    for logger in tables:
        logger.log_text(key, columns=COLUMNS, data=rows, step=module.global_step)
    return True
