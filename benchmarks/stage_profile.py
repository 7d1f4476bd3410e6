"""Where each pipeline stage spends its time: start-up, training, evaluation, sampling, checkpointing, logging.

    python benchmarks/stage_profile.py --repo /tmp/prof --json out.json                   # every dvc.yaml stage
    python benchmarks/stage_profile.py --repo /tmp/prof --stages prepare classifier gpt --set experiment=smoke
    python benchmarks/stage_profile.py --stages cnf --no-spy                             # wall and CPU only

Each stage runs as the command dvc.yaml gives it (`genlab <stage> --config-dir . --config-name params`;
a ``foreach`` stage once per item, named ``stage@item`` as in `dvc stage list`; ``--stages emergence``
means all its items), in the order of dvc.yaml, with the venv of this Python first on PATH, in the working
copy ``--repo`` (default: this checkout). It REWRITES THE STAGES' OUTPUTS (data/, models/, reports/) in that
copy, as `dvc repro -f` would, so it refuses a copy with uncommitted changes unless --force; use a scratch
clone (`git clone . /tmp/prof`). ``--set key=value`` (e.g. ``experiment=smoke``) recomposes params.yaml with
`genlab params --force key=value …` first, as `dvc exp run -S` does (the stages read params.yaml, whose
composition has no ``experiment`` group to override), and puts the original params.yaml back at the end.

Each command runs under `py-spy record --subprocesses --rate R` (idle samples left out, py-spy's default),
so the spawned pool workers of `genlab.parallel.run_many` are sampled too. A sample's seconds (1/R) go to one
category, decided by its Python stack (outermost frame first, as py-spy writes it):

1. startup — the stack holds an import (``_find_and_load``), or holds no stage code at all: neither
   ``run`` of a ``genlab/stages/<name>.py`` nor ``_run_job``/``_run_job_bytes`` of ``genlab/parallel.py``
   (a pool worker's job). So interpreter and worker start-up, imports (lazy ones inside a stage too),
   Hydra composition, genlab.cli before and after the stage's ``run``.
2. otherwise the innermost frame that matches a rule of ``RULES`` decides: a frame matches when its file
   path matches the rule's file pattern or the last part of its function name (``Trainer.fit`` → ``fit``)
   matches the rule's name pattern. Innermost first, so a checkpoint written from the training loop is
   checkpointing, a validation loop inside ``fit`` is evaluation, and a ``sample`` inside it is sampling.
   The ODE solvers (``genlab/evaluate/ode.py``) and ``torch.autograd.grad`` match no rule on purpose: they
   count for their caller (a training step, a likelihood evaluation or a sampler); ``backward`` is
   training. A function decorated with ``@torch.no_grad()``/``@torch.inference_mode()`` (the frame
   ``decorate_context`` of ``torch/utils/_contextlib.py``) is evaluation unless a frame inside it matched
   first: genlab decorates its evaluation helpers (``split_loss``, ``nll``, ``calibration`` …) so, and
   its samplers are caught by name before.
3. no frame matches: other (stage code outside the above: data preparation, figures, metrics files).

A sample with no Python frame at all (interpreter start and exit, native code) is startup by rule 1.

Per stage it reports: wall seconds (perf_counter around the command, py-spy's start-up excluded), the
process tree's CPU seconds (``RUSAGE_CHILDREN`` of a small wrapper: every waited-for descendant, pool workers
included), and per category the sampled seconds (samples / rate, summed over processes and threads), their
share, and CPU seconds = share × the tree's CPU seconds (the table shows these). Sampled seconds are not CPU
seconds: py-spy counts a thread that is running *or waiting for a core* (more busy processes than cores
inflate them), and torch's intra-op threads are not Python threads (two of them busy count once). Shares
compare categories; the tree's CPU seconds are the total. ``startup_main_s`` is the startup category of the
stage's main process alone (pool workers' own start-up not included), close to its wall time from process
start to the stage's work: the figure issue 28's start-up goal is about.

Goals (printed; exit status 1 when missed): the stages' total wall time ≤ --goal-minutes (issue 28: the
whole default pipeline within 30 minutes; meaningful when every stage runs), and no stage's
``startup_main_s`` above --startup-goal seconds (issue 28 item 5). py-spy pauses the process for each sample,
so wall times under it run a little long: use --no-spy for the wall-time goal alone.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ["startup", "training", "evaluation", "sampling", "checkpointing", "logging", "other"]

IMPORT = re.compile(r"^_find_and_load$")
STAGE_ENTRY = [  # (file pattern, function name): the frames that begin a stage's own work
    (re.compile(r"(^|/)genlab/stages/\w+\.py$"), "run"),
    (re.compile(r"(^|/)genlab/parallel\.py$"), "_run_job"),
    (re.compile(r"(^|/)genlab/parallel\.py$"), "_run_job_bytes"),
]
# (category, file pattern, pattern for the last part of the function name); None: no such pattern.
RULES = [
    ("checkpointing",
     re.compile(r"(^|/)(torch/serialization\.py|lightning/pytorch/callbacks/model_checkpoint\.py"
                r"|lightning/pytorch/trainer/connectors/checkpoint_connector\.py|genlab/saved/)"),
     re.compile(r"^(save_checkpoint|load_checkpoint|save_model|load_model)$")),
    ("logging",
     re.compile(r"(^|/)(lightning/(pytorch|fabric)/loggers/|lightning/pytorch/trainer/connectors/logger_connector/"
                r"|lightning/pytorch/callbacks/progress/|wandb/|tqdm/|logging/)"),
     re.compile(r"^(log|log_dict|log_metrics|log_hyperparams)$")),
    ("sampling", None, re.compile(r"(^|_)(sample|samples|sampling|generate)(_|$)")),
    ("evaluation",
     re.compile(r"(^|/)(lightning/pytorch/loops/(evaluation_loop|prediction_loop)\.py"
                r"|genlab/evaluate/(?!ode\.py)\w+\.py|torch/utils/_contextlib\.py)"),
     re.compile(r"(^|_)(eval|evaluate|evaluation|validate|validation|test|score|scores|fid)(_|$)")),
    ("training",
     re.compile(r"(^|/)(lightning/pytorch/loops/(fit_loop|training_epoch_loop)\.py"
                r"|lightning/pytorch/loops/optimization/|torch/optim/)"),
     re.compile(r"^(fit|train|training_step|train_step|optimizer_step|backward)$|^train_")),
]
Frame = tuple[str, str]   # (function name, file)


def in_stage(stack: list[Frame]) -> bool:
    return any(name == entry and pattern.search(file) for name, file in stack for pattern, entry in STAGE_ENTRY)


def classify(stack: list[Frame]) -> str:
    """The category of one sampled stack, outermost frame first (the rules of the module docstring)."""
    if any(IMPORT.match(name) for name, _ in stack) or not in_stage(stack):
        return "startup"
    for name, file in reversed(stack):
        short = name.rsplit(".", 1)[-1]
        for category, file_pattern, name_pattern in RULES:
            if (file_pattern and file_pattern.search(file)) or (name_pattern and name_pattern.search(short)):
                return category
    return "other"


def read_speedscope(path: Path) -> dict[int, dict[str, float]]:
    """py-spy's speedscope file → {pid: {category: sampled seconds}} (one profile per process and thread)."""
    data = json.loads(path.read_text())
    frames = [(f["name"], f.get("file") or "") for f in data["shared"]["frames"]]
    # --subprocesses puts each process's command line on top of its stacks as a frame: not code, left out
    code = [not (file == "" and name.startswith("process ")) for name, file in frames]
    out: dict[int, dict[str, float]] = {}
    for profile in data["profiles"]:
        match = re.match(r"Process (\d+)", profile.get("name", ""))
        pid = int(match.group(1)) if match else -1
        seconds = out.setdefault(pid, dict.fromkeys(CATEGORIES, 0.0))
        cache: dict[tuple, str] = {}
        for stack, weight in zip(profile["samples"], profile["weights"]):
            key = tuple(stack)
            if key not in cache:
                cache[key] = classify([frames[i] for i in stack if code[i]])
            seconds[cache[key]] += weight
    return out


def main_pid(path: Path) -> int | None:
    """The stage's main process: the lowest pid whose stacks pass through genlab/cli.py's ``main``."""
    data = json.loads(path.read_text())
    cli = {i for i, f in enumerate(data["shared"]["frames"])
           if f["name"] == "main" and re.search(r"(^|/)genlab/cli\.py$", f.get("file") or "")}
    pids = [int(m.group(1)) for p in data["profiles"] if (m := re.match(r"Process (\d+)", p.get("name", "")))
            and any(cli.intersection(s) for s in p["samples"])]
    return min(pids) if pids else None


# Runs the stage's shell command and writes its wall time and its process tree's CPU time (every descendant
# that was waited for, pool workers included) as JSON: py-spy's own start-up and CPU stay out of both.
WRAPPER = """
import json, os, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2], shell=True)
wall = time.perf_counter() - start
use = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"pid": os.getpid(), "wall_s": wall, "cpu_s": use.ru_utime + use.ru_stime, "returncode": code},
          open(sys.argv[1], "w"))
sys.exit(code)
"""


def fail(message: str) -> None:
    print(f"stage_profile: error: {message}", file=sys.stderr)
    sys.exit(2)


def lookup(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def stage_commands(repo: Path) -> list[tuple[str, str]]:
    """(name, shell command) of every dvc.yaml stage in file order; a foreach stage expands to ``name@item``,
    its items read from the repo's params.yaml (already recomposed by --set)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    variables = {k: v for block in spec.get("vars", []) if isinstance(block, dict) for k, v in block.items()}
    params = yaml.safe_load((repo / "params.yaml").read_text())

    def expand(text: str, extra: dict) -> str:
        values = {**variables, **extra}
        return re.sub(r"\$\{([\w.]+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values
                      else str(lookup(params, m.group(1))), text)

    out = []
    for name, stage in spec["stages"].items():
        if "foreach" not in stage:
            out.append((name, expand(stage["cmd"], {})))
            continue
        items = stage["foreach"]
        if isinstance(items, str):
            items = lookup(params, items.strip()[2:-1])
        if not isinstance(items, list) or any(isinstance(i, (dict, list)) for i in items):
            print(f"note: skipping foreach stage {name}: only a list of plain items is expanded here")
            continue
        out.extend((f"{name}@{item}", expand(stage["do"]["cmd"], {"item": item})) for item in items)
    return out


def select(commands: list[tuple[str, str]], wanted: list[str] | None) -> list[tuple[str, str]]:
    if not wanted:
        return commands
    names = {n for n, _ in commands} | {n.split("@")[0] for n, _ in commands}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        fail(f"unknown stage(s) {unknown} — fix: use stage names from dvc.yaml ({', '.join(n for n, _ in commands)})")
    return [(n, c) for n, c in commands if n in wanted or n.split("@")[0] in wanted]


def run_stage(name: str, cmd: str, repo: Path, env: dict, args, scratch: Path) -> dict:
    times, profile = scratch / f"{name}.times.json", scratch / f"{name}.speedscope.json"
    command = [sys.executable, "-c", WRAPPER, str(times), cmd]
    if not args.no_spy:
        spy = Path(sys.executable).with_name("py-spy")
        command = [str(spy) if spy.exists() else "py-spy", "record", "--subprocesses", "--rate", str(args.rate),
                   "--format", "speedscope", "--output", str(profile), "--", *command]
    log = scratch / f"{name}.log"
    with open(log, "w") as fh:
        code = subprocess.call(command, cwd=repo, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if code or not times.exists():
        fail(f"stage {name} failed (exit {code}): `{cmd}`\n{log.read_text()[-2000:]}")
    measured = json.loads(times.read_text())
    result = {"cmd": cmd, "wall_s": round(measured["wall_s"], 3), "cpu_s": round(measured["cpu_s"], 3)}
    if args.no_spy:
        return result
    # the wrapper's own samples (its start-up) are not the stage's
    per_pid = {pid: s for pid, s in read_speedscope(profile).items() if pid != measured["pid"]}
    sampled = {c: sum(s[c] for s in per_pid.values()) for c in CATEGORIES}
    total = sum(sampled.values())
    main = main_pid(profile)
    result.update(
        sampled_s=round(total, 3), processes=len(per_pid),
        startup_main_s=round(per_pid[main]["startup"], 3) if main in per_pid else None,
        categories={c: {"sampled_s": round(sampled[c], 3), "share": round(sampled[c] / total, 4) if total else 0.0,
                        "cpu_s": round(result["cpu_s"] * sampled[c] / total, 3) if total else 0.0}
                    for c in CATEGORIES})
    return result


def table(stages: dict, spied: bool) -> str:
    short = {"startup": "start", "training": "train", "evaluation": "eval", "sampling": "sample",
             "checkpointing": "ckpt", "logging": "log", "other": "other"}
    head = f"{'stage':<22}{'wall s':>8}{'cpu s':>8}"
    if spied:
        head += "".join(f"{short[c]:>8}" for c in CATEGORIES) + f"{'main start':>11}"
    lines = [head]
    for name, r in stages.items():
        line = f"{name:<22}{r['wall_s']:8.1f}{r['cpu_s']:8.1f}"
        if spied:
            main = r["startup_main_s"]
            line += "".join(f"{r['categories'][c]['cpu_s']:8.1f}" for c in CATEGORIES)
            line += f"{main:11.1f}" if main is not None else f"{'?':>11}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="working copy to run in (default: this checkout)")
    parser.add_argument("--stages", nargs="+", help="dvc.yaml stages (default: all, in dvc.yaml order)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recompose params.yaml with these overrides first (e.g. experiment=smoke)")
    parser.add_argument("--json", type=Path, help="write the per-stage results here")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second (default: 50)")
    parser.add_argument("--no-spy", action="store_true", help="no profiler: wall and process-tree CPU only")
    parser.add_argument("--profiles", type=Path, help="keep py-spy's speedscope files and the stage logs here")
    parser.add_argument("--goal-minutes", type=float, default=30.0, help="goal for the total wall time (default: 30)")
    parser.add_argument("--startup-goal", type=float, default=3.0, help="goal for a stage's start-up (default: 3 s)")
    parser.add_argument("--force", action="store_true", help="run even in a working copy with uncommitted changes")
    args = parser.parse_args(argv)

    repo = args.repo.resolve()
    if not (repo / "dvc.yaml").exists():
        fail(f"{repo} has no dvc.yaml — fix: point --repo at a genlab working copy")
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    if dirty.strip() and not args.force:
        fail(f"{repo} has uncommitted changes and this benchmark rewrites the stages' outputs — fix: run it in a "
             "scratch clone (git clone . ../scratch; --repo ../scratch), or pass --force")
    # dvc.yaml's commands call `genlab`: this venv's, as `make repro` puts it first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    params = repo / "params.yaml"
    original = params.read_bytes()
    scratch = args.profiles or Path(tempfile.mkdtemp(prefix="stage_profile-"))
    scratch.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    try:
        if args.set:
            out = subprocess.run(["genlab", "params", "--force", *args.set], cwd=repo, env=env, capture_output=True,
                                 text=True)
            if out.returncode:
                fail(f"`genlab params --force {' '.join(args.set)}` failed:\n{out.stderr[-1000:]}")
        chosen = select(stage_commands(repo), args.stages)
        startup_goal = "" if args.no_spy else f"; every stage's start-up ≤ {args.startup_goal:g} s"
        print(f"goal: total wall ≤ {args.goal_minutes:g} min{startup_goal} "
              f"({len(chosen)} stage commands in {repo}{', ' + ' '.join(args.set) if args.set else ''})", flush=True)
        for name, cmd in chosen:
            results[name] = run_stage(name, cmd, repo, env, args, scratch)
            r = results[name]
            print(f"{name:<22} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s", flush=True)
    finally:
        params.write_bytes(original)

    total = sum(r["wall_s"] for r in results.values())
    slow = [n for n, r in results.items() if (r.get("startup_main_s") or 0.0) > args.startup_goal]
    passed = total <= args.goal_minutes * 60 and not slow
    print(table(results, not args.no_spy))
    print(f"total wall {total:.1f} s = {total / 60:.1f} min (goal ≤ {args.goal_minutes:g} min: "
          f"{'met' if total <= args.goal_minutes * 60 else 'MISSED'})")
    if not args.no_spy:
        print(f"start-up of the main process ≤ {args.startup_goal:g} s: "
              f"{'met' if not slow else 'MISSED by ' + ', '.join(slow)}")
    if args.json:
        report = {"repo": str(repo), "overrides": args.set, "rate": None if args.no_spy else args.rate,
                  "goal": {"total_wall_minutes": args.goal_minutes, "startup_s": args.startup_goal},
                  "total_wall_s": total, "startup_over_goal": slow, "passed": passed, "stages": results}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.profiles is None:
        for f in scratch.iterdir():
            f.unlink()
        scratch.rmdir()
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
