"""The speculative-decoding examples run end to end: experiments/speculative_crossover_sweep.yaml (on/off
× request rate, the crossover load) and experiments/speculative_capacity.yaml (capacity with and
without it under a tight and a loose TPOT limit). Assertions are orderings, not pinned digits."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from sim.config import load_experiment
from sim.plan.sweep import sweep

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _by_spec(table: pd.DataFrame, key: str) -> dict[tuple[bool, float], pd.Series]:
    on = table["engine.speculative"].notna()
    return {(bool(o), float(v)): row for o, v, (_, row) in zip(on, table[key], table.iterrows())}


def test_crossover_sweep_shows_where_speculation_stops_paying(tmp_path):
    table = sweep(load_experiment(EXPERIMENTS / "speculative_crossover_sweep.yaml"), tmp_path, jobs=2)
    assert (table["status"] == "ok").all() and len(table) == 8
    pts = _by_spec(table, "workload.arrival.rate")
    # light load: weight-read-bound steps, verification nearly free: TPOT falls by ~the acceptance length
    assert pts[(True, 4.0)]["mean_tpot_ms"] < 0.65 * pts[(False, 4.0)]["mean_tpot_ms"]
    assert pts[(True, 16.0)]["mean_tpot_ms"] < pts[(False, 16.0)]["mean_tpot_ms"]
    # heavy load: compute-bound steps, rejected drafts and drafter passes cost more than they save
    assert pts[(True, 48.0)]["mean_tpot_ms"] > pts[(False, 48.0)]["mean_tpot_ms"]
    assert pts[(True, 48.0)]["output_throughput"] < pts[(False, 48.0)]["output_throughput"]


def test_capacity_with_and_without_speculation(tmp_path):
    table = sweep(load_experiment(EXPERIMENTS / "speculative_capacity.yaml"), tmp_path, jobs=2)
    assert (table["status"] == "ok").all() and table["converged"].all()
    cap = {k: row["max_request_rate"] for k, row in _by_spec(table, "slo.tpot_ms.p99").items()}
    # a tight TPOT limit binds at light load, where speculation halves TPOT: it admits far more traffic
    assert cap[(True, 10.0)] > 1.3 * cap[(False, 10.0)]
    # a loose limit binds near saturation, where its advantage is mostly gone
    gain_tight = cap[(True, 10.0)] / cap[(False, 10.0)]
    gain_loose = cap[(True, 40.0)] / cap[(False, 40.0)]
    assert gain_loose < gain_tight
