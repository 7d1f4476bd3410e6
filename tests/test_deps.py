"""dvc.yaml's code deps are right by construction: each stage lists every genlab file it imports
(``genlab.depgraph``'s static closure), and stages never import one another."""
from __future__ import annotations

import pytest
import yaml
from conftest import ROOT

from genlab import depgraph


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml stage name → its definition (a foreach stage: its ``do`` block)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: s.get("do", s) for name, s in stages.items()}


def command(stage: dict) -> str:
    """The genlab command a stage runs: ``${run} <command> ${cfg} …`` → <command>."""
    return stage["cmd"].split()[1]


def code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if d.startswith("src/")]


def stage_module(stage: dict) -> str:
    """The files the stage's command imports: a stage module's closure, or ``genlab show``'s for `check`."""
    return "check" if command(stage) == "show" else command(stage)


STAGES = dvc_stages()


def test_every_stage_module_is_a_dvc_stage():
    run = {stage_module(s) for s in STAGES.values()}
    assert set(depgraph.stages()) <= run, f"no dvc.yaml stage runs {sorted(set(depgraph.stages()) - run)}"


@pytest.mark.parametrize("name", STAGES)
def test_deps_cover_every_imported_genlab_file(name):
    stage = STAGES[name]
    missing = depgraph.uncovered(depgraph.stage_files(stage_module(stage)), stage["deps"])
    assert not missing, (f"dvc.yaml stage '{name}' imports {missing} but its deps do not list them, so DVC "
                         f"would not re-run it when they change — fix: add them to its deps "
                         f"(`python -m genlab.depgraph {stage_module(stage)}` prints the whole list)")


@pytest.mark.parametrize("name", STAGES)
def test_deps_list_no_code_the_stage_does_not_import(name):
    stage = STAGES[name]
    exact = depgraph.dep_list(depgraph.stage_files(stage_module(stage)))
    extra = sorted(set(code_deps(stage)) - set(exact))
    assert not extra, (f"dvc.yaml stage '{name}' depends on {extra}, which it does not import (or a directory "
                       f"of which it imports only part), so unrelated edits re-run it — fix: list exactly "
                       f"`python -m genlab.depgraph {stage_module(stage)}`")


@pytest.mark.parametrize("stage", depgraph.stages())
def test_no_stage_imports_another_stage(stage):
    others = depgraph.stage_imports(stage)
    assert not others, (f"genlab.stages.{stage} imports {sorted(others)}: a stage is an entry point, not a "
                        "library — fix: move what they share to genlab.recipes / genlab.saved / genlab.data.prepared")


def test_only_the_cli_imports_stages():
    modules = [".".join(p.relative_to(depgraph.SRC).with_suffix("").parts).removesuffix(".__init__")
               for p in (depgraph.SRC / "genlab").rglob("*.py")]
    importers = sorted(m for m in modules if not m.startswith("genlab.stages") and m != depgraph.CLI
                       and any(i.startswith("genlab.stages.") for i in depgraph.imports(m)))
    assert not importers, f"{importers} import genlab.stages — fix: import the shared code from a layer below"


def test_closure_follows_lazy_imports_and_only_the_stage_path_of_the_cli():
    every = depgraph.imports(depgraph.CLI)
    stage_path = depgraph.imports(depgraph.CLI, depgraph.ENTRY)
    assert {"genlab.runner", "genlab.config", "genlab.sweeps"} <= every        # imported inside functions
    assert {"genlab.runner", "genlab.config"} <= stage_path                    # run_stage's lazy imports
    assert "genlab.sweeps" not in stage_path                                   # only `genlab check-sweep`


def test_dep_list_names_a_directory_only_when_every_file_under_it_is_imported():
    files = depgraph.stage_files("check")
    assert "src/genlab/config" in depgraph.dep_list(files)
    assert "src/genlab/config/schema.py" in files
    assert depgraph.dep_list(["src/genlab/config/schema.py"]) == ["src/genlab/config/schema.py"]
    assert depgraph.uncovered(["src/genlab/config/schema.py", "src/genlab/io.py"], ["src/genlab/config"]) == \
        ["src/genlab/io.py"]


def test_write_regenerates_dvc_yaml_unchanged(tmp_path):
    """`python -m genlab.depgraph --write` is how the deps are made: on the committed file it changes nothing,
    and on a file with a dep removed it puts it back."""
    copy = tmp_path / "dvc.yaml"
    text = (ROOT / "dvc.yaml").read_text()
    copy.write_text(text)
    assert depgraph.write_dvc_yaml(copy) == [] and copy.read_text() == text
    copy.write_text(text.replace("      - src/genlab/runner.py\n", "", 1))
    assert depgraph.write_dvc_yaml(copy) and copy.read_text() == text
