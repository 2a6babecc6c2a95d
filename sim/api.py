"""Python API: everything the CLI does, as functions notebooks can call.

    >>> import sim
    >>> cfg = sim.load_experiment("experiments/quickstart.yaml")
    >>> res = sim.run(cfg)
    >>> res.summary["p99_ttft_ms"], res.requests.head(), res.iterations.head()

Data flows one way (docs/architecture.md): validated config (:mod:`sim.config`) → deployment and
cost model (:mod:`sim.deploy`) and workload (:mod:`workloads`) → engine (:mod:`sim.engine`, SimPy) →
request records and iteration log → metrics (:mod:`sim.measure`) → one run (:mod:`sim.runs`) →
planning (:mod:`sim.plan`), fidelity (:mod:`sim.fidelity`) and reports (:mod:`sim.report`).
This module re-exports the entry points of those stages under stable names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sim.config import ExperimentConfig, load_experiment
from sim.deploy.deployment import Deployment, build_deployment
from sim.plan.capacity import capacity_search
from sim.plan.fleet_plan import plan_fleet
from sim.plan.sweep import sweep as _sweep
from sim.report import write_report
from sim.runs.result import RunResult
from sim.runs.runner import run as _run
from sim.runs.storage import load_result, save_result, to_jsonable

__all__ = ["Deployment", "build_deployment", "run", "save_result", "load_result", "to_jsonable", "sweep",
           "capacity", "plan", "load_experiment", "RunResult"]


def run(cfg: ExperimentConfig | str | Path, *, out_dir: str | Path | None = None,
        progress: Any = False, report: bool = False, **kwargs: Any) -> RunResult:
    """Simulate one experiment and return its :class:`RunResult` (optionally also written to
    ``out_dir``, with ``report.html``/``report.md`` when ``report``). ``progress=True`` shows a
    progress bar for runs over ~2 s; other keywords (``percentiles``, ``save_detailed``) as
    :func:`sim.runs.runner.run`."""
    result = _run(cfg, out_dir=out_dir, progress=progress, **kwargs)
    if out_dir is not None and report:
        write_report(out_dir, result)  # from memory: the tables just written are not read back
    return result


def sweep(cfg: ExperimentConfig | str | Path, out_dir: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Run the experiment's ``sweep:`` grid (see :func:`sim.plan.sweep.sweep`)."""
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    return _sweep(cfg, out_dir, **kwargs)


def capacity(cfg: ExperimentConfig | str | Path, out_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """Capacity search (see :func:`sim.plan.capacity.capacity_search`)."""
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    return capacity_search(cfg, out_dir=out_dir, **kwargs)


def plan(cfg: ExperimentConfig | str | Path, out_dir: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Fleet plan over a day (see :func:`sim.plan.fleet_plan.plan_fleet`)."""
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    return plan_fleet(cfg, out_dir=out_dir, **kwargs)
