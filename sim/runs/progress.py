"""A rich progress bar for long simulations, fed by the engine's ``progress`` callback.

The bar appears only once a run has taken :data:`DELAY_S` of wall time (short runs print nothing)
and only when asked for: the CLI asks when stderr is a terminal, the Python API with
``progress=True``. It counts ended requests against the workload's size when that is known, else
shows simulated time.
"""
from __future__ import annotations

import time
from typing import Any

DELAY_S = 2.0


class RunProgress:
    """Callable for ``sim.engine.simulator.simulate(progress=...)``; call :meth:`close` at the end."""

    def __init__(self, total: int | None, label: str = "simulating", delay_s: float = DELAY_S) -> None:
        self.total = total
        self.label = label
        self.delay_s = delay_s
        self._t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        cols = [TextColumn(f"[bold]{self.label}[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("requests, sim t={task.fields[now]:.0f} s"), TimeElapsedColumn()]
        self._bar = Progress(*cols, console=Console(stderr=True))
        self._task = self._bar.add_task(self.label, total=self.total, now=0.0)
        self._bar.start()

    def __call__(self, info: dict[str, Any]) -> None:
        if self._bar is None:
            if time.perf_counter() - self._t0 < self.delay_s:
                return
            self._start()
        self._bar.update(self._task, completed=int(info.get("num_ended", 0)), now=float(info.get("now_s", 0.0)))

    def close(self) -> None:
        """Stop the bar's refresh thread (the final state stays on screen)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
