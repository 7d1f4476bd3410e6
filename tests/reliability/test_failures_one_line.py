"""Failures that used to end in a traceback, silence or a misleading line: each is now one line
(``genlab: error: <problem> — fix: <fix>``) with the right exit code, naming real config keys."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, complete_checkpoint, genlab, one_line
from omegaconf import OmegaConf

from genlab import cli


def test_empty_last_ckpt_is_one_line(work, monkeypatch, capsys):
    """A 0-byte last.ckpt (disk full mid-save): its load error has an empty message (was: IndexError)."""
    root, base = work
    args = ["gpt", *base, "trainer.checkpoint_every=3"]
    with monkeypatch.context() as m:   # keep the run's checkpoint folder, as an interrupted run would
        m.setattr("genlab.runner.shutil.rmtree", lambda *a, **k: None)
        assert genlab(monkeypatch, capsys, *args)[0] == 0
    (ckpt,) = (root / "checkpoints" / "gpt").rglob("last.ckpt")
    ckpt.write_bytes(b"")
    code, err = genlab(monkeypatch, capsys, *args)
    line = one_line(err)
    assert code == 2 and f"cannot resume from {ckpt}" in line and f"delete {ckpt.parent}" in line


def test_nan_loss_names_the_learning_rate_key_that_exists(work, monkeypatch, capsys):
    """GPT's learning rate is model.gpt.optim.lr (the message used to say model.gpt.lr)."""
    root, base = work
    code, err = genlab(monkeypatch, capsys, "gpt", *base, "model.gpt.optim.lr=1e30")
    line = one_line(err)
    assert code == 2 and "training loss became" in line and "lower model.gpt.optim.lr" in line
    for key in re.findall(r"lower ((?:model\.[\w.]+)(?: or model\.[\w.]+)*)", line)[0].split(" or "):
        assert OmegaConf.select(cli.compose(["experiment=smoke"]), key) is not None, key


def test_unknown_group_option_lists_the_options(monkeypatch, capsys):
    code, err = genlab(monkeypatch, capsys, "show", "trainer=cpux")
    line = one_line(err)
    assert code == 2 and "Available options in 'trainer': " in line
    assert all(opt in line for opt in ("cpu", "ddp", "ddp_cpu", "gpu")), line


def test_every_key_in_the_usage_text_exists():
    """The --help examples must run: each dotted key names a key of the composed config, each group=option
    an option of that group (the sweep example used model.classifier.mlp_hidden, which does not exist)."""
    cfg = cli.compose([])
    pairs = re.findall(r"(?<![\w/.-])(\+?[A-Za-z_][\w./]*)=([^\s,]+)", cli.USAGE)
    assert pairs
    for key, value in pairs:
        if key == "key":   # the key=value placeholder
            continue
        if "." in key:
            assert OmegaConf.select(cfg, key.lstrip("+")) is not None, f"--help names '{key}', not in the config"
        else:
            assert (ROOT / "experiments" / key / f"{value}.yaml").exists(), f"--help names {key}={value}"


def test_report_without_metrics_is_refused(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "report", *base)
    assert code == 2 and "no metrics in" in one_line(err)
    assert not (root / "reports" / "index.html").exists()


def csv_steps(root: Path) -> list[int]:
    """Steps of the training-loss rows of the gpt run's CSV log."""
    import csv

    (log,) = (root / "logs" / "csv" / "gpt").glob("*/metrics.csv")
    with open(log, newline="") as fh:
        return [int(float(r["step"])) for r in csv.DictReader(fh) if r.get("train/loss")]


def test_a_resumed_run_appends_to_its_csv_log(work, monkeypatch, capsys):
    """Interrupted after its step-3 checkpoint, then resumed: the CSV log holds every step once
    (Lightning deleted metrics.csv, keeping only the rows after the resume point)."""
    root, base = work
    args = ["gpt", *base, "trainer.checkpoint_every=3", "trainer.log_every=1"]
    from genlab.runner import ResumeCursor

    real = ResumeCursor.on_train_batch_end

    def crash_after_checkpoint(self, trainer, *a):
        real(self, trainer, *a)
        if trainer.global_step == 4:
            raise KeyboardInterrupt   # stands in for Ctrl-C / a kill after the step-3 checkpoint

    with monkeypatch.context() as m:
        m.setattr(ResumeCursor, "on_train_batch_end", crash_after_checkpoint)
        assert genlab(monkeypatch, capsys, *args)[0] == 130
    assert genlab(monkeypatch, capsys, *args)[0] == 0
    steps = csv_steps(root)
    assert steps and steps == sorted(set(steps)) and steps[0] == 0, steps   # no gap before 3, no duplicate


@pytest.mark.slow
def test_ctrl_c_says_the_run_can_be_resumed(prepared, tmp_path):
    """SIGINT mid-training: exit 130 and one line saying how to resume (Lightning exited 1 silently)."""
    paths = [f"paths.data={prepared / 'data'}"] + [f"paths.{k}={tmp_path / k}" for k in
                                                    ("models", "checkpoints", "reports", "logs")]
    cmd = [sys.executable, "-m", "genlab.cli", "gpt", "experiment=smoke", *paths, "trainer.checkpoint_every=5",
           "model.gpt.max_iters=100000", "model.gpt.lr_decay_iters=100000", "model.gpt.eval_interval=50"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while not complete_checkpoint(tmp_path / "checkpoints") and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "re-run the same command to resume" in one_line(err)


@pytest.mark.slow
def test_read_only_home_prints_no_library_noise(prepared, tmp_path):
    """HOME that cannot be written (here: a path through a regular file, which stops root too): the caches
    and config folders of matplotlib, wandb… go under the logs, and stderr stays empty."""
    (tmp_path / "file").write_text("")
    paths = [f"paths.data={prepared / 'data'}"] + [f"paths.{k}={tmp_path / k}" for k in
                                                    ("models", "checkpoints", "reports", "logs")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MPLCONFIGDIR", "XDG_"))}
    env.update(HOME=str(tmp_path / "file" / "home"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               GENLAB_CONFIG_DIR=os.environ["GENLAB_CONFIG_DIR"])
    result = subprocess.run([sys.executable, "-m", "genlab.cli", "gpt", "experiment=smoke", *paths,
                             "logger.wandb.mode=offline"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr[-3000:]
