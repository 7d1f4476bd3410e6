"""Stage `generalization`: what has the classifier learned? Random labels, adversarial examples, calibration.

1. Random labels (Zhang et al. 2017): the same one-cycle MLP recipe, wide (784-512-512-10) and
   without augmentation, on a fixed training subset whose labels are randomized with fraction f,
   and on true labels with shuffled / random pixels. Each run stops once it fits (accuracy on its
   own training labels ≥ ``fit_accuracy``); we record train/test accuracy and steps to fit.
2. Adversarial examples against ``models/classifier/{mlp,cnn}.pt``: accuracy vs ε for FGSM and
   PGD on ``n_examples`` test images; a grid of original / perturbed / difference images; the
   same curves for the MLP recipe trained adversarially (FGSM at ``train_eps``).
3. Calibration and uncertainty: test ECE and reliability diagrams before/after temperature scaling
   (T fitted by NLL on held-out images, with a paired-bootstrap 95% interval of the ECE change).
   The headline model is Guo et al.'s overconfident case, ``mlp_overfit``: the recipe of 1 on its
   clean subset, unregularized (no augmentation, no weight decay), trained ``overfit_epochs`` with no
   early stop, long past 100% train accuracy, so its NLL overfits. Its T is fitted on the validation
   split plus the training images outside its subset (2,000 held-out images by default, not 500);
   the classifiers, trained on all training images, are calibrated on the validation split and
   reported per model. Then predictive entropy of an MLP deep ensemble (the trained classifier +
   reseeded copies) on test digits vs OOD inputs, summarised by AUROC.

Seeds: the fully-random-labels run and the overconfident network are trained under every seed of ``seeds``
(the memorized subset and its labels stay those of ``seed``; a replicate redraws initialisation and batch
order), so their claims are intervals over seeds. Every training run of 1 and 3 is one job of a pool of
single-thread workers (``genlab.parallel.run_many``).

Writes ``reports/metrics/generalization.json``, ``reports/plots/generalization/*.csv`` and
``reports/figures/generalization/*.png``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from genlab import runner
from genlab.data.corrupt import randomize_labels, shuffle_pixels
from genlab.data.prepared import load_mnist
from genlab.errors import GenlabError
from genlab.evaluate import stats
from genlab.evaluate.adversarial import accuracy, fgsm, pgd
from genlab.evaluate.calibration import ece, ece_change_ci, fit_temperature, reliability
from genlab.evaluate.uncertainty import ensemble_probs, entropy, ood_auroc, ood_inputs
from genlab.io import load_model
from genlab.models.adversarial import FGSMTrained
from genlab.models.classifier import Classifier, to_images
from genlab.nn.classifiers import MLP, build
from genlab.parallel import run_many
from genlab.recipes.classifier import fit_and_test, train_one
from genlab.report.artifacts import figures_dir, image_grid, plots_dir, save_figure, write_csv, write_metrics
from genlab.report.conclusions import Claim, add_conclusions, claim_from_difference
from genlab.saved.classifier import model_config

STAGE = "generalization"
CHANCE = 0.1
HEADLINE = "mlp_overfit"   # the calibration headline: Guo et al.'s overconfident network


def load_classifier(cfg, arch: str) -> nn.Module:
    """The network trained by the `classifier` stage (refused if trained with other params)."""
    payload = load_model(Path(cfg.paths.models) / "classifier" / f"{arch}.pt", expect_config=model_config(cfg, arch))
    net = build(arch, cfg.model.classifier[arch])
    net.load_state_dict(payload["state_dict"])
    return net.eval()


# --- 1. random labels ----------------------------------------------------------------------

def memorize(cfg, run: str, train_x, train_y, test_x, test_y, fraction=None, pixels=None) -> tuple[dict, list[dict]]:
    """Train the wide MLP on (train_x, train_y) until it fits; test on the true test labels.
    Its per-epoch "validation" is the training set itself (no augmentation), i.e. train accuracy.
    (``fraction`` / ``pixels`` only label the job.)"""
    r = cfg.model.generalization.random_labels
    runner.seed_all(cfg)    # same initialisation for every condition
    module = Classifier(MLP(r.width), r.lr, r.weight_decay, shift=0)
    split = {"train_x": train_x, "train_y": train_y, "val_x": train_x, "val_y": train_y,
             "test_x": test_x, "test_y": test_y}
    fitted = EarlyStopping("val/acc", mode="max", stopping_threshold=r.fit_accuracy, patience=r.epochs)
    result = fit_and_test(cfg, module, split, stage=STAGE, run=run, run_config=[r, run, cfg.data.mnist],
                          epochs=r.epochs, batch_size=r.batch_size, callbacks=[fitted])
    curve = [{"condition": run, "step": h["step"], "epoch": h["epoch"], "train_accuracy": h["val_accuracy"],
              "train_loss": h["val_loss"]} for h in module.history]
    steps = next((h["step"] for h in curve if h["train_accuracy"] >= r.fit_accuracy), None)
    print(f"[genlab] {STAGE}/{run}: train acc {curve[-1]['train_accuracy']:.3f}, "
          f"test acc {result['test_accuracy']:.3f}, steps to fit {steps}")
    return {"train_accuracy": curve[-1]["train_accuracy"], "test_accuracy": result["test_accuracy"],
            "steps_to_fit": steps}, curve


def subset(cfg, n: int, data_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``n_train`` memorized training images among ``n``, and of the other n − n_train (drawn from
    ``data_seed``: the global ``seed``, the same for every replicate seed)."""
    r = cfg.model.generalization.random_labels
    if r.n_train > n:
        raise GenlabError(f"model.generalization.random_labels.n_train={r.n_train} exceeds the {n} training images",
                          f"set it ≤ {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(data_seed))
    return perm[: r.n_train], perm[r.n_train:]


def replicate(cfg, seed: int, kind: str, **kw):
    """One training run of the stage's pool (a ``run_many`` job) under ``seed``: ``memorize(**kw)`` or
    ``overfit_calibrated(**kw)``."""
    cfg = cfg.copy()
    cfg.seed = seed
    return {"memorize": memorize, "overfit": overfit_calibrated}[kind](cfg, **kw)


def random_labels_jobs(cfg, data: dict[str, torch.Tensor]) -> list[dict]:
    """The memorization runs: every label fraction and pixel corruption under ``seed``, and fully random labels
    under the other seeds too (same images, same labels)."""
    r = cfg.model.generalization.random_labels
    inside, _ = subset(cfg, len(data["train_y"]), cfg.seed)
    x, y, test_x, test_y = data["train_x"][inside], data["train_y"][inside], data["test_x"], data["test_y"]
    jobs = []
    for f in r.fractions:   # same generator seed: the corrupted sets are nested as f grows
        noisy, _ = randomize_labels(y, f, torch.Generator().manual_seed(cfg.seed + 1))
        seeds = cfg.seeds if f == 1.0 else [cfg.seed]
        jobs += [{"cfg": cfg, "seed": s, "kind": "memorize", "run": f"labels-{f:g}" + ("" if s == cfg.seed else f"-seed{s}"),
                  "train_x": x, "train_y": noisy, "test_x": test_x, "test_y": test_y, "fraction": f} for s in seeds]
    for kind in r.pixels:   # train and test images permuted together ("shuffled": by one permutation)
        both = shuffle_pixels(torch.cat([x, test_x]), torch.Generator().manual_seed(cfg.seed + 2), kind == "random")
        jobs.append({"cfg": cfg, "seed": cfg.seed, "kind": "memorize", "run": f"pixels-{kind}", "train_x": both[: len(x)],
                     "train_y": y, "test_x": both[len(x):], "test_y": test_y, "pixels": kind})
    return jobs


def random_labels(cfg, jobs: list[dict], results: list) -> tuple[dict, list[dict], list[dict]]:
    """Memorization summary (the ``seed`` run of each condition; fully random labels also per seed), one row per
    label fraction, train-accuracy curves."""
    r = cfg.model.generalization.random_labels
    out = {"fraction": [], "train_accuracy": [], "test_accuracy": [], "steps_to_fit": [], "pixels": {},
           "n_train": r.n_train, "chance": CHANCE, "random_labels_per_seed": {}}
    rows, curves = [], []
    for job, (result, curve) in zip(jobs, results):
        if job.get("fraction") == 1.0:
            out["random_labels_per_seed"][str(job["seed"])] = result
        if job["seed"] != cfg.seed:
            continue
        curves += curve
        if "pixels" in job:
            out["pixels"][job["pixels"]] = result
            continue
        rows.append({"fraction": job["fraction"], **result})
        for k in ("train_accuracy", "test_accuracy", "steps_to_fit"):
            out[k].append(result[k])
        out["fraction"].append(job["fraction"])
    return out, rows, curves


def random_labels_figure(rows: list[dict], curves: list[dict], pixels: dict) -> plt.Figure:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4))
    fractions = [r["fraction"] for r in rows]
    ax.plot(fractions, [r["train_accuracy"] for r in rows], "o-", label="train (own labels)")
    ax.plot(fractions, [r["test_accuracy"] for r in rows], "s-", label="test (true labels)")
    for kind, res in pixels.items():
        ax.scatter([1.05], [res["test_accuracy"]], marker="x", label=f"{kind} pixels: test")
    ax.axhline(CHANCE, color="grey", ls=":", label="chance")
    ax.set(xlabel="fraction of labels randomized", ylabel="accuracy", ylim=(0, 1.02), title="memorization")
    ax.legend(fontsize=7)
    for condition in dict.fromkeys(c["condition"] for c in curves):
        pts = [c for c in curves if c["condition"] == condition]
        bx.plot([p["step"] for p in pts], [p["train_accuracy"] for p in pts], label=condition)
    bx.set(xlabel="optimizer step", ylabel="train accuracy", title="time to fit")
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --- 2. adversarial examples ---------------------------------------------------------------

def adversarial(cfg, nets: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor) -> tuple[dict, list[dict]]:
    """Accuracy ``[len(eps)]`` per arch under FGSM and PGD on images ``x`` ``[N, 1, 28, 28]``."""
    a = cfg.model.generalization.adversarial
    g = torch.Generator().manual_seed(cfg.seed)
    attacks = {"fgsm": lambda net, eps: fgsm(net, x, y, eps),
               "pgd": lambda net, eps: pgd(net, x, y, eps, a.pgd_steps, a.pgd_step_scale * eps / a.pgd_steps, g)}
    out = {name: {"eps": list(a.eps), "accuracy": {}} for name in attacks}
    out["pgd"] |= {"steps": a.pgd_steps, "step_size": f"{a.pgd_step_scale}*eps/{a.pgd_steps}"}
    for name, attack in attacks.items():
        for arch, net in nets.items():
            out[name]["accuracy"][arch] = [accuracy(net, x if eps == 0 else attack(net, eps), y) for eps in a.eps]
            print(f"[genlab] {STAGE}/{name}/{arch}: accuracy {out[name]['accuracy'][arch]} at eps {list(a.eps)}")
    rows = [{"eps": eps, **{f"{name}_{arch}": out[name]["accuracy"][arch][i] for name in attacks for arch in nets}}
            for i, eps in enumerate(a.eps)]
    return out, rows


def adversarially_trained(cfg, data: dict[str, torch.Tensor]) -> nn.Module:
    """The classifier's MLP recipe trained on ½ clean + ½ FGSM(``train_eps``) images."""
    c, eps = cfg.model.classifier, cfg.model.generalization.adversarial.train_eps
    runner.seed_all(cfg)
    module = FGSMTrained(build("mlp", c.mlp), c.lr, c.weight_decay, c.shift, eps)
    fit_and_test(cfg, module, data, stage=STAGE, run="mlp-fgsm-trained",
                 run_config=[model_config(cfg, "mlp"), eps, cfg.data.mnist], epochs=c.mlp.epochs, batch_size=c.batch_size)
    return module.net.eval()


def accuracy_vs_eps_figure(result: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, style in (("fgsm", "--"), ("pgd", "-")):
        for i, (arch, acc) in enumerate(result[name]["accuracy"].items()):
            ax.plot(result[name]["eps"], acc, style, marker="o", color=f"C{i}", label=f"{arch} {name.upper()}")
    ax.axhline(CHANCE, color="grey", ls=":")
    ax.set(xlabel="ε (L∞, pixels in [0, 1])", ylabel="test accuracy", ylim=(0, 1.02), title="adversarial robustness")
    ax.legend(fontsize=7)
    return fig


def adversarial_grid(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, arch: str) -> plt.Figure:
    """Rows: original, FGSM-perturbed, difference (δ/2ε + ½: grey = 0); titles: predicted class."""
    x_adv = fgsm(net, x, y, eps)
    with torch.no_grad():
        pred, pred_adv = net(x).argmax(-1), net(x_adv).argmax(-1)
    diff = (x_adv - x) / (2 * eps) + 0.5
    images = torch.cat([x, x_adv, diff])[:, 0].numpy()
    labels = [f"y={int(t)} → {int(p)}" for t, p in zip(y, pred)] + [f"→ {int(p)}" for p in pred_adv] + ["δ"] * len(x)
    return image_grid(images, nrow=3, title=f"{arch}: FGSM ε={eps:g} (original / perturbed / difference)",
                      labels=labels)


# --- 3. calibration and uncertainty -------------------------------------------------------

def overfit(cfg, data: dict[str, torch.Tensor], data_seed: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Guo et al.'s overconfident network: the memorization MLP on its clean subset for ``overfit_epochs``, with no
    early stop, augmentation or weight decay (Guo et al. §3: less weight decay, worse calibration). Returns it and
    its held-out images: the validation split + the training images outside the subset."""
    r, epochs = cfg.model.generalization.random_labels, cfg.model.generalization.uncertainty.overfit_epochs
    inside, outside = subset(cfg, len(data["train_y"]), data_seed)
    runner.seed_all(cfg)
    module = Classifier(MLP(r.width), r.lr, weight_decay=0.0, shift=0)
    split = {**data, "train_x": data["train_x"][inside], "train_y": data["train_y"][inside]}
    run = "overfit" if cfg.seed == data_seed else f"overfit-seed{cfg.seed}"
    result = fit_and_test(cfg, module, split, stage=STAGE, run=run, run_config=[r, epochs, cfg.data.mnist, data_seed],
                          epochs=epochs, batch_size=r.batch_size)
    print(f"[genlab] {STAGE}/{run}: train loss {module.history[-1]['train_loss']:.2g}, "
          f"test acc {result['test_accuracy']:.3f} after {epochs} epochs")
    held_out = {"x": torch.cat([data["val_x"], data["train_x"][outside]]),
                "y": torch.cat([data["val_y"], data["train_y"][outside]])}
    return module.net.eval(), held_out


def overfit_calibrated(cfg, data: dict[str, torch.Tensor], data_seed: int) -> tuple[dict, dict[str, list[dict]]]:
    """``overfit`` under ``cfg.seed``, then its ``calibration`` on its held-out images."""
    net, held_out = overfit(cfg, data, data_seed)
    return calibration(cfg, net, held_out, data)


@torch.no_grad()
def calibration(cfg, net: nn.Module, held_out: dict[str, torch.Tensor],
                data: dict[str, torch.Tensor]) -> tuple[dict, dict[str, list[dict]]]:
    """Temperature fitted on ``held_out`` {x, y}; accuracy, ECE and NLL on test before and after; reliability bins."""
    n_bins = cfg.model.generalization.uncertainty.n_bins
    fit_logits, test_logits = net(to_images(held_out["x"])), net(to_images(data["test_x"]))
    with torch.enable_grad():
        temperature = fit_temperature(fit_logits, held_out["y"])
    y = data["test_y"]
    scaled = {"before": test_logits, "after": test_logits / temperature}
    out = {"temperature": temperature, "n_fit": len(held_out["y"]),
           "test_accuracy": (test_logits.argmax(-1) == y).float().mean().item(),
           **{f"ece_{k}": ece(z.softmax(-1), y, n_bins) for k, z in scaled.items()},
           "ece_change_ci95": ece_change_ci(test_logits.softmax(-1), scaled["after"].softmax(-1), y, n_bins,
                                            seed=cfg.seed),
           **{f"nll_{k}": F.cross_entropy(z, y).item() for k, z in scaled.items()}}
    return out, {k: reliability(z.softmax(-1), y, n_bins) for k, z in scaled.items()}


def reliability_figure(bins: dict[str, list[dict]], result: dict, arch: str) -> plt.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), sharey=True)
    for ax, (when, rows) in zip(axes, bins.items()):
        width = rows[0]["bin_hi"] - rows[0]["bin_lo"]
        ax.bar([r["bin_lo"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge",
               edgecolor="k", label="accuracy")
        ax.bar([r["bin_lo"] for r in rows], [r["confidence"] - r["accuracy"] for r in rows], width=width,
               bottom=[r["accuracy"] for r in rows], align="edge", color="red", alpha=0.3, label="gap")
        ax.plot([0, 1], [0, 1], "k:")
        title = "before" if when == "before" else f"after (T={result['temperature']:.3g})"
        ax.set(xlabel="confidence", title=f"{arch} {title}: ECE={result[f'ece_{when}']:.4f}")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    return fig


def deep_ensemble(cfg, data: dict[str, torch.Tensor], nets: dict[str, nn.Module]) -> list[nn.Module]:
    """``models/classifier/mlp.pt`` plus (ensemble − 1) MLPs of the same recipe with seeds seed+1, …"""
    if "mlp" not in nets:
        raise GenlabError("the generalization stage's deep ensemble extends the trained MLP classifier",
                          "keep mlp in model.classifier.archs")
    members = [nets["mlp"]]
    for k in range(1, cfg.model.generalization.uncertainty.ensemble):
        module, _ = train_one(OmegaConf.merge(cfg, {"seed": cfg.seed + k}), "mlp", data, stage=STAGE,
                              run=f"ensemble-{k}")
        members.append(module.net.eval())
    return members


@torch.no_grad()
def out_of_distribution(cfg, members: list[nn.Module], nets: dict[str, nn.Module], x: torch.Tensor,
                        y: torch.Tensor) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """AUROC of predictive entropy, test digits ``x`` vs each OOD kind, for the ensemble and each single net."""
    g = torch.Generator().manual_seed(cfg.seed)
    inputs = {"in": x, **{kind: ood_inputs(x, kind, g) for kind in cfg.model.generalization.uncertainty.ood}}
    models = {"ensemble": members, **{arch: [net] for arch, net in nets.items()}}
    entropies = {m: {k: entropy(ensemble_probs(nets_, v)) for k, v in inputs.items()} for m, nets_ in models.items()}
    auroc = {m: {k: ood_auroc(e["in"], e[k]) for k in inputs if k != "in"} for m, e in entropies.items()}
    ens = entropies["ensemble"]
    out = {"ood_auroc": ood_auroc(ens["in"], torch.cat([ens[k] for k in inputs if k != "in"])),
           "ood": {"auroc": auroc, "members": len(members),
                   "ensemble_test_accuracy": multiclass_accuracy(ensemble_probs(members, x), y, 10, average="micro").item()}}
    return out, entropies


def entropy_figure(entropies: dict[str, dict[str, torch.Tensor]], auroc: dict) -> plt.Figure:
    fig, axes = plt.subplots(1, len(entropies), figsize=(3.2 * len(entropies), 3), sharey=True, squeeze=False)
    axes = axes[0]
    bins = torch.linspace(0, torch.log(torch.tensor(10.0)).item(), 31).numpy()
    for ax, (model, ents) in zip(axes, entropies.items()):
        for kind, e in ents.items():
            label = "test digits" if kind == "in" else f"{kind} (AUROC {auroc[model][kind]:.2f})"
            ax.hist(e.numpy(), bins=bins, alpha=0.5, density=True, label=label)
        ax.set(xlabel="predictive entropy (nats)", title="mlp deep ensemble" if model == "ensemble" else model)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    fig.tight_layout()
    return fig


MEMORIZED = 0.9   # "memorized": at least this fraction of fully random training labels fitted


def claims(cfg, metrics: dict) -> list[Claim]:
    """Temperature scaling lowers the headline model's test ECE (paired over training seeds), and the MLP memorizes
    fully random labels (training accuracy over seeds, against ``MEMORIZED``)."""
    cal = metrics["calibration"]["per_seed"]
    rows = [claim_from_difference(
        "temperature_scaling_lowers_ece", STAGE,
        f"Temperature scaling (T fitted on held-out images) lowers the test ECE of {HEADLINE}.",
        stats.paired_difference(cal["ece_before"], cal["ece_after"]),
        statistic="ECE(before) − ECE(after), test, paired by training seed",
        baseline=f"ECE before {np.mean(cal['ece_before']):.4f}", noise_floor="ECE of ~1,000 test images: ~0.005")]
    per_seed = metrics["random_labels"]["random_labels_per_seed"]
    if per_seed:
        acc = [r["train_accuracy"] for r in per_seed.values()]
        test = np.mean([r["test_accuracy"] for r in per_seed.values()])
        n = metrics["random_labels"]["n_train"]
        rows.append(claim_from_difference(
            "random_labels_memorized", STAGE,
            f"The wide MLP memorizes fully random labels (training accuracy > {MEMORIZED:g}).",
            stats.summarize(acc), statistic=f"training accuracy on {n} randomly labelled images, over training seeds",
            null=MEMORIZED, baseline=f"chance {CHANCE:g}; its test accuracy {test:.3f}"))
    return rows


def run(cfg) -> None:
    runner.seed_all(cfg)
    data = load_mnist(cfg)
    curves, figures = plots_dir(cfg, STAGE), figures_dir(cfg, STAGE)
    nets = {arch: load_classifier(cfg, arch) for arch in cfg.model.classifier.archs}
    metrics = {}

    memorize_jobs = random_labels_jobs(cfg, data)
    overfit_jobs = [{"cfg": cfg, "seed": s, "kind": "overfit", "data": data, "data_seed": cfg.seed} for s in cfg.seeds]
    results = run_many(replicate, overfit_jobs + memorize_jobs, desc="generalization runs")   # the longest first
    overfit_results, memorize_results = results[: len(overfit_jobs)], results[len(overfit_jobs):]

    metrics["random_labels"], rows, curve = random_labels(cfg, memorize_jobs, memorize_results)
    write_csv(curves / "random_labels.csv", rows)
    write_csv(curves / "memorization_curves.csv", curve)
    save_figure(random_labels_figure(rows, curve, metrics["random_labels"]["pixels"]), figures / "random_labels.png")

    a = cfg.model.generalization.adversarial
    x, y = to_images(data["test_x"][: a.n_examples]), data["test_y"][: a.n_examples]
    attacked = {**nets, "mlp_fgsm_trained": adversarially_trained(cfg, data)} if "mlp" in nets else nets
    attacks, rows = adversarial(cfg, attacked, x, y)
    metrics |= attacks
    write_csv(curves / "adversarial.csv", rows)
    save_figure(accuracy_vs_eps_figure(attacks), figures / "adversarial_accuracy.png")
    for arch, net in nets.items():
        save_figure(adversarial_grid(net, x[:8], y[:8], a.grid_eps, arch), figures / f"adversarial_{arch}.png")

    val = {"x": data["val_x"], "y": data["val_y"]}
    calibrated = {arch: calibration(cfg, net, val, data) for arch, net in nets.items()}
    calibrated[HEADLINE] = next(r for j, r in zip(overfit_jobs, overfit_results) if j["seed"] == cfg.seed)
    per_model, bins = {}, []
    for arch, (result, reliability_bins) in calibrated.items():
        per_model[arch] = result
        bins += [{"arch": arch, "scaling": when, **row} for when, rs in reliability_bins.items() for row in rs]
        save_figure(reliability_figure(reliability_bins, result, arch), figures / f"reliability_{arch}.png")
        print(f"[genlab] {STAGE}/calibration/{arch}: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()
                                                                    if isinstance(v, float)))
    write_csv(curves / "reliability.csv", bins)
    per_seed = {k: [r[k] for r, _ in overfit_results] for k in ("ece_before", "ece_after", "temperature")}
    metrics["calibration"] = {"model": HEADLINE, **per_model[HEADLINE], "per_model": per_model,
                              "per_seed": {"seeds": list(cfg.seeds), **per_seed}}

    members = deep_ensemble(cfg, data, nets)
    ood, entropies = out_of_distribution(cfg, members, nets, to_images(data["test_x"]), data["test_y"])
    metrics |= ood
    write_csv(curves / "ood_auroc.csv", [{"model": m, "ood": k, "auroc": v}
                                         for m, kinds in ood["ood"]["auroc"].items() for k, v in kinds.items()])
    save_figure(entropy_figure(entropies, ood["ood"]["auroc"]), figures / "entropy_ood.png")
    print(f"[genlab] {STAGE}: ood_auroc={ood['ood_auroc']:.4f} {ood['ood']['auroc']}")
    write_metrics(cfg, STAGE, add_conclusions(metrics, claims(cfg, metrics)))
