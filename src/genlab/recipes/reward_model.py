"""The reward-model recipe: training on preference pairs from the SFT weights, normalisation on SFT samples,
and held-out pair accuracy — run by `reward_model` and, once per data size, by `overoptimization`."""
from __future__ import annotations

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.data.preferences import bayes_accuracy
from genlab.evaluate.gold_reward import gold_reward
from genlab.models.reward_model import RewardModelling
from genlab.nn.heads import RewardModel
from genlab.recipes import rlhf
from genlab.rl.rollout import join, last_index, sample


def model_inputs(pairs: dict) -> tuple[torch.Tensor, ...]:
    """(seq_c, seq_r, last_c, last_r) of the pairs."""
    p, pl = pairs["prompts"], pairs["prompt_len"]
    return (join(p, pl, pairs["chosen"]), join(p, pl, pairs["rejected"]),
            last_index(pl, pairs["chosen"]), last_index(pl, pairs["rejected"]))


def fit_reward_model(cfg, train: dict, steps: int, run: str, sft_state: dict,
                     norm: dict) -> tuple[RewardModelling, float]:
    """Train on ``train`` pairs from the SFT weights; normalise on the SFT samples ``norm``.
    Returns the module and its training seconds."""
    r = cfg.model.rlhf.reward_model
    runner.seed_all(cfg)
    rlhf.setup(cfg)
    model = rlhf.new_reward_model(cfg, sft_state)
    for name, p in model.named_parameters():
        p.requires_grad_(learns(cfg, model, name))
    margin = r.margin * train["margin"].float()      # the labeller's stated strength, never the gold reward
    data = loader(*model_inputs(train), margin, batch_size=r.batch_size, seed=cfg.seed, batches_per_epoch=steps)
    module = RewardModelling(model, r.lr, r.center)
    with runner.session(cfg, stage="reward_model", run=run, run_config=[rlhf.sections(cfg, "sft", "reward_model"),
                                                                       steps, len(margin)], max_epochs=1) as trainer:
        clock = runner.fit(trainer, module, data)
    model.eval().requires_grad_(False)
    raw = model(norm["seq"], norm["last"])
    model.shift.fill_(raw.mean())
    model.scale.fill_(raw.std())
    return module, clock.seconds


def learns(cfg, model: RewardModel, name: str) -> bool:
    """Whether parameter ``name`` of ``model`` is trained: with ``freeze_sft`` only the fresh blocks on top of
    the SFT layers, the final LN and the head; otherwise all."""
    fresh = tuple(f"backbone.blocks.{i}." for i in range(cfg.model.rlhf.net.n_layer, len(model.backbone.blocks)))
    return not cfg.model.rlhf.reward_model.freeze_sft or name.startswith((*fresh, "backbone.ln_f.", "head."))


def parameter_counts(cfg, model: RewardModel) -> dict[str, int]:
    """The reward model's size: all its parameters, and those its training updates (``learns``)."""
    named = list(model.named_parameters())
    return {"parameters": sum(p.numel() for _, p in named),
            "trained_parameters": sum(p.numel() for name, p in named if learns(cfg, model, name))}


def norm_samples(cfg, sft) -> dict[str, torch.Tensor]:
    """SFT responses to train prompts (for reward normalisation) with their gold rewards."""
    probs = rlhf.problems(cfg, "train", cfg.model.rlhf.reward_model.norm_samples)
    t = cfg.model.rlhf.task
    y = sample(sft, probs["prompts"], probs["prompt_len"], rlhf.width(cfg), t.temperature,
               torch.Generator().manual_seed(cfg.seed + 1))
    return {"seq": join(probs["prompts"], probs["prompt_len"], y), "last": last_index(probs["prompt_len"], y),
            "gold": gold_reward(probs["a"], probs["b"], probs["digits"], y, True, t.format_weight)}


@torch.no_grad()
def pair_metrics(cfg, model: RewardModel, val: dict) -> dict[str, float]:
    seq_c, seq_r, last_c, last_r = model_inputs(val)
    diff = model(seq_c, last_c) - model(seq_r, last_r)
    out = {"label_accuracy": float((diff > 0).float().mean()), "margin": float(diff.mean()), "n_val_pairs": len(diff)}
    gold_diff = val["gold_chosen"] - val["gold_rejected"]
    if not torch.isnan(gold_diff).any():
        strict = gold_diff != 0
        out["pair_accuracy"] = float(((diff > 0) == (gold_diff > 0))[strict].float().mean())
        out["gold_tie_fraction"] = float(1 - strict.float().mean())
        out["labels_agree_with_gold"] = float((gold_diff > 0)[strict].float().mean())
        out["bayes_label_accuracy"] = bayes_accuracy(val["gold_chosen"], val["gold_rejected"],
                                                     cfg.model.rlhf.reward_model.label_temperature)
    return out
