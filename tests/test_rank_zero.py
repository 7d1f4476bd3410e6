"""Only rank 0 writes: a stage under 2-process CPU DDP writes each metrics file, figure, weights file and
checkpoint once, from rank 0; rank 1 writes nothing.

``trainer=ddp_cpu trainer.strategy=ddp`` is Lightning's subprocess launcher — what ``trainer=ddp``,
torchrun and SLURM do: every rank runs the *whole* stage script, so every write after ``fit`` must be
rank-0 only. (With ``ddp_spawn`` only the workers train and the parent writes, which proves nothing.)
An audit hook (PEP 578) in the script records every file each rank opens for writing or renames into place.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = """
import os, sys
RANK = os.environ.get("LOCAL_RANK", "0")
OUT = os.open(os.path.join({root!r}, f"writes-{{RANK}}.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

def audit(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
        path = os.fspath(args[0])
    elif event == "os.rename":
        writing, path = True, os.fspath(args[1])
    else:
        return
    if writing and os.path.abspath(path).startswith({root!r} + "/out/"):
        os.write(OUT, (os.path.abspath(path) + "\\n").encode())

sys.addaudithook(audit)
sys.path.insert(0, {tests!r})
from conftest import compose_cfg
from genlab.runner import seed_all
from genlab.stages import classifier
cfg = compose_cfg(__import__("pathlib").Path({root!r}) / "out", "paths.data={data}", "trainer=ddp_cpu",
                  "trainer.strategy=ddp", "trainer.threads=1", "trainer.checkpoint_every=1",
                  "model.classifier.archs=[mlp]", "logger.wandb.mode=offline")
seed_all(cfg)
classifier.run(cfg)
"""


@pytest.mark.slow
def test_only_rank_zero_writes_under_ddp(prepared, tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(SCRIPT.format(root=str(tmp_path), tests=str(ROOT / "tests"), data=prepared / "data"))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr                 # a second rank really ran the stage
    rank0 = Counter(Path(p).relative_to(tmp_path / "out").as_posix()
                    for p in (tmp_path / "writes-0.txt").read_text().split())
    rank1 = (tmp_path / "writes-1.txt").read_text().split() if (tmp_path / "writes-1.txt").exists() else []
    assert rank1 == [], f"rank 1 wrote {sorted(set(rank1))}"
    final = {"reports/metrics/classifier.json", "reports/figures/classifier/mlp_confusion.png",
             "reports/plots/classifier/mlp_curve.csv", "models/classifier/mlp.pt"}
    renamed = Counter(p for p in rank0 if p in final)
    assert renamed == {p: 1 for p in final}                  # each renamed into place once
    assert any(p.startswith("checkpoints/classifier/") and p.endswith(".ckpt") for p in rank0)
    assert len(list((tmp_path / "out" / "logs" / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.slow
def test_the_cli_runs_a_stage_under_the_ddp_subprocess_launcher(prepared, tmp_path):
    """`genlab classifier trainer=ddp_cpu`: Lightning re-runs the command line for rank 1, so the CLI must
    leave a runnable ``sys.argv`` (console script + stage + overrides) behind Hydra's back."""
    paths = [f"paths.data={prepared / 'data'}"] + [f"paths.{k}={tmp_path / k}" for k in
                                                   ("models", "checkpoints", "reports", "logs")]
    result = subprocess.run([str(Path(sys.executable).parent / "genlab"), "classifier", "experiment=smoke",
                             "trainer=ddp_cpu", "trainer.threads=1", "model.classifier.archs=[mlp]",
                             "logger=disabled", *paths], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stdout + result.stderr          # the second rank ran the stage too
    assert (tmp_path / "reports" / "metrics" / "classifier.json").exists()
