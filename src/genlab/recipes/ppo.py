"""The PPO recipe (and its critic-free variants RLOO and GRPO): the SFT policy trained against a reward
model with a KL penalty, run by `ppo` (one job per algorithm × seed) and by `overoptimization`."""
from __future__ import annotations

import torch
from omegaconf import OmegaConf

from genlab import runner
from genlab.data.loader import loader
from genlab.evaluate.policy import summary
from genlab.models.ppo import PPO
from genlab.recipes import rlhf


def train_ppo(cfg, reward_model, run: str, probs: dict, algorithm: str = "ppo", evaluator=None,
              eval_steps=None, **changes) -> tuple[PPO, float]:
    """``algorithm`` (ppo | rloo | grpo) from the SFT weights against ``reward_model``; ``changes`` override
    ``model.rlhf.ppo`` keys. Every algorithm samples ``rollouts`` responses per iteration (rloo/grpo:
    ``rollouts/group`` prompts × ``group``) for ``steps`` iterations of ``epochs`` × ``minibatches`` updates.
    The curve evaluates gold, proxy (this reward model) and KL on ``probs`` every ``eval_every`` steps, or at
    the iterations ``eval_steps``, and at the end (``evaluator(policy)`` replaces that evaluation).
    Returns the module and its training seconds (rollouts included)."""
    c = OmegaConf.merge(cfg.model.rlhf.ppo, changes)
    runner.seed_all(cfg)
    rlhf.setup(cfg)
    ref = rlhf.load_policy(cfg, "sft", "sft")
    policy = rlhf.load_policy(cfg, "sft", "sft").requires_grad_(True).train()

    def evaluate(net):
        return summary(rlhf.evaluate_policy(cfg, net, ref, reward_model, probs))

    module = PPO(policy, ref, reward_model, c, rlhf.width(cfg), cfg.model.rlhf.task.temperature, evaluator or evaluate,
                 algorithm, rlhf.sampler(cfg, probs), eval_steps)
    train = rlhf.problems(cfg, "train")
    data = loader(train["prompts"], train["prompt_len"], batch_size=c.rollouts // module.group, seed=cfg.seed,
                  batches_per_epoch=c.steps)
    run_config = [rlhf.sections(cfg, "sft", "reward_model"), OmegaConf.to_container(c), run, algorithm,
                  None if eval_steps is None else list(eval_steps)]   # the curve a finished run's checkpoint holds
    with runner.session(cfg, stage="ppo", run=run, run_config=run_config, max_epochs=1) as trainer:
        clock = runner.fit(trainer, module, data)
    policy.eval().requires_grad_(False)
    return module, clock.seconds


def policy_job(cfg, algorithm: str, seed: int, keep: bool = False) -> dict:
    """One replicate (a ``genlab.parallel.run_many`` job): ``algorithm`` trained and evaluated under ``seed``
    on the fixed eval prompts (gold, proxy, KL to SFT). With ``keep`` also the weights and training logs."""
    cfg = rlhf.with_seed(cfg, seed)
    rm = rlhf.load_reward_model(cfg)
    probs = rlhf.eval_problems(cfg)
    name = algorithm if seed == 0 else f"{algorithm}-seed{seed}"
    module, seconds = train_ppo(cfg, rm, name, probs, algorithm)
    row = rlhf.policy_row(cfg, rlhf.evaluate_policy(cfg, module.policy, module.ref, rm, probs), probs)
    out = {"algorithm": algorithm, "seed": seed, **row, "train_seconds": seconds, "final_beta": module.kl_ctl.beta}
    if keep:
        out |= {"state_dict": {k: v.clone() for k, v in module.policy.state_dict().items()},
                "history": module.history, "curve": module.curve}
    return out


def temperature_job(cfg, seed: int, with_reward_model: bool = True) -> list[dict]:
    """The SFT temperature curve under ``seed`` on the eval prompts (a ``run_many`` job)."""
    cfg = rlhf.with_seed(cfg, seed)
    rlhf.setup(cfg)
    sft = rlhf.load_policy(cfg, "sft", "sft")
    rm = rlhf.load_reward_model(cfg) if with_reward_model else None
    return rlhf.temperature_curve(cfg, sft, rm, rlhf.eval_problems(cfg))
