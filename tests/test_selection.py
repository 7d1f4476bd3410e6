"""Validation-only selection: the guard refuses the test split; the split data and the guidance rule."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from genlab.data import digits, toy2d
from genlab.evaluate.selection import Split, TestSplitSelection, choose_guidance, choose_lowest, selectable


def rows(*triples):
    return [{"guidance_w": w, "fid": f, "accuracy": a} for w, f, a in triples]


def test_selection_refuses_the_test_split():
    with pytest.raises(TestSplitSelection, match="test split"):
        selectable(Split("test", np.zeros(3)), "the step count")
    with pytest.raises(TestSplitSelection):
        choose_guidance(rows((0, 1.0, 1.0)), "test", 0.9)
    with pytest.raises(TestSplitSelection):
        choose_lowest([{"fid": 1.0}], "fid", "test", "η")
    selectable(Split("val", np.zeros(3)), "the step count")      # validation is fine


def test_guidance_rule_prefers_lowest_fid_above_the_bar_else_lowest_fid():
    grid = rows((0, 30.0, 0.93), (0.25, 25.0, 0.97), (0.5, 28.0, 0.99), (1, 50.0, 1.0))
    assert choose_guidance(grid, "val", 0.98)["guidance_w"] == 0.5     # 0.25 has lower FID but misses the bar
    assert choose_guidance(grid, "val", 0.9)["guidance_w"] == 0.25
    assert choose_guidance(grid, "val", 1.01)["guidance_w"] == 0.25    # nobody passes: lowest FID of all


def test_digits_and_toy2d_have_disjoint_validation_splits():
    arrays = digits.prepare(OmegaConf.create({"test_fraction": 0.2, "val_fraction": 0.2}), 0)
    n = {s: len(arrays[f"{s}_y"]) for s in ("train", "val", "test")}
    assert sum(n.values()) == 1797 and abs(n["val"] - 0.2 * 1797) < 2 and abs(n["test"] - 0.2 * 1797) < 2
    s = digits.splits(arrays)
    assert s["test"].name == "test" and len(s["val"]) == n["val"]
    toys = toy2d.prepare(OmegaConf.create({"names": ["gaussians8"], "n_train": 50, "n_test": 40, "n_val": 30,
                                           "noise": 0.05}), 0)
    sp = toy2d.splits(toys, "gaussians8")
    assert [len(sp[k]) for k in ("train", "val", "test")] == [50, 30, 40]
    assert not np.isin(sp["val"].x.numpy()[:, 0], sp["test"].x.numpy()[:, 0]).any()


def test_gaussians8_true_density_integrates_to_one_and_matches_samples():
    g = np.linspace(-5, 5, 401)
    xx, yy = np.meshgrid(g, g)
    p = np.exp(toy2d.gaussians8_log_prob(np.stack([xx.ravel(), yy.ravel()], 1), 0.05))
    assert abs(p.sum() * (g[1] - g[0]) ** 2 - 1) < 1e-3
    x = toy2d.sample("gaussians8", 20000, np.random.default_rng(0), 0.05)
    # the true NLL is below any other density's cross-entropy, e.g. one Gaussian's
    cov = np.cov(x.T)
    gauss = 0.5 * (np.log(np.linalg.det(2 * np.pi * cov)) + 2)
    assert toy2d.true_nll("gaussians8", x, 0.05) < gauss
