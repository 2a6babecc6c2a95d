"""Sweeps: run one experiment over a grid of configurations, in parallel, resumably.

The ``sweep:`` section of an experiment names dotted config keys and the values to try::

    sweep:
      grid:                          # the Cartesian product of these lists
        engine.max_num_seqs: [64, 256]
        workload.arrival.rate: [2, 4, 8]
      zip:                           # each group's lists vary together (one axis of the product)
        - {hardware: [h100-sxm, h100-sxm, a100-sxm-80gb], parallel.tp: [4, 8, 8]}
      mode: run                      # or capacity: a capacity search per point

Each *point* is the base experiment with one combination applied through
:func:`sim.config.with_overrides` (the ``sweep`` section itself removed). A point whose config is
rejected, or whose run raises a :class:`sim.errors.SimctlError` (e.g. the model does not fit at that
TP), is recorded as ``infeasible`` with the reason; an unexpected exception is recorded as ``error``
(with its traceback in ``point.json``) and retried on the next run.

Output directory::

    sweep.json             the plan: swept keys, mode, point names and overrides
    config.yaml            the base experiment (resolved)
    sweep.parquet, .csv    one row per point: swept values, point, status, reason, metrics
    points/<name>/         one result directory per point (as sim.api.save_result writes, or
                           capacity.json in capacity mode)
                           plus point.json (status, overrides, fingerprint) and row.json

Resumability: a point's directory is written by the driver process only, all at once (temporary
directory + rename), so it either exists complete or not at all; ``point.json`` inside it is the
completion marker. A rerun skips points whose marker says ``ok``/``infeasible`` *and* whose
fingerprint (hash of the point's resolved config and mode) matches; killing a sweep loses at most the
points in flight. The table is always rebuilt from the ``row.json`` files, so a resumed sweep yields
exactly the table an uninterrupted one would.

Backends: ``local`` (a process pool, ``jobs`` workers; ``jobs=1`` runs in-process) and ``ray``
(one Ray task per point on a local or remote Ray cluster; ``pip install 'simctl[ray]'``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import Field, field_validator, model_validator

from sim.config import ExperimentConfig, Frozen, with_overrides
from sim.errors import ConfigError, SimctlError
from sim.plan.capacity import capacity_search
from sim.plan.workers import (
    default_jobs,
    kill_workers,
    picklable,
    stop_on_signals,
    worker_init,
)
from sim.plan.workers import pool_context as _pool_context
from sim.runs.runner import run
from sim.runs.storage import save_result, to_jsonable

SWEEP_TABLE = "sweep.parquet"
SWEEP_CSV = "sweep.csv"
SWEEP_PLAN = "sweep.json"
POINTS_DIR = "points"
POINT_FILE = "point.json"  # completion marker + status of one point
ROW_FILE = "row.json"  # the point's row of the sweep table
CAPACITY_FILE = "capacity.json"

STATUS_OK = "ok"
STATUS_INFEASIBLE = "infeasible"
STATUS_ERROR = "error"
FINAL_STATUSES = (STATUS_OK, STATUS_INFEASIBLE)  # points with these are never recomputed


def jsonable(value: Any) -> Any:
    """Plain JSON value of ``value`` (numpy scalars, dataclasses, NaN → None), as results are saved."""

    return to_jsonable(value)


def dumps_json(value: Any) -> bytes:
    """Deterministic, indented JSON bytes of ``value``."""
    return (json.dumps(jsonable(value), indent=2, allow_nan=False) + "\n").encode()


def run_files(result: Any) -> dict[str, bytes]:
    """A RunResult as ``{file name: bytes}`` of its result directory (exactly what
    :func:`sim.api.save_result` writes), so it can travel from a worker to the writing process."""

    with tempfile.TemporaryDirectory(prefix="simctl-point-") as tmp:
        save_result(result, tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def write_files_atomically(out_dir: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``out_dir`` as one unit: a temporary sibling directory, then a rename.

    Readers (and a resumed sweep) never see a half-written directory; an existing one is replaced.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out_dir.exists():  # rename() cannot replace a non-empty directory: move the old one aside
            old = Path(tempfile.mkdtemp(prefix=f".old-{out_dir.name}-", dir=out_dir.parent))
            os.replace(out_dir, old / "d")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# A point function takes one point's config and returns a RunResult (mode run) or a capacity
# result (mode capacity: an object or dict with max_request_rate, probes, binding constraint).
PointFn = Callable[[ExperimentConfig], Any]


class SweepConfig(Frozen):
    """The ``sweep:`` section: which config keys to vary and how each point is evaluated."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values; the Cartesian product is swept")
    zip: list[dict[str, list[Any]]] = Field(default_factory=list, description="groups of keys whose value lists vary together (equal lengths)")
    mode: Literal["run", "capacity"] = Field("run", description="run: one simulation per point; capacity: a capacity search per point")
    load_key: str | None = Field(None, description="the swept key that is the offered load (x-axis of latency-vs-load); default: a key ending in 'arrival.rate'")
    target_request_rate: float | None = Field(None, gt=0, description="traffic (req/s) the report sizes each configuration for (replicas and GPUs needed)")

    @field_validator("grid")
    @classmethod
    def _grid_lists_non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
        return grid

    @field_validator("zip")
    @classmethod
    def _zip_groups_aligned(cls, groups: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
        for i, group in enumerate(groups):
            if not group:
                raise ValueError(f"zip[{i}]: a group needs at least one key")
            lengths = {key: len(values) for key, values in group.items()}
            if len(set(lengths.values())) != 1 or 0 in lengths.values():
                raise ValueError(f"zip[{i}]: value lists must be non-empty and of equal length, got {lengths}")
        return groups

    @model_validator(mode="after")
    def _keys_once(self) -> SweepConfig:
        seen: set[str] = set()
        for key in [*self.grid, *(k for g in self.zip for k in g)]:
            if key in seen:
                raise ValueError(f"key '{key}' is swept twice (grid and zip keys must be distinct)")
            if key.split(".")[0] in ("sweep", "base_dir"):
                raise ValueError(f"key '{key}' cannot be swept")
            seen.add(key)
        if not seen:
            raise ValueError("a sweep needs at least one key under grid or zip")
        if self.load_key is not None and self.load_key not in seen:
            raise ValueError(f"load_key '{self.load_key}' is not one of the swept keys {sorted(seen)}")
        return self

    @property
    def keys(self) -> list[str]:
        """Swept keys in point-name order: grid keys, then zip groups' keys."""
        return [*self.grid, *(k for g in self.zip for k in g)]

    @property
    def resolved_load_key(self) -> str | None:
        """The offered-load key: ``load_key`` if given, else the first swept ``*arrival.rate`` key."""
        if self.load_key:
            return self.load_key
        return next((k for k in self.keys if k.endswith("arrival.rate")), None)

    def points(self) -> list[dict[str, Any]]:
        """All override dicts, in a stable order (the product of grid axes then zip groups)."""
        axes: list[list[dict[str, Any]]] = [[{key: v} for v in values] for key, values in self.grid.items()]
        for group in self.zip:
            n = len(next(iter(group.values())))
            axes.append([{key: values[i] for key, values in group.items()} for i in range(n)])
        return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


# ----------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class PointTask:
    """Everything a worker needs to evaluate one point (picklable: sent to processes / Ray tasks)."""

    index: int
    name: str
    overrides: dict[str, Any]
    config: ExperimentConfig | None  # None when the config could not be built
    build_error: str | None  # why the config could not be built (the point is infeasible)
    fingerprint: str
    mode: str
    point_fn: PointFn | None = None  # None: sim.api.run / sim.plan.capacity.capacity_search


@dataclass
class SweepPlan:
    """The points of a sweep, with their stable names and built configs."""

    base: ExperimentConfig
    spec: SweepConfig
    tasks: list[PointTask] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What ``sweep.json`` records (the report reads it to know the swept keys)."""
        return {
            "name": self.base.name,
            "mode": self.spec.mode,
            "keys": self.spec.keys,
            "load_key": self.spec.resolved_load_key,
            "target_request_rate": self.spec.target_request_rate,
            "points": [{"index": t.index, "name": t.name, "overrides": jsonable(t.overrides)} for t in self.tasks],
        }


def _value_label(value: Any) -> str:
    if isinstance(value, str):
        return Path(value).stem if "/" in value else value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """The last dotted component of each key, or the whole key where that would be ambiguous."""
    last = [k.split(".")[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _digest(value: Any, n: int = 8) -> str:
    text = json.dumps(jsonable(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def point_names(points: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """Stable, readable directory names built from the swept values (``tp=4__max_num_seqs=64``).

    Names depend only on the values, never on the position in the grid. Long names are shortened and
    names that would collide after sanitising get a short hash of their values appended.
    """
    short = short_keys(keys)
    names = []
    for overrides in points:
        raw = "__".join(f"{short[k]}={_value_label(v)}" for k, v in overrides.items())
        name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", raw)
        if len(name) > 100:
            name = f"{name[:90]}-{_digest(overrides)}"
        names.append(name)
    counts = {n: names.count(n) for n in names}
    return [f"{n}-{_digest(o)}" if counts[n] > 1 else n for n, o in zip(names, points)]


def _fingerprint(cfg: ExperimentConfig | None, overrides: dict[str, Any], mode: str) -> str:
    """Hash of what determines a point's result (its resolved config, or its overrides if unbuildable)."""
    if cfg is None:
        return _digest({"overrides": overrides, "mode": mode}, 16)
    data = cfg.to_dict()
    data.pop("base_dir", None)
    return _digest({"config": data, "mode": mode}, 16)


def plan_sweep(cfg: ExperimentConfig, point_fn: PointFn | None = None) -> SweepPlan:
    """Expand ``cfg.sweep`` into point tasks, building (and validating) every point's config.

    An unknown swept key is a mistake in the sweep itself and raises :class:`ConfigError` at once;
    any other config error makes just that point infeasible.
    """
    spec = cfg.sweep
    if not isinstance(spec, SweepConfig):
        raise ConfigError(f"experiment '{cfg.name}' has no sweep: section (see docs/howto-sweep.md)")
    if spec.mode == "capacity" and cfg.slo is None and point_fn is None:
        raise ConfigError(f"{cfg.name}: sweep mode 'capacity' needs an slo: section (what each point's "
                          "capacity must meet)")
    base = cfg.model_copy(update={"sweep": None})
    points = spec.points()
    plan = SweepPlan(base=base, spec=spec)
    for index, (name, overrides) in enumerate(zip(point_names(points, spec.keys), points)):
        point_cfg, build_error = None, None
        try:
            point_cfg = with_overrides(base, overrides)
        except ConfigError as exc:
            if "unknown key" in str(exc):
                raise ConfigError(f"sweep: a swept key does not exist in the experiment schema:\n{exc}") from None
            build_error = str(exc)
        except SimctlError as exc:
            build_error = str(exc)
        plan.tasks.append(PointTask(index, name, overrides, point_cfg, build_error,
                                    _fingerprint(point_cfg, overrides, spec.mode), spec.mode, point_fn))
    return plan


# ----------------------------------------------------------------------------------------------
# Evaluating one point (runs in a worker process or a Ray task)


@dataclass
class PointOutcome:
    """A point's result as the driver writes it: its table row, files, and status record."""

    task_name: str
    info: dict[str, Any]  # -> point.json
    row: dict[str, Any]  # -> row.json
    files: dict[str, bytes] = field(default_factory=dict)  # run directory / capacity.json

    @property
    def status(self) -> str:
        """``ok``, ``infeasible`` or ``error``."""
        return self.info["status"]


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts with dotted keys; lists become JSON text (one table cell each)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(jsonable(value))
        else:
            out[name] = jsonable(value)
    return out


def _capacity_dict(cap: Any) -> dict[str, Any]:
    """A capacity-search result (dataclass, object with ``to_dict``, pydantic model or dict) as a dict."""
    if hasattr(cap, "model_dump"):
        cap = cap.model_dump(mode="json")
    data = jsonable(cap)
    if not isinstance(data, dict):
        data = jsonable({k: v for k, v in vars(cap).items() if not k.startswith("_")})
    return data


def _probe_passed(probe: dict[str, Any]) -> bool:
    for key in ("passed", "pass", "ok", "meets_slo", "slo_pass"):
        if key in probe:
            return bool(probe[key])
    return False


def _probe_rate(probe: dict[str, Any]) -> float:
    for key in ("request_rate", "rate", "qps", "arrival_rate"):
        if isinstance(probe.get(key), (int, float)):
            return float(probe[key])
    return float("nan")


def capacity_row(cap: dict[str, Any]) -> dict[str, Any]:
    """Table columns of a capacity search: the rate, the binding constraint, and the metrics of the
    best passing probe (so a capacity sweep can be compared on latency and cost too)."""
    probes = [p for p in cap.get("probes") or [] if isinstance(p, dict)]
    binding = cap.get("binding_constraint", cap.get("binding"))
    row: dict[str, Any] = {
        "max_request_rate": cap.get("max_request_rate"),
        "binding_constraint": binding if isinstance(binding, str) or binding is None else json.dumps(jsonable(binding)),
        "num_probes": len(probes),
    }
    row.update({k: cap[k] for k in ("min_replicas", "converged") if k in cap})
    passing = [p for p in probes if _probe_passed(p)]
    if passing:
        best = max(passing, key=_probe_rate)
        metrics = next((best[k] for k in ("summary", "metrics") if isinstance(best.get(k), dict)), None)
        if metrics is not None:
            row.update({k: v for k, v in flatten(metrics).items() if k not in row})
    return row


def _default_point_fn(mode: str) -> PointFn:
    if mode == "capacity":

        return capacity_search

    return run


def compute_point(task: PointTask) -> PointOutcome:
    """Evaluate one point: run it (or search its capacity) and serialise what the driver writes.

    Never raises for a point that cannot run: :class:`SimctlError` → ``infeasible``, any other
    exception → ``error``. (KeyboardInterrupt and other BaseExceptions do propagate.)
    """
    started = time.perf_counter()
    info: dict[str, Any] = {"name": task.name, "index": task.index, "overrides": jsonable(task.overrides),
                            "mode": task.mode, "fingerprint": task.fingerprint, "status": STATUS_OK, "reason": ""}
    row: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    cfg = task.config
    if cfg is None:
        info.update(status=STATUS_INFEASIBLE, reason=task.build_error or "invalid configuration")
    else:
        row.update(replicas=cfg.replicas, gpus_per_replica=cfg.parallel.num_gpus,
                   num_gpus=cfg.parallel.num_gpus * cfg.replicas)
        try:
            fn = task.point_fn or _default_point_fn(task.mode)
            result = fn(cfg)
            if task.mode == "capacity":
                cap = _capacity_dict(result)
                files[CAPACITY_FILE] = dumps_json(cap)
                row.update(capacity_row(cap))
            else:
                files.update(run_files(result))
                row.update(flatten(result.summary))
        except SimctlError as exc:
            info.update(status=STATUS_INFEASIBLE, reason=str(exc))
            files = {}
        except Exception as exc:  # a bug: keep the sweep going, record it, retry it next time
            info.update(status=STATUS_ERROR, reason=f"{type(exc).__name__}: {exc}",
                        traceback=traceback.format_exc())
            files = {}
    info["wall_s"] = round(time.perf_counter() - started, 3)
    swept = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(jsonable(v)))
             for k, v in task.overrides.items()}
    full_row = {**swept, "point": task.name, "status": info["status"], "reason": info["reason"], **row}
    return PointOutcome(task.name, info, full_row, files)


# ----------------------------------------------------------------------------------------------
# Driver: resume bookkeeping, backends, the table


def _point_dir(out_dir: Path, name: str) -> Path:
    return out_dir / POINTS_DIR / name


def _is_complete(out_dir: Path, task: PointTask) -> bool:
    marker = _point_dir(out_dir, task.name) / POINT_FILE
    if not marker.is_file() or not (marker.parent / ROW_FILE).is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return info.get("status") in FINAL_STATUSES and info.get("fingerprint") == task.fingerprint


def _write_point(out_dir: Path, outcome: PointOutcome) -> None:
    files = dict(outcome.files)
    files[ROW_FILE] = dumps_json(outcome.row)
    files[POINT_FILE] = dumps_json(outcome.info)
    write_files_atomically(_point_dir(out_dir, outcome.task_name), files)


def _remove_stale_temporaries(points_dir: Path) -> None:
    """Drop half-written point directories left by a killed sweep."""
    if points_dir.is_dir():
        for p in points_dir.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def _normalize_table(df: pd.DataFrame) -> pd.DataFrame:
    """Make every object column single-typed so Parquet can store it (mixed → text)."""
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and v != v)}
            if len(kinds) > 1:
                df[col] = [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in df[col]]
    return df


def collect_table(out_dir: str | Path, names: Iterable[str]) -> pd.DataFrame:
    """Build the sweep table from the points' ``row.json`` files, in the given (plan) order."""
    out_dir = Path(out_dir)
    rows = []
    for name in names:
        path = _point_dir(out_dir, name) / ROW_FILE
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    return _normalize_table(pd.DataFrame(rows))


def _write_table(out_dir: Path, table: pd.DataFrame) -> None:
    for name, writer in ((SWEEP_TABLE, lambda p: table.to_parquet(p, index=False)),
                         (SWEEP_CSV, lambda p: table.to_csv(p, index=False))):
        tmp = out_dir / f".{name}.tmp"
        writer(tmp)
        os.replace(tmp, out_dir / name)


def _run_local(tasks: list[PointTask], jobs: int, on_done: Callable[[PointOutcome], None],
               started: Callable[[], None]) -> None:
    """Evaluate tasks on a process pool of ``jobs`` workers (in-process when ``jobs`` is 1).

    ``started`` is called once the workers exist (the progress bar starts then).
    """
    jobs = max(1, min(jobs, len(tasks)))
    if jobs > 1 and not picklable(tasks[0]):
        jobs = 1  # e.g. a lambda as point_fn: it cannot cross a process boundary
    if jobs == 1:
        started()
        for task in tasks:
            on_done(compute_point(task))
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=_pool_context(), initializer=worker_init,
                               initargs=(os.getpid(),))
    try:
        with stop_on_signals():
            futures = [pool.submit(compute_point, t) for t in tasks]
            started()
            for fut in as_completed(futures):
                on_done(fut.result())
    except BrokenProcessPool:
        kill_workers(pool)
        raise SimctlError("a sweep worker process died (out of memory?); finished points are saved — "
                          "rerun the same command to resume") from None
    except BaseException:
        kill_workers(pool)  # Ctrl-C, SIGTERM, an error: no worker outlives the sweep
        raise
    pool.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SimctlError("--backend ray needs Ray, which is not installed: pip install 'simctl[ray]'") from None
    return ray


def _run_ray(tasks: list[PointTask], jobs: int, on_done: Callable[[PointOutcome], None],
             started: Callable[[], None], address: str | None) -> None:
    """Evaluate tasks as Ray tasks (one CPU each); Ray does the scheduling across the cluster.

    Connects to ``address`` (e.g. ``auto`` or ``ray://head:10001``) or starts a local Ray instance
    with ``jobs`` CPUs. Results come back to this process, which alone writes the output directory,
    so workers need no shared file system (but do need simctl installed).
    """
    ray = _import_ray()
    owns_ray = not ray.is_initialized()
    if owns_ray:
        init_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **init_args)
        else:
            ray.init(num_cpus=jobs, **init_args)
    pending: list[Any] = []
    try:
        remote_compute = ray.remote(num_cpus=1, max_retries=1)(compute_point)
        pending = [remote_compute.remote(t) for t in tasks]
        started()
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                on_done(ray.get(ref))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if owns_ray:
            ray.shutdown()


class _Progress:
    """A rich progress bar (points done, elapsed, ETA), or nothing when disabled."""

    def __init__(self, total: int, completed: int, enabled: bool) -> None:
        self.enabled = enabled and total > 0
        self.num_resumed = completed
        self.counts = {STATUS_OK: 0, STATUS_INFEASIBLE: 0, STATUS_ERROR: 0}
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self._task = self._bar.add_task(self._describe(), total=total, completed=completed)

    def _describe(self) -> str:
        c = self.counts
        resumed = f"{self.num_resumed} resumed, " if self.num_resumed else ""
        return f"{resumed}{c[STATUS_OK]} ok, {c[STATUS_INFEASIBLE]} infeasible, {c[STATUS_ERROR]} error"

    def start(self) -> None:
        """Show the bar (call once the workers exist: it runs a refresh thread)."""
        if self.enabled:
            self._bar.start()

    def stop(self) -> None:
        """Remove the refresh thread; the final bar stays on screen."""
        if self.enabled:
            self._bar.stop()

    def advance(self, status: str) -> None:
        """Count one finished point."""
        self.counts[status] += 1
        if self.enabled:
            self._bar.update(self._task, advance=1, description=self._describe())


def sweep(cfg: ExperimentConfig, out_dir: str | Path, jobs: int | None = None,
          backend: Literal["local", "ray"] = "local", address: str | None = None,
          point_fn: PointFn | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Run every point of ``cfg.sweep`` and return the sweep table (also written to ``out_dir``).

    - ``jobs``: parallel workers (default: all local cores; for Ray, the local instance's CPUs).
    - ``backend``: ``local`` (process pool) or ``ray`` (``address`` of a cluster; none = local Ray).
    - ``point_fn``: evaluates one point's config (default :func:`sim.api.run`, or
      :func:`sim.plan.capacity.capacity_search` in capacity mode); must be a module-level function to
      run in worker processes.
    - ``progress``: show a progress bar on stderr (default: when stderr is a terminal).

    Rerunning with the same ``out_dir`` resumes: finished points are not recomputed.
    """
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown sweep backend '{backend}' (choose local or ray)")
    plan = plan_sweep(cfg, point_fn)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_dir / POINTS_DIR)
    (out_dir / SWEEP_PLAN).write_bytes(dumps_json(plan.to_dict()))
    (out_dir / "config.yaml").write_text(yaml.safe_dump(jsonable(cfg.to_dict()), sort_keys=False))

    todo = [t for t in plan.tasks if not _is_complete(out_dir, t)]
    jobs = jobs or default_jobs()
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(len(plan.tasks), len(plan.tasks) - len(todo), show)

    def on_done(outcome: PointOutcome) -> None:
        _write_point(out_dir, outcome)
        bar.advance(outcome.status)

    try:
        if todo and backend == "ray":
            _run_ray(todo, jobs, on_done, bar.start, address)
        elif todo:
            _run_local(todo, jobs, on_done, bar.start)
    finally:
        bar.stop()
    table = collect_table(out_dir, [t.name for t in plan.tasks])
    _write_table(out_dir, table)
    return table


run_sweep = sweep  # the name the sweep runner is known by in the design notes


def load_sweep_table(out_dir: str | Path) -> pd.DataFrame:
    """Read a finished sweep's table."""
    return pd.read_parquet(Path(out_dir) / SWEEP_TABLE)
