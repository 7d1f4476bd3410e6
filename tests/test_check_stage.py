"""A bad value in params.yaml costs no data: the `check` stage validates it before any stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so without `check` a typo'd value in
the `data` section would delete ``data/`` before genlab could refuse it. `check` runs ``genlab show`` on
params.yaml and writes a constant marker that every other stage depends on.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from test_pipeline import IGNORE, sh

MARKER = "logs/config.ok"
BIN = Path(sys.executable).parent


def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def check_command() -> str:
    """The `check` stage's shell command with dvc.yaml's vars filled in."""
    doc = dvc_yaml()
    cmd = doc["stages"]["check"]["cmd"]
    for var in doc["vars"]:
        for key, value in var.items():
            cmd = cmd.replace("${" + key + "}", value)
    return cmd


def env_for(repo: Path) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GENLAB_CONFIG_DIR": str(repo / "experiments")}


def smoke_params(cwd: Path) -> str:
    """The smoke preset's composition, as `genlab params` would write it."""
    return sh("genlab", "show", "experiment=smoke", cwd=cwd).stdout


def corrupt(params: str) -> str:
    """A wrong type in the `data` section, which `prepare` tracks (so DVC would re-run it)."""
    doc = yaml.safe_load(params)
    doc["data"]["toy2d"]["n_train"] = "lots"
    return yaml.safe_dump(doc, sort_keys=False)


def test_check_is_an_ancestor_of_every_stage_and_tracks_all_of_params_yaml():
    stages = dvc_yaml()["stages"]
    check = stages["check"]
    assert check["params"] == [{"params.yaml": None}]            # no keys: the whole file
    assert "src/genlab/config" in check["deps"]
    assert check["outs"] == [{MARKER: {"cache": False}}]
    late = sorted(name for name, s in stages.items() if name != "check" and MARKER not in s.get("do", s)["deps"])
    assert not late, f"stages {late} do not depend on {MARKER}, so they may run before `check` — fix: add it to deps"


def test_check_command_refuses_a_bad_value_and_writes_a_constant_marker(tmp_path):
    good = smoke_params(ROOT)
    run = lambda: subprocess.run(check_command(), shell=True, cwd=tmp_path, env=env_for(ROOT),  # noqa: E731
                                 capture_output=True, text=True, timeout=300)
    (tmp_path / "params.yaml").write_text(corrupt(good))
    bad = run()
    assert bad.returncode == 2 and not (tmp_path / MARKER).exists()
    assert bad.stderr.strip().splitlines()[-1].startswith("genlab: error: ") and "data.toy2d.n_train" in bad.stderr

    other = good.replace("max_iters: 6", "max_iters: 7", 1)
    assert other != good
    markers = []
    for params in (good, other):                # any valid config: the same marker
        (tmp_path / "params.yaml").write_text(params)
        assert run().returncode == 0
        markers.append((tmp_path / MARKER).read_bytes())
    assert markers[0] == markers[1] and markers[0]


def digest(repo: Path) -> dict[str, str]:
    files = [*sorted((repo / "data").iterdir()), *sorted((repo / "reports" / "metrics").glob("*.json"))]
    return {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_bad_params_fail_in_check_and_leave_data_and_metrics_untouched(tmp_path):
    repo = tmp_path / "genlab"
    shutil.copytree(ROOT, repo, ignore=IGNORE)
    shutil.rmtree(repo / "reports" / "metrics", ignore_errors=True)
    (repo / "dvc.lock").unlink(missing_ok=True)
    sh("git", "init", "-q", cwd=repo)
    good = smoke_params(repo)
    (repo / "params.yaml").write_text(good)
    sh("dvc", "repro", "check", "prepare", cwd=repo)
    before = digest(repo)
    assert "data/mnist.npz" in before and "reports/metrics/prepare.json" in before

    (repo / "params.yaml").write_text(corrupt(good))
    failed = subprocess.run(["dvc", "repro"], cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0
    assert "failed to reproduce 'check'" in failed.stderr + failed.stdout
    assert "Running stage 'prepare'" not in failed.stdout
    assert digest(repo) == before

    (repo / "params.yaml").write_text(good)     # fixed: check runs again, its marker is unchanged, nothing else runs
    rerun = sh("dvc", "repro", "check", "prepare", cwd=repo).stdout
    assert "Running stage 'check'" in rerun and "Running stage 'prepare'" not in rerun
    assert digest(repo) == before
    assert "up to date" in sh("dvc", "status", "check", "prepare", cwd=repo).stdout
