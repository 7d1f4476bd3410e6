"""run_many: results independent of the pool size, job order kept, errors name their job, 1 thread each.

The job functions are module-level so spawned workers can import them (``tests/`` is on the
spawned interpreter's sys.path: spawn passes the parent's).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genlab.errors import GenlabError
from genlab.parallel import job_seed, run_many


def train_tiny(seed: int, width: int) -> dict:
    """Train a tiny MLP on random regression data seeded by the job; report what the worker saw.

    ``unseeded`` is drawn *before* seeding: it comes from the pool's per-job RNG reset, so it too must
    not depend on which worker ran the job or what it ran before.
    """
    unseeded = torch.rand(3)
    torch.manual_seed(seed)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
    return {"seed": seed, "width": width, "loss": loss.item(), "weights": net[0].weight.detach().clone(),
            "unseeded": unseeded, "numpy": np.random.rand(), "threads": torch.get_num_threads(),
            "pid": os.getpid()}


def fail_on(seed: int, bad: int, genlab: bool, die: bool = False) -> int:
    if seed == bad and die:
        os._exit(3)                                          # as if killed: no exception, no result
    if seed == bad:
        if genlab:
            raise GenlabError(f"seed {seed} diverged", "lower the learning rate")
        raise ValueError(f"bad seed {seed}")
    return seed


JOBS = [{"seed": s, "width": w} for s in (0, 1, 2) for w in (4, 8)]


@pytest.fixture(scope="module")
def pooled():
    return run_many(train_tiny, JOBS, workers=2, desc="tiny", progress=False)


def test_pool_size_does_not_change_results(pooled):
    inline = run_many(train_tiny, JOBS, workers=1, progress=False)
    assert len(pooled) == len(inline) == len(JOBS)
    for p, q in zip(pooled, inline):
        assert p["loss"] == q["loss"]                        # bitwise, not approximately
        assert torch.equal(p["weights"], q["weights"])
        assert torch.equal(p["unseeded"], q["unseeded"])     # the per-job RNG reset
        assert p["numpy"] == q["numpy"]
    assert os.getpid() not in {p["pid"] for p in pooled}     # really ran in other processes


def test_job_order_preserved(pooled):
    assert [(r["seed"], r["width"]) for r in pooled] == [(j["seed"], j["width"]) for j in JOBS]
    # different jobs really differ (the seeding is per job, not one global stream)
    assert len({r["loss"] for r in pooled}) == len(JOBS)


def test_each_worker_runs_one_thread(pooled):
    assert {r["threads"] for r in pooled} == {1}
    before = torch.get_num_threads()
    assert {r["threads"] for r in run_many(train_tiny, JOBS[:2], workers=0, progress=False)} == {1}
    assert torch.get_num_threads() == before                 # inline mode restores the parent's count


def test_inline_mode_leaves_parent_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(2)
    torch.manual_seed(123)
    run_many(train_tiny, JOBS[:1], workers=1, progress=False)
    assert torch.equal(torch.rand(2), expected)


def test_job_seed_depends_on_spec_only():
    assert job_seed({"seed": 1, "width": 4}) == job_seed({"width": 4, "seed": 1})
    assert job_seed({"seed": 1, "width": 4}) != job_seed({"seed": 2, "width": 4})


@pytest.mark.parametrize("workers", [1, 2])
def test_genlab_error_stays_genlab_error_and_names_job(workers):
    jobs = [{"seed": s, "bad": 2, "genlab": True} for s in range(4)]
    with pytest.raises(GenlabError) as info:
        run_many(fail_on, jobs, workers=workers, progress=False)
    assert "seed=2" in info.value.problem and "diverged" in info.value.problem
    assert info.value.fix == "lower the learning rate"


def test_other_error_keeps_type_and_names_job():
    jobs = [(s, 1, False) for s in range(3)]                 # tuple jobs: fn(*job)
    with pytest.raises(ValueError, match="bad seed 1") as info:
        run_many(fail_on, jobs, workers=2, progress=False)
    assert any("(1, 1, False)" in note for note in info.value.__notes__)
    assert "fail_on" in str(info.value.__cause__)            # the worker's traceback


def test_dead_worker_is_a_genlab_error_naming_the_job():
    with pytest.raises(GenlabError, match="worker process died") as info:
        run_many(fail_on, [{"seed": s, "bad": 1, "genlab": False, "die": True} for s in range(2)], workers=2,
                 progress=False)
    assert "seed=1" in info.value.problem


def test_lambda_is_refused_with_a_clear_message():
    with pytest.raises(TypeError, match="module-level function"):
        run_many(lambda seed: seed, [{"seed": 0}, {"seed": 1}], workers=2, progress=False)


def test_empty_and_inline_plain_jobs():
    assert run_many(train_tiny, [], workers=2) == []
    assert run_many(abs, [-1, 2, -3], workers=0, progress=False) == [1, 2, 3]


def fail_fast_with_big_job(seed: int, blob: np.ndarray) -> int:
    if seed == 0:
        raise ValueError("first job fails at once")
    time.sleep(0.5)
    return int(blob[0])


def test_a_failing_pool_stops_even_with_large_jobs_queued():
    """Jobs of several MB fill the pipe to the workers; after the first failure the pool must still stop
    (the queue's feeder thread, blocked on that pipe, is not waited for)."""
    jobs = [{"seed": s, "blob": np.full(4_000_000, s, dtype=np.float64)} for s in range(8)]
    start = time.monotonic()
    with pytest.raises(ValueError, match="first job fails"):
        run_many(fail_fast_with_big_job, jobs, workers=2, progress=False)
    assert time.monotonic() - start < 120


def fail_or_stop_late(seed: int, blob: np.ndarray) -> int:
    """Job 0 fails at once; the others stop on SIGTERM only after a while, as Lightning's trainer does (it
    catches SIGTERM and stops at the next step boundary), odd and even seeds after different delays, so one
    worker is dead while the pool still waits for the other."""
    delay = 0.2 if seed % 2 else 2.0        # the handler outlives the job: it is the worker's
    signal.signal(signal.SIGTERM, lambda *_: (time.sleep(delay), os._exit(0)))
    if seed == 0:
        raise ValueError("first job fails at once")
    time.sleep(60)
    return int(blob[0])


def test_a_failing_pool_stops_when_workers_take_their_time_to_die():
    """Workers that die one after another, slowly, while large jobs are queued: the pool's manager thread
    notices each death on its own and must not wait for the queue's feeder thread, blocked on a pipe no worker
    reads. (A race: a pool of the suite's fresh-clone run hung there for good; this test does not force the
    race, it fails if the pool does not stop.) Run in a child process, so a hang fails this test, not the suite."""
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, pytest; "
              "from genlab.parallel import run_many; from test_parallel import fail_or_stop_late; "
              "jobs = [{'seed': s, 'blob': np.full(4_000_000, s, dtype=np.float64)} for s in range(8)]\n"
              "with pytest.raises(ValueError, match='first job fails'):\n"
              "    run_many(fail_or_stop_late, jobs, workers=2, progress=False)\n"
              "print('stopped')")
    out = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "stopped" in out.stdout, out.stderr[-2000:]
