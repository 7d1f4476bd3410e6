"""Stage `sft`: pretrain a small base transformer on arithmetic, then SFT it on noisy human demonstrations.

The base model sees correct answers for ``base_steps`` (deliberately short: imperfect);
SFT then trains on demonstrations of which a fraction are wrong or badly formatted
(``model.rlhf.task.digit_noise`` / ``format_noise``), loss on response tokens only.
Writes ``models/rlhf/sft.pt`` (policy and reference of PPO/DPO, init of the reward model),
``reports/metrics/sft.json`` (gold reward of base and SFT policies) and the loss curves.
"""
from __future__ import annotations

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.data.rlhf_task import demonstrations
from genlab.errors import GenlabError
from genlab.evaluate.policy import summary
from genlab.models.sft import CausalLM
from genlab.recipes import rlhf
from genlab.report.artifacts import plots_dir, write_csv, write_metrics
from genlab.rl.rollout import join, response_mask


def response_targets(seq: torch.Tensor, prompt_len: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Target mask ``[N, L−1]``: 1 where the next token is a response token (``mask [N, R]``)."""
    targets = torch.zeros(seq.shape[0], seq.shape[1] - 1)
    cols = prompt_len[:, None] - 1 + torch.arange(mask.shape[1])[None, :]
    return targets.scatter(1, cols, mask)


def train(cfg, run: str, net, seq, targets, steps: int, lr: float) -> tuple[CausalLM, float]:
    """The fine-tuned module and its training seconds."""
    s = cfg.model.rlhf.sft
    runner.seed_all(cfg)
    rlhf.setup(cfg)
    module = CausalLM(net, lr, s.weight_decay)
    data = loader(seq, targets, batch_size=s.batch_size, seed=cfg.seed, batches_per_epoch=steps)
    with runner.session(cfg, stage="sft", run=run, run_config=rlhf.sections(cfg, "sft"), max_epochs=1) as trainer:
        clock = runner.fit(trainer, module, data)
    return module, clock.seconds


def answers(cfg, problems: dict, digit_noise: float, format_noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequences, response-target mask) of demonstrations with the given noise."""
    demos = demonstrations(problems["a"], problems["b"], problems["digits"], True, rlhf.width(cfg), digit_noise,
                           format_noise, torch.Generator().manual_seed(cfg.seed))
    seq = join(problems["prompts"], problems["prompt_len"], demos)
    return seq, response_targets(seq, problems["prompt_len"], response_mask(demos))


def run(cfg) -> None:
    s, t = cfg.model.rlhf.sft, cfg.model.rlhf.task
    train_set = rlhf.problems(cfg, "train")
    n_base = len(train_set["a"]) - s.demos
    if n_base < s.batch_size:
        raise GenlabError(f"only {len(train_set['a'])} training problems for {s.demos} demonstrations + a base set",
                          "lower model.rlhf.sft.demos or raise data.arithmetic.n_train")
    base_set, demo_set = ({k: v[part] for k, v in train_set.items()} for part in (slice(0, n_base), slice(n_base, None)))
    probs = rlhf.eval_problems(cfg)

    base, base_seconds = train(cfg, "base", rlhf.new_net(cfg), *answers(cfg, base_set, 0.0, 0.0), s.base_steps, s.base_lr)
    metrics = {"base": summary(rlhf.evaluate_policy(cfg, base.net, base.net, None, probs))}
    sft, sft_seconds = train(cfg, "sft", base.net, *answers(cfg, demo_set, t.digit_noise, t.format_noise), s.steps, s.lr)
    rlhf.save_net(cfg, "sft", sft.net, "sft")
    metrics["sft"] = summary(rlhf.evaluate_policy(cfg, sft.net, sft.net, None, probs))
    metrics["train_seconds"] = {"base": base_seconds, "sft": sft_seconds}
    metrics["demonstrations"] = {"n": s.demos, "digit_noise": t.digit_noise, "format_noise": t.format_noise}
    write_metrics(cfg, "sft", metrics)
    write_csv(plots_dir(cfg, "sft") / "loss.csv",
              [{"phase": "base", **h} for h in base.history] + [{"phase": "sft", **h} for h in sft.history])
    print(f"[genlab] sft: gold reward base {metrics['base']['gold_reward']:.3f}, "
          f"sft {metrics['sft']['gold_reward']:.3f} ± {metrics['sft']['gold_reward_ci95']:.3f}")
