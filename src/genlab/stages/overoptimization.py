"""Stage `overoptimization`: gold vs proxy reward against d = √KL for best-of-n and PPO (Gao et al. 2023),
decided by intervals; and ``reports/metrics/rlhf.json``, every method against the KL-matched baselines.

* Reward models: one per size in ``rm_pairs`` (a prefix of the training pairs, ``rm_steps`` steps) plus the
  main reward model of `reward_model`.
* Best-of-n, n = 1, 2, 4 … ``n_max``, under each seed of ``seeds``: N = n_max SFT samples per prompt,
  gold/proxy by the unbiased estimator, KL exact from the SFT log-probs of the distinct samples (the
  bound log n − (n−1)/n beside it).
* PPO with a weak KL penalty (``kl_coef``) against the smallest-data reward model, under each seed,
  evaluated at the iterations ``ppo_eval_steps`` and at the end (≥ 8 points along d: KL grows fastest in
  the first iterations, so the schedule is dense there).
* "Gold falls while proxy rises": the peak is chosen on half of the prompts, the paired test runs on the
  other half over seeds (``evaluate.overoptimization.falls_while_proxy_rises``). Gao fits with bootstrap
  intervals over prompts.
Writes ``reports/metrics/overoptimization.json`` (+ claims), ``reports/metrics/rlhf.json`` (the table:
base model, SFT temperature curve, best-of-n, PPO/RLOO/GRPO, DPO/IPO/hinge with gold, KL and the
KL-matched gaps, mean ± 95% CI over seeds), gold-vs-proxy plots and samples (``reports/figures/rlhf``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from genlab.data.arithmetic import PAD, decode, render
from genlab.evaluate import overoptimization as oo
from genlab.evaluate.gold_reward import gold_reward
from genlab.evaluate.policy import kl_matched_gap, seed_summary
from genlab.io import read_json
from genlab.parallel import run_many
from genlab.recipes import rlhf
from genlab.recipes.ppo import train_ppo
from genlab.recipes.preferences import load_pairs, subset
from genlab.recipes.reward_model import fit_reward_model, norm_samples, pair_metrics
from genlab.report.artifacts import figures_dir, plots_dir, save_figure, write_csv, write_metrics, write_text
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.rl.rollout import join, last_index, response_logprobs, response_mask, sample


def distinct_rows(seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of ``seq [M, T]``: ``inverse [M]`` (row → its distinct row) and ``first [U]`` (the first row
    of each distinct row). A confident SFT policy draws the same answer to a prompt many times, so scoring
    each distinct sequence once (then ``scores[inverse]``) gives the same numbers for a fraction of the work."""
    _, inverse = torch.unique(seq, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), len(seq)).scatter_reduce(0, inverse, torch.arange(len(seq)), "amin")
    return inverse, first


@torch.no_grad()
def in_chunks(fn, *tensors: torch.Tensor, size: int = 2048) -> torch.Tensor:
    """``fn`` over row blocks of ``tensors``, concatenated: a forward pass over tens of thousands of rows at once
    runs out of cache."""
    return torch.cat([fn(*parts) for parts in zip(*(t.split(size) for t in tensors))])


def bon_samples(cfg, sft, probs: dict) -> dict[str, torch.Tensor]:
    """``n_max`` SFT samples per prompt under ``cfg.seed``: responses ``[P·N, R]``, their gold and SFT log-probs,
    and the distinct sequences (``distinct_rows``) that the reward models score."""
    o, t = cfg.model.rlhf.overoptimization, cfg.model.rlhf.task
    rep = {k: v.repeat_interleave(o.n_max, 0) for k, v in probs.items()}
    y = sample(sft, rep["prompts"], rep["prompt_len"], rlhf.width(cfg), t.temperature,
               torch.Generator().manual_seed(cfg.seed))
    seq, last = join(rep["prompts"], rep["prompt_len"], y), last_index(rep["prompt_len"], y)
    inverse, first = distinct_rows(seq)
    logp = in_chunks(lambda q, n, r: (response_logprobs(sft, q, n, y.shape[1], t.temperature) * response_mask(r)).sum(1),
                     seq[first], rep["prompt_len"][first], y[first])[inverse]
    return {"responses": y, "seq": seq[first], "last": last[first], "inverse": inverse, "logp": logp,
            "gold": gold_reward(rep["a"], rep["b"], rep["digits"], y, True, t.format_weight)}


def bon_curve(cfg, rm, s: dict, n_prompts: int) -> dict[str, np.ndarray]:
    """Per-prompt best-of-n gold, proxy, exact KL ``[P, K]`` for n = 1, 2, 4 … ≤ N, and the bound ``[K]``."""
    big_n = cfg.model.rlhf.overoptimization.n_max
    proxy = in_chunks(rm, s["seq"], s["last"])[s["inverse"]].view(n_prompts, big_n)
    gold, logp, y = s["gold"].view(n_prompts, big_n), s["logp"].view(n_prompts, big_n), s["responses"]
    ns = [2 ** k for k in range(int(np.log2(big_n)) + 1)]
    kl = np.zeros((n_prompts, len(ns)))
    for p in range(n_prompts):
        _, lp, px = oo.distinct(y[p * big_n:(p + 1) * big_n], logp[p], proxy[p])
        kl[p] = [oo.best_of_n_kl_exact(lp, px, n) for n in ns]
    return {"n": np.array(ns), "kl": kl, "kl_bound": np.array([oo.best_of_n_kl(n) for n in ns]),
            "gold": np.stack([oo.best_of_n(proxy, gold, n).numpy() for n in ns], 1),
            "proxy": np.stack([oo.best_of_n(proxy, proxy, n).numpy() for n in ns], 1)}


def ppo_curve_job(cfg, seed: int, size: int, rm_state: dict) -> dict:
    """PPO with a weak KL penalty against the reward model on ``size`` pairs (weights ``rm_state``), under
    ``seed`` (a ``run_many`` job): per-prompt gold / proxy / KL ``[P, K]`` at K evaluation points along training."""
    o = cfg.model.rlhf.overoptimization
    cfg = rlhf.with_seed(cfg, seed)
    rlhf.setup(cfg)
    rm = rlhf.new_reward_model(cfg)
    rm.load_state_dict(rm_state)
    rm.eval().requires_grad_(False)
    probs = rlhf.problems(cfg, "test", o.prompts)
    ref = rlhf.load_policy(cfg, "sft", "sft")
    points: list[dict] = []

    def evaluator(net):                       # keep per-prompt values; the module's curve gets the means
        r = rlhf.evaluate_policy(cfg, net, ref, rm, probs)
        points.append({k: r[k].cpu().numpy() for k in ("gold", "proxy", "kl")})
        return {k: float(r[k].mean()) for k in ("gold", "proxy", "kl")}

    train_ppo(cfg, rm, f"overopt_rm{size}-seed{seed}", probs, evaluator=evaluator, eval_steps=o.ppo_eval_steps,
              steps=o.ppo_steps, kl_coef=o.kl_coef)
    return {k: np.stack([p[k] for p in points], 1) for k in ("gold", "proxy", "kl")}


def curve_rows(c: dict, xs: list) -> list[dict]:
    """Seed-mean rows (x, kl, d, gold, proxy) of per-seed per-prompt curves ``[S][P, K]``."""
    kl = np.mean([k.mean(0) for k in c["kl"]], 0)
    return [{"x": x, "kl": float(kl[i]), "d": float(np.sqrt(max(kl[i], 0))),
             "gold_reward": float(np.mean([g[:, i].mean() for g in c["gold"]])),
             "proxy_reward": float(np.mean([p[:, i].mean() for p in c["proxy"]]))} for i, x in enumerate(xs)]


def overopt_test(c: dict) -> dict:
    """``falls_while_proxy_rises`` with even prompts selecting the peak and odd prompts testing it."""
    sel = lambda x, part: np.stack([v[part::2].mean(0) for v in x])   # noqa: E731 — [S, K]
    return oo.falls_while_proxy_rises(sel(c["gold"], 0), sel(c["gold"], 1), sel(c["proxy"], 1))


def figure(bon: dict, ppo: dict, bound: list) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (title, curves, kind) in zip(axes, (("best-of-n", bon, "bon"), ("PPO (weak KL penalty)", ppo, "rl"))):
        proxy_ax = ax.twinx()
        for i, (name, res) in enumerate(curves.items()):
            d = np.array([r["d"] for r in res["curve"]])
            gold = np.array([r["gold_reward"] for r in res["curve"]])
            ax.plot(d, gold, "o", color=f"C{i}", label=f"gold, RM {name}")
            grid = np.linspace(1e-3, max(d.max(), 1e-2), 100)
            ax.plot(grid, gold[0] + oo.form(grid, res["fit"], kind), "-", color=f"C{i}", lw=1)
            proxy_ax.plot(d, [r["proxy_reward"] for r in res["curve"]], "x--", color=f"C{i}", alpha=0.6)
            if kind == "bon" and i == 0:
                ax.plot(np.sqrt(bound), gold, "s", mfc="none", color="C7", label="same gold at the bound √(log n − (n−1)/n)")
        proxy_ax.set_ylabel("proxy (RM) reward  ×--")
        ax.set(xlabel="d = √KL(π‖π_SFT)", ylabel="gold reward  o (— Gao et al. fit)", title=title)
        ax.legend(fontsize=6, loc="lower left")
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


def table(cfg, bon_main: dict, seeds: list[int]) -> dict:
    """``rlhf.json``: base model (ceiling), SFT temperature curve, best-of-n (main RM, exact KL) and every
    method with gold and KL (mean ± 95% t-CI over seeds) and its KL-matched gaps to the temperature curve and
    to best-of-n, paired by seed."""
    m = {s: read_json(Path(cfg.paths.reports) / "metrics" / f"{s}.json") for s in ("sft", "reward_model", "ppo", "dpo")}
    t_curves = [m["ppo"]["temperature_curve"][str(s)] for s in seeds]
    temps = [{"temperature": r["temperature"], **{k: seed_summary([c[i][k] for c in t_curves])
                                                  for k in ("gold_reward", "kl", "gold_carry")}}
             for i, r in enumerate(t_curves[0])]
    bon_curves = [{"kl": list(k.mean(0)), "gold": list(g.mean(0))} for k, g in zip(bon_main["kl"], bon_main["gold"])]
    bon = [{"n": int(n), "kl_exact": seed_summary([k[:, i].mean() for k in bon_main["kl"]]),
            "kl_bound": float(bon_main["kl_bound"][i]), "gold_reward": seed_summary([g[:, i].mean() for g in bon_main["gold"]])}
           for i, n in enumerate(bon_main["n"])]
    methods = {}
    for stage, names in (("ppo", m["ppo"].get("seeds") and [a for a in ("ppo", "rloo", "grpo") if a in m["ppo"]]),
                         ("dpo", [k for k in ("dpo", "ipo", "hinge") if k in m["dpo"]])):
        for name in names or []:
            r = m[stage][name]
            _, vs_bon = kl_matched_gap(r["per_seed"]["gold_reward"], r["per_seed"]["kl"], bon_curves)
            methods[name] = {"gold_reward": r["gold_reward"], "gold_reward_ci95": r["gold_reward_ci95"],
                             "kl": r["kl"], "kl_ci95": r["kl_ci95"], "gold_carry": r["gold_carry"],
                             "vs_temperature_at_kl": pick(r["vs_temperature"]), "vs_best_of_n_at_kl": pick(vs_bon),
                             "below_base": m["sft"]["base"]["gold_reward"] - r["gold_reward"], "n_seeds": r["n_seeds"]}
    return {"seeds": seeds, "reward_model": {k: m["reward_model"][k] for k in
                                              ("pair_accuracy", "label_accuracy", "bayes_label_accuracy", "margin")
                                              if k in m["reward_model"]},
            "base": {k: m["sft"]["base"][k] for k in ("gold_reward", "gold_reward_ci95", "kl", "gold_carry")},
            "sft": {k: m["sft"]["sft"][k] for k in ("gold_reward", "gold_reward_ci95", "gold_carry", "gold_no_carry",
                                                     "carry_share")},
            "sft_temperature_curve": temps, "best_of_n": bon, **methods}


def pick(result: dict) -> dict:
    return {"estimate": result["estimate"], "ci95": result["ci"], "p_value": result.get("p_value"), "n": result["n"]}


def run(cfg) -> None:
    o = cfg.model.rlhf.overoptimization
    seeds = list(cfg.seeds)
    rlhf.setup(cfg)
    sft = rlhf.load_policy(cfg, "sft", "sft")
    pairs = load_pairs(cfg)
    train, val = subset(pairs, pairs["split"] == 0), subset(pairs, pairs["split"] == 1)
    norm = norm_samples(cfg, sft)
    sizes = sorted({min(s, len(train["split"])) for s in o.rm_pairs})
    rms = {}
    for size in sizes:
        rm = fit_reward_model(cfg, subset(train, torch.arange(len(train["split"])) < size), o.rm_steps,
                              f"overopt_rm{size}", sft.state_dict(), norm)[0].model
        rms[f"{size} pairs"] = rm
    rms["main"] = rlhf.load_reward_model(cfg)
    rm_state = rms[f"{sizes[0]} pairs"].state_dict()
    ppo_runs = run_many(ppo_curve_job, [{"cfg": cfg, "seed": s, "size": sizes[0], "rm_state": rm_state} for s in seeds],
                        desc="over-optimization PPO seeds")

    probs = rlhf.problems(cfg, "test", o.prompts)
    samples = [bon_samples(rlhf.with_seed(cfg, s), sft, probs) for s in seeds]
    results, bon_fig, claims = {}, {}, []
    for name, rm in rms.items():
        per_seed = [bon_curve(cfg, rm, s, len(probs["a"])) for s in samples]
        c = {k: [p[k] for p in per_seed] for k in ("gold", "proxy", "kl")}
        rows = curve_rows(c, [int(n) for n in per_seed[0]["n"]])
        for r, bound in zip(rows, per_seed[0]["kl_bound"]):
            r["kl_bound"], r["d_bound"] = float(bound), float(np.sqrt(bound))
        res = {"reward_model": pair_metrics(cfg, rm, val), "curve": rows,
               "fit": oo.bootstrap_fit(np.concatenate(c["kl"]), np.concatenate(c["gold"]), "bon", o.n_boot, cfg.seed),
               "falls_while_proxy_rises": overopt_test(c)}
        results[name] = {"best_of_n": res}
        bon_fig[name] = res
        if name == "main":
            bon_main = {**{k: [p[k] for p in per_seed] for k in ("gold", "kl")}, "n": per_seed[0]["n"],
                        "kl_bound": per_seed[0]["kl_bound"]}
        write_csv(plots_dir(cfg, "overoptimization") / f"best_of_n_rm{name.split()[0]}.csv", rows)
    c = {k: [r[k] for r in ppo_runs] for k in ("gold", "proxy", "kl")}
    k_points = c["gold"][0].shape[1]
    steps = [*o.ppo_eval_steps, o.ppo_steps]
    assert len(steps) == k_points, (steps, k_points)
    rows = curve_rows(c, steps)
    ppo_res = {"curve": rows, "points": k_points,
               "fit": oo.bootstrap_fit(np.concatenate(c["kl"]), np.concatenate(c["gold"]), "rl", o.n_boot, cfg.seed),
               "falls_while_proxy_rises": overopt_test(c)}
    results[f"{sizes[0]} pairs"]["ppo"] = ppo_res
    write_csv(plots_dir(cfg, "overoptimization") / f"ppo_rm{sizes[0]}.csv", rows)
    for method, res, rm_name in (("best_of_n", results["main"]["best_of_n"], "main"),
                                 ("best_of_n", results[f"{sizes[0]} pairs"]["best_of_n"], f"{sizes[0]} pairs"),
                                 ("ppo", ppo_res, f"{sizes[0]} pairs")):
        test = res["falls_while_proxy_rises"]
        label = {"best_of_n": "best-of-n", "ppo": "PPO"}[method]
        claims.append(claim_from_difference(
            f"{method}_rm{rm_name.split()[0]}_gold_falls_while_proxy_rises", "overoptimization",
            f"Along {label} (reward model: {rm_name}), the gold reward peaks and then falls while the proxy rises.",
            test, statistic="min(gold drop after the peak, proxy rise after the peak), peak chosen on other prompts",
            baseline=f"gold drop {test['gold_drop']:+.4f}, proxy rise {test['proxy_rise']:+.3f}"))
    over = {"sizes": results, "n_max": o.n_max, "bon_prompts": o.prompts, "ppo_kl_coef": o.kl_coef, "seeds": seeds,
            "ppo_rm": f"{sizes[0]} pairs"}
    write_metrics(cfg, "overoptimization", add_conclusions(over, claims))
    save_figure(figure(bon_fig, {f"{sizes[0]} pairs": ppo_res}, [r["kl_bound"] for r in results["main"]["best_of_n"]["curve"]]),
                figures_dir(cfg, "rlhf") / "gold_vs_proxy.png")
    policies = {"sft": sft, **{a: rlhf.load_policy(cfg, a, "sft", "reward_model", "ppo")
                               for a in cfg.model.rlhf.ppo.algorithms},
                **{kind: rlhf.load_policy(cfg, f"dpo/{kind}", "sft", "reward_model", "dpo")
                   for kind in cfg.model.rlhf.dpo.losses}}
    write_text(figures_dir(cfg, "rlhf") / "samples.txt", samples_text(cfg, policies))
    write_metrics(cfg, "rlhf", table(cfg, bon_main, seeds))
    for row in claims:
        print(f"[genlab] overoptimization: {row.id}: {row.verdict} (estimate {row.estimate:+.4f}, CI {row.ci95})")
