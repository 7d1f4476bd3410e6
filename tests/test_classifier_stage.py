"""The classifier stage over seeds: estimates with CIs, baselines chosen on validation, claims whose
verdicts follow from their CIs, and results that do not depend on the worker pool's size."""
from __future__ import annotations

import json

import pytest

from genlab.report.conclusions import Claim


@pytest.fixture
def run_stage(make_cfg, prepared, tmp_path, monkeypatch):
    from genlab.stages import classifier

    def run(workers: int, name: str) -> dict:
        monkeypatch.setenv("GENLAB_WORKERS", str(workers))
        out = tmp_path / name
        cfg = make_cfg(prepared, "seeds=[0,1,2]", "logger.wandb.mode=disabled",
                       *[f"paths.{k}={out / k}" for k in ("models", "checkpoints", "reports", "logs")])
        classifier.run(cfg)
        return json.loads((out / "reports" / "metrics" / "classifier.json").read_text())
    return run


def test_seeds_baselines_and_claims_independent_of_pool_size(run_stage):
    inline, pooled = run_stage(1, "inline"), run_stage(2, "pool")
    drop = lambda m: {a: {k: v for k, v in m[a].items() if not k.startswith("train_seconds")} for a in ("mlp", "cnn")}
    assert drop(inline) == drop(pooled)                       # same numbers, one process or two
    m = pooled
    for arch in ("mlp", "cnn"):
        lo, hi = m[arch]["test_accuracy_ci95"]
        assert m[arch]["n_seeds"] == 3 and lo <= m[arch]["test_accuracy"] <= hi
    assert set(m["baselines"]) == {"logistic_regression", "knn"}
    assert all(0 < b["test_accuracy"] <= 1 for b in m["baselines"].values())
    ids = {r["id"] for r in m["conclusions"]}
    assert ids == {"cnn_beats_mlp_accuracy", "mlp_beats_pixel_baseline", "cnn_beats_pixel_baseline"}
    for row in m["conclusions"]:
        assert Claim.from_row(row).verdict == row["verdict"] and row["n_seeds"] == 3
