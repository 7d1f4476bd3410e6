"""kill -9 mid-training, rerun the same command: it resumes from last.ckpt and ends with the
same metrics as an uninterrupted run (CPU, deterministic)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import without_timing

CASES = {
    "classifier": ["model.classifier.archs=[mlp]", "model.classifier.mlp.epochs=4"],
    "gpt": ["model.gpt.max_iters=80", "model.gpt.lr_decay_iters=80", "model.gpt.eval_interval=20"],
}


def command(stage: str, root: Path, data: Path) -> list[str]:
    paths = [f"paths.data={data}"] + [f"paths.{k}={root / k}" for k in ("models", "checkpoints", "reports", "logs")]
    return [sys.executable, "-m", "genlab.cli", stage, "experiment=smoke", "trainer.checkpoint_every=5",
            *paths, *CASES[stage]]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(CASES))
def test_kill_9_then_rerun_resumes_to_the_same_metrics(stage, prepared, tmp_path):
    data = prepared / "data"
    run(command(stage, tmp_path / "reference", data), tmp_path)
    reference = json.loads((tmp_path / "reference" / "reports" / "metrics" / f"{stage}.json").read_text())

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(stage, killed, data), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list((killed / "checkpoints").rglob("last.ckpt")) and time.time() < deadline:
        assert proc.poll() is None, "finished before a checkpoint could be caught; give it more steps"
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "reports" / "metrics" / f"{stage}.json").exists()    # nothing trusted was written

    resumed = run(command(stage, killed, data), tmp_path)
    assert "resuming from" in resumed.stdout
    after = json.loads((killed / "reports" / "metrics" / f"{stage}.json").read_text())
    assert without_timing(after) == without_timing(reference)

