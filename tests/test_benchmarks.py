"""The benchmark scripts are tools a researcher runs by hand: each answers --help with its purpose and usage,
and those that take config overrides reject a wrong key with genlab's one-line error (no traceback)."""
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


def bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    out = bench(script, "--help")
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.startswith(f"usage: {script}")


@pytest.mark.parametrize("script", ["diffusion_sampling.py", "generative_step.py"])
def test_wrong_override_is_one_line(script):
    out = bench(script, "model.diffusion.bogus=1")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "unknown config key 'model.diffusion.bogus'" in out.stderr and "fix:" in out.stderr


def test_stage_times_rejects_an_unknown_stage_before_running_anything():
    out = bench("stage_times.py", "--stages", "cnf", "bogus")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "unknown stage(s) ['bogus']" in out.stderr and "speed index" not in out.stdout
