"""Independent runs — seeds, model sizes, sweep points — in a pool of single-thread worker processes.

    results = run_many(train_one, [{"seed": s, "width": w} for s in seeds for w in widths], desc="widths")

Why processes with one thread each: the runs here are small (a 64-wide MLP, a 2-layer
transformer), and a small model gains little from a second intra-op thread — each op pays a
synchronisation for a few microseconds of work — while two independent runs on two cores go
twice as fast. Processes (not threads) because PyTorch and Python hold process-wide state
(the GIL, the RNG, the thread pool).

Guarantees:

* **Results do not depend on the pool size.** Each job runs with 1 torch thread (float rounding of
  a reduction depends on the thread count), and before each job the python/numpy/torch global RNGs
  are seeded from the job spec itself (``job_seed``) — never from the worker's identity or from what
  the worker ran before. A job should still seed itself (``seed_everything(job["seed"])``); the reset
  only makes a job that forgets do so deterministic too. ``workers=1`` (or 0) runs the jobs inline,
  one by one, under the same two rules, so it returns exactly what ``workers=2`` returns.
* **Order.** Jobs run in any order; results come back in job order.
* **Errors name the job.** A ``GenlabError`` comes back as a ``GenlabError`` (same class) whose
  message starts with the job, so the CLI still prints one line; any other exception is re-raised
  with its own type, a note naming the job and the worker's traceback as its cause. A worker that
  dies (killed for memory, a crash in native code) is a ``GenlabError`` naming the unfinished jobs.
  The first failure stops the pool.
* **Ctrl-C** terminates the workers (they ignore SIGINT themselves, so there is one traceback, the
  parent's) and re-raises ``KeyboardInterrupt``.

``fn`` must be picklable by reference: a function defined at module level (not a lambda, closure
or method of a local object), because 'spawn' starts each worker as a fresh interpreter that
imports ``fn``'s module. 'spawn' is used (not 'fork') because forking a process whose torch/OpenMP
thread pool is already running can deadlock. A dict job is called as ``fn(**job)``, a tuple as
``fn(*job)``, anything else as ``fn(job)``; jobs and results must be picklable (tensors are).
Inside a worker, ``run_many`` runs inline (a nested pool would oversubscribe the cores) and ``GENLAB_WORKER=1``
is set, e.g. for a runner to turn its own progress bar off.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import random
import signal
import traceback
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from genlab.errors import GenlabError
from genlab.quiet import quiet_logs

# read by OpenMP / MKL / OpenBLAS when torch is first imported: set before a worker starts
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
WORKER_ENV = "GENLAB_WORKER"


def job_name(job: Any) -> str:
    """A short label for a job: ``seed=1, width=64`` for a dict (its scalar entries: a config or a
    dataset handed to every job names nothing), the repr otherwise."""
    if isinstance(job, dict):
        return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in job.items()
                         if v is None or isinstance(v, (bool, int, float, str)))
    return repr(job)


def job_seed(job: Any) -> int:
    """A 32-bit seed that is a function of the job spec only (CRC-32 of its key-sorted repr)."""
    spec = sorted(job.items(), key=lambda kv: str(kv[0])) if isinstance(job, dict) else job
    return zlib.crc32(repr(spec).encode())


POOL_ENV = "GENLAB_WORKERS"   # pool size for every stage (default: one per core); 1 runs jobs inline


def default_workers(n_jobs: int) -> int:
    """``$GENLAB_WORKERS``, else one worker per usable core; no more than there are jobs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    wanted = os.environ.get(POOL_ENV, "").strip()
    if wanted:
        if not wanted.isdigit():
            raise GenlabError(f"{POOL_ENV}={wanted!r} is not a whole number", f"unset it, or set {POOL_ENV}=1, 2, …")
        cores = int(wanted)
    return max(1, min(n_jobs, cores))


@contextlib.contextmanager
def _job_context(job: Any, threads: int) -> Iterator[None]:
    """Run one job with ``threads`` torch threads and global RNGs seeded from the job; restore both after."""
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    before = torch.get_num_threads()
    seed = job_seed(job)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _call(fn: Callable, job: Any) -> Any:
    if isinstance(job, dict):
        return fn(**job)
    if isinstance(job, tuple):
        return fn(*job)
    return fn(job)


def _named(exc: BaseException, name: str) -> BaseException:
    """The same error, saying which job raised it (GenlabError: in its one-line message; else a note)."""
    if isinstance(exc, GenlabError):
        try:
            return type(exc)(f"job {name}: {exc.problem}", exc.fix)
        except TypeError:                          # a subclass with another constructor
            return GenlabError(f"job {name}: {exc.problem}", exc.fix)
    exc.add_note(f"(in job {name})")
    return exc


# --- worker side ---------------------------------------------------------------------------

def _worker_init(threads: int) -> None:
    """Runs once in each fresh worker: ignore Ctrl-C (the parent handles it), quiet the library logs as the
    CLI does, pin torch's threads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[WORKER_ENV] = "1"
    quiet_logs()
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):       # only settable before any inter-op work
        torch.set_num_interop_threads(1)


class RemoteTraceback(Exception):
    """The worker's formatted traceback, attached as ``__cause__`` of the re-raised error."""

    def __str__(self) -> str:
        return self.args[0]


def _run_job_bytes(task: bytes) -> bytes:
    """``_run_job`` on a plain-pickled task, returning its plain-pickled result.

    Jobs and results cross the process boundary as bytes from the standard pickler, so tensors travel
    by value: the pool's own pickler would hand them over through shared memory and file descriptors
    (torch's multiprocessing reductions), whose sharing thread prints a traceback when a pool is
    stopped while a transfer is under way.
    """
    return pickle.dumps(_run_job(pickle.loads(task)))


def _run_job(task: tuple[int, Callable, Any, int]) -> tuple[int, bool, Any]:
    """(index, fn, job, threads) → (index, True, result) or (index, False, (picklable error, traceback)).

    Errors travel as return values, not raised, so an exception that cannot be pickled still
    reaches the parent (as text) and the worker's traceback comes with it.
    """
    i, fn, job, threads = task
    try:
        with _job_context(job, threads):
            result = _call(fn, job)
        pickle.dumps(result)                       # an unpicklable result fails here, named, not in the parent
        return i, True, result
    except Exception as e:
        tb = traceback.format_exc()
        err = _named(e, job_name(job))
        try:
            pickle.dumps(err)
        except Exception:                          # e.g. an exception holding a lock: send its text
            err = RuntimeError(f"{type(e).__name__}: {e} (in job {job_name(job)})")
        return i, False, (err, tb)


# --- parent side ---------------------------------------------------------------------------

def run_many(fn: Callable, jobs: Sequence[Any], workers: int | None = None, desc: str = "jobs",
             threads: int = 1, progress: bool = True) -> list:
    """``[fn(job) for job in jobs]`` on a pool of ``workers`` spawned processes, ``threads`` torch threads each.

    ``workers=None``: one per core, at most ``len(jobs)``; 0 or 1: inline in this process (for
    debugging; same results). A tqdm bar titled ``desc`` counts finished jobs (hidden when stderr is
    not a terminal, or with ``progress=False``). See the module docstring for the guarantees.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    try:
        pickle.dumps(fn)
    except Exception as e:
        raise TypeError(f"run_many needs a module-level function, got {fn!r} ({e}); define it at the top "
                        "level of a module so worker processes can import it") from None
    workers = default_workers(len(jobs)) if workers is None else min(workers, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=None if progress else True)
    try:
        if workers <= 1 or os.environ.get(WORKER_ENV):
            return _run_inline(fn, jobs, threads, bar)
        return _run_pool(fn, jobs, workers, threads, bar)
    finally:
        bar.close()


def _run_inline(fn: Callable, jobs: list, threads: int, bar) -> list:
    results = []
    for job in jobs:
        try:
            with _job_context(job, threads):
                results.append(_call(fn, job))
        except GenlabError as e:
            raise _named(e, job_name(job)) from None     # one line for the CLI, as without the pool
        except Exception as e:
            raise _named(e, job_name(job))               # the original error and traceback, plus a note
        bar.update()
    return results


def _run_pool(fn: Callable, jobs: list, workers: int, threads: int, bar) -> list:
    results: list = [None] * len(jobs)
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                               initargs=(threads,))
    # When a pool stops early, the call queue's feeder thread can be blocked writing a large job into the
    # pipe that no worker will read any more (the parent holds its read end too, so the write never fails).
    # Nobody may wait for that thread: the executor's manager thread joins it as soon as it sees a worker
    # die, and would then hang for good, and shutdown() with it. (`_call_queue` is the executor's own.)
    pool._call_queue.cancel_join_thread()
    try:
        # Workers start during submit() and inherit the environment then: the thread variables must
        # be in it before each worker's first `import torch`.
        with _environ({k: str(threads) for k in THREAD_ENV}):
            futures = {pool.submit(_run_job_bytes, pickle.dumps((i, fn, job, threads))): i
                       for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                i, ok, out = pickle.loads(future.result())
            except BrokenProcessPool:                  # a worker died: killed (out of memory?) or crashed
                # every unfinished job fails with it; which one the dead worker held is not known
                lost = [job_name(jobs[futures[f]]) for f in futures if f.done() and not f.cancelled()
                        and isinstance(f.exception(), BrokenProcessPool)]
                raise GenlabError(f"a worker process died while running one of the jobs {'; '.join(lost)}",
                                  "it was killed (often: out of memory) or crashed in native code; re-run "
                                  "with workers=1 to see it in this process") from None
            except Exception as e:                     # e.g. the job's result could not be pickled back
                raise _named(e, job_name(jobs[futures[future]]))
            if not ok:
                err, tb = out
                raise err from RemoteTraceback(tb)
            results[i] = out
            bar.update()
    except BaseException:                              # a failed job, Ctrl-C, or a dead worker
        # stop the running jobs now (shutdown alone would wait for them); `_processes` is the
        # executor's own table of worker processes — there is no public terminate before 3.14
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for proc in procs:
            proc.terminate()
        for proc in procs:   # SIGTERM can be caught (Lightning's trainer does, to stop at a step boundary)
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore the previous values."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
