"""Nothing leaves the machine unless the user asks for wandb online — checked at the process level —
and wandb online fails fast, as one line, when its server cannot be reached.

wandb's telemetry reads global settings (the environment), not ``wandb.init(mode=…)``: an "offline"
run used to look up and post to wandb's analytics host from a background thread. The in-process socket
guard (conftest) cannot see other processes, so these tests run genlab as a subprocess with
``netaudit/sitecustomize.py`` on PYTHONPATH (an audit hook in every Python process: lookups and connects
from any thread) and, where strace works, under ``strace -f`` for the non-Python helpers (wandb-core).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NET_ATTEMPTS

AUDIT = Path(__file__).parent / "netaudit"
# the variables genlab sets itself: the child must not inherit them from this process (nor hide a leak)
WANDB_VARS = ("WANDB_MODE", "WANDB_ERROR_REPORTING", "WANDB_DISABLE_CODE", "WANDB_DISABLE_GIT", "WANDB_API_KEY",
              "WANDB_BASE_URL")


def strace_works() -> bool:
    if not shutil.which("strace"):
        return False
    return subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True).returncode == 0


def audited(args: list[str], cwd: Path, log: Path, trace: Path | None, env_extra: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in WANDB_VARS}
    env.update(PYTHONPATH=os.pathsep.join([str(AUDIT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               GENLAB_NET_AUDIT=str(log), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, "-m", "genlab.cli", *args]
    if trace is not None:
        cmd = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", str(trace), *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def traced_network(trace: Path) -> list[str]:
    """System calls in an strace log that reach a non-loopback address or a DNS server (port 53, also a
    local resolver such as 127.0.0.53)."""
    hits = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        if "AF_INET" not in line:
            continue
        addresses = re.findall(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"', line)
        remote = [a or b for a, b in addresses if not (a or b).startswith(("127.", "::1", "::ffff:127."))]
        if remote or "htons(53)" in line:
            hits.append(line.strip())
    return hits


def lookups(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def paths(root: Path, data: Path) -> list[str]:
    return [f"paths.data={data}"] + [f"paths.{k}={root / k}" for k in ("models", "checkpoints", "reports", "logs")]


def test_the_socket_guard_refuses_and_records_dns_lookups():
    """The in-process guard sees name lookups too (DNS leaks the host name even when no connection follows)."""
    before = len(NET_ATTEMPTS)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("api.wandb.ai", 443)
    assert NET_ATTEMPTS[before:] == ["getaddrinfo 'api.wandb.ai'"]
    assert socket.getaddrinfo("localhost", 80) and socket.getaddrinfo("127.0.0.1", 80)


@pytest.mark.slow
def test_offline_wandb_makes_no_lookup_in_a_training_stage_or_report(prepared, tmp_path):
    """The default logger (wandb offline, not disabled): a training stage and `report` look up no host and
    connect nowhere, in any thread or child process."""
    log, trace = tmp_path / "net.log", (tmp_path / "strace.log" if strace_works() else None)
    base = ["experiment=smoke", *paths(tmp_path, prepared / "data"), "logger.wandb.mode=offline"]
    gpt = audited(["gpt", *base], tmp_path, log, trace)
    assert gpt.returncode == 0, gpt.stderr[-2000:]
    assert list((tmp_path / "logs" / "wandb").glob("offline-run-*")), "wandb did not run (offline)"
    report_trace = tmp_path / "strace-report.log" if trace else None
    report = audited(["report", *base], tmp_path, log, report_trace)
    assert report.returncode == 0, report.stderr[-2000:]
    found = lookups(log) + (traced_network(trace) + traced_network(report_trace) if trace else [])
    assert not found, "network use:\n" + "\n".join(found)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_wandb_online_with_an_unreachable_server_fails_fast_with_one_line(prepared, tmp_path):
    """A fake key and a server URL on a closed loopback port: one line within seconds, before training
    (before: wandb retried for about 90 s, then a CommError traceback). Nothing leaves the machine."""
    log = tmp_path / "net.log"
    fake = {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
    started = time.monotonic()
    result = audited(["gpt", "experiment=smoke", *paths(tmp_path, prepared / "data"), "logger.wandb.mode=online"],
                     tmp_path, log, None, fake, timeout=300)
    elapsed = time.monotonic() - started
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("genlab: error:") and "cannot be reached" in lines[0] and "fix:" in lines[0]
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert not (tmp_path / "models").exists()          # stopped before training
    assert lookups(log) == []
