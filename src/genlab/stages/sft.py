"""Stage `sft`: pretrain a small base transformer on arithmetic, then SFT it on human demonstrations
with a systematic habit.

The base model sees correct answers for ``base_steps``: it is the *ceiling* of the task, shown in every
table. SFT then trains on demonstrations (``genlab.data.rlhf_task``) in which a ``carry_error`` share of
the prompts with a units carry are answered a + b − 10 (the carry forgotten), plus random digit and format
slips; loss on response tokens only. SFT's mode on the carry prompts is the wrong answer, so its greedy
answer is wrong there and the temperature curve (T ∈ ``task.temperatures``, its KL to SFT at T = 1 beside
each point) cannot reach the base model: the gap is what learning from preferences must close.
Writes ``models/rlhf/sft.pt`` (policy and reference of PPO/DPO, init of the reward model),
``reports/metrics/sft.json`` (gold of base and SFT, on carry / other prompts, the temperature curve under
every seed of ``seeds``) and the loss curves.
"""
from __future__ import annotations

import copy

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.data.rlhf_task import demonstrations
from genlab.errors import GenlabError
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


def answers(cfg, problems: dict, digit_noise: float, format_noise: float,
            carry_error: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequences, response-target mask) of demonstrations with the given habit and noise."""
    demos = demonstrations(problems["a"], problems["b"], problems["digits"], True, rlhf.width(cfg), digit_noise,
                           format_noise, torch.Generator().manual_seed(cfg.seed), carry_error)
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
    base_net = copy.deepcopy(base.net).eval()
    sft, sft_seconds = train(cfg, "sft", base.net, *answers(cfg, demo_set, t.digit_noise, t.format_noise,
                                                           t.carry_error), s.steps, s.lr)
    rlhf.save_net(cfg, "sft", sft.net, "sft")
    sft_net = sft.net.eval()
    # the base model's KL is to the SFT reference, like every other policy's
    metrics = {"base": rlhf.policy_row(cfg, rlhf.evaluate_policy(cfg, base_net, sft_net, None, probs), probs),
               "sft": rlhf.policy_row(cfg, rlhf.evaluate_policy(cfg, sft_net, sft_net, None, probs), probs)}
    metrics["temperature_curve"] = {str(seed): rlhf.temperature_curve(rlhf.with_seed(cfg, seed), sft_net, None, probs)
                                    for seed in cfg.seeds}
    metrics["train_seconds"] = {"base": base_seconds, "sft": sft_seconds}
    metrics["demonstrations"] = {"n": s.demos, "carry_error": t.carry_error, "digit_noise": t.digit_noise,
                                 "format_noise": t.format_noise}
    write_metrics(cfg, "sft", metrics)
    write_csv(plots_dir(cfg, "sft") / "loss.csv",
              [{"phase": "base", **h} for h in base.history] + [{"phase": "sft", **h} for h in sft.history])
    print(f"[genlab] sft: gold reward base {metrics['base']['gold_reward']:.3f}, "
          f"sft {metrics['sft']['gold_reward']:.3f} ± {metrics['sft']['gold_reward_ci95']:.3f} "
          f"(carry prompts {metrics['sft']['gold_carry']:.3f}, others {metrics['sft']['gold_no_carry']:.3f})")
    for row in metrics["temperature_curve"][str(cfg.seed)]:
        print(f"[genlab] sft T={row['temperature']:.1f}: gold {row['gold_reward']:.3f} "
              f"(carry {row['gold_carry']:.3f}), KL {row['kl']:.3f}")
