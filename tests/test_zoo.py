"""The `zoo` stage: coupling flow, VAE, flow matching and VP diffusion on the CNF's splits, one likelihood table
beside the CNF and the closed-form baselines, with claims whose verdicts follow from their intervals."""
from __future__ import annotations

import math

import pytest
import torch

from genlab.io import load_model, read_json
from genlab.report.conclusions import Claim


def test_zoo_stage_writes_one_likelihood_table_with_baselines_and_claims(make_cfg, prepared, tmp_path):
    from genlab.stages import cnf, zoo

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}", "seeds=[0,1,2]", "logger.wandb.mode=disabled")
    cnf.run(cfg)
    zoo.run(cfg)
    m = read_json(tmp_path / "reports" / "metrics" / "zoo.json")
    for part, unit in (("toy", "nats"), ("digits", "bits/dim")):
        rows = {r["model"]: r for r in m[part]["table"]}
        assert m[part]["unit"] == unit
        for model in zoo.MODELS:
            r = rows[zoo.NAMES[model]]
            assert r["n_seeds"] == 3 and math.isfinite(r["nll"]) and r["nll_ci95"][0] <= r["nll"] <= r["nll_ci95"][1]
            assert r["train_cpu_seconds"] > 0 and r["sampling_nfe"] >= 1
            assert len(m[part]["per_seed"][model]["test_nll"]) == 3
            load_model(tmp_path / "models" / "zoo" / f"{part}_{model}.pt",
                       expect_config=zoo.model_config(cfg, part, model))
        assert rows["CNF (stage cnf)"]["n_seeds"] == 3
        assert rows[zoo.NAMES["vae"]]["estimate"] == "IWAE bound"
    for r in m["digits"]["table"]:
        if r["model"] not in ("uniform", "CNF (stage cnf)"):       # every zoo model and fitted baseline
            assert 0 <= r["auroc_rotated"] <= 1 and 0 <= r["auroc_noise"] <= 1
    assert m["digits"]["models"]["coupling"]["auroc_noise_ci95"] is not None
    digits = {r["model"]: r["nll"] for r in m["digits"]["table"]}
    assert digits["uniform"] == pytest.approx(math.log2(17))
    assert "true density" in {r["model"] for r in m["toy"]["table"]}      # gaussians8: the floor is known
    ids = {r["id"] for r in m["conclusions"]}
    assert {"zoo_digits_fm_vs_diffusion_nll", "zoo_toy_fm_vs_diffusion_nll",
            *(f"zoo_digits_{k}_beats_best_baseline" for k in zoo.MODELS),
            *(f"zoo_digits_{k}_likelihood_detects_rotated_digits" for k in zoo.MODELS)} <= ids
    for row in m["conclusions"]:
        assert Claim.from_row(row).verdict == row["verdict"] and row["n_seeds"] == 3
    figures = {p.name for p in (tmp_path / "reports" / "figures" / "zoo").iterdir()}
    assert {"toy_densities.png", "digits_samples.png", "vae_reconstructions.png", "likelihood_table.txt"} <= figures
    csv = (tmp_path / "reports" / "plots" / "zoo" / "likelihood_table.csv").read_text().splitlines()
    assert csv[0].startswith("part,unit,model,nll") and len(csv) == 1 + len(m["toy"]["table"]) + len(m["digits"]["table"])


def test_zoo_refuses_to_start_without_the_cnf_metrics(make_cfg, prepared, tmp_path):
    from genlab.errors import GenlabError
    from genlab.stages import zoo

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}")
    with pytest.raises(GenlabError, match="cnf.json"):
        zoo.run(cfg)
    assert not (tmp_path / "models" / "zoo").exists()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log()`")
def test_flow_matching_likelihood_of_dequantized_pixels_adds_the_transforms_log_jacobian():
    """FlowMatching with the CNF's logit dequantization: log p(pixels) = log p_flow(z) + log|dz/dy|, with the
    same dequantization draw; Hutchinson's estimate averages to the exact trace."""
    from genlab.evaluate import ode
    from genlab.models.cnf import LogitDequantize
    from genlab.models.flow_matching import FlowMatching
    from genlab.models.matchers import IndependentCFM
    from genlab.nn.vector_field import VectorField

    torch.manual_seed(0)
    field = VectorField(4, 16, 2, "tanh").double()
    for p in field.parameters():
        p.data.mul_(3)                                     # a non-trivial flow
    fm = FlowMatching(field, IndependentCFM(), 1e-3, transform=LogitDequantize(17, 0.05)).double()
    pixels = torch.randint(0, 17, (6, 4))
    torch.manual_seed(1)
    got = fm.log_prob(pixels)
    torch.manual_seed(1)
    z, log_jac = fm.transform(pixels, torch.float64)
    want = ode.log_likelihood(field, z) + log_jac
    assert torch.allclose(got, want, atol=1e-8) and log_jac.abs().min() > 1
    estimates = torch.stack([ode.log_likelihood(field, z, exact=False) for _ in range(400)])
    se = estimates.std(0) / 20
    assert ((estimates.mean(0) - (want - log_jac)).abs() < 4 * se + 1e-6).all() and (estimates.std(0) > 1e-3).all()
    batch = (pixels,)
    assert torch.isfinite(fm.training_step(batch, 0))     # trains on freshly dequantized logits


def test_auroc_is_the_probability_an_inlier_outscores_an_outlier():
    """AUROC = P(log p(in) > log p(out)) (ties count ½): 1 when separated, ½ for the same scores, and the
    Mann–Whitney count on a small case; the outliers are rotated digits and noise of the test's shape."""
    import numpy as np

    from genlab.stages.zoo import auroc, outliers

    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert auroc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5           # one of two pairs ordered right
    test = torch.randint(0, 17, (5, 64))
    out = outliers(test, 0)
    assert out["rotated"].shape == out["noise"].shape == test.shape
    assert torch.equal(torch.rot90(out["rotated"].view(-1, 8, 8), -1, (1, 2)).reshape(-1, 64), test)
    assert out["noise"].min() >= 0 and out["noise"].max() <= 16
