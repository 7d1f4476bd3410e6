"""Stage `reward_model`: preference pairs from the SFT policy, labelled by the gold reward through
Bradley–Terry (or read from JSONL), and a reward model trained on them.

The reward model is the SFT transformer plus ``extra_layers`` fresh blocks (the SFT layers frozen with
``freeze_sft``: same accuracy, ~25% less CPU) scoring the response token by token (``pool="tokens"``: each
token's next-token logit plus a scalar head, summed; it starts from the SFT's own judgement of every digit,
held-out pair accuracy 0.98 against 0.80 for ``pool="last"``, a head read at the last token), trained with
−log σ(r_c − r_r − m) + η(r_c + r_r)², then shifted/scaled to mean 0 / std 1 on SFT samples.
Writes ``models/rlhf/preferences.npz`` (the pairs DPO and over-optimization reuse),
``models/rlhf/reward_model.pt`` and ``reports/metrics/reward_model.json``: held-out pair accuracy
against the gold ordering (and against the noisy labels, with its Bayes limit), margin, reward
distribution.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from genlab import runner
from genlab.data.arithmetic import PAD
from genlab.data.loader import loader
from genlab.data.preferences import bayes_accuracy, bradley_terry_labels, read_jsonl
from genlab.errors import GenlabError
from genlab.evaluate.gold_reward import gold_reward
from genlab.io import load_arrays, save_arrays
from genlab.models.reward_model import RewardModelling
from genlab.nn.heads import RewardModel
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.rl.rollout import join, last_index, sample
from genlab.stages import _rlhf

FIELDS = ("prompts", "prompt_len", "chosen", "rejected", "gold_chosen", "gold_rejected", "split")


def sample_pairs(cfg, policy, probs: dict, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``n`` pairs of distinct responses sampled from ``policy``, labelled through Bradley–Terry."""
    t, tau = cfg.model.rlhf.task, cfg.model.rlhf.reward_model.label_temperature
    rounds = []
    for _ in range(8):                                     # re-sample the prompts until n distinct pairs
        y1, y2 = (sample(policy, probs["prompts"], probs["prompt_len"], _rlhf.width(cfg), t.temperature, generator)
                  for _ in range(2))
        keep = (y1 != y2).any(1)
        rounds.append({"idx": keep.nonzero().squeeze(1), "y1": y1[keep], "y2": y2[keep]})
        if sum(len(r["idx"]) for r in rounds) >= n:
            break
    idx, y1, y2 = (torch.cat([r[k] for r in rounds])[:n] for k in ("idx", "y1", "y2"))
    if len(idx) < n:
        raise GenlabError(f"only {len(idx)} distinct response pairs for {n} requested",
                          "lower model.rlhf.reward_model.pairs/val_pairs or use more prompts")
    gold = lambda y: gold_reward(probs["a"][idx], probs["b"][idx], probs["digits"][idx], y, True,  # noqa: E731
                                 t.format_weight)
    g1, g2 = gold(y1), gold(y2)
    first = bradley_terry_labels(g1, g2, tau, generator)
    pick = lambda u, v: torch.where(first[:, None], u, v)   # noqa: E731
    return {"prompts": probs["prompts"][idx], "prompt_len": probs["prompt_len"][idx], "chosen": pick(y1, y2),
            "rejected": pick(y2, y1), "gold_chosen": torch.where(first, g1, g2),
            "gold_rejected": torch.where(first, g2, g1)}


def make_pairs(cfg, sft) -> dict[str, torch.Tensor]:
    """Train (split 0) and held-out (split 1) pairs; held-out prompts come from the test split."""
    r = cfg.model.rlhf.reward_model
    if r.source == "jsonl":
        pairs = read_jsonl(r.jsonl, _rlhf.width(cfg))
        n = len(pairs["prompts"])
        split = (torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)) < max(1, n // 5)).long()
        nan = torch.full((n,), float("nan"))
        return {**pairs, "gold_chosen": nan, "gold_rejected": nan, "split": split}
    g = torch.Generator().manual_seed(cfg.seed)
    train = sample_pairs(cfg, sft, _rlhf.problems(cfg, "train", 2 * r.pairs), r.pairs, g)
    val = sample_pairs(cfg, sft, _rlhf.problems(cfg, "test", offset=cfg.model.rlhf.task.eval_prompts), r.val_pairs, g)
    width = max(train["prompts"].shape[1], val["prompts"].shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=PAD)  # noqa: E731
    out = {k: torch.cat([pad(train[k]), pad(val[k])]) if k == "prompts" else torch.cat([train[k], val[k]])
           for k in train}
    return {**out, "split": torch.cat([torch.zeros(r.pairs), torch.ones(r.val_pairs)]).long()}


def save_pairs(cfg, pairs: dict) -> None:
    save_arrays(_rlhf.models_dir(cfg) / "preferences", {k: pairs[k].numpy() for k in FIELDS},
                _rlhf.sections(cfg, "sft", "reward_model"))


def load_pairs(cfg) -> dict[str, torch.Tensor]:
    arrays, meta = load_arrays(_rlhf.models_dir(cfg) / "preferences")
    expected = _rlhf.sections(cfg, "sft", "reward_model")
    if {k: meta.get(k) for k in expected} != expected:
        raise GenlabError("models/rlhf/preferences was made with a different config",
                          "re-run `genlab reward_model` (or `dvc repro`)")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def subset(pairs: dict, mask: torch.Tensor) -> dict:
    return {k: v[mask] for k, v in pairs.items()}


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
    _rlhf.setup(cfg)
    model = _rlhf.new_reward_model(cfg, sft_state)
    if r.freeze_sft:                       # only the fresh blocks, final LN and head learn
        fresh = tuple(f"backbone.blocks.{i}." for i in range(cfg.model.rlhf.net.n_layer, len(model.backbone.blocks)))
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith((*fresh, "backbone.ln_f.", "head.")))
    margin = r.margin * (train["gold_chosen"] - train["gold_rejected"]).abs().nan_to_num(0.0)
    data = loader(*model_inputs(train), margin, batch_size=r.batch_size, seed=cfg.seed, batches_per_epoch=steps)
    module = RewardModelling(model, r.lr, r.center)
    with runner.session(cfg, stage="reward_model", run=run, run_config=[_rlhf.sections(cfg, "sft", "reward_model"),
                                                                        steps, len(margin)], max_epochs=1) as trainer:
        clock = runner.fit(trainer, module, data)
    model.eval().requires_grad_(False)
    raw = model(norm["seq"], norm["last"])
    model.shift.fill_(raw.mean())
    model.scale.fill_(raw.std())
    return module, clock.seconds


def norm_samples(cfg, sft) -> dict[str, torch.Tensor]:
    """SFT responses to train prompts (for reward normalisation) with their gold rewards."""
    probs = _rlhf.problems(cfg, "train", cfg.model.rlhf.reward_model.norm_samples)
    t = cfg.model.rlhf.task
    y = sample(sft, probs["prompts"], probs["prompt_len"], _rlhf.width(cfg), t.temperature,
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


def distribution_figure(reward: torch.Tensor, gold: torch.Tensor, title: str) -> plt.Figure:
    levels = gold.unique()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.boxplot([reward[gold == g].numpy() for g in levels], positions=range(len(levels)), showfliers=False)
    ax.set_xticks(range(len(levels)), [f"{g:.2f}" for g in levels.tolist()], fontsize=7)
    ax.set(xlabel="gold reward of the SFT sample", ylabel="normalised RM reward", title=title)
    return fig


def run(cfg) -> None:
    r = cfg.model.rlhf.reward_model
    _rlhf.setup(cfg)
    sft = _rlhf.load_policy(cfg, "sft", "sft")
    pairs = make_pairs(cfg, sft)
    save_pairs(cfg, pairs)
    norm = norm_samples(cfg, sft)
    module, seconds = fit_reward_model(cfg, subset(pairs, pairs["split"] == 0), r.steps, "rm", sft.state_dict(), norm)
    model = module.model
    _rlhf.save_net(cfg, "reward_model", model, "sft", "reward_model")
    reward = model(norm["seq"], norm["last"])
    metrics = {**pair_metrics(cfg, model, subset(pairs, pairs["split"] == 1)),
               "n_train_pairs": int((pairs["split"] == 0).sum()), "source": r.source, "train_seconds": seconds,
               "reward_sft_mean": float(reward.mean()), "reward_sft_std": float(reward.std()),
               "reward_gold_correlation": float(torch.corrcoef(torch.stack([reward, norm["gold"]]))[0, 1])}
    write_metrics(cfg, "reward_model", metrics)
    write_csv(plots_dir(cfg, "reward_model") / "loss.csv", module.history)
    save_figure(distribution_figure(reward, norm["gold"], "reward model vs gold on SFT samples"),
                figures_dir(cfg, "reward_model") / "reward_distribution.png")
    print(f"[genlab] reward_model: " + ", ".join(f"{k}={v:.3g}" for k, v in metrics.items() if isinstance(v, float)))

