"""genlab's baby GPT (``genlab gpt model/gpt=baby``) against nanoGPT's own CPU "baby" run, side by side.

    python benchmarks/gpt_vs_nanogpt.py --nanogpt /path/to/nanoGPT [--pairs 3] [--threads 1] [--json out.json]

nanoGPT runs as its README's CPU command (shakespeare_char, 4 layers, 4 heads, 128 wide, block 64, batch 12,
2000 iterations, dropout 0, val estimated from 20 batches every 250 steps); genlab runs the whole `genlab gpt`
command with ``model/gpt=baby`` (wandb off, as nanoGPT's ``wandb_log`` is; outputs in a scratch folder).
Both are whole processes timed (wall and CPU seconds) from start to exit, in alternating pairs (nanoGPT first in even pairs, genlab
first in odd ones, so drift in the machine's speed hits both alike), with the same torch thread count
(``OMP_NUM_THREADS``; one by default, so another process on the second core cannot stall a run).

Loss is compared on one yardstick: nanoGPT's checkpoint (its best estimated-val weights) is scored on the
windows genlab reports — the whole validation split in non-overlapping windows of 64 — and compared with
genlab's ``val_loss``. Both split the same text 90/10 with the same sorted vocabulary.

nanoGPT's ``data/shakespeare_char`` is prepared from genlab's vendored tinyshakespeare if it is missing (its
prepare.py only downloads when ``input.txt`` is absent). Goal: median wall ratio genlab/nanoGPT ≤ 1.0 and
|Δ val loss| ≤ 0.02; the script exits non-zero when either is missed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import lzma
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from genlab.cli import compose, fail
from genlab.data.prepared import load_text
from genlab.models.gpt import windows

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO, GOAL_DLOSS = 1.0, 0.02
NANO_ARGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
             "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
             "--dropout=0.0"]


def prepare_nanogpt(nano: Path) -> None:
    """nanoGPT's shakespeare_char data from genlab's vendored corpus (no download)."""
    data = nano / "data" / "shakespeare_char"
    if all((data / f).exists() for f in ("train.bin", "val.bin", "meta.pkl")):
        return
    corpus = resources.files("genlab.data") / "corpora" / "tinyshakespeare.txt.xz"
    (data / "input.txt").write_text(lzma.decompress(corpus.read_bytes()).decode("utf-8"))
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of ``cmd`` (stdout and stderr to ``log``); a failure ends the benchmark with its tail.

    CPU seconds (user + system of the process and its children) are the figure that other load on the
    machine disturbs least."""
    start, cpu = time.perf_counter(), children_cpu()
    with open(log, "w") as fh:
        code = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    if code:
        fail(f"`{' '.join(cmd)}` failed (exit {code}):\n{log.read_text()[-2000:]}")
    return seconds, cpu


def nanogpt_run(nano: Path, iters: int, out: Path, env: dict) -> tuple[float, float, float]:
    """(wall, CPU seconds, nanoGPT's best estimated val loss) of one nanoGPT run writing ``out/ckpt.pt``."""
    log = out.with_suffix(".log")
    seconds, cpu = timed([sys.executable, "train.py", *NANO_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}",
                     f"--out_dir={out}"], nano, env, log)
    vals = [float(v) for v in re.findall(r"val loss ([0-9.]+)", log.read_text())]
    return seconds, cpu, min(vals)


def genlab_run(iters: int, out: Path, env: dict) -> tuple[float, float, dict]:
    """(wall, CPU seconds, metrics) of one ``genlab gpt model/gpt=baby`` run writing under ``out``."""
    genlab = Path(sys.executable).with_name("genlab")
    seconds, cpu = timed([str(genlab) if genlab.exists() else "genlab", "gpt", "model/gpt=baby",
                     f"model.gpt.max_iters={iters}", f"model.gpt.lr_decay_iters={iters}", "logger.wandb.mode=disabled",
                     *(f"paths.{k}={out}/{k}" for k in ("models", "reports", "logs", "checkpoints"))],
                    ROOT, env, out.with_suffix(".log"))
    return seconds, cpu, json.loads((out / "reports" / "metrics" / "gpt.json").read_text())


@torch.no_grad()
def nanogpt_exact_val(nano: Path, ckpt: Path, val: torch.Tensor, block: int) -> float:
    """Token-weighted cross-entropy of nanoGPT's checkpoint on ``val`` ids in non-overlapping windows."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", nano / "model.py")
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    net = model.GPT(model.GPTConfig(**state["model_args"]))
    net.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state["model"].items()})
    net.eval()
    total = count = 0
    for b in windows(val, block, stride=block).split(64):
        x, y = b[:, :-1].contiguous(), b[:, 1:].contiguous()
        logits, _ = net(x, y)             # with targets nanoGPT returns logits at every position
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (karpathy/nanoGPT)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both runs (OMP_NUM_THREADS)")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    nano = args.nanogpt.resolve()
    if not (nano / "train.py").exists() or not (nano / "model.py").exists():
        fail(f"{nano} is not a nanoGPT checkout (no train.py/model.py) — fix: "
             "git clone https://github.com/karpathy/nanoGPT and pass its path")
    prepare_nanogpt(nano)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    threads = int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                                 capture_output=True, text=True, check=True).stdout)
    cfg = compose(["model/gpt=baby"])
    data, _ = load_text(cfg)
    block = cfg.model.gpt.arch.block_size

    pairs = []
    with tempfile.TemporaryDirectory(prefix="genlab-vs-nanogpt-") as scratch:
        for i in range(args.pairs):
            run = {}
            for side in (("nanogpt", "genlab") if i % 2 == 0 else ("genlab", "nanogpt")):
                out = Path(scratch) / f"{side}-{i}"
                if side == "nanogpt":
                    run["nanogpt_seconds"], run["nanogpt_cpu_seconds"], run["nanogpt_val_estimate"] = \
                        nanogpt_run(nano, args.iters, out, env)
                    run["nanogpt_val_loss"] = nanogpt_exact_val(nano, out / "ckpt.pt", data["val"], block)
                else:
                    run["genlab_seconds"], run["genlab_cpu_seconds"], metrics = genlab_run(args.iters, out, env)
                    run["genlab_val_loss"] = metrics["val_loss"]
                    run["genlab_train_seconds"] = metrics["train_seconds"]
            run["ratio"] = run["genlab_seconds"] / run["nanogpt_seconds"]
            run["cpu_ratio"] = run["genlab_cpu_seconds"] / run["nanogpt_cpu_seconds"]
            pairs.append(run)
            print(f"pair {i + 1}: nanoGPT {run['nanogpt_seconds']:.1f}s (val {run['nanogpt_val_loss']:.4f} on the "
                  f"full split, {run['nanogpt_val_estimate']:.4f} its estimate), genlab {run['genlab_seconds']:.1f}s "
                  f"(val {run['genlab_val_loss']:.4f}, train {run['genlab_train_seconds']:.1f}s), "
                  f"ratio {run['ratio']:.3f} (CPU {run['nanogpt_cpu_seconds']:.1f}s vs {run['genlab_cpu_seconds']:.1f}s, "
                  f"ratio {run['cpu_ratio']:.3f})", flush=True)

    ratio = statistics.median(p["ratio"] for p in pairs)
    cpu_ratio = statistics.median(p["cpu_ratio"] for p in pairs)
    nano_loss = statistics.median(p["nanogpt_val_loss"] for p in pairs)
    genlab_loss = statistics.median(p["genlab_val_loss"] for p in pairs)
    met = ratio <= GOAL_RATIO and abs(genlab_loss - nano_loss) <= GOAL_DLOSS
    result = {"pairs": pairs, "median_ratio": ratio, "median_cpu_ratio": cpu_ratio, "nanogpt_val_loss": nano_loss, "genlab_val_loss": genlab_loss,
              "torch_threads": threads, "iters": args.iters, "goal": {"ratio": GOAL_RATIO, "dloss": GOAL_DLOSS},
              "met": met}
    print(f"median wall ratio genlab/nanoGPT {ratio:.3f} (goal ≤ {GOAL_RATIO}; CPU {cpu_ratio:.3f}); val loss genlab {genlab_loss:.4f}, "
          f"nanoGPT {nano_loss:.4f}, |Δ| {abs(genlab_loss - nano_loss):.4f} (goal ≤ {GOAL_DLOSS}); "
          f"{threads} torch thread(s) — {'met' if met else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
