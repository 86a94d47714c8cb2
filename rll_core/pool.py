"""Independent runs side by side on one machine: worker processes with a set number of torch threads each.

On a 2-core machine torch's default of two OpenMP threads per process makes the threads spin whenever the
other core is busy (measured by ``make bench-threads``: see docs/benchmarks.md); one thread per process and one
process per core keeps both cores working on separate runs.  :func:`run_jobs` runs a list of jobs either here
(``workers=1``) or in ``workers`` processes started fresh (``spawn``: no state inherited from a busy parent),
each set to ``threads`` torch threads before its first job, and gives the results back in the jobs' order.

The same seed gives the same bits on one machine, build and thread count: a job run in a worker with one thread
equals the same job run here with one thread (tested), not necessarily the same job run here with two.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

import torch

from .checks import check_int

__all__ = ["available_cores", "default_workers", "run_jobs", "torch_threads"]

J = TypeVar("J")
R = TypeVar("R")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(jobs: int, device: str | torch.device = "cpu") -> int:
    """One worker per core, no more than there are jobs; one on a GPU (the runs share the device)."""
    if torch.device(device).type == "cuda":
        return 1
    return max(1, min(jobs, available_cores()))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block (None: left as it is), then put back."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(check_int("threads", n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _through(executor: Any, fn: Callable[[J], R], jobs: Sequence[J], on_done: Callable[[int, R], None] | None,
             poll: float = 1.0) -> list[R]:
    """Every job submitted to ``executor`` at once, the results collected as they finish (in the jobs' order)."""
    import time

    pending = {i: executor.submit(fn, job) for i, job in enumerate(jobs)}
    results: dict[int, R] = {}
    while pending:
        for i in [i for i, f in pending.items() if f.done()]:
            results[i] = pending.pop(i).result()  # a job's error is raised here, with the engine's own log
            if on_done is not None:
                on_done(i, results[i])
        if pending:
            time.sleep(poll)
    return [results[i] for i in range(len(jobs))]


def _worker_start(threads: int) -> None:
    torch.set_num_threads(threads)


@contextlib.contextmanager
def _main_left_alone() -> Iterator[None]:
    """Start workers that do not import the caller's main module: a script without an ``if __name__ ==
    "__main__":`` guard would otherwise run again in every worker (multiprocessing's spawn imports it; the jobs'
    function lives in an importable module and needs none of it)."""
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__")
                             if main is not None and k in main.__dict__}
    if main is not None:
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def run_jobs(fn: Callable[[J], R], jobs: Sequence[J], *, workers: int = 1, threads: int | None = None,
             on_done: Callable[[int, R], None] | None = None, executor: Any = None) -> list[R]:
    """``[fn(job) for job in jobs]``, here, in worker processes, or through a job engine.

    Works from a notebook, a script with or without an ``if __name__ == "__main__":`` guard, and the REPL: the
    workers import ``fn``'s module, never the caller's main module.

    Args:
        fn: a function of an importable module (it is sent to the workers by name).
        jobs: its arguments, one per call (picklable).
        workers: processes (default 1: every job here, in this process, in order).
        threads: torch threads per process (default: 1 in workers; here, left as it is).
        on_done: called in this process with ``(index, result)`` as each job finishes (progress lines).
        executor: an engine that runs each job elsewhere, one job per submission: anything with
            ``submit(fn, job)`` returning an object with ``done()`` and ``result()`` (``submitit.AutoExecutor`` on
            a Slurm cluster, its ``LocalExecutor``, a ``concurrent.futures`` executor); ``workers`` and ``threads``
            are then the engine's business (default None: here or in workers).

    Returns:
        The results in the jobs' order.

    Raises:
        ValueError: a bad ``workers`` or ``threads``; whatever a job raises (the other jobs are cancelled).

    Example:
        >>> run_jobs(abs, [-1, 2, -3], workers=1)
        [1, 2, 3]
    """
    check_int("workers", workers)
    if executor is not None:
        return _through(executor, fn, jobs, on_done)
    if workers == 1 or len(jobs) <= 1:
        out = []
        with torch_threads(threads):
            for i, job in enumerate(jobs):
                out.append(fn(job))
                if on_done is not None:
                    on_done(i, out[-1])
        return out
    per = check_int("threads", threads) if threads is not None else 1
    results: dict[int, R] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_worker_start,
                             initargs=(per,)) as ex:
        with _main_left_alone():  # the workers start while the jobs are submitted
            pending: dict[Future[Any], int] = {ex.submit(fn, job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    i = pending.pop(f)
                    results[i] = f.result()
                    if on_done is not None:
                        on_done(i, results[i])
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return [results[i] for i in range(len(jobs))]
