"""FID/accuracy on the pipeline CNN's features, and the generative_eval stage on tiny fake sample files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genlab.errors import GenlabError
from genlab.evaluate.fid import Reference, SampleScorer, choose_guidance, features, fid_ci, frechet, real_vs_real
from genlab.evaluate.selection import TestSplitSelection
from genlab.io import load_arrays, read_json, save_arrays, save_model, write_json
from genlab.nn.classifiers import CNN


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return CNN(channels=4).eval()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    blobs = torch.zeros(300, 28, 28)
    for i in range(300):                                    # varied smooth strokes, so features vary
        r, c = torch.randint(4, 24, (2,), generator=g)
        blobs[i, r - 3:r + 3, :] += 0.5
        blobs[i, :, c - 2:c + 2] += 0.5
    return blobs.clamp(0, 1)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(cnn, images):
    scorer = SampleScorer(cnn, images)
    y = torch.arange(300) % 10
    g = torch.Generator().manual_seed(1)
    fids = [scorer((images + s * torch.randn(images.shape, generator=g)).clamp(0, 1), y)["fid"]
            for s in (0.05, 0.2, 0.5)]
    assert 0 < fids[0] < fids[1] < fids[2]
    assert abs(scorer(images, y)["fid"]) < 1e-3 * fids[0]       # (an untrained CNN: small feature scale)


def test_fid_matches_the_closed_form_on_the_cnn_features(cnn, images):
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), computed independently with scipy."""
    from scipy import linalg

    fake = images.flip(-1) * 0.8
    with torch.no_grad():
        f1, f2 = (cnn.features(x.unsqueeze(1)).double().numpy() for x in (images, fake))
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    expected = ((f1.mean(0) - f2.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert SampleScorer(cnn, images)(fake, torch.zeros(300, dtype=torch.long))["fid"] == pytest.approx(expected, rel=1e-3)


def test_guidance_is_chosen_by_the_rule_on_validation_and_refused_on_test(cnn, images):
    """With no accuracy bar the least noisy w wins (w = 0 is a candidate); every run gets its validation scores;
    a test scorer is refused."""
    g = torch.Generator().manual_seed(2)
    y = (torch.arange(300) % 10).numpy()
    noise = {0.0: 0.2, 0.5: 0.3, 1.0: 0.1, 2.0: 0.5}
    runs = [{"key": f"w{w:g}", "guidance_w": w} for w in noise]
    arrays = {f"w{w:g}_x": (images + s * torch.randn(images.shape, generator=g)).clamp(0, 1).numpy()
              for w, s in noise.items()}
    arrays |= {f"w{w:g}_y": y for w in noise}
    assert choose_guidance(SampleScorer(cnn, images), arrays, runs, accuracy_bar=0.0) == 1.0
    assert all({"val_fid", "val_accuracy", "val_n"} <= set(r) and r["val_n"] == 300 for r in runs)
    assert runs[2]["val_fid"] < runs[0]["val_fid"] < runs[1]["val_fid"] < runs[3]["val_fid"]
    with pytest.raises(TestSplitSelection):
        choose_guidance(SampleScorer(cnn, images, split="test"), arrays, runs, accuracy_bar=0.0)


def test_fid_from_features_matches_torchmetrics_and_the_floor_is_low_for_real_data(cnn, images):
    f = features(cnn, images)
    fake = features(cnn, (images.flip(-1) * 0.8))
    ref = Reference(f[:150])
    expected = SampleScorer(cnn, images[:150])(images.flip(-1)[150:] * 0.8, torch.zeros(150, dtype=torch.long))["fid"]
    assert frechet(fake[150:], ref) == pytest.approx(expected, rel=1e-3)
    floor = real_vs_real(f[150:], ref, 100, n_subsets=5)
    assert floor["mean"] < frechet(fake[150:], ref) and floor["ci95"][0] <= floor["mean"] <= floor["ci95"][1]
    ci = fid_ci(fake[150:], ref, n_boot=20)
    assert ci["ci"][0] <= ci["ci"][1] and ci["n"] == 150


def test_accuracy_counts_agreement_with_the_cnn(cnn, images):
    with torch.no_grad():
        pred = cnn(images.unsqueeze(1)).argmax(1)
    scorer = SampleScorer(cnn, images)
    assert scorer(images, pred)["accuracy"] == 1.0
    wrong = (pred + 1) % 10
    wrong[:75] = pred[:75]
    assert scorer(images, wrong)["accuracy"] == pytest.approx(0.25)


def fake_pipeline(cfg, test_x: np.ndarray, test_y: np.ndarray) -> None:
    """What classifier/cnf/flow_matching/diffusion would leave behind, with real test images as 'good' samples."""
    from genlab.nn.classifiers import build
    from genlab.stages.classifier import model_config

    torch.manual_seed(0)
    models = cfg.paths.models
    save_model(f"{models}/classifier/cnn.pt", build("cnn", cfg.model.classifier.cnn).state_dict(), model_config(cfg, "cnn"))
    idx = np.concatenate([np.flatnonzero(test_y == k)[:2] for k in range(10)])
    good, y = test_x[idx].astype(np.float32) / 255, test_y[idx]
    noise = np.random.default_rng(0).uniform(0, 1, good.shape).astype(np.float32)
    for stage, runs in [("flow_matching", [("euler2_w0", "euler", 2, 0.0, None), ("euler2_w1", "euler", 2, 1.0, None),
                                            ("euler1_w0", "euler", 1, 0.0, None)]),
                        ("diffusion", [("ddim2_eta0_w0", "ddim", 2, 0.0, 0.0), ("ddim2_eta0_w1", "ddim", 2, 1.0, 0.0),
                                       ("ddpm8_w0", "ddpm", 8, 0.0, 1.0)])]:
        arrays = {}
        for key, *_ in runs:
            arrays[f"{key}_x"] = good if key.endswith("w1") else noise
            arrays[f"{key}_y"] = y
        meta = [{"key": k, "sampler": s, "steps": n, "nfe": n * (2 if w else 1), "guidance_w": w, "eta": e,
                 "seconds": 0.1} for k, s, n, w, e in runs]
        selection = [{"guidance_w": w, "nfe": 2, "val_fid": 1.0 + w, "val_accuracy": 0.9} for w in (0.0, 1.0)]
        save_arrays(f"{models}/{stage}/samples", arrays, {"runs": meta, "main_steps": 2, "best_w": 1.0, "eta": 0.0,
                                                          "selection": selection})
    reports = cfg.paths.reports
    write_json(f"{reports}/metrics/cnf.json", {"cnf_toy": {"test_nll": 2.9, "sec_per_iter": 0.5, "nfe": 60}})
    write_json(f"{reports}/metrics/flow_matching.json", {"fm_toy": {"test_nll": 2.95, "sec_per_iter": 0.01},
                                                         "fm_over_cnf_time_to_nll": 0.05,
                                                         "fm_over_cnf_nfe_to_nll": 0.07})


def test_stage_on_fake_sample_files(make_cfg, prepared, tmp_path):
    from genlab.stages import generative_eval

    cfg = make_cfg(tmp_path, f"paths.data={prepared / 'data'}")
    arrays, _ = load_arrays(prepared / "data" / "mnist")
    fake_pipeline(cfg, arrays["test_x"], arrays["test_y"])
    generative_eval.run(cfg)
    out = read_json(tmp_path / "reports" / "metrics" / "generative.json")
    fm, dm = out["flow_matching"], out["diffusion"]
    assert out["n_samples"] == 10 and fm["nfe"] == 4 and fm["steps"] == 2 and dm["steps"] == 2
    assert dm["ddpm"]["steps"] == 8 and dm["chosen_eta"] == 0.0
    assert fm["guidance_w"] == dm["guidance_w"] == 1.0 and dm["sampler"] == "ddim"
    assert fm["fid"] < fm["fid_w0"] and dm["fid"] < dm["fid_w0"]          # real digits beat uniform noise
    assert fm["fid_ci95"][0] <= fm["fid"] <= fm["fid_ci95"][1]
    assert out["real_vs_real_fid"]["n"] == 10 and out["real_vs_real_fid"]["mean"] < fm["fid_w0"]
    assert out["cnf_toy"]["nfe"] == 60 and out["fm_over_cnf_time_to_nll"] == 0.05
    assert out["fm_over_cnf_nfe_to_nll"] == 0.07
    claims = {c["id"]: c for c in out["conclusions"]}
    assert claims["fm_beats_diffusion_fid_10nfe"]["estimate"] == pytest.approx(0.0, abs=1e-9)   # identical files
    assert claims["fm_beats_diffusion_fid_10nfe"]["n_seeds"] == 1
    assert len(out["guidance_curves_val"]) == 4


def test_fid_interval_covers_the_expected_fid_at_its_sample_size():
    """At d/N like the pipeline's (128-D features, 1,000 samples), bootstrap resamples inflate FID so much that
    the percentile interval almost never contains E[FID_N]; the centred interval does, at about its nominal
    rate, and always contains the estimate. Gaussian features, expected FID by Monte Carlo."""
    rng = np.random.default_rng(0)
    d, n = 32, 250
    real = Reference(rng.normal(size=(20000, d)))
    draw = lambda: rng.normal(size=(n, d)) * 1.3 + 0.3          # noqa: E731
    expected = np.mean([frechet(draw(), real) for _ in range(800)])
    centred = percentile = 0
    for i in range(40):
        r = fid_ci(draw(), real, n_boot=100, seed=i)
        assert r["ci"][0] <= r["estimate"] <= r["ci"][1]
        centred += r["ci"][0] <= expected <= r["ci"][1]
        lo, hi = np.percentile(r["boot"], [2.5, 97.5])
        percentile += lo <= expected <= hi
    assert centred / 40 >= 0.85 and percentile / 40 <= 0.5
