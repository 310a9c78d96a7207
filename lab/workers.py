"""Processes: runs side by side in worker processes forked from this one, a run's rank in its group,
stop signals turned into KeyboardInterrupt, and the environment a results file records.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import platform
import signal
from concurrent.futures import ProcessPoolExecutor

import torch
import torch.distributed as dist

import my_bn
from lab import numerics, progress
from lab.settings import Settings, resolve_device


def process_rank() -> tuple[int, int]:
    """(rank, number of processes) of the torch.distributed group this process trains in; (0, 1) alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def leave_stopping_to_the_parent() -> None:
    """In a child process: Ctrl-C, which reaches the whole process group, is the parent's to handle, and
    SIGTERM from the parent ends the child at once (not through the parent's handler, which it inherits)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """SIGINT and SIGTERM (Ctrl-C, ``kill``, ``timeout``, a job scheduler) stop this process through
    KeyboardInterrupt, so that its child processes are ended, its temporary files removed, and
    nothing half done is saved. SIGINT too, since a shell starts a background job with SIGINT ignored."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker_init(threads: int) -> None:
    leave_stopping_to_the_parent()
    torch.set_num_threads(threads)


@contextlib.contextmanager
def process_pool(workers: int, threads: int = 1):
    """``map`` over ``workers`` processes forked from this one, each with ``threads`` threads, which
    leave stopping to this process: stopped (KeyboardInterrupt), or with a worker dead, the others
    are ended at once, not after their jobs."""
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_worker_init,
                               initargs=(threads,))
    try:
        yield pool.map
    except BaseException:
        for process in list((pool._processes or {}).values()):  # no public way before Python 3.14
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


@contextlib.contextmanager
def run_pool(config: Settings, jobs: int):
    """``map`` over worker processes, one per core, each with ``config.threads`` threads.

    Every run is deterministic on its own, so which process trains it changes nothing in the
    results. Workers are forked from this process (only on the CPU, where that is safe), after the
    modules every run needs are imported once here. The ``jobs`` runs count towards the experiment's
    progress, each as the map yields it.
    """
    progress.current().expect(jobs)  # each result the map yields is a run ended
    workers = min(config.workers or len(os.sched_getaffinity(0)), jobs)
    distributed = process_rank()[1] > 1  # the processes of a group already share the cores
    if (
        workers <= 1
        or distributed
        or resolve_device(config.device).type != "cpu"
        or "fork" not in mp.get_all_start_methods()
    ):
        yield progress.counted(map)
        return
    import torch._dynamo  # noqa: F401  - the optimiser imports it on first use; once here, not in every worker

    with process_pool(workers, config.threads) as pool_map:
        yield progress.counted(pool_map)


def environment(config: Settings) -> dict:
    """Where results were produced: versions (of this package too), device, the CPU numerics (``numerics.describe``:
    the policy that decides the rounding, and under the native policy the CPU whose kernels did), threads and
    processes."""
    return {
        "my_bn": my_bn.__version__,  # the package's version (pyproject.toml, CITATION.cff)
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(resolve_device(config.device)),
        "numerics": numerics.describe(),
        "threads": config.threads,
        "processes": process_rank()[1],
    }

