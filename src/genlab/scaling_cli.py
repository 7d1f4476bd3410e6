"""`genlab fit-scaling`: fit L(N, D) = E + A/N^α + B/D^β to anyone's runs, with bootstrap CIs.

    python -m genlab.scaling_cli runs.csv --n params --d tokens --loss val_loss --bootstrap 200
    python -m genlab.scaling_cli runs.csv --n N --c flops --loss loss --drop-highest 3

Reads a CSV with one row per run: a parameter-count column and either a tokens column (``--d``) or
a compute column (``--c``; then D = C / 6N, Kaplan's C ≈ 6ND). Fits with the pipeline's fitter
(``genlab.evaluate.scaling.fit_chinchilla``: Huber on log-loss, L-BFGS-B from a grid of starts),
prints E, A, α, B, β and the compute-optimal exponents a = β/(α+β), b = α/(α+β) with percentile-bootstrap
CIs (runs resampled), and writes ``<csv stem>.fit.json`` and ``<csv stem>.fit.png`` beside the CSV
(or to ``--out``). ``--drop-highest K`` holds out the K runs of largest compute: the law fitted on the
rest predicts them, and their relative errors are printed — the test a scaling law is used for.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from genlab.errors import GenlabError
from genlab.evaluate.scaling import (NAMES, bootstrap_fits, exponents, fit_chinchilla, percentile_ci, predict,
                                     read_table)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genlab fit-scaling", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", type=Path, help="one row per run")
    p.add_argument("--n", default="N", help="column of parameter counts (default: N)")
    p.add_argument("--d", default=None, help="column of training tokens (default: D, unless --c is given)")
    p.add_argument("--c", default=None, help="column of training FLOPs; D = C / 6N when --d is not given")
    p.add_argument("--loss", default="loss", help="column of final losses (default: loss)")
    p.add_argument("--drop-highest", type=int, default=0, metavar="K",
                   help="hold out the K largest-compute runs and predict them from the rest")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B", help="bootstrap refits (0: none)")
    p.add_argument("--ci", type=float, default=0.9, help="confidence level of the intervals (default: 0.9)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber δ on log-loss residuals (default: 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--out", type=Path, default=None, help="output prefix (default: the CSV path without .csv)")
    return p


def figure(n, d, loss, fit, held):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fit, ax_res) = plt.subplots(1, 2, figsize=(10, 4))
    pred = predict(fit, n, d)
    lim = [min(loss.min(), pred.min()) * 0.97, max(loss.max(), pred.max()) * 1.03]
    ax_fit.plot(lim, lim, "k-", lw=0.8)
    ax_fit.scatter(loss[~held], pred[~held], s=14, label="fitted runs")
    if held.any():
        ax_fit.scatter(loss[held], pred[held], marker="*", s=90, color="C3", label="held out (predicted)")
    ax_fit.set(xlabel="measured loss", ylabel="L(N, D)", xlim=lim, ylim=lim, title="predicted vs measured")
    ax_fit.legend(fontsize=8)
    sc = ax_res.scatter(n * d, np.log(loss / pred), c=np.log10(n), s=14, cmap="viridis")
    ax_res.axhline(0, color="k", lw=0.8)
    ax_res.set(xscale="log", xlabel="N·D", ylabel="log(measured / fitted)", title="residuals")
    fig.colorbar(sc, ax=ax_res, label="log10 N")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """Run the fitter on ``argv`` (without the program name); print the fit, write JSON and PNG; return 0."""
    args = parser().parse_args(argv)
    if args.drop_highest < 0 or args.bootstrap < 0 or not 0 < args.ci < 1:
        raise GenlabError("--drop-highest and --bootstrap must be ≥ 0 and --ci in (0, 1)", "e.g. --ci 0.9")
    t = read_table(args.csv, n=args.n, d=args.d or (None if args.c else "D"), loss=args.loss, c=args.c)
    n, d, loss, c = t["N"], t["D"], t["loss"], t["C"]
    held = np.zeros(len(n), bool)
    if args.drop_highest:
        held[np.argsort(c)[len(c) - args.drop_highest:]] = True
    if (~held).sum() < 6:
        raise GenlabError(f"{(~held).sum()} runs to fit 5 parameters", "give at least 6 runs (after --drop-highest)")
    fit = fit_chinchilla(n[~held], d[~held], loss[~held], args.delta)
    out = {"n_runs": int(len(n)), "n_fitted": int((~held).sum()), "fit": {k: fit[k] for k in NAMES} | exponents(fit),
           "rms_log_residual": float(np.sqrt(np.mean(np.log(loss[~held] / predict(fit, n[~held], d[~held])) ** 2)))}
    if args.bootstrap:
        draws = bootstrap_fits(n[~held], d[~held], loss[~held], fit, args.bootstrap, args.delta, seed=args.seed)
        out["ci"] = {k: percentile_ci([f[k] for f in draws], args.ci) for k in (*NAMES, "a", "b")}
        out["ci_level"], out["n_boot"] = args.ci, args.bootstrap
    if held.any():
        pred = predict(fit, n[held], d[held])
        out["held_out"] = [{"N": float(a), "D": float(b), "loss": float(l), "predicted": float(p),
                            "rel_error": float(p / l - 1)} for a, b, l, p in zip(n[held], d[held], loss[held], pred)]

    print(f"L(N, D) = E + A/N^α + B/D^β fitted to {out['n_fitted']} runs of {args.csv} "
          f"(RMS log-residual {out['rms_log_residual']:.4f})")
    for k in (*NAMES, "a", "b"):
        ci = out.get("ci", {}).get(k)
        print(f"  {k:>5} = {out['fit'][k]:.4g}" + (f"   {args.ci:.0%} CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
    print("  N_opt ∝ C^a, D_opt ∝ C^b (Chinchilla: a ≈ 0.5; Kaplan: a ≈ 0.73)")
    for h in out.get("held_out", []):
        print(f"  held out N={h['N']:.4g} D={h['D']:.4g}: measured {h['loss']:.4f}, predicted {h['predicted']:.4f} "
              f"({h['rel_error']:+.2%})")
    prefix = args.out or args.csv.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = Path(f"{prefix}.fit.json"), Path(f"{prefix}.fit.png")
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    figure(n, d, loss, fit, held).savefig(png_path, dpi=120)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except GenlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
