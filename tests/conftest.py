"""Shared fixtures.

* No network: every test runs with a socket guard that refuses any address outside
  the loopback range (wandb offline, DDP rendezvous on localhost stay allowed), and any
  name lookup (``getaddrinfo``) except loopback names; refused lookups are recorded in
  ``NET_ATTEMPTS``. It guards this process only: ``netaudit/`` checks child processes.
* ``make_cfg(tmp_path, *overrides)``: the smoke preset, validated, with every output
  path inside ``tmp_path`` — tests never write into the checkout.
* ``prepared``: the smoke datasets, prepared once per test session.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GENLAB_CONFIG_DIR", str(ROOT / "experiments"))
os.environ.setdefault("WANDB_SILENT", "true")


def _is_local(address) -> bool:
    if not isinstance(address, tuple):      # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
NET_ATTEMPTS: list[str] = []   # every refused connect or lookup in this process, for tests to assert on


def _is_local_name(host) -> bool:
    """A host a lookup may resolve without DNS: loopback names and literal loopback addresses."""
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host.lower().rstrip(".") in LOCAL_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def no_network():
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded(self, address):
        if not _is_local(address):
            NET_ATTEMPTS.append(f"connect {address!r}")
            raise OSError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _is_local_name(host):   # a DNS lookup leaks the host name even when no connection follows
            NET_ATTEMPTS.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"test tried to look up {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.getaddrinfo = guarded, guarded_getaddrinfo
    yield
    socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo


def compose_cfg(paths_root: Path, *overrides: str):
    """Smoke-preset config with outputs under ``paths_root`` (validated)."""
    from hydra import compose, initialize_config_dir

    from genlab.config import validate

    paths = [f"paths.{k}={paths_root / k}" for k in ("data", "models", "checkpoints", "reports", "logs")]
    with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
        cfg = compose("config", ["experiment=smoke", *paths, *overrides])
    return validate(cfg)


@pytest.fixture
def make_cfg():
    return compose_cfg


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """Smoke datasets under a session temp dir; returns its root (use as paths.data's parent)."""
    from genlab.stages import prepare

    root = tmp_path_factory.mktemp("genlab")
    prepare.run(compose_cfg(root))
    return root


@pytest.fixture
def work(tmp_path, monkeypatch, prepared):
    """cwd = a temp dir; paths.* point inside it; data = the session's prepared smoke datasets.
    Returns (the temp dir, the overrides: smoke preset plus those paths)."""
    monkeypatch.chdir(tmp_path)
    paths = [f"paths.data={prepared / 'data'}"] + [f"paths.{k}={tmp_path / k}" for k in
                                                    ("models", "checkpoints", "reports", "logs")]
    return tmp_path, ["experiment=smoke", *paths]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600):
    """Run `genlab …` in a subprocess; returns CompletedProcess (text)."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "genlab.cli", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def without_timing(metrics):
    """Metrics minus wall-clock figures (tokens/s, seconds), which legitimately differ between runs."""
    if isinstance(metrics, dict):
        return {k: without_timing(v) for k, v in metrics.items()
                if not any(t in k for t in ("per_sec", "seconds", "sec_per", "time"))}
    if isinstance(metrics, list):
        return [without_timing(v) for v in metrics]
    return metrics


def complete_checkpoint(root: Path) -> Path | None:
    """A complete ``last.ckpt`` under ``root`` (torch can read it back), if a running stage has written one."""
    import torch

    for ckpt in root.rglob("last.ckpt"):
        try:
            torch.load(ckpt, map_location="cpu", weights_only=True)
            return ckpt
        except Exception:   # vanished (run finished) or being written
            pass
    return None


def genlab(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run `genlab args…` in-process; return (exit code, stderr)."""
    from genlab import cli

    monkeypatch.setattr(sys, "argv", ["genlab", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    """The single ``genlab: error: … — fix: …`` line of ``err`` (asserts there is exactly one)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("genlab: error:") and "fix:" in lines[0], lines[0]
    return lines[0]
