"""Peak resident memory of every pipeline stage, sampled while `dvc repro` (or anything running
`genlab <stage>`) executes:

    python benchmarks/peak_memory.py --out /tmp/peak.json &   # then run `dvc repro -f` in another shell

Polls all processes every 0.5 s; a stage's figure is the largest RSS of the process tree whose
command line is `genlab <stage> …` (DDP children included). Stops when no genlab process has been
seen for --idle seconds; prints one line per stage and the maximum (goal: no stage above 4 GiB).
"""
from __future__ import annotations

import argparse
import json
import time

import psutil


def genlab_stage(proc: psutil.Process) -> str | None:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for i, part in enumerate(cmd[:-1]):
        if part.endswith("genlab") or part == "genlab.cli":
            return cmd[i + 1]
    return None


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="peak_memory.json")
    parser.add_argument("--idle", type=float, default=120.0)
    args = parser.parse_args()
    peaks: dict[str, int] = {}
    last_seen = time.time()
    while time.time() - last_seen < args.idle:
        for proc in psutil.process_iter():
            stage = genlab_stage(proc)
            if stage and not stage.startswith("-"):
                last_seen = time.time()
                peaks[stage] = max(peaks.get(stage, 0), tree_rss(proc))
        time.sleep(0.5)
    mib = {k: round(v / 2**20) for k, v in peaks.items()}
    with open(args.out, "w") as fh:
        json.dump(mib, fh, indent=2)
    for stage, value in mib.items():
        print(f"{stage:<20} {value:>6} MiB")
    print(f"max {max(mib.values(), default=0)} MiB (goal ≤ 4096)")


if __name__ == "__main__":
    main()
