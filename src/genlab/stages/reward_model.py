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

from genlab.data.arithmetic import PAD
from genlab.data.preferences import bradley_terry_labels, read_jsonl
from genlab.errors import GenlabError
from genlab.evaluate.gold_reward import gold_reward
from genlab.recipes import rlhf
from genlab.recipes.preferences import save_pairs, subset
from genlab.recipes.reward_model import fit_reward_model, norm_samples, pair_metrics
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.rl.rollout import sample


def sample_pairs(cfg, policy, probs: dict, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``n`` pairs of distinct responses sampled from ``policy``, labelled through Bradley–Terry."""
    t, tau = cfg.model.rlhf.task, cfg.model.rlhf.reward_model.label_temperature
    rounds = []
    for _ in range(8):                                     # re-sample the prompts until n distinct pairs
        y1, y2 = (sample(policy, probs["prompts"], probs["prompt_len"], rlhf.width(cfg), t.temperature, generator)
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
            "rejected": pick(y2, y1), "margin": human_margin(torch.where(first, g1, g2), torch.where(first, g2, g1)),
            "gold_chosen": torch.where(first, g1, g2),
            "gold_rejected": torch.where(first, g2, g1)}


def human_margin(gold_chosen: torch.Tensor, gold_rejected: torch.Tensor) -> torch.Tensor:
    """The simulated labeller's stated strength of preference ``[N]``, as a Likert-style rating would give it
    (Touvron et al. 2023 use 4 levels): the gold gap rounded to quarters, 0 when the label went against the
    gold order (the labeller thought it a toss-up). Written into the pairs file like a JSONL ``margin``."""
    return ((gold_chosen - gold_rejected).clamp_min(0) * 4).round() / 4


def make_pairs(cfg, sft) -> dict[str, torch.Tensor]:
    """Train (split 0) and held-out (split 1) pairs; held-out prompts come from the test split."""
    r = cfg.model.rlhf.reward_model
    if r.source == "jsonl":
        pairs = read_jsonl(r.jsonl, rlhf.width(cfg))
        n = len(pairs["prompts"])
        split = (torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)) < max(1, n // 5)).long()
        nan = torch.full((n,), float("nan"))
        return {**pairs, "gold_chosen": nan, "gold_rejected": nan, "split": split}   # margin: from the file
    g = torch.Generator().manual_seed(cfg.seed)
    train = sample_pairs(cfg, sft, rlhf.problems(cfg, "train", 2 * r.pairs), r.pairs, g)
    val = sample_pairs(cfg, sft, rlhf.problems(cfg, "test", offset=cfg.model.rlhf.task.eval_prompts), r.val_pairs, g)
    width = max(train["prompts"].shape[1], val["prompts"].shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=PAD)  # noqa: E731
    out = {k: torch.cat([pad(train[k]), pad(val[k])]) if k == "prompts" else torch.cat([train[k], val[k]])
           for k in train}
    return {**out, "split": torch.cat([torch.zeros(r.pairs), torch.ones(r.val_pairs)]).long()}


def distribution_figure(reward: torch.Tensor, gold: torch.Tensor, title: str) -> plt.Figure:
    levels = gold.unique()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.boxplot([reward[gold == g].numpy() for g in levels], positions=range(len(levels)), showfliers=False)
    ax.set_xticks(range(len(levels)), [f"{g:.2f}" for g in levels.tolist()], fontsize=7)
    ax.set(xlabel="gold reward of the SFT sample", ylabel="normalised RM reward", title=title)
    return fig


def run(cfg) -> None:
    r = cfg.model.rlhf.reward_model
    rlhf.setup(cfg)
    sft = rlhf.load_policy(cfg, "sft", "sft")
    pairs = make_pairs(cfg, sft)
    save_pairs(cfg, pairs)
    norm = norm_samples(cfg, sft)
    module, seconds = fit_reward_model(cfg, subset(pairs, pairs["split"] == 0), r.steps, "rm", sft.state_dict(), norm)
    model = module.model
    rlhf.save_net(cfg, "reward_model", model, "sft", "reward_model")
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

