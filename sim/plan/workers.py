"""Worker processes for local sweeps and parallel capacity probes: how they start, and that they
never outlive the sweep (or search) that started them.

- Each worker asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) to be killed when its parent dies,
  however the parent dies (``kill -9`` included), and exits at once if the parent is already gone.
- While workers run, SIGTERM and SIGHUP make the parent raise :class:`Terminated` (a
  ``KeyboardInterrupt``, so the usual clean-up path runs), and the pool's processes are terminated
  before the exception propagates: finished points are on disk, a rerun resumes.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """The sweep was asked to stop by a signal (SIGTERM, SIGHUP)."""


def worker_init(parent_pid: int) -> None:
    """Pool initializer: die with the parent (Linux), or exit now if it has already died."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl (exotic libc): the parent's handler still applies
            pass
    # a worker forked while the parent's stop_on_signals handler is installed would inherit it and
    # raise inside the pool's queue code when kill_workers terminates it (and can then hang at exit)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if os.getppid() != parent_pid:
        os._exit(1)


def kill_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate every worker of ``pool`` now (running points are abandoned) and reap them."""
    procs = list(getattr(pool, "_processes", {}).values())  # CPython keeps the workers here
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(timeout=5)
            if p.is_alive():  # ignored SIGTERM: SIGKILL cannot be ignored
                p.kill()
                p.join(timeout=5)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into :class:`Terminated` in the main thread while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def default_jobs() -> int:
    """Local cores available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_context() -> multiprocessing.context.BaseContext | None:
    """fork on Linux (workers start instantly and scripts need no ``__main__`` guard; a forked worker
    also inherits the parent's hash seed, so set iteration order matches an in-process run); elsewhere
    the platform default. Workers are forked before a progress bar starts its refresh thread."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None


def picklable(obj: object) -> bool:
    """True when ``obj`` can be sent to a worker process (else the caller runs it in-process)."""
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True
