"""Generalization studies: label/pixel corruption, FGSM/PGD, temperature scaling and ECE, OOD entropy, the stage."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.corrupt import randomize_labels, shuffle_pixels
from genlab.evaluate.adversarial import accuracy, fgsm, input_gradient, pgd, project
from genlab.evaluate.calibration import ece, ece_change_ci, fit_temperature, reliability
from genlab.evaluate.uncertainty import ensemble_probs, entropy, ood_auroc, ood_inputs
from genlab.errors import GenlabError
from genlab.io import load_arrays
from genlab.nn.classifiers import MLP


# --- corruption ------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.37, 0.5, 1.0])
def test_label_randomization_redraws_exactly_the_requested_fraction(fraction):
    y = torch.arange(10).repeat(1000)                     # 10,000 balanced labels
    noisy, mask = randomize_labels(y, fraction, torch.Generator().manual_seed(0))
    assert int(mask.sum()) == round(fraction * len(y))
    assert torch.equal(noisy[~mask], y[~mask])             # untouched labels are untouched
    assert noisy.dtype == y.dtype and 0 <= noisy.min() and noisy.max() <= 9
    if fraction > 0:   # redrawn uniformly: 1/10 keep their label by chance, each class ~1/10 of the draws
        changed = (noisy != y).float().mean().item()
        assert changed == pytest.approx(0.9 * fraction, abs=0.015)
        counts = torch.bincount(noisy[mask], minlength=10).float() / mask.sum()
        assert counts.sub(0.1).abs().max() < 0.03


def test_label_randomization_sets_are_nested_across_fractions():
    y = torch.arange(10).repeat(100)
    masks = [randomize_labels(y, f, torch.Generator().manual_seed(3))[1] for f in (0.2, 0.5, 0.8)]
    assert bool((masks[0] <= masks[1]).all() and (masks[1] <= masks[2]).all())


@pytest.mark.parametrize("per_image", [False, True])
def test_pixel_shuffling_permutes_pixels(per_image):
    x = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    out = shuffle_pixels(x, torch.Generator().manual_seed(0), per_image)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)   # same pixels per image
    index = torch.arange(784).expand(50, 784).reshape(50, 28, 28)                     # where each pixel went
    perms = shuffle_pixels(index, torch.Generator().manual_seed(0), per_image).flatten(1)
    same_for_all = bool((perms == perms[0]).all())
    assert same_for_all != per_image
    assert not torch.equal(perms[0], torch.arange(784))


# --- adversarial -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_mlp(prepared):
    """A small MLP trained for a few hundred steps on the prepared MNIST (~90% test accuracy)."""
    arrays, _ = load_arrays(Path(prepared) / "data" / "mnist")
    x = torch.from_numpy(arrays["train_x"]).float().div(255).unsqueeze(1)
    y = torch.from_numpy(arrays["train_y"])
    torch.manual_seed(0)
    net = MLP(32)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(300):
        idx = torch.randint(len(y), (128,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_x = torch.from_numpy(arrays["test_x"][:300]).float().div(255).unsqueeze(1)
    test_y = torch.from_numpy(arrays["test_y"][:300])
    assert accuracy(net, test_x, test_y) > 0.8
    return net.eval(), test_x, test_y


def test_input_gradient_matches_the_closed_form_of_softmax_regression():
    """J = CE(Wx + b, y) ⇒ ∇ₓJ = Wᵀ(softmax(Wx + b) − onehot(y))."""
    torch.manual_seed(0)
    linear = nn.Linear(784, 10)
    net = nn.Sequential(nn.Flatten(), linear)
    x, y = torch.rand(5, 1, 28, 28), torch.randint(10, (5,))
    residual = (linear(x.flatten(1)).softmax(-1) - F.one_hot(y, 10).float()).detach()
    expected = (residual @ linear.weight.detach()).view_as(x)
    assert torch.allclose(input_gradient(net, x, y), expected, atol=1e-6)


def test_fgsm_moves_every_unclipped_pixel_by_exactly_eps_and_increases_the_loss(trained_mlp):
    net, x, y = trained_mlp
    eps = 0.1
    x_adv = fgsm(net, x, y, eps)
    delta = x_adv - x
    sign = input_gradient(net, x, y).sign()
    unclipped = (sign != 0) & ((x + eps * sign) >= 0) & ((x + eps * sign) <= 1)
    assert unclipped.float().mean() > 0.2
    assert torch.allclose(delta[unclipped].abs(), torch.full_like(delta[unclipped], eps), atol=1e-6)
    assert torch.equal(delta[unclipped].sign(), sign[unclipped])   # in the direction of ∇ₓJ
    assert delta.abs().max().item() == pytest.approx(eps, abs=1e-6)  # ‖δ‖∞ = ε
    assert x_adv.min() >= 0 and x_adv.max() <= 1                    # clipped pixels stay in the box
    with torch.no_grad():
        clean, adv = F.cross_entropy(net(x), y).item(), F.cross_entropy(net(x_adv), y).item()
    assert adv > 2 * clean
    assert accuracy(net, x_adv, y) < accuracy(net, x, y) - 0.2


def test_pgd_stays_in_the_eps_ball_and_box_and_is_at_least_as_strong_as_fgsm(trained_mlp):
    net, x, y = trained_mlp
    eps = 0.1
    x_adv = pgd(net, x, y, eps, steps=10, step_size=2.5 * eps / 10, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max().item() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        loss_pgd = F.cross_entropy(net(x_adv), y).item()
        loss_fgsm = F.cross_entropy(net(fgsm(net, x, y, eps)), y).item()
    assert loss_pgd >= loss_fgsm
    assert accuracy(net, x_adv, y) <= accuracy(net, fgsm(net, x, y, eps), y)


def test_fgsm_training_loss_is_the_half_clean_half_adversarial_mixture():
    """Goodfellow et al. 2015, eq. 6 with α = ½ (no shift augmentation, so the batch is deterministic)."""
    from genlab.models.adversarial import FGSMTrained

    torch.manual_seed(0)
    net = MLP(16)
    x_uint8, y = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8), torch.randint(10, (8,))
    x = x_uint8.float().div(255).unsqueeze(1)
    module = FGSMTrained(net, lr=1e-3, weight_decay=0.0, shift=0, eps=0.1)
    module.log = lambda *args, **kwargs: None
    expected = 0.5 * F.cross_entropy(net(x), y) + 0.5 * F.cross_entropy(net(fgsm(net.train(), x, y, 0.1)), y)
    assert module.training_step((x_uint8, y), 0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert module.training_step((x_uint8, y), 0).item() > F.cross_entropy(net(x), y).item()


def test_projection_is_the_nearest_point_of_ball_and_box():
    torch.manual_seed(0)
    x, eps = torch.rand(1000), 0.1
    z = x + torch.randn(1000)
    p = project(z, x, eps)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    assert torch.equal(p, torch.minimum(torch.maximum(z, lo), hi))
    assert torch.equal(project(p, x, eps), p)                       # idempotent


# --- calibration -----------------------------------------------------------------------------

def calibrated(n: int, sharpen: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities [n, 10] and labels drawn from them (perfectly calibrated when ``sharpen`` = 1),
    reported after raising the logits' scale by ``sharpen`` (overconfident when > 1)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=g) * 2.5
    labels = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    return (logits * sharpen).softmax(-1), labels


def test_ece_of_a_perfectly_calibrated_predictor_is_zero_and_of_an_overconfident_one_is_not():
    probs, labels = calibrated(200_000)
    assert ece(probs, labels) < 0.005
    probs, labels = calibrated(200_000, sharpen=2.0)
    assert ece(probs, labels) > 0.05


def test_reliability_bins_reproduce_torchmetrics_ece():
    probs, labels = calibrated(20_000, sharpen=1.5)
    bins = reliability(probs, labels, n_bins=15)
    n = sum(b["count"] for b in bins)
    assert n == 20_000
    from_bins = sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert from_bins == pytest.approx(ece(probs, labels, n_bins=15), abs=1e-5)
    for b in bins:
        if b["count"]:
            assert b["bin_lo"] <= b["confidence"] <= b["bin_hi"]


def test_ece_change_interval_covers_zero_for_no_change_and_excludes_it_for_a_real_fix():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (2000,))
    logits = torch.randn(2000, 10) * 2 + 3 * F.one_hot(labels, 10)
    probs = (logits / 0.4).softmax(-1)                       # overconfident by a factor 2.5 in temperature
    lo, hi = ece_change_ci(probs, probs, labels)
    assert lo == hi == 0.0                                   # same probabilities: every resample agrees
    lo, hi = ece_change_ci(probs, logits.softmax(-1), labels)
    assert hi < 0                                            # undoing the temperature lowers ECE, surely


def test_temperature_fit_recovers_a_planted_temperature():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(20_000, 10, generator=g) * 4
    labels = torch.multinomial((logits / 2.5).softmax(-1), 1, generator=g).squeeze(1)   # true T = 2.5
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_temperature_scaling_never_changes_predictions_and_lowers_ece_of_an_overconfident_model():
    probs, labels = calibrated(20_000, sharpen=2.0)
    logits = probs.log()
    t = fit_temperature(logits[:10_000], labels[:10_000])          # fit on a "validation" half
    assert t == pytest.approx(2.0, rel=0.1)
    for temperature in (t, 0.3, 1.0, 7.0):
        assert torch.equal((logits / temperature).argmax(-1), logits.argmax(-1))
    test_logits, test_labels = logits[10_000:], labels[10_000:]
    assert ece((test_logits / t).softmax(-1), test_labels) < 0.3 * ece(test_logits.softmax(-1), test_labels)


class Lookup(nn.Module):
    """A "network" returning planted logits ``[N, K]`` for images whose first two pixels encode their row index."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hi, lo = (x[:, 0, 0, :2] * 255).round().long().unbind(-1)
        return self.logits[hi * 256 + lo]


def indexed_images(n: int) -> torch.Tensor:
    x = torch.zeros(n, 28, 28, dtype=torch.uint8)
    x[:, 0, 0], x[:, 0, 1] = torch.arange(n) // 256, torch.arange(n) % 256
    return x


@pytest.mark.parametrize("sharpen", [1.0, 2.5])
def test_calibration_fits_temperature_on_held_out_images_and_fixes_only_an_overconfident_net(make_cfg, tmp_path,
                                                                                           sharpen):
    from genlab.stages.generalization import calibration

    probs, labels = calibrated(4000, sharpen=sharpen, seed=3)
    x, net = indexed_images(4000), Lookup(probs.log())
    held_out, data = {"x": x[:2000], "y": labels[:2000]}, {"test_x": x[2000:], "test_y": labels[2000:]}
    out, bins = calibration(make_cfg(tmp_path), net, held_out, data)
    assert out["n_fit"] == 2000 and sum(b["count"] for b in bins["after"]) == 2000
    assert out["test_accuracy"] == (probs[2000:].argmax(-1) == labels[2000:]).float().mean().item()
    assert out["temperature"] == pytest.approx(sharpen, rel=0.15)        # T undoes the planted sharpening
    lo, hi = out["ece_change_ci95"]
    if sharpen > 1:                                                     # overconfident: fixed, surely
        assert out["ece_after"] < 0.5 * out["ece_before"] and hi < 0 and out["nll_after"] < out["nll_before"]
    else:                                                               # calibrated: nothing to fix
        assert abs(out["ece_after"] - out["ece_before"]) < 0.01 and lo < 0.01 and hi > -0.01


def test_memorized_subset_and_the_held_out_rest_partition_the_training_images(make_cfg, prepared, tmp_path):
    from genlab.stages.generalization import subset

    cfg = make_cfg(prepared)
    inside, outside = subset(cfg, 100, cfg.seed)
    assert len(inside) == cfg.model.generalization.random_labels.n_train
    assert torch.equal(subset(cfg, 100, cfg.seed)[0], inside)       # a function of the data seed only
    assert torch.equal(torch.cat([inside, outside]).sort().values, torch.arange(100))   # a partition
    with pytest.raises(GenlabError):
        subset(cfg, cfg.model.generalization.random_labels.n_train - 1, cfg.seed)


# --- uncertainty -----------------------------------------------------------------------------

def test_entropy_known_values_and_ensemble_mean():
    assert entropy(torch.full((1, 10), 0.1)).item() == pytest.approx(math.log(10), abs=1e-6)
    assert entropy(F.one_hot(torch.tensor([3]), 10).float()).item() == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(784, 10)) for _ in range(3)]
    x = torch.rand(4, 1, 28, 28)
    expected = sum(net(x).softmax(-1) for net in nets) / 3
    assert torch.allclose(ensemble_probs(nets, x), expected, atol=1e-6)


def test_ood_auroc_extremes_and_chance():
    assert ood_auroc(torch.zeros(100), torch.ones(100)) == pytest.approx(1.0)
    assert ood_auroc(torch.ones(100), torch.zeros(100)) == pytest.approx(0.0)
    g = torch.Generator().manual_seed(0)
    assert ood_auroc(torch.rand(20_000, generator=g), torch.rand(20_000, generator=g)) == pytest.approx(0.5, abs=0.01)


def test_ood_inputs():
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(ood_inputs(x, "rotated", torch.Generator())[:, 0, :, 0], x[:, 0, 0, :].flip(1))
    noise = ood_inputs(x, "noise", torch.Generator().manual_seed(0))
    assert noise.shape == x.shape and 0 <= noise.min() and noise.max() <= 1
    with pytest.raises(ValueError):
        ood_inputs(x, "fashion", torch.Generator())


# --- the stage -------------------------------------------------------------------------------

def test_stage_smoke_writes_metrics_in_the_issue_format(make_cfg, prepared, tmp_path):
    from genlab.stages import classifier, generalization

    cfg = make_cfg(prepared, *[f"paths.{k}={tmp_path / k}" for k in ("models", "checkpoints", "reports", "logs")])
    classifier.run(cfg)
    generalization.run(cfg)
    m = json.loads((tmp_path / "reports" / "metrics" / "generalization.json").read_text())
    g = cfg.model.generalization
    rl = m["random_labels"]
    assert rl["fraction"] == list(g.random_labels.fractions)
    assert len(rl["train_accuracy"]) == len(rl["test_accuracy"]) == len(rl["fraction"])
    assert set(rl["pixels"]) == set(g.random_labels.pixels)
    for attack in ("fgsm", "pgd"):
        assert m[attack]["eps"] == list(g.adversarial.eps)
        assert set(m[attack]["accuracy"]) == {"mlp", "cnn", "mlp_fgsm_trained"}
        assert all(len(v) == len(g.adversarial.eps) for v in m[attack]["accuracy"].values())
    cal = m["calibration"]
    assert cal["model"] == "mlp_overfit" and set(cal["per_model"]) == {"mlp", "cnn", "mlp_overfit"}
    for key in ("ece_before", "ece_after", "temperature"):
        assert isinstance(cal[key], float) and cal[key] == cal["per_model"]["mlp_overfit"][key]
    lo, hi = cal["ece_change_ci95"]
    assert lo <= hi
    arrays, _ = load_arrays(Path(prepared) / "data" / "mnist")
    n_val, n_train = len(arrays["val_y"]), len(arrays["train_y"])
    assert cal["n_fit"] == n_val + n_train - g.random_labels.n_train      # val + the unmemorized train images
    assert cal["per_model"]["cnn"]["n_fit"] == n_val
    assert 0.0 <= m["ood_auroc"] <= 1.0 and m["ood"]["members"] == g.uncertainty.ensemble
    figures = {p.name for p in (tmp_path / "reports" / "figures" / "generalization").glob("*.png")}
    assert {"random_labels.png", "adversarial_accuracy.png", "adversarial_cnn.png", "reliability_mlp.png",
            "entropy_ood.png"} <= figures
    assert (tmp_path / "reports" / "plots" / "generalization" / "adversarial.csv").exists()
    claims = {c["id"]: c for c in m["conclusions"]}
    assert set(claims) == {"temperature_scaling_lowers_ece", "random_labels_memorized"}
    seeds = list(cfg.seeds)
    per_seed = cal["per_seed"]
    assert per_seed["seeds"] == seeds and len(per_seed["ece_before"]) == len(seeds)
    assert per_seed["ece_before"][seeds.index(cfg.seed)] == cal["ece_before"]      # the headline is the seed run
    t = claims["temperature_scaling_lowers_ece"]
    assert t["n_seeds"] == len(seeds)
    assert t["estimate"] == pytest.approx(np.mean(per_seed["ece_before"]) - np.mean(per_seed["ece_after"]))
    memorized = claims["random_labels_memorized"]
    accs = [r["train_accuracy"] for r in rl["random_labels_per_seed"].values()]
    assert memorized["n_seeds"] == len(seeds) == len(accs) and memorized["estimate"] == pytest.approx(np.mean(accs))
    assert rl["random_labels_per_seed"][str(cfg.seed)]["train_accuracy"] == rl["train_accuracy"][-1]
