"""Engine speed (issue 3): 100k chat requests on Llama-3.1-8B / H100 in ≤ 15 s of wall time.

Marked ``slow`` (deselected by default; run with ``pytest -m slow tests/test_engine_speed.py``).
The same measurement with a full report is ``python benchmarks/bench_engine.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_engine  # noqa: E402

from sim.config import EngineConfig  # noqa: E402
from sim.engine.simulator import ReplicaSetup, simulate  # noqa: E402

pytestmark = pytest.mark.slow


def test_100k_chat_requests_simulate_within_15_seconds():
    engine = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=1024, block_size=16)
    roof = bench_engine.roofline_setup(engine)
    setup = roof[0] if roof else ReplicaSetup(engine, bench_engine.FALLBACK_NUM_KV_BLOCKS, 131_072,
                                              bench_engine.CONSTANT_COST)
    out = simulate(bench_engine.chat_workload(100_000, 20.0, 0), setup, seed_seq=np.random.SeedSequence(0))
    assert (out.requests.status == "completed").all()
    assert out.stats["wall_s"] <= 15.0


def test_per_iteration_work_does_not_grow_with_tokens_generated():
    timer = bench_engine.WindowTimer(bench_engine.CONSTANT_COST, window=2000)
    setup = ReplicaSetup(EngineConfig(max_num_batched_tokens=8192, max_num_seqs=1024), 300_000, 32_768, timer)
    specs = [bench_engine.RequestSpec(0.0, 128, 16_000) for _ in range(256)]
    simulate(bench_engine.OpenLoopWorkload(specs), setup, seed_seq=np.random.SeedSequence(0))
    marks = np.array([(c, w) for c, _, w in timer.marks])
    per_iteration = np.diff(marks[:, 1]) / np.diff(marks[:, 0])
    # the last windows (4M tokens generated) cost no more than the first ones (1M), within noise
    assert np.median(per_iteration[-3:]) < 2.0 * np.median(per_iteration[:3])
