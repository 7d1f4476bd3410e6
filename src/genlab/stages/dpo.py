"""Stage `dpo`: DPO, IPO and hinge losses on the reward model's preference pairs, from the SFT policy,
over ``seeds``, each against the KL-matched SFT temperature curve.

Each (loss, seed) trains its own copy of the SFT policy against the frozen SFT reference, one replicate
per worker of a single-thread pool (``genlab.parallel``). A seed re-draws the pair order and the
evaluation samples; the pairs, SFT and reward model are those of ``seed``. As in `ppo`, "beats SFT" means
gold − (SFT temperature curve at the policy's own KL) > 0 with a paired 95% t-interval over seeds.
Writes ``models/rlhf/dpo/<loss>.pt`` (the ``seed`` replicate) and ``reports/metrics/dpo.json``: per loss
the mean ± CI over seeds of gold / KL, the per-seed values and the KL-matched gap, implicit-reward
accuracy on held-out pairs, and the claims.
"""
from __future__ import annotations

import torch

from genlab import runner
from genlab.data.loader import loader
from genlab.evaluate.policy import kl_matched_gap, seed_summary
from genlab.models.dpo import DirectPreference, sequence_logprob
from genlab.parallel import run_many
from genlab.recipes import rlhf
from genlab.recipes.ppo import temperature_job
from genlab.recipes.preferences import load_pairs, subset
from genlab.report.artifacts import plots_dir, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.rl.rollout import join, response_mask

NAMES = {"dpo": "DPO", "ipo": "IPO", "hinge": "hinge (SLiC)"}


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
    module = DirectPreference(policy, kind, d.beta, d.lr, cfg.model.rlhf.task.temperature,
                              length_norm=kind == "ipo" and d.ipo_length_norm,
                              sampler=rlhf.sampler(cfg, rlhf.eval_problems(cfg)), sample_every=d.sample_every)
    data = loader(*batch, batch_size=d.batch_size, seed=cfg.seed, batches_per_epoch=d.steps)
    with runner.session(cfg, stage="dpo", run=kind if cfg.seed == 0 else f"{kind}-seed{cfg.seed}",
                        run_config=[rlhf.sections(cfg, "sft", "reward_model", "dpo"), kind], max_epochs=1) as trainer:
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


def loss_job(cfg, kind: str, seed: int, keep: bool = False) -> dict:
    """One replicate (a ``run_many`` job): the ``kind`` loss trained and evaluated under ``seed``."""
    cfg = rlhf.with_seed(cfg, seed)
    rlhf.setup(cfg)
    t = cfg.model.rlhf.task
    pairs = load_pairs(cfg)
    ref = rlhf.load_policy(cfg, "sft", "sft")
    train = pair_batch(subset(pairs, pairs["split"] == 0), ref, t.temperature)
    val_pairs = subset(pairs, pairs["split"] == 1)
    module, seconds = train_one(cfg, kind, train)
    probs = rlhf.eval_problems(cfg)
    out = {"kind": kind, "seed": seed, **rlhf.policy_row(cfg, rlhf.evaluate_policy(cfg, module.policy, ref, None,
                                                                                     probs), probs),
           **implicit_reward_metrics(module, pair_batch(val_pairs, ref, t.temperature), val_pairs),
           "train_seconds": seconds}
    if keep:
        out |= {"state_dict": {k: v.clone() for k, v in module.policy.state_dict().items()},
                "history": module.history}
    return out


def run(cfg) -> None:
    kinds, seeds = list(cfg.model.rlhf.dpo.losses), list(cfg.seeds)
    jobs = [{"cfg": cfg, "kind": k, "seed": s, "keep": s == cfg.seed} for k in kinds for s in seeds]
    results = run_many(loss_job, jobs, desc="dpo/ipo/hinge seeds")
    t_curves = run_many(temperature_job, [{"cfg": cfg, "seed": s, "with_reward_model": False} for s in seeds],
                        desc="temperature curves")
    curves = [{"kl": [r["kl"] for r in c], "gold": [r["gold_reward"] for r in c]} for c in t_curves]
    metrics = {"seeds": seeds, "sft": next(r for r in t_curves[seeds.index(cfg.seed)] if r["temperature"] == 1.0)}
    rows = []
    for kind in kinds:
        runs = [r for j, r in zip(jobs, results) if j["kind"] == kind]
        kept = next(r for j, r in zip(jobs, results) if j["kind"] == kind and j["keep"])
        net = rlhf.new_net(cfg)
        net.load_state_dict(kept.pop("state_dict"))
        rlhf.save_net(cfg, f"dpo/{kind}", net, "sft", "reward_model", "dpo")
        write_csv(plots_dir(cfg, "dpo") / f"{kind}_train.csv", kept.pop("history"))
        per_seed = {k: [r[k] for r in runs] for k in ("seed", "gold_reward", "kl", "gold_carry", "exact_match",
                                                      "implicit_pair_accuracy", "train_seconds") if k in runs[0]}
        base, gap = kl_matched_gap(per_seed["gold_reward"], per_seed["kl"], curves)
        m = {"n_seeds": len(runs), "per_seed": per_seed | {"temperature_baseline_at_kl": base}, "vs_temperature": gap,
             "train_seconds": sum(per_seed["train_seconds"])}
        for k in ("gold_reward", "kl", "gold_carry", "exact_match"):
            s = seed_summary(per_seed[k])
            m |= {k: s["mean"], f"{k}_ci95": s["ci95"], f"{k}_sd": s["sd"]}
        m |= {k: kept[k] for k in ("implicit_label_accuracy", "implicit_margin", "implicit_pair_accuracy") if k in kept}
        metrics[kind] = m
        rows.append(claim_from_difference(
            f"{kind}_beats_kl_matched_sft_temperature", "dpo",
            f"{NAMES[kind]} reaches a higher gold reward than the SFT temperature curve at its own KL.",
            gap, statistic=f"gold({NAMES[kind]}) − gold(SFT at T with KL = KL({NAMES[kind]})), paired by seed",
            baseline=f"SFT T=1 gold {metrics['sft']['gold_reward']:.3f}"))
        print(f"[genlab] dpo/{kind}: gold {m['gold_reward']:.3f}, KL {m['kl']:.3f}, vs SFT temperature curve at "
              f"its KL Δ = {gap['estimate']:+.4f} {gap['ci']} ({len(seeds)} seeds)")
    write_metrics(cfg, "dpo", add_conclusions(metrics, rows))
