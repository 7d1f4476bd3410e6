"""Simulate the IsoFLOP design before training it: does it recover E, α, β and a = β/(α+β) with useful intervals?

    python benchmarks/scaling_design.py [--noise 0.012] [--sims 20] [--boot 50] [key=value …]

Takes the default ``model.gpt_scaling`` design (budgets, sizes per budget, seeds per budget; any Hydra
override after the flags), computes every run's N and D exactly as the stage does
(``gpt_scaling.plan``, FLOPs per token from ``evaluate/flops.py``), plants a law
L(N, D) = E + A/N^α + B/D^β, and draws each run's loss with multiplicative log-normal noise of sd
``--noise`` per seed (a run's loss is its seed mean, so its sd is noise/√seeds) — the seed-to-seed sd of
log-loss measured by ``scaling_fit`` (``seed_noise.log_sd``). For each of ``--sims`` draws it fits the
law as ``scaling_fit`` does and takes a ``--boot``-resample percentile CI (90%). Prints the median
estimate, the spread over simulations, the median CI half-width and the CI's coverage of the truth for
E, α, β and a, plus how often "E > 0.1" and "CI of a narrower than ±0.15" would hold.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from genlab.config import validate
from genlab.evaluate.flops import non_embedding_params
from genlab.evaluate.scaling import bootstrap_fits, exponents, fit_chinchilla, percentile_ci, predict
from genlab.stages.gpt_scaling import parse_size, plan

ROOT = Path(__file__).resolve().parents[1]
# a plausible char-level law at this scale: losses 2.0–2.6 nats over the design, compute-optimal a = 0.5
PLANTED = {"E": 1.1, "A": 22.0, "alpha": 0.35, "B": 49.0, "beta": 0.35}


def design(overrides: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, D and seed count ``[R]`` of every (budget, size) run of the configured design."""
    with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
        cfg = validate(compose("config", overrides))
    runs = plan(cfg.model.gpt_scaling, 65, list(cfg.seeds), cfg.seed)
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["size"], r["budget"]), []).append(r)
    bs, t = cfg.model.gpt_scaling.batch_size, cfg.model.gpt_scaling.block_size
    n = np.array([non_embedding_params(*parse_size(s)) for s, _ in groups], float)
    d = np.array([g[0]["steps"] * bs * t for g in groups.values()], float)
    seeds = np.array([len(g) for g in groups.values()], float)
    return n, d, seeds


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--noise", type=float, default=0.012, help="seed sd of log-loss (scaling_fit's seed_noise.log_sd)")
    p.add_argument("--sims", type=int, default=20)
    p.add_argument("--boot", type=int, default=50)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    n, d, seeds = design(args.overrides)
    truth = PLANTED | exponents(PLANTED)
    rng = np.random.default_rng(0)
    est, cis = [], []
    for i in range(args.sims):
        loss = predict(PLANTED, n, d) * np.exp(rng.normal(0, args.noise / np.sqrt(seeds)))
        fit = fit_chinchilla(n, d, loss)
        draws = bootstrap_fits(n, d, loss, fit, args.boot, seed=i)
        est.append(fit | exponents(fit))
        cis.append({k: percentile_ci([f[k] for f in draws], 0.9) for k in ("E", "alpha", "beta", "a")})
    print(f"design: {len(n)} runs, N {n.min():.3g}–{n.max():.3g}, D {d.min():.3g}–{d.max():.3g}; "
          f"seed noise {args.noise:.2%}; {args.sims} simulations × {args.boot} bootstrap refits (90% CIs)")
    print(f"{'':>6} {'truth':>7} {'median':>7} {'sd':>6} {'CI ±':>6} {'covers':>6}")
    for k in ("E", "alpha", "beta", "a"):
        e = np.array([x[k] for x in est])
        half = np.median([(c[k][1] - c[k][0]) / 2 for c in cis])
        cover = np.mean([c[k][0] <= truth[k] <= c[k][1] for c in cis])
        print(f"{k:>6} {truth[k]:7.3f} {np.median(e):7.3f} {e.std():6.3f} {half:6.3f} {cover:6.0%}")
    print(f"E's CI above 0.1: {np.mean([c['E'][0] > 0.1 for c in cis]):.0%} of simulations; "
          f"a's CI narrower than ±0.15: {np.mean([(c['a'][1] - c['a'][0]) / 2 < 0.15 for c in cis]):.0%}")


if __name__ == "__main__":
    main()
