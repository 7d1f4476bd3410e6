"""Stage `ppo`: PPO, RLOO and GRPO against the reward model from the SFT policy, over ``seeds``, each
against the KL-matched SFT temperature curve.

Every (algorithm, seed) is one replicate in a pool of single-thread workers (``genlab.parallel``): same
task, rollouts per iteration, updates and evaluation prompts (``recipes.ppo``). A seed re-draws the RL
run (data order, rollouts, minibatches) and the evaluation samples; SFT and the reward model are those
of ``seed``. Each method's gold reward is compared seed by seed with the SFT temperature curve at the
method's own KL (evaluated on the same prompts under the same seed): "beats SFT" means that paired
difference is > 0 with its 95% t-interval over seeds. The replicate under ``seed`` is saved
(``models/rlhf/<algorithm>.pt``; PPO's is ``ppo.pt``) with its training statistics and reward-vs-KL curve.
Writes ``reports/metrics/ppo.json`` (per method: mean ± CI over seeds of gold / proxy / KL, the per-seed
values, the KL-matched gap; paired RLOO/GRPO − PPO gaps) and its claims.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from genlab.evaluate import stats
from genlab.evaluate.policy import kl_matched_gap, seed_summary
from genlab.parallel import run_many
from genlab.recipes import rlhf
from genlab.recipes.ppo import policy_job, temperature_job
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference

NAMES = {"ppo": "PPO", "rloo": "RLOO", "grpo": "GRPO"}


def curves_figure(history: list[dict], curve: list[dict], title: str) -> plt.Figure:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    h, c = history, curve
    ax1.plot([r["step"] for r in h], [r["objective/scores"] for r in h], label="RM score (rollouts)")
    ax1.plot([r["step"] for r in h], [r["objective/rlhf_reward"] for r in h], label="score − β·KL")
    ax1.plot([r["step"] for r in c], [r["proxy_reward"] for r in c], "o-", label="RM score (test)")
    ax1.set(xlabel="iteration", ylabel="reward (RM units)", title=title)
    ax1.legend(fontsize=7)
    ax2.plot([r["step"] for r in c], [r["gold_reward"] for r in c], "o-", color="C3", label="gold (test)")
    ax2.set(xlabel="iteration", ylabel="gold reward")
    twin = ax2.twinx()
    twin.plot([r["step"] for r in h], [r["objective/kl"] for r in h], color="C7", label="KL (rollouts)")
    twin.set_ylabel("KL(π‖π_ref), nats")
    fig.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def method_summary(runs: list[dict], curves: list[dict]) -> dict:
    """Mean ± t-CI over seeds of gold / proxy / KL, the per-seed values and the KL-matched temperature gap."""
    per_seed = {k: [r[k] for r in runs] for k in ("seed", "gold_reward", "proxy_reward", "kl", "gold_carry",
                                                  "exact_match", "train_seconds")}
    base, gap = kl_matched_gap(per_seed["gold_reward"], per_seed["kl"], curves)
    out = {"n_seeds": len(runs), "per_seed": per_seed | {"temperature_baseline_at_kl": base}, "vs_temperature": gap}
    for k in ("gold_reward", "proxy_reward", "kl", "gold_carry", "exact_match"):
        s = seed_summary(per_seed[k])
        out |= {k: s["mean"], f"{k}_ci95": s["ci95"], f"{k}_sd": s["sd"]}
    out["train_seconds"] = sum(per_seed["train_seconds"])
    return out


def curve_points(rows: list[dict]) -> dict:
    return {"kl": [r["kl"] for r in rows], "gold": [r["gold_reward"] for r in rows]}


def claims(metrics: dict, algorithms: list[str]) -> list:
    rows = []
    for a in algorithms:
        m = metrics[a]
        rows.append(claim_from_difference(
            f"{a}_beats_kl_matched_sft_temperature", "ppo",
            f"{NAMES[a]} reaches a higher gold reward than the SFT temperature curve at {NAMES[a]}'s own KL.",
            m["vs_temperature"], statistic=f"gold({NAMES[a]}) − gold(SFT at T with KL = KL({NAMES[a]})), paired by seed",
            baseline=f"SFT greedy gold {metrics['temperature_curve_mean']['greedy_gold']:.3f}",
            noise_floor=f"seed sd of gold {m['gold_reward_sd']:.4f}" if m["gold_reward_sd"] is not None else None))
    for a in algorithms:
        if a != "ppo" and "ppo" in algorithms:
            rows.append(claim_from_difference(
                f"{a}_vs_ppo_gold", "ppo",
                f"{NAMES[a]} reaches a higher gold reward than PPO (same task, rollouts, updates, evaluation).",
                metrics[a]["vs_ppo"], statistic=f"gold({NAMES[a]}) − gold(PPO), paired by seed",
                baseline=f"PPO gold {metrics['ppo']['gold_reward']:.3f}"))
    return rows


def run(cfg) -> None:
    algorithms, seeds = list(cfg.model.rlhf.ppo.algorithms), list(cfg.seeds)
    jobs = [{"cfg": cfg, "algorithm": a, "seed": s, "keep": s == cfg.seed} for a in algorithms for s in seeds]
    results = run_many(policy_job, jobs, desc="ppo/rloo/grpo seeds")
    t_curves = run_many(temperature_job, [{"cfg": cfg, "seed": s} for s in seeds], desc="temperature curves")
    curves = [curve_points(c) for c in t_curves]

    greedy = [c[-1]["gold_reward"] for c in t_curves if c[-1]["temperature"] == 0]
    metrics = {"seeds": seeds, "temperature_curve": {str(s): c for s, c in zip(seeds, t_curves)},
               "temperature_curve_mean": {"greedy_gold": float(sum(greedy) / len(greedy)) if greedy else float("nan")},
               "sft": next(r for r in t_curves[seeds.index(cfg.seed)] if r["temperature"] == 1.0)}
    for a in algorithms:
        runs = [r for j, r in zip(jobs, results) if j["algorithm"] == a]
        kept = next(r for j, r in zip(jobs, results) if j["algorithm"] == a and j["keep"])
        name = "ppo" if a == "ppo" else a
        net = rlhf.new_net(cfg)
        net.load_state_dict(kept.pop("state_dict"))
        rlhf.save_net(cfg, name, net, "sft", "reward_model", "ppo")
        write_csv(plots_dir(cfg, "ppo") / ("train.csv" if a == "ppo" else f"{a}_train.csv"), kept["history"])
        write_csv(plots_dir(cfg, "ppo") / ("reward_vs_kl.csv" if a == "ppo" else f"{a}_reward_vs_kl.csv"), kept["curve"])
        save_figure(curves_figure(kept["history"], kept["curve"], NAMES[a]),
                    figures_dir(cfg, "ppo") / ("reward_curves.png" if a == "ppo" else f"{a}_reward_curves.png"))
        metrics[a] = method_summary(runs, curves)
        metrics[a]["final_beta"] = kept["final_beta"]
    for a in algorithms:
        if a != "ppo" and "ppo" in algorithms:
            metrics[a]["vs_ppo"] = stats.paired_difference(metrics[a]["per_seed"]["gold_reward"],
                                                           metrics["ppo"]["per_seed"]["gold_reward"])
    metrics["train_seconds"] = metrics[algorithms[0]]["train_seconds"]
    metrics["iterations"], metrics["eval_prompts"] = cfg.model.rlhf.ppo.steps, cfg.model.rlhf.task.eval_prompts
    write_metrics(cfg, "ppo", add_conclusions(metrics, claims(metrics, algorithms)))
    for a in algorithms:
        m = metrics[a]
        print(f"[genlab] {a}: gold {m['gold_reward']:.3f} {fmt(m['gold_reward_ci95'])}, KL {m['kl']:.3f}, "
              f"vs SFT temperature curve at its KL {stats.format_difference(m['vs_temperature'])} "
              f"({len(seeds)} seeds)")


def fmt(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(one seed)"
