"""Stage `generative_eval`: one table comparing flow matching and diffusion on the test images, with intervals
and the real-vs-real noise floor (and the 2D CNF vs FM result).

Reads the sample files of `flow_matching` and `diffusion` (``models/<stage>/samples``: per run ``<key>_x``
[N,28,28] in [0,1], ``<key>_y`` [N]; meta ``runs`` — fresh test samples drawn after every choice — ``main_steps``,
``best_w``, and the validation ``selection`` curve the choices were made on). Every run is scored on the same
class-balanced ``n_samples`` images in the feature space of the pipeline's CNN (``genlab.evaluate.fid``)
against the real MNIST *test* images: FID with a bootstrap 95% interval over its samples, and class accuracy.
Floor: the FID of ``n_samples`` real *training* images against the same test images, over random subsets.

Claims (``report.conclusions``): flow matching's FID is lower than diffusion's at 10 network evaluations with
the deterministic samplers (Euler vs DDIM η = 0, w = 0), and at each model's validation-selected sampler and w.
Both rest on one training seed per model: the interval is sampling noise within that model.

Writes ``reports/metrics/generative.json``, ``reports/plots/generative/{runs,guidance}.csv`` and
``reports/figures/generative/``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from genlab.data.prepared import load_mnist
from genlab.errors import GenlabError
from genlab.evaluate.fid import Reference, features, fid_ci, fid_difference_ci, load_cnn, real_vs_real
from genlab.io import load_arrays, read_json
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import add_conclusions, claim_from_difference

MODELS = ("flow_matching", "diffusion")


def require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise GenlabError(f"generative_eval needs {path}, which the `{stage}` stage writes",
                          f"run `genlab {stage}` (or `dvc repro {stage}`) first")
    return path


def balanced(y: np.ndarray, n: int, key: str) -> np.ndarray:
    """Indices of the first n/10 samples of each class (so every run is scored on the same class mix)."""
    per = n // 10
    idx = [np.flatnonzero(y == k)[:per] for k in range(10)]
    if min(map(len, idx)) < per:
        raise GenlabError(f"sample run {key} has fewer than {per} samples of some class",
                          f"lower model.generative_eval.n_samples (now {n}) or sample more")
    return np.concatenate(idx)


@torch.no_grad()
def score(cfg, cnn, real: Reference) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One row per (model, test run): sampler, steps, nfe, guidance_w, eta, seconds, fid, accuracy, n; and the
    features of every run (for intervals)."""
    rows, feats = [], {}
    n = cfg.model.generative_eval.n_samples
    for model in MODELS:
        arrays, meta = load_arrays(require(Path(cfg.paths.models) / model / "samples.npz", model).with_suffix(""))
        for run in meta["runs"]:
            idx = balanced(arrays[f"{run['key']}_y"], n, run["key"])
            x, y = arrays[f"{run['key']}_x"][idx], arrays[f"{run['key']}_y"][idx]
            f = features(cnn, x)
            logits = cnn.head(torch.from_numpy(f).float())
            accuracy = float((logits.argmax(-1).numpy() == y).mean())   # device: cpu-only (features are numpy)
            name = f"{model}/{run['key']}"
            feats[name] = f
            s = fid_ci(f, real, cfg.model.generative_eval.n_boot, cfg.seed)
            rows.append({"model": model, "key": run["key"], "sampler": run["sampler"], "steps": run["steps"],
                         "nfe": run["nfe"], "guidance_w": run["guidance_w"], "eta": run.get("eta"),
                         "seconds": run["seconds"], "fid": s["estimate"], "fid_ci95": s["ci"], "accuracy": accuracy,
                         "n": len(idx), "main": run["steps"] == meta["main_steps"], "best_w": meta["best_w"],
                         "chosen_eta": meta.get("eta")})
            print(f"[genlab] generative_eval: {name}: fid={s['estimate']:.2f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}] "
                  f"accuracy={accuracy:.3f} ({run['nfe']} NFE)")
    return rows, feats


def pick(rows: list[dict], model: str, w: float, sampler: str | None = None, eta: float | None = None,
         main: bool = True) -> dict:
    """The run of ``model`` with guidance ``w`` (at its main steps if ``main``; of ``sampler``, with DDIM ``eta``)."""
    for r in rows:
        if r["model"] == model and r["guidance_w"] == w and (not main or r["main"]) \
                and (sampler is None or r["sampler"] == sampler) and (eta is None or r["eta"] == eta):
            return r
    raise GenlabError(f"no {model} test run with guidance w={w}, sampler={sampler}, η={eta}",
                      f"re-run `genlab {model}` so its samples file matches the current code")


def summary(r: dict) -> dict:
    return {"key": r["key"], "sampler": r["sampler"], "steps": r["steps"], "nfe": r["nfe"], "eta": r["eta"],
            "guidance_w": r["guidance_w"], "fid": r["fid"], "fid_ci95": r["fid_ci95"], "sample_accuracy": r["accuracy"]}


def table(rows: list[dict], floor: dict, cnf: dict, fm: dict) -> dict:
    fm_w0, fm_g = pick(rows, "flow_matching", 0.0), pick(rows, "flow_matching", rows[0]["best_w"])
    d = next(r for r in rows if r["model"] == "diffusion")
    ddim_det = pick(rows, "diffusion", 0.0, "ddim", 0.0)
    ddim_w0, ddim_g = pick(rows, "diffusion", 0.0, "ddim", d["chosen_eta"]), \
        pick(rows, "diffusion", d["best_w"], "ddim", d["chosen_eta"])
    ddpm = [r for r in rows if r["model"] == "diffusion" and r["sampler"] == "ddpm"]
    return {
        "n_samples": fm_w0["n"], "real_vs_real_fid": floor,
        "flow_matching": summary(fm_g) | {"fid_w0": fm_w0["fid"], "fid_w0_ci95": fm_w0["fid_ci95"],
                                          "sample_accuracy_w0": fm_w0["accuracy"], "training_seeds": 1},
        "diffusion": summary(ddim_g) | {"fid_w0": ddim_w0["fid"], "fid_w0_ci95": ddim_w0["fid_ci95"],
                                        "sample_accuracy_w0": ddim_w0["accuracy"], "chosen_eta": d["chosen_eta"],
                                        "deterministic": summary(ddim_det), "training_seeds": 1,
                                        **({"ddpm": summary(ddpm[0])} if ddpm else {})},
        "cnf_toy": {k: v for k, v in cnf["cnf_toy"].items() if k != "per_seed"},
        "fm_toy": {k: v for k, v in fm["fm_toy"].items() if k != "time_to_true_nll"},
        "fm_over_cnf_time_to_nll": fm.get("fm_over_cnf_time_to_nll"),
        "fm_over_cnf_nfe_to_nll": fm.get("fm_over_cnf_nfe_to_nll"),
    }


def claims(cfg, rows: list[dict], feats: dict, real: Reference, floor: dict) -> list:
    base = f"real-vs-real FID {floor['mean']:.2f} [{floor['ci95'][0]:.2f}, {floor['ci95'][1]:.2f}] at N={floor['n']}"
    out = []
    fm_w0, det = pick(rows, "flow_matching", 0.0), pick(rows, "diffusion", 0.0, "ddim", 0.0)
    fm_g = pick(rows, "flow_matching", fm_w0["best_w"])
    d = next(r for r in rows if r["model"] == "diffusion")
    dg = pick(rows, "diffusion", d["best_w"], "ddim", d["chosen_eta"])
    pairs = [("fm_beats_diffusion_fid_10nfe", det, fm_w0,
              f"Flow matching (Euler) has a lower test FID than diffusion (DDIM η = 0) at {fm_w0['nfe']} network "
              "evaluations, unguided, both deterministic."),
             ("fm_beats_diffusion_fid_selected", dg, fm_g,
              f"Flow matching has a lower test FID than diffusion, each at its validation-selected sampler and w "
              f"(FM w={fm_g['guidance_w']:g}, {fm_g['nfe']} NFE; diffusion η={dg['eta']:g} w={dg['guidance_w']:g}, "
              f"{dg['nfe']} NFE).")]
    for id_, a, b, text in pairs:
        if a["nfe"] != b["nfe"] and id_.endswith("10nfe"):
            continue
        res = fid_difference_ci(feats[f"{a['model']}/{a['key']}"], feats[f"{b['model']}/{b['key']}"], real,
                                cfg.model.generative_eval.n_boot, cfg.seed)
        out.append(claim_from_difference(
            id_, "generative_eval", text, res, statistic=f"FID({a['key']}) − FID(FM {b['key']}), test",
            baseline=base, noise_floor=f"real-vs-real FID sd over subsets {floor['sd']:.2f}", n_seeds=1))
    return out


def quality_vs_nfe(rows: list[dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for model in MODELS:
        for sampler, eta in sorted({(r["sampler"], r["eta"]) for r in rows if r["model"] == model}, key=str):
            pts = sorted((r["nfe"], r["fid"]) for r in rows if r["model"] == model and r["sampler"] == sampler
                         and r["eta"] == eta and r["guidance_w"] == 0)
            if pts:
                label = f"{model} {sampler}" + ("" if eta is None else f" η={eta:g}")
                ax.plot(*zip(*pts), "*" if sampler == "ddpm" else "o-", label=label)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel="test FID (CNN features)",
           title="sample quality vs NFE (w = 0)")
    ax.legend(fontsize=7)
    return fig


def guidance_curve(curves: list[dict]) -> plt.Figure:
    """Validation FID against validation class accuracy over the guidance grid, one line per model."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for model in MODELS:
        pts = [r for r in curves if r["model"] == model]
        ax.plot([r["val_accuracy"] for r in pts], [r["val_fid"] for r in pts], "o-", label=model)
        for r in pts:
            ax.annotate(f"w={r['guidance_w']:g}", (r["val_accuracy"], r["val_fid"]), fontsize=6)
    ax.set(xlabel="class accuracy of samples (validation)", ylabel="FID vs validation images",
           title="guidance grid: FID–accuracy (ṽ = (1+w)·v_c − w·v_∅)")
    ax.legend(fontsize=7)
    return fig


def run(cfg) -> None:
    reports = Path(cfg.paths.reports) / "metrics"
    cnf = read_json(require(reports / "cnf.json", "cnf"))
    fm = read_json(require(reports / "flow_matching.json", "flow_matching"))
    data = load_mnist(cfg)
    n = cfg.model.generative_eval.n_samples
    if len(data["test_x"]) < n:
        raise GenlabError(f"only {len(data['test_x'])} real test images for n_samples={n}", "raise data.mnist.test_size")
    cnn = load_cnn(cfg)
    real = Reference(features(cnn, data["test_x"].float() / 255))            # reference statistics, computed once
    floor = real_vs_real(features(cnn, data["train_x"].float() / 255), real, n, cfg.model.generative_eval.n_floor,
                         cfg.seed)
    print(f"[genlab] generative_eval: real-vs-real FID at N={n}: {floor['mean']:.2f} {floor['ci95']}")
    rows, feats = score(cfg, cnn, real)
    write_csv(plots_dir(cfg, "generative") / "runs.csv", [{k: v for k, v in r.items() if k != "fid_ci95"} for r in rows])
    curves = []
    for model in MODELS:
        _, meta = load_arrays(Path(cfg.paths.models) / model / "samples")
        curves += [{"model": model, **{k: r[k] for k in ("guidance_w", "nfe", "val_fid", "val_accuracy")}}
                   for r in meta["selection"]]
    write_csv(plots_dir(cfg, "generative") / "guidance.csv", curves)
    figures = figures_dir(cfg, "generative")
    save_figure(quality_vs_nfe(rows), figures / "fid_vs_nfe.png")
    save_figure(guidance_curve(curves), figures / "fid_vs_accuracy_guidance.png")
    result = table(rows, floor, cnf, fm) | {"guidance_curves_val": curves}
    for model in MODELS:   # the selected configuration's test samples, one row per class
        r = result[model]
        arrays, _ = load_arrays(Path(cfg.paths.models) / model / "samples")
        idx = np.concatenate([np.flatnonzero(arrays[f"{r['key']}_y"] == k)[:10] for k in range(10)])
        save_figure(image_grid(arrays[f"{r['key']}_x"][idx], nrow=10,
                               title=f"{model}: {r['key']}, {r['nfe']} NFE, FID {r['fid']:.2f}, "
                                     f"acc {r['sample_accuracy']:.3f}"), figures / f"samples_{model}.png")
    write_metrics(cfg, "generative", add_conclusions(result, claims(cfg, rows, feats, real, floor)))
