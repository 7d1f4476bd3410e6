"""`scaling_fit` on a synthetic run set with a planted law (E's CI covers the truth), and the smoke preset end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from genlab.evaluate.flops import flops_per_token, non_embedding_params
from genlab.evaluate.scaling import predict

PLANTED = {"E": 1.1, "A": 22.0, "alpha": 0.35, "B": 49.0, "beta": 0.35}
DESIGN = {3e9: ["L1-W8", "L1-W16", "L2-W16", "L2-W24"],
          1e10: ["L1-W16", "L2-W16", "L2-W24", "L2-W32", "L3-W32"],
          3e10: ["L2-W16", "L2-W24", "L2-W32", "L3-W32", "L2-W48"],
          1e11: ["L2-W24", "L2-W32", "L2-W48", "L3-W48", "L3-W64"],
          3e11: ["L3-W32", "L2-W48", "L2-W64", "L3-W64", "L4-W80"]}


def synthetic_rows(noise: float, seeds=(0, 1, 2), seed: int = 0) -> list[dict]:
    """runs.json rows of the default IsoFLOP design with losses from ``PLANTED`` × exp(N(0, noise))."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget, sizes in DESIGN.items():
        for size in sizes:
            layers, width = (int(x[1:]) for x in size.split("-"))
            n = non_embedding_params(layers, width)
            fpt = flops_per_token(n, layers, width, 64, 65)
            d = int(budget / fpt)
            for s in seeds if budget < 3e11 else seeds[:1]:
                rows.append({"size": size, "n_layer": layers, "n_embd": width, "N": n, "budget": budget,
                             "flops_per_token": fpt, "D": d, "C": fpt * d, "seed": s,
                             "val_loss": float(predict(PLANTED, n, d) * np.exp(rng.normal(0, noise)))})
    return rows


def test_scaling_fit_on_synthetic_runs_covers_the_planted_e(make_cfg, tmp_path):
    from genlab.stages import scaling_fit

    (tmp_path / "models/gpt_scaling").mkdir(parents=True)
    (tmp_path / "models/gpt_scaling/runs.json").write_text(json.dumps(synthetic_rows(noise=0.01)))
    cfg = make_cfg(tmp_path, "model.scaling_fit.n_boot=60")
    scaling_fit.run(cfg)
    m = json.loads((tmp_path / "reports/metrics/scaling.json").read_text())
    lo, hi = m["fit_ci"]["E"]
    assert lo < PLANTED["E"] < hi and lo > 0.3                                   # identified, and covers the truth
    assert m["seed_noise"]["log_sd"] == pytest.approx(0.01, rel=0.35)          # the planted seed noise
    a_lo, a_hi = m["compute_optimal"]["approach3"]["a_ci"]
    assert a_lo < 0.5 < a_hi
    assert m["holdout_rel_error"] < 0.03 and len(m["holdout"]["runs"]) == 5
    ids = {c["id"]: c["verdict"] for c in m["conclusions"]}
    assert ids["scaling_e_identified"] == "holds" and set(ids) >= {"scaling_exponent_a_chinchilla",
                                                                 "scaling_exponent_a_kaplan", "scaling_holdout_within"}
    for name in ("runs", "isoflop", "heldout"):
        assert (tmp_path / f"reports/plots/scaling/{name}.csv").exists()
    assert (tmp_path / "reports/figures/scaling/scaling_laws.png").exists()


def test_gpt_scaling_and_scaling_fit_smoke(make_cfg, prepared, tmp_path):
    from genlab.stages import gpt_scaling, scaling_fit

    cfg = make_cfg(prepared, f"paths.models={tmp_path}/models", f"paths.reports={tmp_path}/reports",
                   f"paths.checkpoints={tmp_path}/ckpt", f"paths.logs={tmp_path}/logs")
    gpt_scaling.run(cfg)
    rows = json.loads((tmp_path / "models/gpt_scaling/runs.json").read_text())
    c = cfg.model.gpt_scaling
    assert len(rows) == len(c.sizes[0]) * len(cfg.seeds) + sum(map(len, c.sizes[1:]))   # seeds on the first budget
    for r in rows:
        assert r["N"] == non_embedding_params(r["n_layer"], r["n_embd"])
        assert r["C"] == r["flops_per_token"] * r["D"] and r["D"] == r["steps"] * c.batch_size * c.block_size
    scaling_fit.run(cfg)
    m = json.loads((tmp_path / "reports/metrics/scaling.json").read_text())
    assert set(m["fit"]) == {"E", "A", "alpha", "B", "beta"} and set(m["fit_ci"]) >= set(m["fit"])
    assert math.isfinite(m["holdout_rel_error"]) and len(m["isoflop"]) == len(c.budgets)
    assert (tmp_path / "reports/figures/scaling/scaling_laws.png").exists()
