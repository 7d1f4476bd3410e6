"""Stage `overoptimization`: gold vs proxy reward against d = √KL for best-of-n and PPO (Gao et al. 2023),
decided by intervals; and ``reports/metrics/rlhf.json``, every method against the KL-matched baselines.

* Reward models, each trained for ``rm_steps`` steps on a prefix of the training pairs: one per data size in
  ``rm_pairs`` (the main model's ``extra_layers``), one per parameter size in ``rm_layers`` (that many fresh
  blocks on top of the frozen SFT layers, on ``rm_layers_pairs`` pairs: the same data), plus the main reward
  model of `reward_model`. Their trainings and best-of-n curves share one worker pool with the PPO seeds.
* Best-of-n, n = 1, 2, 4 … ``n_max``, under each seed of ``seeds``: N = n_max SFT samples per prompt,
  gold/proxy by the unbiased estimator, KL exact from the SFT log-probs of the distinct samples (the
  bound log n − (n−1)/n beside it).
* PPO with a weak KL penalty (``kl_coef``) against the smallest-data reward model, under each seed,
  evaluated at the iterations ``ppo_eval_steps`` and at the end (≥ 8 points along d: KL grows fastest in
  the first iterations, so the schedule is dense there).
* "Gold falls while proxy rises": the peak is chosen on half of the prompts, the paired test runs on the
  other half over seeds (``evaluate.overoptimization.falls_while_proxy_rises``), per reward model. Gao fits
  with bootstrap intervals over prompts.
* Reward-model size at fixed data: best-of-``n_max`` gold of the largest minus the smallest ``rm_layers``
  model, paired by seed (``genlab.evaluate.stats.paired_difference``). A seed re-draws the SFT samples; each
  reward model is trained once, so the interval holds the sampling noise, not the training noise.
Writes ``reports/metrics/overoptimization.json`` (+ claims), ``reports/metrics/rlhf.json`` (the table:
base model, SFT temperature curve, best-of-n, PPO/RLOO/GRPO, DPO/IPO/hinge with gold, KL and the
KL-matched gaps, mean ± 95% CI over seeds), gold-vs-proxy plots per data size and per parameter size, and
samples (``reports/figures/rlhf``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from genlab.data.arithmetic import PAD, decode, render
from genlab.evaluate import overoptimization as oo
from genlab.evaluate import stats
from genlab.evaluate.gold_reward import gold_reward
from genlab.evaluate.policy import kl_matched_gap, seed_summary
from genlab.io import read_json
from genlab.nn.heads import RewardModel
from genlab.parallel import run_many
from genlab.recipes import rlhf
from genlab.recipes.ppo import train_ppo
from genlab.recipes.preferences import load_pairs, subset
from genlab.recipes.reward_model import fit_reward_model, norm_samples, pair_metrics, parameter_counts
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


def rm_series(cfg, n_train: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(pairs, extra_layers) of the stage's reward models besides the main one, in two series: the data sizes
    ``rm_pairs`` at the main model's ``extra_layers`` (smallest first: PPO's), and the parameter sizes
    ``rm_layers`` plus the main model's ``extra_layers`` (fewest first) at ``rm_layers_pairs``; pair counts
    capped at ``n_train``. A model in both series is trained once."""
    o, default = cfg.model.rlhf.overoptimization, cfg.model.rlhf.reward_model.extra_layers
    data = [(p, default) for p in sorted({min(p, n_train) for p in o.rm_pairs})]
    size = [(min(o.rm_layers_pairs, n_train), layers) for layers in sorted({*o.rm_layers, default})]
    return data, size


def rm_tag(cfg, pairs: int | None, layers: int) -> str:
    """``main``, ``<pairs>`` or ``<pairs>_l<layers>`` (file names, run names and claim ids)."""
    if pairs is None:
        return "main"
    return str(pairs) if layers == cfg.model.rlhf.reward_model.extra_layers else f"{pairs}_l{layers}"


def rm_name(cfg, pairs: int | None, layers: int) -> str:
    if pairs is None:
        return "main"
    default = cfg.model.rlhf.reward_model.extra_layers
    return f"{pairs} pairs" if layers == default else f"{pairs} pairs, {layers} layer{'s' * (layers != 1)}"


def train_rm(cfg, pairs: int, layers: int, norm: dict) -> tuple[RewardModel, float]:
    """The reward model with ``layers`` fresh blocks trained on the first ``pairs`` training pairs for
    ``rm_steps`` steps (normalised on ``norm``), and its training seconds."""
    data = load_pairs(cfg)
    train = subset(data, data["split"] == 0)
    sft_state = rlhf.load_policy(cfg, "sft", "sft").state_dict()
    module, seconds = fit_reward_model(rlhf.with_reward_model(cfg, extra_layers=layers),
                                       subset(train, torch.arange(len(train["split"])) < pairs),
                                       cfg.model.rlhf.overoptimization.rm_steps, f"overopt_rm{rm_tag(cfg, pairs, layers)}",
                                       sft_state, norm)
    return module.model, seconds


def rm_job(cfg, pairs: int | None, layers: int, norm: dict, samples: list[dict], state: dict | None = None) -> dict:
    """One reward model (a ``run_many`` job): trained by ``train_rm`` (or loaded: ``state``, or the main model
    when ``pairs`` is None), then scored on the held-out pairs and along best-of-n on each seed's
    ``bon_samples``. Returns the per-seed curves (``bon_curve``) and the model's metrics and size."""
    rlhf.setup(cfg)
    seconds = None
    if pairs is None:
        rm = rlhf.load_reward_model(cfg)
    elif state is not None:
        rm = rlhf.new_reward_model(rlhf.with_reward_model(cfg, extra_layers=layers))
        rm.load_state_dict(state)
        rm.eval().requires_grad_(False)
    else:
        rm, seconds = train_rm(cfg, pairs, layers, norm)
    data = load_pairs(cfg)
    n_prompts = len(samples[0]["gold"]) // cfg.model.rlhf.overoptimization.n_max
    main = pairs is None
    metrics = {"pairs": int((data["split"] == 0).sum()) if main else pairs, "extra_layers": layers,
               "steps": cfg.model.rlhf.reward_model.steps if main else cfg.model.rlhf.overoptimization.rm_steps,
               **parameter_counts(rlhf.with_reward_model(cfg, extra_layers=layers), rm),
               **pair_metrics(cfg, rm, subset(data, data["split"] == 1)), "train_seconds": seconds}
    return {"reward_model": metrics, "per_seed": [bon_curve(cfg, rm, s, n_prompts) for s in samples]}


def pooled_job(kind: str, **job) -> dict:
    """The stage's ``run_many`` jobs, one pool for both kinds: PPO curves and reward models."""
    return {"ppo": ppo_curve_job, "rm": rm_job}[kind](**job)


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


def panel(ax, title: str, curves: dict, kind: str, bound: list | None = None) -> None:
    """Gold (o, with its Gao et al. fit) and proxy (×, right axis) against d for each curve of ``curves``
    (name → {"curve": rows, "fit": params}); ``bound``: best-of-n's KL bound, the first curve's gold at it."""
    proxy_ax = ax.twinx()
    for i, (name, res) in enumerate(curves.items()):
        d = np.array([r["d"] for r in res["curve"]])
        gold = np.array([r["gold_reward"] for r in res["curve"]])
        ax.plot(d, gold, "o", color=f"C{i}", label=f"gold, RM {name}")
        grid = np.linspace(1e-3, max(d.max(), 1e-2), 100)
        ax.plot(grid, gold[0] + oo.form(grid, res["fit"], kind), "-", color=f"C{i}", lw=1)
        proxy_ax.plot(d, [r["proxy_reward"] for r in res["curve"]], "x--", color=f"C{i}", alpha=0.6)
        if bound is not None and i == 0:
            ax.plot(np.sqrt(bound), gold, "s", mfc="none", color="C7", label="same gold at the bound √(log n − (n−1)/n)")
    proxy_ax.set_ylabel("proxy (RM) reward  ×--")
    ax.set(xlabel="d = √KL(π‖π_SFT)", ylabel="gold reward  o (— Gao et al. fit)", title=title)
    ax.legend(fontsize=6, loc="lower left")


def figure(panels: list[tuple]) -> plt.Figure:
    """One ``panel`` per (title, curves, kind[, bound]) side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, args in zip(axes[0], panels):
        panel(ax, *args)
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


def best_of_n_result(cfg, per_seed: list[dict], rm_metrics: dict) -> tuple[dict, dict]:
    """One reward model's best-of-n metrics (curve rows, Gao fit with bootstrap CIs, the paired test) from its
    per-seed ``bon_curve``s, and the per-seed curves ``{gold, proxy, kl: [S][P, K]}``."""
    o = cfg.model.rlhf.overoptimization
    c = {k: [p[k] for p in per_seed] for k in ("gold", "proxy", "kl")}
    rows = curve_rows(c, [int(n) for n in per_seed[0]["n"]])
    for r, bound in zip(rows, per_seed[0]["kl_bound"]):
        r["kl_bound"], r["d_bound"] = float(bound), float(np.sqrt(bound))
    res = {"reward_model": rm_metrics, "curve": rows,
           "fit": oo.bootstrap_fit(np.concatenate(c["kl"]), np.concatenate(c["gold"]), "bon", o.n_boot, cfg.seed),
           "falls_while_proxy_rises": overopt_test(c)}
    return res, c


def falls_claim(method: str, res: dict, rm_name: str, tag: str):
    test = res["falls_while_proxy_rises"]
    label = {"best_of_n": "best-of-n", "ppo": "PPO"}[method]
    return claim_from_difference(
        f"{method}_rm{tag}_gold_falls_while_proxy_rises", "overoptimization",
        f"Along {label} (reward model: {rm_name}), the gold reward peaks and then falls while the proxy rises.",
        test, statistic="min(gold drop after the peak, proxy rise after the peak), peak chosen on other prompts",
        baseline=f"gold drop {test['gold_drop']:+.4f}, proxy rise {test['proxy_rise']:+.3f}")


def size_comparison(cfg, results: dict, curves: dict, names: list[str]) -> tuple[dict, object]:
    """Reward-model size at fixed data: per model (fewest to most fresh layers) its parameter counts, Gao fit
    and best-of-``n_max`` gold; and the largest minus the smallest model's best-of-``n_max`` gold, paired by
    seed, as a claim."""
    o = cfg.model.rlhf.overoptimization
    at_max = {n: [float(g[:, -1].mean()) for g in curves[n]["gold"]] for n in names}       # [S] per model
    rms = [results[n]["best_of_n"]["reward_model"] for n in names]
    small, large = names[0], names[-1]
    diff = stats.paired_difference(at_max[large], at_max[small])
    out = {"pairs": rms[0]["pairs"], "models": names, "extra_layers": [r["extra_layers"] for r in rms],
           "parameters": [r["parameters"] for r in rms], "trained_parameters": [r["trained_parameters"] for r in rms],
           "pair_accuracy": [r.get("pair_accuracy") for r in rms],
           "fit": {n: {k: results[n]["best_of_n"]["fit"][k] for k in ("alpha", "alpha_ci95", "beta", "beta_ci95",
                                                                       "d_peak", "d_peak_ci95")} for n in names},
           "gold_at_n_max": {n: stats.summarize(at_max[n])["estimate"] for n in names},
           "larger_minus_smaller_gold_at_n_max": diff}
    claim = claim_from_difference(
        f"best_of_n_rm{out['pairs']}_l{out['extra_layers'][-1]}_vs_l{out['extra_layers'][0]}_gold_at_n{o.n_max}",
        "overoptimization",
        f"At fixed data ({out['pairs']} pairs), a larger reward model ({out['extra_layers'][-1]} fresh layers, "
        f"{out['trained_parameters'][-1]:,} trained parameters) gives best-of-{o.n_max} a higher gold reward than a "
        f"smaller one ({out['extra_layers'][0]} layers, {out['trained_parameters'][0]:,}).",
        diff, statistic=f"gold(best-of-{o.n_max}, larger RM) − gold(smaller RM), paired by seed (the seed re-draws "
                        "the SFT samples; each RM is trained once)",
        baseline=f"smaller RM gold {diff['mean_b']:.3f}")
    return out, claim


def run(cfg) -> None:
    o = cfg.model.rlhf.overoptimization
    seeds = list(cfg.seeds)
    rlhf.setup(cfg)
    sft = rlhf.load_policy(cfg, "sft", "sft")
    pairs = load_pairs(cfg)
    norm = norm_samples(cfg, sft)
    data_series, size_series = rm_series(cfg, int((pairs["split"] == 0).sum()))
    series = list(dict.fromkeys(data_series + size_series))
    (ppo_pairs, ppo_layers), default = data_series[0], cfg.model.rlhf.reward_model.extra_layers
    ppo_name = rm_name(cfg, ppo_pairs, ppo_layers)
    ppo_rm, _ = train_rm(cfg, ppo_pairs, ppo_layers, norm)          # PPO's, before the pool
    probs = rlhf.problems(cfg, "test", o.prompts)
    samples = [bon_samples(rlhf.with_seed(cfg, s), sft, probs) for s in seeds]
    # one pool, longest jobs first: the PPO seeds, the reward models to train, then those only to score
    rm_jobs = [{"kind": "rm", "cfg": cfg, "pairs": p, "layers": layers, "norm": norm, "samples": samples,
                "state": ppo_rm.state_dict() if (p, layers) == data_series[0] else None} for p, layers in series]
    rm_jobs = sorted(rm_jobs, key=lambda j: j["state"] is not None)
    rm_jobs.append({"kind": "rm", "cfg": cfg, "pairs": None, "layers": default, "norm": norm, "samples": samples})
    done = run_many(pooled_job, [{"kind": "ppo", "cfg": cfg, "seed": s, "size": ppo_pairs, "rm_state": ppo_rm.state_dict()}
                                 for s in seeds] + rm_jobs, desc="over-optimization: PPO seeds and reward models")
    ppo_runs, rm_done = done[:len(seeds)], done[len(seeds):]

    results, curves, claims = {}, {}, []
    for job, out in zip(rm_jobs, rm_done):
        name, tag = rm_name(cfg, job["pairs"], job["layers"]), rm_tag(cfg, job["pairs"], job["layers"])
        res, curves[name] = best_of_n_result(cfg, out["per_seed"], out["reward_model"])
        results[name] = {"best_of_n": res}
        write_csv(plots_dir(cfg, "overoptimization") / f"best_of_n_rm{tag}.csv", res["curve"])
        if name == "main":
            per_seed = out["per_seed"]
            bon_main = {**{k: [p[k] for p in per_seed] for k in ("gold", "kl")}, "n": per_seed[0]["n"],
                        "kl_bound": per_seed[0]["kl_bound"]}
    c = {k: [r[k] for r in ppo_runs] for k in ("gold", "proxy", "kl")}
    k_points = c["gold"][0].shape[1]
    steps = [*o.ppo_eval_steps, o.ppo_steps]
    assert len(steps) == k_points, (steps, k_points)
    rows = curve_rows(c, steps)
    ppo_res = {"curve": rows, "points": k_points,
               "fit": oo.bootstrap_fit(np.concatenate(c["kl"]), np.concatenate(c["gold"]), "rl", o.n_boot, cfg.seed),
               "falls_while_proxy_rises": overopt_test(c)}
    results[ppo_name]["ppo"] = ppo_res
    write_csv(plots_dir(cfg, "overoptimization") / f"ppo_rm{rm_tag(cfg, ppo_pairs, ppo_layers)}.csv", rows)

    data_names = [rm_name(cfg, p, layers) for p, layers in data_series] + ["main"]
    size_names = [rm_name(cfg, p, layers) for p, layers in size_series]
    for name in dict.fromkeys(["main", ppo_name, *size_names]):
        job = next(j for j in rm_jobs if rm_name(cfg, j["pairs"], j["layers"]) == name)
        claims.append(falls_claim("best_of_n", results[name]["best_of_n"], name, rm_tag(cfg, job["pairs"], job["layers"])))
    claims.append(falls_claim("ppo", ppo_res, ppo_name, rm_tag(cfg, ppo_pairs, ppo_layers)))
    size = None
    if len(size_names) > 1:                   # rm_layers = [the main model's extra_layers]: one size, no comparison
        size, size_claim = size_comparison(cfg, results, curves, size_names)
        claims.append(size_claim)

    over = {"sizes": results, "rm_size": size, "n_max": o.n_max, "bon_prompts": o.prompts, "ppo_kl_coef": o.kl_coef,
            "seeds": seeds, "ppo_rm": ppo_name}
    write_metrics(cfg, "overoptimization", add_conclusions(over, claims))
    bon = {n: results[n]["best_of_n"] for n in results}
    bound = [r["kl_bound"] for r in results["main"]["best_of_n"]["curve"]]
    save_figure(figure([("best-of-n", {n: bon[n] for n in data_names}, "bon", bound),
                        ("PPO (weak KL penalty)", {ppo_name: ppo_res}, "rl")]),
                figures_dir(cfg, "rlhf") / "gold_vs_proxy.png")
    save_figure(figure([(f"best-of-n, reward models on {size_series[0][0]} pairs",
                         {f"{n} ({bon[n]['reward_model']['trained_parameters']:,} trained params)": bon[n]
                          for n in size_names}, "bon")]),
                figures_dir(cfg, "rlhf") / "gold_vs_proxy_rm_size.png")
    policies = {"sft": sft, **{a: rlhf.load_policy(cfg, a, "sft", "reward_model", "ppo")
                               for a in cfg.model.rlhf.ppo.algorithms},
                **{kind: rlhf.load_policy(cfg, f"dpo/{kind}", "sft", "reward_model", "dpo")
                   for kind in cfg.model.rlhf.dpo.losses}}
    write_text(figures_dir(cfg, "rlhf") / "samples.txt", samples_text(cfg, policies))
    write_metrics(cfg, "rlhf", table(cfg, bon_main, seeds))
    for row in claims:
        print(f"[genlab] overoptimization: {row.id}: {row.verdict} (estimate {row.estimate:+.4f}, CI {row.ci95})")
