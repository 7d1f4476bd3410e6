"""End to end: the smoke preset through `dvc repro` in a temp copy of the checkout."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, without_timing

ANYWHERE = shutil.ignore_patterns(".venv", ".git", "wandb", "outputs", "multirun", "__pycache__", "*.egg-info")
AT_ROOT = {"data", "models", "checkpoints", "logs"}          # outputs; experiments/data/ etc. must stay


def IGNORE(directory: str, names: list[str]) -> set[str]:
    skip = set(ANYWHERE(directory, names))
    if Path(directory) == ROOT:
        skip |= AT_ROOT & set(names)
    if Path(directory) == ROOT / "reports":
        skip |= {"figures", "index.html", "report.md"} & set(names)
    return skip


def sh(*cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GENLAB_CONFIG_DIR": str(cwd / "experiments")}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo") / "genlab"
    shutil.copytree(ROOT, repo, ignore=IGNORE)
    shutil.rmtree(repo / "reports" / "metrics", ignore_errors=True)
    (repo / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", cwd=repo)
    sh("genlab", "params", "experiment=smoke", "--force", cwd=repo)   # a throwaway copy: params.yaml may change
    sh("dvc", "repro", cwd=repo)
    return repo


def metrics(repo: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted((repo / "reports" / "metrics").glob("*.json"))}


@pytest.mark.slow
def test_smoke_pipeline_runs_every_stage_and_writes_the_report(smoke_repo):
    stages = subprocess.run([str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"],
                            cwd=smoke_repo, capture_output=True, text=True).stdout.split()
    produced = metrics(smoke_repo)
    assert "classifier.json" in produced and "prepare.json" in produced
    html = (smoke_repo / "reports" / "index.html").read_text()
    for name in produced:
        assert f'id="{name[:-5]}"' in html
    assert "data:image/png;base64" in html
    assert len(stages) >= 3


@pytest.mark.slow
def test_second_repro_does_nothing(smoke_repo):
    out = sh("dvc", "repro", cwd=smoke_repo).stdout
    assert "Running stage" not in out


@pytest.mark.slow
def test_forced_repro_gives_identical_metrics(smoke_repo):
    before = without_timing(metrics(smoke_repo))
    sh("dvc", "repro", "-f", cwd=smoke_repo)
    assert without_timing(metrics(smoke_repo)) == before


@pytest.mark.slow
def test_dvc_exp_run_recomposes_params_through_hydra(smoke_repo):
    """`dvc exp run -S key=value` recomposes params.yaml from experiments/ (DVC's Hydra integration)."""
    sh("git", "add", "-A", cwd=smoke_repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke", cwd=smoke_repo)
    sh("dvc", "exp", "run", "-n", "wider", "-S", "experiment=smoke", "-S", "model.classifier.mlp.width=24",
       cwd=smoke_repo)
    shown = sh("dvc", "exp", "show", "--json", cwd=smoke_repo).stdout
    assert "wider" in shown and "24" in shown


@pytest.mark.slow
def test_dvc_exp_queue_runs_one_experiment_per_grid_value(smoke_repo):
    """README's queue recipe: `dvc exp run --queue -S key=a,b` queues a grid, the queue runs every point."""
    if sh("git", "status", "--porcelain", cwd=smoke_repo).stdout.strip():
        sh("git", "add", "-A", cwd=smoke_repo)
        sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke", cwd=smoke_repo)
    sh("dvc", "exp", "run", "--queue", "-S", "experiment=smoke", "-S", "model.classifier.mlp.width=20,28",
       cwd=smoke_repo)
    sh("dvc", "exp", "run", "--run-all", cwd=smoke_repo)
    rows = list(csv.DictReader(io.StringIO(sh("dvc", "exp", "show", "--csv", cwd=smoke_repo).stdout)))
    queued = {r["model.classifier.mlp.width"] for r in rows if r.get("State") in ("", "Success", None)}
    assert {"20", "28"} <= queued, rows
