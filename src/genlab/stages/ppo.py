"""Stage `ppo`: PPO with a per-token KL penalty against the reward model, from the SFT policy.

Policy and value head share the SFT transformer; the reference is a frozen copy of SFT.
Writes ``models/rlhf/ppo.pt``, ``reports/metrics/ppo.json`` (gold / proxy reward and KL of SFT and
PPO on the same test prompts, with 95% intervals and the paired gold gain), the TRL-named training
statistics per iteration and the reward-vs-KL curve along training.
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from genlab.evaluate.policy import summary
from genlab.models.ppo import PPO
from genlab.recipes import rlhf
from genlab.recipes.ppo import train_ppo
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics


def curves_figure(module: PPO, title: str) -> plt.Figure:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    h, c = module.history, module.curve
    ax1.plot([r["step"] for r in h], [r["objective/scores"] for r in h], label="RM score (rollouts)")
    ax1.plot([r["step"] for r in h], [r["objective/rlhf_reward"] for r in h], label="score − β·KL")
    ax1.plot([r["step"] for r in c], [r["proxy_reward"] for r in c], "o-", label="RM score (test)")
    ax1.set(xlabel="PPO iteration", ylabel="reward (RM units)", title=title)
    ax1.legend(fontsize=7)
    ax2.plot([r["step"] for r in c], [r["gold_reward"] for r in c], "o-", color="C3", label="gold (test)")
    ax2.set(xlabel="PPO iteration", ylabel="gold reward")
    twin = ax2.twinx()
    twin.plot([r["step"] for r in h], [r["objective/kl"] for r in h], color="C7", label="KL (rollouts)")
    twin.set_ylabel("KL(π‖π_ref), nats")
    fig.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def run(cfg) -> None:
    rlhf.setup(cfg)
    rm = rlhf.load_reward_model(cfg)
    probs = rlhf.eval_problems(cfg)
    sft = rlhf.load_policy(cfg, "sft", "sft")
    baseline = rlhf.evaluate_policy(cfg, sft, sft, rm, probs)
    module, seconds = train_ppo(cfg, rm, "ppo", probs)
    rlhf.save_net(cfg, "ppo", module.policy, "sft", "reward_model", "ppo")
    result = rlhf.evaluate_policy(cfg, module.policy, module.ref, rm, probs)
    metrics = {"sft": summary(baseline), "ppo": summary(result, baseline), "final_beta": module.kl_ctl.beta,
               "iterations": len(module.history), "eval_prompts": len(probs["a"]), "train_seconds": seconds}
    write_metrics(cfg, "ppo", metrics)
    write_csv(plots_dir(cfg, "ppo") / "train.csv", module.history)
    write_csv(plots_dir(cfg, "ppo") / "reward_vs_kl.csv", module.curve)
    save_figure(curves_figure(module, "PPO"), figures_dir(cfg, "ppo") / "reward_curves.png")
    p = metrics["ppo"]
    print(f"[genlab] ppo: gold {metrics['sft']['gold_reward']:.3f} → {p['gold_reward']:.3f} "
          f"(gain {p['gold_gain']:+.3f} ± {p['gold_gain_ci95']:.3f}), proxy {p['proxy_reward']:.2f}, KL {p['kl']:.3f}")
