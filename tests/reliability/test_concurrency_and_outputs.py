"""Runs that meet each other or the file system late: a second identical run, an output folder that
cannot be written, a stage failing after its weights were saved, genlab started outside the project."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.figure
import pytest
from conftest import ROOT, complete_checkpoint, genlab, one_line


def outputs(root: Path, data: Path) -> list[str]:
    return [f"paths.data={data}"] + [f"paths.{k}={root / k}" for k in ("models", "checkpoints", "reports", "logs")]


@pytest.fixture
def work(tmp_path, monkeypatch, prepared):
    monkeypatch.chdir(tmp_path)
    return tmp_path, ["experiment=smoke", *outputs(tmp_path, prepared / "data")]


@pytest.mark.slow
def test_a_second_identical_run_is_refused_while_the_first_trains(prepared, tmp_path, monkeypatch, capsys):
    """The second run used to "resume" from the first's live checkpoint and crash in the CSV logger."""
    args = ["gpt", "experiment=smoke", *outputs(tmp_path, prepared / "data"), "trainer.checkpoint_every=5",
            "model.gpt.max_iters=100000", "model.gpt.lr_decay_iters=100000", "model.gpt.eval_interval=50"]
    first = subprocess.Popen([sys.executable, "-m", "genlab.cli", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300
        while not complete_checkpoint(tmp_path / "checkpoints") and time.time() < deadline:
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.1)
        monkeypatch.chdir(tmp_path)
        code, err = genlab(monkeypatch, capsys, *args)
        assert code == 2 and "another genlab process is running this exact run" in one_line(err)
        assert first.poll() is None          # the first run was not disturbed
    finally:
        first.kill()
        first.wait()


def test_unwritable_reports_stops_before_training(work, monkeypatch, capsys):
    """paths.reports cannot be written: one line before any training, models/ untouched (the error used to
    come after training, with models/gpt/model.pt already replaced)."""
    root, base = work
    assert genlab(monkeypatch, capsys, "gpt", *base)[0] == 0
    weights = (root / "models" / "gpt" / "model.pt").read_bytes()
    (root / "a_file").write_text("in the way")
    code, err = genlab(monkeypatch, capsys, "gpt", *base, "model.gpt.max_iters=3", f"paths.reports={root / 'a_file' / 'r'}")
    assert code == 2 and f"cannot write {root / 'a_file' / 'r'}" in one_line(err)
    assert (root / "models" / "gpt" / "model.pt").read_bytes() == weights
    assert not list((root / "checkpoints").rglob("last.ckpt"))


def test_a_stage_failing_after_its_weights_leaves_old_weights_and_old_metrics(work, monkeypatch, capsys):
    """A failure after the weights were written (here: the loss figure cannot be rendered) replaces
    neither the weights nor the metrics: both old, never new weights with old metrics."""
    root, base = work
    assert genlab(monkeypatch, capsys, "gpt", *base)[0] == 0
    files = [root / "models" / "gpt" / "model.pt", root / "reports" / "metrics" / "gpt.json"]
    before = [f.read_bytes() for f in files]

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    try:
        code, err = genlab(monkeypatch, capsys, "gpt", *base, "model.gpt.max_iters=3")   # other weights and metrics
    except OSError:
        code, err = None, ""
    assert code != 0, err
    assert [f.read_bytes() for f in files] == before
    assert not [p for f in files for p in f.parent.iterdir() if p.name.endswith(".tmp")]   # no temp file left


@pytest.mark.slow
def test_prepare_outside_the_project_writes_into_the_project(tmp_path):
    """Run from another directory, relative paths resolve against the project (the folder holding the
    experiments/ in use), with one line saying so; nothing is written into the current directory."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    shutil.copytree(ROOT / "experiments", project / "experiments")
    elsewhere.mkdir()
    env = {**os.environ, "GENLAB_CONFIG_DIR": str(project / "experiments"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "genlab.cli", "prepare", "experiment=smoke"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [ln for ln in result.stdout.splitlines() if "outside the project" in ln]
    assert len(notes) == 1 and str(project) in notes[0], result.stdout
    assert list(elsewhere.iterdir()) == []
    assert (project / "data" / "text.npz").exists() and (project / "reports" / "metrics" / "prepare.json").exists()


def test_no_benchmark_uses_a_fixed_tmp_path():
    """A fixed /tmp path is shared by every user and concurrent run on the machine: use tempfile."""
    import ast

    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        tree = ast.parse(script.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        fixed = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and id(n) not in docstrings and "/tmp/" in n.value]
        assert not fixed, f"{script.name}: {fixed}"
