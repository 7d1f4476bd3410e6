"""The PPO recipe: the SFT policy trained against a reward model with a per-token KL penalty, run by `ppo`
and, once per reward model, by `overoptimization`."""
from __future__ import annotations

from omegaconf import OmegaConf

from genlab import runner
from genlab.data.loader import loader
from genlab.evaluate.policy import summary
from genlab.models.ppo import PPO
from genlab.recipes import rlhf


def train_ppo(cfg, reward_model, run: str, probs: dict, **changes) -> tuple[PPO, float]:
    """PPO from the SFT weights against ``reward_model``; ``changes`` override ``model.rlhf.ppo`` keys.
    The curve evaluates gold, proxy (this reward model) and KL on ``probs`` every ``eval_every`` steps.
    Returns the module and its training seconds (rollouts included)."""
    c = OmegaConf.merge(cfg.model.rlhf.ppo, changes)
    runner.seed_all(cfg)
    rlhf.setup(cfg)
    ref = rlhf.load_policy(cfg, "sft", "sft")
    policy = rlhf.load_policy(cfg, "sft", "sft").requires_grad_(True).train()

    def evaluator(net):
        return summary(rlhf.evaluate_policy(cfg, net, ref, reward_model, probs))

    module = PPO(policy, ref, reward_model, c, rlhf.width(cfg), cfg.model.rlhf.task.temperature, evaluator)
    train = rlhf.problems(cfg, "train")
    data = loader(train["prompts"], train["prompt_len"], batch_size=c.rollouts, seed=cfg.seed,
                  batches_per_epoch=c.steps)
    run_config = [rlhf.sections(cfg, "sft", "reward_model"), OmegaConf.to_container(c), run]
    with runner.session(cfg, stage="ppo", run=run, run_config=run_config, max_epochs=1) as trainer:
        clock = runner.fit(trainer, module, data)
    policy.eval().requires_grad_(False)
    return module, clock.seconds
