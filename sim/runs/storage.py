"""Result directories: write a run's outputs and read them back; plain-JSON conversion.

A result directory holds summary.json (written last: its presence marks a complete directory),
requests.parquet, iterations.parquet, timeline.npz, config.yaml and meta.json; autoscaled runs add
fleet_intervals.parquet, fleet_replicas.parquet and fleet_ticks.parquet.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.engine.request import TokenTimeline
from sim.errors import ConfigError
from sim.runs.result import RunResult


FLEET_PREFIX = "fleet_"  # autoscaled runs: fleet_intervals / fleet_replicas / fleet_ticks .parquet


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: dataclasses and ``to_dict()`` objects as dicts, numpy scalars and
    arrays as Python numbers and lists, non-finite floats as None."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (np.ndarray,)):
        return to_jsonable(obj.tolist())
    return obj


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_result(result: RunResult, out_dir: str | Path, *, csv: bool = False) -> Path:
    """Write summary.json, requests.parquet (+csv), iterations.parquet, config.yaml, meta.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.requests.to_parquet(out / "requests.parquet", index=False)
    result.iterations.to_parquet(out / "iterations.parquet", index=False)
    if csv:
        result.requests.to_csv(out / "requests.csv", index=False)
        result.iterations.to_csv(out / "iterations.csv", index=False)
    tl = result.timeline
    bursts = {} if tl.bursts is None else {"bursts": tl.bursts, "burst_offsets": tl.burst_offsets}
    np.savez_compressed(out / "timeline.npz", runs=tl.runs, run_offsets=tl.run_offsets,
                        replica_of=tl.replica_of, **bursts,
                        **{f"iteration_end_s_{r}": v for r, v in tl.iteration_end_s.items()})
    _atomic_write_text(out / "config.yaml", yaml.safe_dump(to_jsonable(result.config), sort_keys=False))
    _atomic_write_text(out / "meta.json", json.dumps(to_jsonable(result.meta), indent=2))
    for name, table in (result.fleet or {}).items():  # autoscaled runs
        table.to_parquet(out / f"{FLEET_PREFIX}{name}.parquet", index=False)
    # summary.json last: its presence marks a complete result directory
    _atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result.summary), indent=2))
    return out


def load_result(out_dir: str | Path) -> RunResult:
    """Read back a result directory written by :func:`save_result`."""
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        raise ConfigError(f"{out}: not a simctl result directory (no summary.json)")
    z = np.load(out / "timeline.npz")
    iters = {int(k.rsplit("_", 1)[1]): z[k] for k in z.files if k.startswith("iteration_end_s_")}
    tl = TokenTimeline(iteration_end_s=iters, replica_of=z["replica_of"], runs=z["runs"],
                       run_offsets=z["run_offsets"], bursts=z["bursts"] if "bursts" in z.files else None,
                       burst_offsets=z["burst_offsets"] if "burst_offsets" in z.files else None)
    return RunResult(
        summary=json.loads((out / "summary.json").read_text()),
        requests=pd.read_parquet(out / "requests.parquet"),
        iterations=pd.read_parquet(out / "iterations.parquet"),
        timeline=tl, config=yaml.safe_load((out / "config.yaml").read_text()),
        meta=json.loads((out / "meta.json").read_text()), fleet=_load_fleet(out))


def as_saved(result: RunResult) -> RunResult:
    """``result`` as :func:`load_result` would read it back from :func:`save_result`'s directory,
    without writing or re-reading the tables: the small parts (summary, config, meta) take the same
    JSON / YAML round trip as on disk (numpy scalars become numbers, non-finite floats None, tuples
    lists); the requests and iteration tables, the timeline and the fleet tables are shared, with a
    fresh default index as ``to_parquet(index=False)`` gives them. The run report is built from
    this (issue 10: re-reading the Parquet files cost more than rendering the report)."""
    def fresh(df: pd.DataFrame) -> pd.DataFrame:
        return df if isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1 \
            else df.reset_index(drop=True)

    return RunResult(
        summary=json.loads(json.dumps(to_jsonable(result.summary))),
        requests=fresh(result.requests), iterations=fresh(result.iterations), timeline=result.timeline,
        config=yaml.safe_load(yaml.safe_dump(to_jsonable(result.config), sort_keys=False)),
        meta=json.loads(json.dumps(to_jsonable(result.meta))),
        fleet=None if not result.fleet else {k: fresh(v) for k, v in sorted(result.fleet.items())})


def _load_fleet(out: Path) -> dict[str, pd.DataFrame] | None:
    """The fleet tables of an autoscaled run (None when the directory has none)."""
    paths = sorted(out.glob(f"{FLEET_PREFIX}*.parquet"))
    if not paths:
        return None
    return {p.stem[len(FLEET_PREFIX):]: pd.read_parquet(p) for p in paths}
