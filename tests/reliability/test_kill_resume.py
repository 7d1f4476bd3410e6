"""kill -9 mid-training, rerun the same command: it resumes from last.ckpt and ends with the
same result as an uninterrupted run (CPU, deterministic), for every stage that trains.

Every command gets the same overrides (``LONGER``), so the weights a stage loads from an
upstream stage (cnf → flow_matching, classifier → diffusion/generalization, sft →
reward_model → ppo/dpo) match its config; the upstream stages run once per session.
The kill lands after whichever checkpoint is on disk; ``checkpoint_every=5`` keeps every
checkpoint of the runs that draw random numbers while training (augmentation, noise) off an
epoch's last batch (that case is ``test_resume_points.py``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import complete_checkpoint, without_timing

from genlab.io import load_model

# smoke preset, with each stage's first run long enough to be killed after its first checkpoint
LONGER = ["trainer.checkpoint_every=5", "trainer.threads=1",
          "model.classifier.mlp.epochs=4",
          "model.cnf.toy.steps=12", "model.cnf.toy.eval_every=4",
          "model.flow_matching.toy.steps=12", "model.flow_matching.toy.eval_every=4", "model.flow_matching.mnist.steps=8",
          "model.diffusion.steps=12",
          "model.emergence.steps=16", "model.emergence.only=8",
          "model.gpt.max_iters=80", "model.gpt.lr_decay_iters=80", "model.gpt.eval_interval=20",
          "model.gpt_scaling.budgets=[2.0e8]", "model.gpt_scaling.sizes=[[L1-W16]]",
          "model.gpt_scaling.seeded_budgets=0",
          "model.generalization.random_labels.epochs=8",
          "model.rlhf.sft.base_steps=60", "model.rlhf.reward_model.steps=12", "model.rlhf.ppo.steps=8",
          "model.rlhf.dpo.steps=60"]   # the 1-layer sft/dpo nets take a few ms per step: with 10–12 steps the
                                       # checkpoint lived for less than one 50 ms poll and the kill missed it

# stage → (stages whose outputs it loads, the file holding its result)
CASES = {
    "classifier": ((), "reports/metrics/classifier.json"),
    "generalization": (("classifier",), "reports/metrics/generalization.json"),
    "cnf": ((), "reports/metrics/cnf.json"),
    "flow_matching": (("cnf", "classifier"), "reports/metrics/flow_matching.json"),
    "diffusion": (("classifier",), "reports/metrics/diffusion.json"),
    "gpt": ((), "reports/metrics/gpt.json"),
    "gpt_scaling": ((), "models/gpt_scaling/runs.json"),
    "emergence": ((), "models/emergence/w8.pt"),
    "sft": ((), "reports/metrics/sft.json"),
    "reward_model": (("sft",), "reports/metrics/reward_model.json"),
    "ppo": (("sft", "reward_model"), "reports/metrics/ppo.json"),
    "dpo": (("sft", "reward_model"), "reports/metrics/dpo.json"),
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def command(stage: str, root: Path, data: Path) -> list[str]:
    paths = [f"paths.data={data}"] + [f"paths.{k}={root / k}" for k in ("models", "checkpoints", "reports", "logs")]
    return [sys.executable, "-m", "genlab.cli", stage, "experiment=smoke", *paths, *LONGER]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def result(path: Path):
    """The stage's result without wall-clock fields; a weights file also with its tensors."""
    if path.suffix == ".json":
        return without_timing(json.loads(path.read_text()))
    payload = load_model(path)
    return without_timing({**payload, "state_dict": {k: v.tolist() for k, v in payload["state_dict"].items()}})


@pytest.fixture(scope="session")
def upstream(prepared, tmp_path_factory):
    """``needs → root`` holding the models and metrics of exactly those stages (run in that order), built once."""
    roots: dict[tuple[str, ...], Path] = {(): tmp_path_factory.mktemp("upstream")}

    def build(needs: tuple[str, ...]) -> Path:
        if needs not in roots:
            root = tmp_path_factory.mktemp("upstream")
            shutil.copytree(build(needs[:-1]), root, dirs_exist_ok=True)
            run(command(needs[-1], root, prepared / "data"), root)
            shutil.rmtree(root / "checkpoints", ignore_errors=True)
            roots[needs] = root
        return roots[needs]
    return build


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(CASES))
def test_kill_9_then_rerun_resumes_to_the_same_result(stage, prepared, upstream, tmp_path):
    needs, output = CASES[stage]
    data, inputs = prepared / "data", upstream(needs)
    for name in ("reference", "killed"):
        for sub in ("models", "reports"):
            if (inputs / sub).exists():
                shutil.copytree(inputs / sub, tmp_path / name / sub)
    run(command(stage, tmp_path / "reference", data), tmp_path)
    reference = result(tmp_path / "reference" / output)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(stage, killed, data), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 600
    while not complete_checkpoint(killed / "checkpoints") and time.time() < deadline:
        assert proc.poll() is None, "finished before a checkpoint could be caught; give it more steps"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / output).exists()    # nothing trusted was written

    resumed = run(command(stage, killed, data), tmp_path)
    assert "resuming from" in resumed.stdout
    assert result(killed / output) == reference
