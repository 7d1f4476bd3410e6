"""Stage `zoo`: the rest of the generative zoo on one likelihood table — a coupling flow, a VAE, flow matching
and a VP diffusion beside the CNF and closed-form baselines, on the CNF's splits and dequantization.

Models (each over ``seeds``, one run per (part, model, seed) in a pool of single-thread workers):

* **coupling flow** (RealNVP affine couplings, ``genlab.models.coupling_flow``): exact log-likelihood by the
  change of variables; sampling is one inverse pass.
* **VAE** (``genlab.models.vae``): trained on the ELBO; its NLL is the importance-weighted bound with
  ``iw_samples`` samples (Burda et al. 2016) — an upper bound of the true NLL, in expectation.
* **flow matching** (I-CFM, ``genlab.models.flow_matching``) and **VP diffusion** (``genlab.models.score_diffusion``):
  log-likelihood through the (probability-flow) ODE with dopri5 (Chen et al. 2018; Song et al. 2021 §4.3), exact
  trace in 2D, Hutchinson's unbiased estimate in 64-D.

Data: the CNF's toy set (``model.cnf.dataset``; NLL in nats, the generating density's NLL as the floor) and
sklearn's 8×8 digits under the CNF's dequantization and logit transform (``model.cnf.logit_alpha``; bits/dim
of the dequantized pixels, beside the closed-form Gaussian and per-pixel categorical baselines of
``genlab.evaluate.likelihood_baselines``). The CNF's rows are read from ``reports/metrics/cnf.json``.
Hyper-parameters are fixed in config; the validation NLL of every run is reported beside the test NLL, and the
test split is scored once, on the final weights. Writes ``reports/metrics/zoo.json`` (the table and claims),
``reports/plots/zoo/likelihood_table.csv`` and figures: 2D densities, digit samples, VAE reconstructions.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from genlab import runner
from genlab.data import prepared, toy2d
from genlab.data.loader import loader
from genlab.evaluate import ode, stats
from genlab.evaluate.likelihood_baselines import categorical_bpd, gaussian_bpd
from genlab.io import read_json, save_model
from genlab.models.cnf import LogitDequantize
from genlab.models.clock import TrainClock
from genlab.models.coupling_flow import CouplingFlow
from genlab.models.flow_matching import FlowMatching
from genlab.models.matchers import IndependentCFM
from genlab.models.score_diffusion import ScoreDiffusion
from genlab.models.vae import VAE
from genlab.nn.gaussian_mlp import GaussianMLP
from genlab.nn.vector_field import VectorField
from genlab.parallel import run_many
from genlab.precision import DENSITY_PRECISION
from genlab.report.artifacts import (figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics,
                                     write_text)
from genlab.report.conclusions import add_conclusions, claim_from_difference
from genlab.report.flows import density_figure, log_density_on_grid

MODELS = ("coupling", "vae", "flow_matching", "diffusion")
NAMES = {"coupling": "coupling flow", "vae": "VAE (IWAE bound)", "flow_matching": "flow matching (PF)",
         "diffusion": "VP diffusion (PF-ODE)"}
DIGIT_LEVELS, DIGIT_DIMS = 17, 64
BITS = DIGIT_DIMS * math.log(2)       # digits: nats per image → bits per dimension
TRUE_NLL_TOLERANCE = 0.05             # toy claims: within this many nats of the generating density's NLL


def build(cfg, part: str, model: str, dims: int) -> torch.nn.Module:
    """A fresh zoo model; on digits it carries the CNF's logit dequantization, so its log_prob is in pixel space."""
    z, s = cfg.model.zoo, cfg.model.zoo[part][model]
    transform = LogitDequantize(DIGIT_LEVELS, cfg.model.cnf.logit_alpha) if part == "digits" else None
    exact = part == "toy"
    if model == "coupling":
        return CouplingFlow(dims, s.n_layers, s.width, s.depth, s.lr, transform=transform)
    if model == "vae":
        return VAE(GaussianMLP(dims, s.latent_dim, s.width, s.depth), GaussianMLP(s.latent_dim, dims, s.width, s.depth),
                   s.latent_dim, s.lr, iw_samples=z.iw_samples, transform=transform)
    field = VectorField(dims, s.width, s.depth, "silu")
    if model == "flow_matching":
        return FlowMatching(field, IndependentCFM(0.0), s.lr, rtol=z.rtol, atol=z.atol, transform=transform,
                            exact_trace=exact)
    return ScoreDiffusion(field, s.lr, beta_min=z.beta_min, beta_max=z.beta_max, eps=z.diffusion_eps, rtol=z.rtol,
                          atol=z.atol, transform=transform, exact_trace=exact, weighting=z.diffusion_weighting)


def model_config(cfg, part: str, model: str) -> dict:
    """What a zoo run's result depends on (its checkpoint key, and the config saved with its weights)."""
    z = OmegaConf.to_container(cfg.model.zoo, resolve=True)
    shared = {k: v for k, v in z.items() if k not in ("toy", "digits")}
    return {"part": part, "model": model, "dataset": cfg.model.cnf.dataset, "logit_alpha": cfg.model.cnf.logit_alpha,
            **shared, **z[part][model]}


@torch.no_grad()
def log_probs(module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """log p per point ``[N]`` of points ``[N, D]`` (the ODE models enable the gradients their trace needs)."""
    return torch.cat([module.log_prob(xb) for xb in x.split(batch_size)])


def outliers(test: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Digits the model never saw as such ``[N, 64]``: the test digits rotated by 90°, and uniform noise pixels."""
    g = torch.Generator().manual_seed(seed)
    return {"rotated": torch.rot90(test.view(-1, 8, 8), 1, (1, 2)).reshape(-1, DIGIT_DIMS),
            "noise": torch.randint(0, DIGIT_LEVELS, test.shape, generator=g)}


def auroc(log_p_in: np.ndarray, log_p_out: np.ndarray) -> float:
    """Area under the ROC curve of log p as the score of "in-distribution" (1: every test digit is more likely
    than every outlier; 0.5: chance). The anomaly-detection use of a likelihood (Bishop 1994)."""
    labels = np.r_[np.ones(len(log_p_in)), np.zeros(len(log_p_out))]
    return float(roc_auc_score(labels, np.r_[log_p_in, log_p_out]))


def sampling_nfe(module, model: str, dims: int) -> float:
    """Network evaluations to draw a batch: 1 for the coupling flow (its inverse) and the VAE (its decoder);
    dopri5's count at the likelihood tolerances for the ODE models."""
    if model in ("coupling", "vae"):
        return 1.0
    net = module.net
    with ode.NFE(net) as nfe:
        draw(module, model, 64, dims)
    return float(nfe.n)


def draw(module, model: str, n: int, dims: int) -> torch.Tensor:
    """``n`` samples ``[n, dims]`` in the model's space (the logit space on digits)."""
    with torch.no_grad():
        if model == "flow_matching":
            return module.sample(n, (dims,), sampler="dopri5")[-1]
        if model == "diffusion":
            return module.sample(n, dims, sampler="dopri5")[-1]
        if model == "vae":
            return module.sample(n, mean=True)   # decoder means: pictures without the pixel-wise noise
        return module.sample(n)


def replicate(cfg, part: str, model: str, seed: int, data: dict[str, torch.Tensor], keep: bool = False) -> dict:
    """Train one (part, model, seed); its validation and test NLL (nats per point), costs, and, with ``keep``,
    its weights and samples for the figures."""
    cfg = cfg.copy()
    cfg.seed = seed
    runner.seed_all(cfg)
    s, dims = cfg.model.zoo[part][model], data["train"].shape[1]
    module = build(cfg, part, model, dims)
    clock = TrainClock("val/nll")
    run_config = model_config(cfg, part, model)
    with runner.session(cfg, stage="zoo", run=f"{part}_{model}-seed{seed}", run_config=run_config,
                        max_steps=s.steps, callbacks=[clock], inference_mode=False,
                        precision=DENSITY_PRECISION) as trainer:
        runner.fit(trainer, module, loader(data["train"], batch_size=s.batch_size, seed=seed,
                                           batches_per_epoch=s.steps),
                   loader(data["val"], batch_size=len(data["val"]), train=False))
        if not clock.history or clock.history[-1]["step"] != s.steps:   # validate the final weights
            trainer.validate(module, loader(data["val"], batch_size=len(data["val"]), train=False), verbose=False)
    module.eval()
    torch.manual_seed(seed + 10_000)     # test-time dequantization / Hutchinson / IWAE noise: a seed nothing chose
    start = time.process_time()
    log_p = log_probs(module, data["test"])
    test_nll = float(-log_p.mean())
    ood = {f"auroc_{k}": auroc(log_p.numpy(), log_probs(module, x).numpy())
           for k, x in outliers(data["test"], seed).items()} if part == "digits" else {}
    result = {"test_nll": test_nll, **ood, "val_nll": clock.history[-1]["val/nll"], "train_seconds": clock.seconds,
              "train_cpu_seconds": clock.cpu_seconds, "eval_cpu_seconds": time.process_time() - start,
              "sampling_nfe": sampling_nfe(module, model, dims), "steps": s.steps,
              "parameters": sum(p.numel() for p in module.parameters())}
    if keep:
        torch.manual_seed(seed)
        result |= {"state_dict": module.state_dict(), "samples": draw(module, model, 40, dims)}
        if part == "toy":
            result["grid_log_prob"] = log_density_on_grid(module.log_prob, 60)
        if model == "vae" and part == "digits":
            z, _ = module.transform(data["test"][:20], module.dtype)
            result["reconstructions"] = module.reconstruct(z).detach()
    return result


def part_data(cfg, part: str) -> dict[str, torch.Tensor]:
    """{train, val, test} points: toy ``[N, 2]`` float32, digits ``[N, 64]`` integer pixels 0..16 (test cut to
    ``n_test`` when set)."""
    if part == "toy":
        arrays, _ = prepared.load(cfg, "toy2d")
        data = {k: v.x for k, v in toy2d.splits(arrays, cfg.model.cnf.dataset).items()}
    else:
        arrays, _ = prepared.load(cfg, "digits")
        data = {s: torch.from_numpy(arrays[f"{s}_x"].astype(np.int64)) for s in ("train", "val", "test")}
    n = cfg.model.zoo.n_test
    return data | ({"test": data["test"][:n]} if n else {})


def summary(runs: list[dict], scale: float) -> dict:
    """A model's per-seed results: NLLs (divided by ``scale``) and costs, each as mean with sd and 95% CI."""
    out = {"n_seeds": len(runs), "parameters": runs[0]["parameters"], "steps": runs[0]["steps"]}
    keys = ("test_nll", "val_nll", "train_seconds", "train_cpu_seconds", "eval_cpu_seconds", "sampling_nfe",
            *(k for k in runs[0] if k.startswith("auroc_")))
    for key in keys:
        s = stats.summarize([r[key] / (scale if "nll" in key else 1.0) for r in runs])
        out |= {key: s["mean"], f"{key}_sd": s["sd"], f"{key}_ci95": s["ci"]}
    return out


def row(name: str, values: list[float] | None, scale: float, kind: str, **extra) -> dict:
    """One line of the likelihood table: mean ± 95% CI of per-seed NLLs (divided by ``scale``)."""
    s = stats.summarize([v / scale for v in values]) if values else None
    return {"model": name, "nll": s["mean"] if s else extra.pop("nll"), "nll_ci95": s["ci"] if s else None,
            "n_seeds": s["n"] if s else 0, "estimate": kind, **extra}


def table(part: str, runs: dict[str, list[dict]], cnf: dict, references: dict[str, float],
          reference_auroc: dict[str, dict]) -> list[dict]:
    """The part's likelihood table: zoo models (over seeds), the CNF (from its stage), closed-form references;
    on digits with the AUROC of each model's log p against rotated digits and noise."""
    scale = BITS if part == "digits" else 1.0
    kinds = {"coupling": "exact", "vae": "IWAE bound", "flow_matching": "exact" if part == "toy" else "Hutchinson",
             "diffusion": "exact, p at τ = eps" if part == "toy" else "Hutchinson, p at τ = eps"}
    rows = [row(NAMES[m], [r["test_nll"] for r in runs[m]], scale, kinds[m],
                val_nll=float(np.mean([r["val_nll"] for r in runs[m]])) / scale,
                train_cpu_seconds=float(np.mean([r["train_cpu_seconds"] for r in runs[m]])),
                sampling_nfe=float(np.mean([r["sampling_nfe"] for r in runs[m]])),
                parameters=runs[m][0]["parameters"],
                **{k: float(np.mean([r[k] for r in runs[m]])) for k in runs[m][0] if k.startswith("auroc_")})
            for m in MODELS]
    key = "test_bpd" if part == "digits" else "test_nll"
    rows.append({"model": "CNF (stage cnf)", "nll": cnf[key], "nll_ci95": cnf[f"{key}_ci95"], "n_seeds": cnf["n_seeds"],
                 "estimate": "Hutchinson" if part == "digits" else "exact",
                 "val_nll": cnf[key.replace("test", "val")], "train_cpu_seconds": cnf["train_cpu_seconds"],
                 "sampling_nfe": cnf["nfe"], "parameters": cnf["parameters"]})
    rows += [{"model": name, "nll": v, "nll_ci95": None, "n_seeds": 0, "estimate": "closed form",
              **reference_auroc.get(name, {})} for name, v in references.items()]
    return rows


def claims(part: str, runs: dict[str, list[dict]], references: dict[str, float]) -> list:
    scale = BITS if part == "digits" else 1.0
    unit = "bits/dim" if part == "digits" else "nats"
    nll = {m: [r["test_nll"] / scale for r in runs[m]] for m in MODELS}
    rows = [claim_from_difference(
        f"zoo_{part}_fm_vs_diffusion_nll", "zoo", f"On {'8×8 digits' if part == 'digits' else 'the 2D toy'}, flow "
        "matching assigns the test data a higher likelihood than VP diffusion (both through their ODE).",
        stats.paired_difference(nll["diffusion"], nll["flow_matching"]),
        statistic=f"NLL(diffusion) − NLL(flow matching), test, {unit}, paired by seed")]
    if part == "digits":
        for m in MODELS:
            rows.append(claim_from_difference(
                f"zoo_digits_{m}_likelihood_detects_rotated_digits", "zoo", f"The {NAMES[m]}'s likelihood ranks "
                "held-out digits above the same digits rotated by 90° (AUROC > 0.5).",
                stats.summarize([r["auroc_rotated"] for r in runs[m]]), statistic="AUROC of log p, test digits "
                "vs rotated test digits, over training seeds", null=0.5, baseline="chance 0.5"))
        best = min(references, key=references.get)
        for m in MODELS:
            rows.append(claim_from_difference(
                f"zoo_digits_{m}_beats_best_baseline", "zoo", f"The {NAMES[m]} has a lower test bits/dim on 8×8 "
                f"digits than the best closed-form baseline ({best}).",
                stats.summarize([references[best] - v for v in nll[m]]),
                statistic=f"bpd({best}) − bpd({m}), test, over training seeds", baseline=f"{best} "
                f"{references[best]:.4f} bits/dim"))
    elif "true density" in references:
        truth = references["true density"]
        for m in MODELS:
            rows.append(claim_from_difference(
                f"zoo_toy_{m}_within_{TRUE_NLL_TOLERANCE}_of_true_nll", "zoo",
                f"The {NAMES[m]}'s toy test NLL is within {TRUE_NLL_TOLERANCE} nats of the generating density's.",
                stats.summarize([v - truth for v in nll[m]]), statistic=f"NLL({m}) − NLL(true density), test, nats",
                direction="within", tolerance=TRUE_NLL_TOLERANCE, baseline=f"true test NLL {truth:.4f}"))
    return rows


def table_text(tables: dict[str, list[dict]]) -> str:
    """The likelihood tables as aligned text (the report shows ``figures/zoo/*.txt`` as they are)."""
    lines = []
    for part, rows in tables.items():
        unit = "bits/dim" if part == "digits" else "nats"
        lines += [f"{part}: test NLL in {unit} (mean over seeds [95% CI]); lower is better"
                  + ("; AUROC of log p, test digits against the same digits rotated 90° and uniform noise" if part ==
                     "digits" else ""), "",
                  f"{'model':<26} {'test NLL':>8} {'95% CI':>19} {'seeds':>5} {'val NLL':>8} {'train CPU s':>11} "
                  f"{'sample NFE':>10} {'AUROC rot':>9} {'AUROC noise':>11}  estimate"]
        for r in rows:
            ci = f"[{r['nll_ci95'][0]:.3f}, {r['nll_ci95'][1]:.3f}]" if r["nll_ci95"] else ""
            val = f"{r['val_nll']:.3f}" if r.get("val_nll") is not None else ""
            cost = f"{r['train_cpu_seconds']:.0f}" if r.get("train_cpu_seconds") is not None else ""
            nfe = f"{r['sampling_nfe']:.0f}" if r.get("sampling_nfe") is not None else ""
            rot, noise = (f"{r[k]:.3f}" if r.get(k) is not None else "" for k in ("auroc_rotated", "auroc_noise"))
            lines.append(f"{r['model']:<26} {r['nll']:>8.3f} {ci:>19} {r['n_seeds']:>5} {val:>8} {cost:>11} "
                         f"{nfe:>10} {rot:>9} {noise:>11}  {r['estimate']}")
        lines.append("")
    return "\n".join(lines)


def figures(cfg, part: str, kept: dict[str, dict], data: dict[str, torch.Tensor]) -> None:
    out = figures_dir(cfg, "zoo")
    if part == "toy":
        save_figure(density_figure(data["test"].numpy(), {NAMES[m]: kept[m]["grid_log_prob"] for m in MODELS}, 60),
                    out / "toy_densities.png")
        return
    logit = LogitDequantize(DIGIT_LEVELS, cfg.model.cnf.logit_alpha)
    images = torch.cat([logit.inverse(kept[m]["samples"][:10]) for m in MODELS]).reshape(-1, 8, 8).numpy()
    save_figure(image_grid(images, nrow=4, title="digits samples: " + " / ".join(NAMES[m] for m in MODELS)),
                out / "digits_samples.png")
    recon = logit.inverse(kept["vae"]["reconstructions"])
    pairs = torch.cat([(data["test"][:20].float() / (DIGIT_LEVELS - 1)), recon]).reshape(-1, 8, 8).numpy()
    save_figure(image_grid(pairs, nrow=4, title="VAE: test digits (rows 1–2) and reconstructions (rows 3–4)"),
                out / "vae_reconstructions.png")


def references(cfg, part: str, data: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict[str, dict]]:
    """Closed-form comparators on the test points scored: the true NLL (toy, when known); a full-covariance
    Gaussian fitted on train; for digits the per-pixel categorical and uniform. Returns (NLL by name, and for the
    fitted digits baselines the AUROC of their per-image log p (−bits/dim) against ``outliers``)."""
    if part == "toy":
        x, train = data["test"].numpy().astype(np.float64), data["train"].numpy().astype(np.float64)
        gauss = torch.distributions.MultivariateNormal(torch.from_numpy(train.mean(0)),
                                                       torch.from_numpy(np.cov(train.T, bias=True)))
        out = {"Gaussian (fit on train)": float(-gauss.log_prob(torch.from_numpy(x)).mean())}
        truth = toy2d.true_nll(cfg.model.cnf.dataset, x, cfg.data.toy2d.noise)
        return out | ({"true density": truth} if truth is not None else {}), {}
    train_k = data["train"].numpy()
    sets = {"test": data["test"].numpy(), **{k: x.numpy() for k, x in outliers(data["test"], cfg.seed).items()}}
    bpd = {"Gaussian (logit space)": lambda k: gaussian_bpd(train_k, k, DIGIT_LEVELS, cfg.model.cnf.logit_alpha,
                                                           cfg.seed),
           "per-pixel categorical": lambda k: categorical_bpd(train_k, k, DIGIT_LEVELS)}
    per_image = {name: {k: f(x) for k, x in sets.items()} for name, f in bpd.items()}   # bits/dim per image
    nll = {name: float(b["test"].mean()) for name, b in per_image.items()} | {"uniform": math.log2(DIGIT_LEVELS)}
    return nll, {name: {f"auroc_{k}": auroc(-b["test"], -b[k]) for k in sets if k != "test"}
                 for name, b in per_image.items()}


def run(cfg) -> None:
    seeds, parts = list(cfg.seeds), ("digits", "toy")
    cnf = read_json(Path(cfg.paths.reports) / "metrics" / "cnf.json")   # before training: fail fast without it
    data = {p: part_data(cfg, p) for p in parts}
    # digits first and the ODE models first: the longest jobs start first, so the pool's two queues end together
    order = ("diffusion", "flow_matching", "coupling", "vae")
    jobs = [{"cfg": cfg, "part": p, "model": m, "seed": s, "data": data[p], "keep": s == cfg.seed}
            for p in parts for m in order for s in seeds]
    results = run_many(replicate, jobs, desc="zoo runs")
    metrics, rows_out, claim_rows = {"seeds": seeds, "dataset": cfg.model.cnf.dataset}, [], []
    models = Path(cfg.paths.models) / "zoo"
    for p in parts:
        runs = {m: [r for j, r in zip(jobs, results) if j["part"] == p and j["model"] == m] for m in MODELS}
        kept = {j["model"]: r for j, r in zip(jobs, results) if j["part"] == p and j["keep"]}
        for m in MODELS:
            save_model(models / f"{p}_{m}.pt", kept[m].pop("state_dict"), model_config(cfg, p, m))
        refs, ref_auroc = references(cfg, p, data[p])
        part_table = table(p, runs, cnf["digits" if p == "digits" else "cnf_toy"], refs, ref_auroc)
        figures(cfg, p, kept, data[p])
        unit = "bits/dim" if p == "digits" else "nats"
        scale = BITS if p == "digits" else 1.0
        metrics[p] = {"unit": unit, "table": part_table, "n_test": len(data[p]["test"]),
                      "models": {m: summary(runs[m], scale) for m in MODELS},
                      "per_seed": {m: {k: [r[k] / (scale if "nll" in k else 1.0) for r in runs[m]]
                                       for k in ("test_nll", "val_nll", "train_seconds")} for m in MODELS}}
        rows_out += [{"part": p, "unit": unit, **{k: v for k, v in r.items() if k != "nll_ci95"},
                      "ci_low": r["nll_ci95"][0] if r["nll_ci95"] else None,
                      "ci_high": r["nll_ci95"][1] if r["nll_ci95"] else None} for r in part_table]
        claim_rows += claims(p, runs, refs)
    write_csv(plots_dir(cfg, "zoo") / "likelihood_table.csv", rows_out)
    text = table_text({p: metrics[p]["table"] for p in parts})
    write_text(figures_dir(cfg, "zoo") / "likelihood_table.txt", text)
    print("[genlab] zoo: likelihood tables (reports/figures/zoo/likelihood_table.txt)\n" + text)
    write_metrics(cfg, "zoo", add_conclusions(metrics, claim_rows))
