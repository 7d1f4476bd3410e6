"""Stage `dpo`: DPO, IPO and hinge losses on the reward model's preference pairs, from the SFT policy.

Each loss in ``model.rlhf.dpo.losses`` trains its own copy of the SFT policy against the frozen SFT
reference. Writes ``models/rlhf/dpo/<loss>.pt`` and ``reports/metrics/dpo.json``: gold reward and KL on
the same test prompts as PPO (95% intervals, paired gain over SFT), implicit-reward accuracy against the
gold ordering and the labels of held-out pairs, and margins.
"""
from __future__ import annotations

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.evaluate.policy import summary
from genlab.models.dpo import DirectPreference, sequence_logprob
from genlab.recipes import rlhf
from genlab.recipes.preferences import load_pairs, subset
from genlab.report.artifacts import plots_dir, write_csv, write_metrics
from genlab.rl.rollout import join, response_mask


@torch.no_grad()
def pair_batch(pairs: dict, ref, temperature: float) -> tuple[torch.Tensor, ...]:
    """(seq_c, seq_r, prompt_len, mask_c, mask_r, ref log π(c), ref log π(r)) for every pair."""
    p, pl = pairs["prompts"], pairs["prompt_len"]
    seq_c, seq_r = join(p, pl, pairs["chosen"]), join(p, pl, pairs["rejected"])
    mask_c, mask_r = response_mask(pairs["chosen"]), response_mask(pairs["rejected"])
    return (seq_c, seq_r, pl, mask_c, mask_r, sequence_logprob(ref, seq_c, pl, mask_c, temperature),
            sequence_logprob(ref, seq_r, pl, mask_r, temperature))


def train_one(cfg, kind: str, batch: tuple) -> tuple[DirectPreference, float]:
    """The policy trained with the ``kind`` preference loss, and its training seconds."""
    d = cfg.model.rlhf.dpo
    runner.seed_all(cfg)
    rlhf.setup(cfg)
    policy = rlhf.load_policy(cfg, "sft", "sft").requires_grad_(True).train()
    module = DirectPreference(policy, kind, d.beta, d.lr, cfg.model.rlhf.task.temperature)
    data = loader(*batch, batch_size=d.batch_size, seed=cfg.seed, batches_per_epoch=d.steps)
    with runner.session(cfg, stage="dpo", run=kind, run_config=[rlhf.sections(cfg, "sft", "reward_model", "dpo"),
                                                               kind], max_epochs=1) as trainer:
        clock = runner.fit(trainer, module, data)
    policy.eval().requires_grad_(False)
    return module, clock.seconds


@torch.no_grad()
def implicit_reward_metrics(module: DirectPreference, batch: tuple, val: dict) -> dict[str, float]:
    h = module.log_ratio_gap(batch)
    gold_diff = val["gold_chosen"] - val["gold_rejected"]
    out = {"implicit_label_accuracy": float((h > 0).float().mean()), "implicit_margin": float(module.beta * h.mean())}
    if not torch.isnan(gold_diff).any():
        strict = gold_diff != 0
        out["implicit_pair_accuracy"] = float(((h > 0) == (gold_diff > 0))[strict].float().mean())
    return out


def run(cfg) -> None:
    rlhf.setup(cfg)
    t = cfg.model.rlhf.task
    pairs = load_pairs(cfg)
    ref = rlhf.load_policy(cfg, "sft", "sft")
    train = pair_batch(subset(pairs, pairs["split"] == 0), ref, t.temperature)
    val_pairs = subset(pairs, pairs["split"] == 1)
    val = pair_batch(val_pairs, ref, t.temperature)
    probs = rlhf.eval_problems(cfg)
    baseline = rlhf.evaluate_policy(cfg, ref, ref, None, probs)
    metrics = {"sft": summary(baseline)}
    for kind in cfg.model.rlhf.dpo.losses:
        module, seconds = train_one(cfg, kind, train)
        rlhf.save_net(cfg, f"dpo/{kind}", module.policy, "sft", "reward_model", "dpo")
        result = rlhf.evaluate_policy(cfg, module.policy, ref, None, probs)
        metrics[kind] = {**summary(result, baseline), **implicit_reward_metrics(module, val, val_pairs),
                         "train_seconds": seconds}
        write_csv(plots_dir(cfg, "dpo") / f"{kind}_train.csv", module.history)
        m = metrics[kind]
        print(f"[genlab] dpo/{kind}: gold {metrics['sft']['gold_reward']:.3f} → {m['gold_reward']:.3f} "
              f"(gain {m['gold_gain']:+.3f} ± {m['gold_gain_ci95']:.3f}), KL {m['kl']:.3f}")
    write_metrics(cfg, "dpo", metrics)
