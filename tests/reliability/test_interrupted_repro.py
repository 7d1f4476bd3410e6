"""kill -9 `dvc repro` (and the stage it is running) mid-training, rerun it: the pipeline completes,
the killed stage resumes from its last.ckpt, and `dvc status` / `dvc.lock` are clean and consistent."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, complete_checkpoint
from test_pipeline import IGNORE, sh


@pytest.mark.slow
def test_killed_dvc_repro_reruns_to_a_clean_consistent_pipeline(tmp_path):
    repo = tmp_path / "genlab"
    shutil.copytree(ROOT, repo, ignore=IGNORE)
    shutil.rmtree(repo / "reports" / "metrics", ignore_errors=True)
    (repo / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", cwd=repo)
    sh("genlab", "params", "experiment=smoke", "trainer.threads=1", "trainer.checkpoint_every=2", cwd=repo)

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GENLAB_CONFIG_DIR": str(repo / "experiments"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)   # its own process group: dvc and the stage it runs
    deadline = time.time() + 900
    while (ckpt := complete_checkpoint(repo / "checkpoints")) is None and time.time() < deadline:
        assert proc.poll() is None, "dvc repro ended before a training checkpoint could be caught"
        time.sleep(0.05)
    assert ckpt is not None, "no training stage wrote a checkpoint within 15 minutes"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stage = ckpt.relative_to(repo / "checkpoints").parts[0]

    rerun = sh("dvc", "repro", cwd=repo).stdout
    assert any(f"] {stage}/" in line and "resuming from" in line for line in rerun.splitlines()), rerun[-3000:]
    status = sh("dvc", "status", cwd=repo).stdout
    assert "up to date" in status, status
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    stages = sh("dvc", "stage", "list", "--name-only", cwd=repo).stdout.split()
    assert sorted(lock) == sorted(stages)                           # every stage recorded, nothing stale
    assert not list((repo / "checkpoints").rglob("last.ckpt"))      # resume points are gone after success
    assert "Running stage" not in sh("dvc", "repro", cwd=repo).stdout
