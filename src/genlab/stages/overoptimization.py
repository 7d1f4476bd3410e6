"""Stage `overoptimization`: best-of-n and PPO against reward models trained on 3+ data sizes; gold and
proxy reward against d = √KL(π‖π_ref) with Gao et al.'s fits; then the RLHF summary.

For each size in ``rm_pairs`` a reward model is trained on that many of the training pairs
(``rm_steps``), then (a) best-of-n for n = 1, 2, 4, … ≤ n_max on SFT samples (unbiased estimator,
analytic KL) and (b) PPO with a weak KL penalty, evaluated every ``eval_every`` iterations.
Writes ``reports/metrics/overoptimization.json``, ``reports/metrics/rlhf.json`` (the summary assembled
from the sft / reward_model / ppo / dpo metrics), gold-vs-proxy plots and SFT / PPO / DPO samples for the
same prompts (``reports/figures/rlhf``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from genlab.data.arithmetic import PAD, decode, render
from genlab.evaluate import overoptimization as oo
from genlab.evaluate.gold_reward import gold_reward
from genlab.io import read_json
from genlab.recipes import rlhf
from genlab.recipes.ppo import train_ppo
from genlab.recipes.preferences import load_pairs, subset
from genlab.recipes.reward_model import fit_reward_model, norm_samples, pair_metrics
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics, write_text
from genlab.rl.rollout import join, last_index, sample


def bon_curve(cfg, rm, probs: dict, responses: torch.Tensor, gold: torch.Tensor) -> list[dict]:
    """Best-of-n rows (n, kl, d, gold, proxy) from ``responses [P·N, R]`` sampled N per prompt."""
    n_prompts = len(probs["a"])
    big_n = len(responses) // n_prompts
    rep = {k: v.repeat_interleave(big_n, 0) for k, v in probs.items()}
    with torch.no_grad():
        proxy = rm(join(rep["prompts"], rep["prompt_len"], responses), last_index(rep["prompt_len"], responses))
    proxy, gold = proxy.view(n_prompts, big_n), gold.view(n_prompts, big_n)
    rows, n = [], 1
    while n <= big_n:
        kl = oo.best_of_n_kl(n)
        rows.append({"n": n, "kl": kl, "d": kl ** 0.5, "gold_reward": float(oo.best_of_n(proxy, gold, n).mean()),
                     "proxy_reward": float(oo.best_of_n(proxy, proxy, n).mean())})
        n *= 2
    return rows


def rl_curve(module) -> list[dict]:
    return [{"step": r["step"], "kl": r["kl"], "d": max(r["kl"], 0.0) ** 0.5, "gold_reward": r["gold_reward"],
             "proxy_reward": r["proxy_reward"]} for r in module.curve]


def fits(rows: list[dict], kind: str) -> dict:
    d = np.array([r["d"] for r in rows])
    gold = np.array([r["gold_reward"] for r in rows])
    return oo.fit(d, gold - gold[0], kind)


def figure(results: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, method, kind in zip(axes, ("best_of_n", "ppo"), ("bon", "rl")):
        proxy_ax = ax.twinx()
        for i, (size, res) in enumerate(results.items()):
            rows = res[method]["curve"]
            d = np.array([r["d"] for r in rows])
            gold = np.array([r["gold_reward"] for r in rows])
            ax.plot(d, gold, "o", color=f"C{i}", label=f"gold, RM on {size} pairs")
            grid = np.linspace(1e-3, d.max(), 100)
            ax.plot(grid, gold[0] + oo.form(grid, res[method]["fit"], kind), "-", color=f"C{i}", lw=1)
            proxy_ax.plot(d, [r["proxy_reward"] for r in rows], "x--", color=f"C{i}", alpha=0.6)
        proxy_ax.set_ylabel("proxy (RM) reward  ×--")
        ax.set(xlabel="d = √KL(π‖π_ref)", ylabel="gold reward  o (— Gao et al. fit)",
               title={"best_of_n": "best-of-n", "ppo": "PPO (weak KL penalty)"}[method])
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def samples_text(cfg, policies: dict, n: int = 12) -> str:
    """The same test prompts answered by each policy (one seeded sample each) with their gold reward."""
    t = cfg.model.rlhf.task
    probs = rlhf.problems(cfg, "test", n)
    lines = ["prompt        " + "".join(f"{name:<16}" for name in policies)]
    answers = {}
    for name, net in policies.items():
        y = sample(net, probs["prompts"], probs["prompt_len"], rlhf.width(cfg), t.temperature,
                   torch.Generator().manual_seed(cfg.seed))
        answers[name] = (y, gold_reward(probs["a"], probs["b"], probs["digits"], y, True, t.format_weight))
    for i in range(n):
        prompt, answer = render(int(probs["a"][i]), int(probs["b"][i]), int(probs["digits"][i]), True)
        cells = [f"{decode(y[i][y[i] != PAD]).replace(chr(10), '⏎'):<8}{float(g[i]):.2f}    "
                 for y, g in answers.values()]
        lines.append(f"{prompt:<14}" + "".join(cells) + f"(gold answer {answer})")
    return "answers are written least-significant digit first; ⏎ = end of answer\n\n" + "\n".join(lines)


def summary(cfg, over: dict) -> dict:
    """``reports/metrics/rlhf.json``: the issue's summary from every RLHF stage's metrics."""
    m = {s: read_json(Path(cfg.paths.reports) / "metrics" / f"{s}.json") for s in ("sft", "reward_model", "ppo", "dpo")}
    keep = ("gold_reward", "gold_reward_ci95", "gold_gain", "gold_gain_ci95", "kl", "kl_ci95", "proxy_reward",
            "exact_match")
    pick = lambda d: {k: d[k] for k in keep if k in d}   # noqa: E731
    main = over["sizes"][str(max(map(int, over["sizes"])))]
    return {"reward_model": {k: m["reward_model"][k] for k in ("pair_accuracy", "label_accuracy", "bayes_label_accuracy",
                                                               "margin") if k in m["reward_model"]},
            "sft": pick(m["sft"]["sft"]), "ppo": pick(m["ppo"]["ppo"]),
            **{kind: pick(m["dpo"][kind]) for kind in ("dpo", "ipo", "hinge") if kind in m["dpo"]},
            "best_of_n": {k: [r[k] for r in main["best_of_n"]["curve"]] for k in ("n", "kl", "gold_reward",
                                                                                   "proxy_reward")},
            "overoptimization": {"rl_fit": main["ppo"]["fit"], "bon_fit": main["best_of_n"]["fit"],
                                 "proxy_past_gold_peak": {size: {meth: r[meth]["proxy_past_gold_peak"]
                                                                 for meth in ("best_of_n", "ppo")}
                                                          for size, r in over["sizes"].items()}}}


def run(cfg) -> None:
    o, t = cfg.model.rlhf.overoptimization, cfg.model.rlhf.task
    rlhf.setup(cfg)
    sft = rlhf.load_policy(cfg, "sft", "sft")
    pairs = load_pairs(cfg)
    train, val = subset(pairs, pairs["split"] == 0), subset(pairs, pairs["split"] == 1)
    norm = norm_samples(cfg, sft)
    probs = rlhf.problems(cfg, "test", o.prompts)
    rep = {k: v.repeat_interleave(o.n_max, 0) for k, v in probs.items()}
    responses = sample(sft, rep["prompts"], rep["prompt_len"], rlhf.width(cfg), t.temperature,
                       torch.Generator().manual_seed(cfg.seed))
    gold = gold_reward(rep["a"], rep["b"], rep["digits"], responses, True, t.format_weight)
    eval_probs = rlhf.eval_problems(cfg)
    results = {}
    for size in sorted({min(s, len(train["split"])) for s in o.rm_pairs}):
        rm = fit_reward_model(cfg, subset(train, torch.arange(len(train["split"])) < size), o.rm_steps,
                              f"overopt_rm{size}", sft.state_dict(), norm)[0].model
        res = {"reward_model": pair_metrics(cfg, rm, val)}
        res["best_of_n"] = {"curve": bon_curve(cfg, rm, probs, responses, gold)}
        res["ppo"] = {"curve": rl_curve(train_ppo(cfg, rm, f"overopt_rm{size}", eval_probs, steps=o.ppo_steps,
                                                  kl_coef=o.kl_coef)[0])}
        for method, kind in (("best_of_n", "bon"), ("ppo", "rl")):
            curve = res[method]["curve"]
            res[method]["fit"] = fits(curve, kind)
            res[method]["proxy_past_gold_peak"] = oo.proxy_past_gold_peak([r["gold_reward"] for r in curve],
                                                                          [r["proxy_reward"] for r in curve])
            write_csv(plots_dir(cfg, "overoptimization") / f"{method}_rm{size}.csv", curve)
        results[str(size)] = res
        print(f"[genlab] overoptimization: RM on {size} pairs: pair accuracy "
              f"{res['reward_model'].get('pair_accuracy', float('nan')):.3f}; proxy past gold peak: "
              f"best-of-n {res['best_of_n']['proxy_past_gold_peak']}, ppo {res['ppo']['proxy_past_gold_peak']}")
    over = {"sizes": results, "n_max": o.n_max, "bon_prompts": o.prompts, "ppo_kl_coef": o.kl_coef}
    write_metrics(cfg, "overoptimization", over)
    save_figure(figure(results), figures_dir(cfg, "rlhf") / "gold_vs_proxy.png")
    policies = {"sft": sft, "ppo": rlhf.load_policy(cfg, "ppo", "sft", "reward_model", "ppo"),
                **{kind: rlhf.load_policy(cfg, f"dpo/{kind}", "sft", "reward_model", "dpo")
                   for kind in cfg.model.rlhf.dpo.losses}}
    write_text(figures_dir(cfg, "rlhf") / "samples.txt", samples_text(cfg, policies))
    write_metrics(cfg, "rlhf", summary(cfg, over))
