"""Sweeps: Hydra multirun (basic and submitit_local launchers), sweep validation, wandb sweep files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from genlab.cli import sweep_points

TINY = ["experiment=smoke", "model.classifier.archs=[mlp]", "model.classifier.mlp.width=4,8"]


def test_sweep_points_cover_every_value_once():
    points = sweep_points(["a=1,2", "b=x,y,z", "c=3"])
    assert points[0] == ["a=1", "b=x", "c=3"]
    assert len(points) == 1 + 1 + 2
    assert {p[0] for p in points} == {"a=1", "a=2"} and {p[1] for p in points} == {"b=x", "b=y", "b=z"}


@pytest.mark.parametrize("override, needle", [
    ("model.classifier.mlp.width=8,abc", "has the wrong type"),
    ("model.classifier.mlp.widht=8,16", "unknown config key"),
    ("model.classifier.mlp.width=8,,16", "sweep override does not parse"),
    ("hydra/launcher=nosuch", "Could not find 'hydra/launcher/nosuch'"),
])
def test_bad_sweeps_fail_before_any_job(override, needle, tmp_path):
    result = run_cli("classifier", "-m", override, cwd=tmp_path)
    assert result.returncode == 2 and needle in result.stderr
    assert not (tmp_path / "logs").exists()           # nothing launched


def test_shipped_sweep_files_are_valid():
    for sweep in (ROOT / "experiments" / "sweeps").glob("*.yaml"):
        result = run_cli("check-sweep", str(sweep))
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("body, needle", [
    ("method: grid\nparameters: {model.classifier.lr: {values: [0.1]}}\ncommand: [genlab, classifier]\n",
     "does not pass ${args_no_hyphens}"),
    ("method: sideways\nparameters: {}\ncommand: ['${args_no_hyphens}']\n", "method='sideways'"),
    ("method: grid\nparameters: {model.classifier.lr: {values: [-1]}}\ncommand: ['${args_no_hyphens}']\n",
     "model.classifier.lr must be > 0"),
    ("method: [grid\n", "not valid YAML"),
])
def test_malformed_sweep_file_is_one_clear_line(body, needle, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(body)
    result = run_cli("check-sweep", str(sweep))
    assert result.returncode == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _jobs(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("logs/multirun/classifier/*/*/reports/metrics/"
                                                                "classifier.json"))]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_multirun_gives_one_output_dir_per_job(launcher, prepared, tmp_path):
    result = run_cli("classifier", "-m", *TINY, f"paths.data={prepared / 'data'}", "logger=disabled",
                     f"hydra/launcher={launcher}", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = _jobs(tmp_path)
    assert len(jobs) == 2
    assert jobs[0]["mlp"]["parameters"] != jobs[1]["mlp"]["parameters"]   # width 4 vs 8: distinct runs
