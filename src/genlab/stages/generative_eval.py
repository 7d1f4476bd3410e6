"""Stage `generative_eval`: one table comparing flow matching and diffusion (and the 2D CNF vs FM result).

Reads the sample files of `flow_matching` and `diffusion` (``models/<stage>/samples``: per run
``<key>_x`` [N,28,28] in [0,1], ``<key>_y`` [N]; meta ``runs``, ``main_nfe``, ``best_w``) and scores every
run on the same class-balanced ``n_samples`` images with the same feature extractor — the pipeline's CNN
(``genlab.evaluate.fid``) — against the real MNIST *test* images: FID and class accuracy. Copies the 2D
results from ``reports/metrics/{cnf,flow_matching}.json``. Writes ``reports/metrics/generative.json``
(the issue's table), ``reports/plots/generative/runs.csv`` and ``reports/figures/generative/``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from genlab.data.prepared import load_mnist
from genlab.errors import GenlabError
from genlab.evaluate.fid import SampleScorer, load_cnn
from genlab.io import load_arrays, read_json
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics

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


def score(cfg, scorer: SampleScorer) -> list[dict]:
    """One row per (model, run): sampler, nfe, guidance_w, seconds, fid, accuracy, n."""
    rows = []
    for model in MODELS:
        arrays, meta = load_arrays(require(Path(cfg.paths.models) / model / "samples.npz", model).with_suffix(""))
        for run in meta["runs"]:
            idx = balanced(arrays[f"{run['key']}_y"], cfg.model.generative_eval.n_samples, run["key"])
            s = scorer(arrays[f"{run['key']}_x"][idx], arrays[f"{run['key']}_y"][idx])
            rows.append({"model": model, "key": run["key"], "sampler": run["sampler"], "nfe": run["nfe"],
                         "guidance_w": run["guidance_w"], "seconds": run["seconds"], **s,
                         "main": run["nfe"] == meta["main_nfe"], "best_w": meta["best_w"]})
            print(f"[genlab] generative_eval: {model}/{run['key']}: fid={s['fid']:.3f} accuracy={s['accuracy']:.3f}")
    return rows


def pick(rows: list[dict], model: str, w: float, sampler: str | None = None, main: bool = True) -> dict:
    """The first run of ``model`` at its main NFE (if ``main``) with guidance ``w`` (and ``sampler``)."""
    for r in rows:
        if r["model"] == model and r["guidance_w"] == w and (not main or r["main"]) \
                and (sampler is None or r["sampler"] == sampler) and r["sampler"] != "dopri5":
            return r
    raise GenlabError(f"no {model} sample run with guidance w={w} at its main NFE",
                      f"re-run `genlab {model}` so its samples file matches the current code")


def table(rows: list[dict], cnf: dict, fm: dict) -> dict:
    fm_w0, ddim_w0 = pick(rows, "flow_matching", 0.0), pick(rows, "diffusion", 0.0, "ddim")
    fm_g = pick(rows, "flow_matching", fm_w0["best_w"])
    ddim_g = pick(rows, "diffusion", ddim_w0["best_w"], "ddim")
    ddpm = pick(rows, "diffusion", 0.0, "ddpm", main=False)
    out = {
        "n_samples": fm_w0["n"],
        "flow_matching": {"nfe": fm_w0["nfe"], "sampler": fm_w0["sampler"], "sample_accuracy_w0": fm_w0["accuracy"],
                          "sample_accuracy": fm_g["accuracy"], "guidance_w": fm_g["guidance_w"],
                          "fid_w0": fm_w0["fid"], "fid": fm_g["fid"]},
        "diffusion": {"steps": ddim_w0["nfe"], "sampler": "ddim", "sample_accuracy_w0": ddim_w0["accuracy"],
                      "sample_accuracy": ddim_g["accuracy"], "guidance_w": ddim_g["guidance_w"],
                      "fid_w0": ddim_w0["fid"], "fid": ddim_g["fid"], "ddpm_steps": ddpm["nfe"],
                      "ddpm_fid": ddpm["fid"], "ddpm_sample_accuracy": ddpm["accuracy"]},
        "cnf_toy": cnf["cnf_toy"], "fm_toy": fm["fm_toy"],
        "fm_over_cnf_time_to_nll": fm.get("fm_over_cnf_time_to_nll"),
        "fm_over_cnf_nfe_to_nll": fm.get("fm_over_cnf_nfe_to_nll"),
    }
    if fm_w0["nfe"] == ddim_w0["nfe"]:   # the flow-matching papers' claim, at equal network evaluations
        out["fm_fid_le_diffusion_at_equal_nfe"] = {"w0": fm_w0["fid"] <= ddim_w0["fid"], "guided": fm_g["fid"] <= ddim_g["fid"]}
    return out


def quality_vs_nfe(rows: list[dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for (model, sampler), marker in {("flow_matching", "euler"): "o-", ("flow_matching", "midpoint"): "s-",
                                     ("flow_matching", "dopri5"): "^", ("diffusion", "ddim"): "D",
                                     ("diffusion", "ddpm"): "*"}.items():
        pts = sorted((r["nfe"], r["fid"]) for r in rows if r["model"] == model and r["sampler"] == sampler
                     and r["guidance_w"] == 0)
        if pts:
            ax.plot(*zip(*pts), marker, label=f"{model} {sampler}", markersize=8 if marker == "*" else 5)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel="FID (CNN features)",
           title="sample quality vs NFE (w = 0)")
    ax.legend(fontsize=7)
    return fig


def accuracy_vs_w(rows: list[dict]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for model in MODELS:
        pts = sorted((r["guidance_w"], r["accuracy"]) for r in rows if r["model"] == model and r["main"]
                     and r["sampler"] in ("euler", "midpoint", "ddim"))
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"{model} (main NFE)")
    ax.set(xlabel="guidance w  (ε̃ = (1+w)·ε_c − w·ε_∅)", ylabel="class accuracy of samples",
           title="classifier-free guidance")
    ax.legend(fontsize=7)
    return fig


def run(cfg) -> None:
    reports = Path(cfg.paths.reports) / "metrics"
    cnf = read_json(require(reports / "cnf.json", "cnf"))
    fm = read_json(require(reports / "flow_matching.json", "flow_matching"))
    test_x = load_mnist(cfg)["test_x"].float() / 255
    n = cfg.model.generative_eval.n_samples
    if len(test_x) < n:
        raise GenlabError(f"only {len(test_x)} real test images for n_samples={n}", "raise data.mnist.test_size")
    scorer = SampleScorer(load_cnn(cfg), test_x)
    rows = score(cfg, scorer)
    write_csv(plots_dir(cfg, "generative") / "runs.csv", rows)
    figures = figures_dir(cfg, "generative")
    save_figure(quality_vs_nfe(rows), figures / "fid_vs_nfe.png")
    save_figure(accuracy_vs_w(rows), figures / "accuracy_vs_guidance.png")
    result = table(rows, cnf, fm)
    for model in MODELS:   # guided samples at the shared NFE budget, one row per class
        r = pick(rows, model, result[model]["guidance_w"], "ddim" if model == "diffusion" else None)
        arrays, _ = load_arrays(Path(cfg.paths.models) / model / "samples")
        idx = np.concatenate([np.flatnonzero(arrays[f"{r['key']}_y"] == k)[:10] for k in range(10)])
        save_figure(image_grid(arrays[f"{r['key']}_x"][idx], nrow=10,
                               title=f"{model}: {r['sampler']}, {r['nfe']} NFE, w={r['guidance_w']:g}, "
                                     f"FID {r['fid']:.2f}, acc {r['accuracy']:.3f}"), figures / f"samples_{model}.png")
    write_metrics(cfg, "generative", result)
