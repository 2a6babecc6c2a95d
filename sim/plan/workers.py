"""Worker-process hygiene for local sweeps: workers never outlive the sweep that started them.

- Each worker asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG)``) to be killed when its parent dies,
  however the parent dies (``kill -9`` included), and exits at once if the parent is already gone.
- While workers run, SIGTERM and SIGHUP make the parent raise :class:`Terminated` (a
  ``KeyboardInterrupt``, so the usual clean-up path runs), and the pool's processes are terminated
  before the exception propagates: finished points are on disk, a rerun resumes.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
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
