"""Which genlab source files a pipeline stage runs: the static import closure behind ``genlab <stage>``.

DVC re-runs a stage when one of its deps changes, so the ``deps`` of a stage in ``dvc.yaml`` must name
every genlab file its run imports — and no more, or unrelated edits re-run it. This module finds those
files by reading source, without importing anything:

* every ``import`` / ``from … import`` of a genlab module anywhere in a module counts, function-level
  (lazy) imports included; ``from genlab.pkg import name`` counts ``genlab.pkg.name`` when that is a
  module; importing a module also runs the ``__init__.py`` of each package above it;
* the command line is part of every stage: ``genlab <stage>`` runs ``genlab.cli`` (its module level, and
  the functions that dispatch a stage, ``ENTRY``) before ``genlab.stages.<stage>``. The cli's utility
  commands (``show``, ``params``, ``check-sweep``) import their own modules lazily inside
  ``main``; those are not on a stage's path and are left out;
* the ``check`` stage runs ``genlab show``: the cli functions of ``SHOW``.

``stage_files(stage)`` lists a stage's files; ``dep_list`` turns them into ``dvc.yaml`` deps, a directory
standing for all the files under it when the stage imports every one of them.
``tests/test_deps.py`` checks dvc.yaml against it; ``python -m genlab.depgraph [stage …]`` prints it.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent        # src/: module genlab.a.b is SRC/genlab/a/b.py
ROOT = SRC.parent                                    # the checkout; dvc.yaml paths are relative to it
CLI = "genlab.cli"
ENTRY = ("stages", "run_stage")      # what `main` calls for a stage; the functions they call follow
SHOW = ("_split", "_flag", "compose")   # what `main` calls for `genlab show`


def module_file(name: str) -> Path | None:
    """The source file of genlab module ``name`` (a package: its ``__init__.py``); None if there is none."""
    base = SRC.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _is_genlab(name: str) -> bool:
    return name == "genlab" or name.startswith("genlab.")


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The genlab modules one import statement of ``module`` loads, parent packages included."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:                                  # relative: resolve against module's package
            package = module.split(".")
            if module_file(module).name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = {base} | {f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}")}
    out = set()
    for name in filter(_is_genlab, names):
        parts = name.split(".")
        out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]))}
    return out


def _imports_in(nodes: list[ast.AST], module: str) -> set[str]:
    return {m for n in nodes for sub in ast.walk(n) if isinstance(sub, (ast.Import, ast.ImportFrom))
            for m in _imported(sub, module)}


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(module_file(module).read_text(), filename=str(module_file(module)))


@cache
def imports(module: str, functions: tuple[str, ...] | None = None) -> frozenset[str]:
    """Genlab modules that ``module`` imports: all of its statements, or — given ``functions`` — those at
    module level plus those inside these module-level functions and every module-level function they name."""
    tree = _tree(module)
    if functions is None:
        return frozenset(_imports_in(tree.body, module))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    reached, todo = set(), [f for f in functions if f in defs]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs]
    return frozenset(_imports_in(top + [defs[f] for f in reached], module))


def closure(roots: dict[str, tuple[str, ...] | None]) -> set[str]:
    """Every genlab module loaded from ``roots`` (module → its functions that run, or None: all of it)."""
    seen, todo = set(), []
    for module, functions in roots.items():
        parts = module.split(".")
        seen |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}    # its packages' __init__ run first
        todo += imports(module, functions)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += imports(module)
    return seen


def relative(module: str) -> str:
    return module_file(module).relative_to(ROOT).as_posix()


def stage_files(stage: str) -> list[str]:
    """Repo-relative source files that ``genlab <stage>`` imports (``check``: what ``genlab show`` imports)."""
    if stage == "check":
        roots = {CLI: SHOW}
    else:
        roots = {CLI: ENTRY, f"genlab.stages.{stage}": None}
    return sorted(relative(m) for m in closure(roots))


def stages() -> list[str]:
    """Every stage module (``genlab/stages/<name>.py`` without a leading underscore)."""
    return sorted(p.stem for p in (SRC / "genlab" / "stages").glob("*.py") if not p.stem.startswith("_"))


def stage_imports(stage: str) -> set[str]:
    """The other stage modules that ``genlab.stages.<stage>`` imports (should be none)."""
    return {m for m in closure({f"genlab.stages.{stage}": None})
            if m.startswith("genlab.stages.") and m != f"genlab.stages.{stage}"}


def dep_list(files: list[str]) -> list[str]:
    """``files`` as dvc deps: a package directory replaces its files when every ``.py`` under it is listed."""
    wanted = set(files)
    package = SRC / "genlab"
    done: set[str] = set()
    out = []
    for directory in sorted((p for p in package.rglob("*") if p.is_dir() and "__pycache__" not in p.parts),
                            key=lambda p: len(p.parts)):
        sources = {p.relative_to(ROOT).as_posix() for p in directory.rglob("*.py")}
        if sources and sources <= wanted and not sources <= done:
            out.append(directory.relative_to(ROOT).as_posix())
            done |= sources
    return sorted(out + [f for f in files if f not in done])


def uncovered(files: list[str], deps: list[str]) -> list[str]:
    """The ``files`` that no dep covers (a dep directory covers every file under it)."""
    return [f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]


def write_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> list[str]:
    """Rewrite each stage's ``src/…`` deps in ``dvc.yaml`` to its closure, in place; return changed stages.

    Text-level, so comments and layout stay: within a stage's ``deps:`` block the run of ``src/`` lines
    is replaced by ``dep_list(stage_files(<command>))``; other deps (data, models, markers) are kept.
    """
    import re

    import yaml

    stages_yaml = yaml.safe_load(path.read_text())["stages"]
    lines, out, changed = path.read_text().splitlines(keepends=True), [], []
    stage, i = None, 0
    while i < len(lines):
        line = lines[i]
        top = re.match(r"^  (\w+):\s*$", line)
        if top:
            stage = top.group(1)
        if stage and re.match(r"^\s+deps:\s*$", line):
            out.append(line)
            i += 1
            block = []
            while i < len(lines) and re.match(r"^\s+- ", lines[i]):
                block.append(lines[i])
                i += 1
            indent = re.match(r"^(\s+)- ", block[0]).group(1) if block else " " * 8
            definition = stages_yaml[stage].get("do", stages_yaml[stage])
            command = definition["cmd"].split()[1]
            code = dep_list(stage_files("check" if command == "show" else command))
            other = [b for b in block if not b.strip().startswith("- src/")]
            first_src = next((k for k, b in enumerate(block) if b.strip().startswith("- src/")), len(other))
            new = other[:first_src] + [f"{indent}- {d}\n" for d in code] + other[first_src:]
            changed += [stage] if new != block else []
            out += new
            continue
        out.append(line)
        i += 1
    path.write_text("".join(out))
    return changed


def main(argv: list[str]) -> None:
    """``python -m genlab.depgraph [stage …]``: each stage's code deps, as dvc.yaml lists them;
    ``python -m genlab.depgraph --write``: rewrite them in dvc.yaml."""
    if argv == ["--write"]:
        changed = write_dvc_yaml()
        print(f"dvc.yaml: code deps rewritten for {', '.join(changed) or 'no stage (already right)'}")
        return
    for stage in argv or ["check", *stages()]:
        print(f"{stage}:\n" + "".join(f"  - {dep}\n" for dep in dep_list(stage_files(stage))), end="")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
