"""Wall time of pipeline stages, each re-run with `dvc repro -f -s <stage>` in the order given, with a speed index.

    python benchmarks/stage_times.py                                   # the four generative stages
    python benchmarks/stage_times.py --stages cnf flow_matching        # any dvc.yaml stages, in pipeline order

Each stage runs alone and forced, so it consumes what the stage before it has just written: give the stages in
pipeline order. A stage's time includes dvc's checks and the process start-up, as in `dvc repro`. The stages'
outputs are rewritten; they come out the same (every stage is seeded and deterministic on CPU) except for
their timing fields; a plain `dvc repro` afterwards brings the stages downstream (`report`) up to date.

The default stages are issue 4's budget (cnf, flow_matching, diffusion, generative_eval: "~15 minutes").
This VM's speed swings (78 to 144 ms on the speed index within one hour), so each run prints the index
before and after — the median wall time of one training step of the untrained 2D CNF of ``model.cnf``
(`generative_step.py`'s first line). It is a hint only: it tracks the U-Net's throughput poorly (the fastest
run measured, 13.8 min on 2026-12-03, began at 104 ms and ended at 138 ms). Compare runs by the per-part
seconds the stages write (``train_seconds``, ``sampling_seconds`` in reports/metrics/*.json).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from generative_step import cnf_toy, step, timed
from genlab.cli import compose, fail
from genlab.runner import torch_threads

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["cnf", "flow_matching", "diffusion", "generative_eval"]


def speed_index(cfg) -> float:
    """Median wall ms of one 2D-CNF training step (direct backprop through dopri5), seeded."""
    torch.manual_seed(0)
    module, batch = cnf_toy(cfg.model.cnf, adjoint=False)
    with torch_threads(cfg.model.cnf.toy.threads):
        return timed(lambda: step(module, batch))[0]


def repro(stage: str) -> float:
    """Seconds of ``dvc repro -f -s stage``; a failing stage ends the benchmark with dvc's last lines."""
    dvc = Path(sys.executable).with_name("dvc")
    start = time.perf_counter()
    out = subprocess.run([str(dvc) if dvc.exists() else "dvc", "repro", "-f", "-s", stage], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        fail(f"`dvc repro -f -s {stage}` failed:\n{(out.stdout + out.stderr)[-2000:]}")
    return time.perf_counter() - start


def main(stages: list[str]) -> None:
    defined = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    unknown = [s for s in stages if s.split("@")[0] not in defined]     # a foreach item is ``name@item``
    if unknown:
        fail(f"unknown stage(s) {unknown} — fix: use stage names from dvc.yaml (`dvc stage list`)")
    cfg = compose([])
    before = speed_index(cfg)
    print(f"speed index before: {before:.1f} ms ({time.strftime('%H:%M:%S')})", flush=True)
    seconds = {}
    for stage in stages:
        seconds[stage] = repro(stage)
        print(f"{stage:<24} {seconds[stage]:7.1f} s", flush=True)
    total = sum(seconds.values())
    print(f"{'total':<24} {total:7.1f} s = {total / 60:.1f} min")
    print(f"speed index after: {speed_index(cfg):.1f} ms ({time.strftime('%H:%M:%S')}); before: {before:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=DEFAULT, help=f"dvc.yaml stages, in order (default: {DEFAULT})")
    main(parser.parse_args().stages)
