"""SGLang's overlap scheduler (v0.4 ``Scheduler.event_loop_overlap``: receive, plan batch k, launch it,
then process batch k−1's result) through ``engine.async_scheduling``: a request arriving while batch k−1
runs, after batch k was planned, first runs in batch k+1 — one step later than the synchronous loop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.config import EngineConfig, load_experiment
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from workloads.base import OpenLoopWorkload

D = 0.1
EXAMPLE = Path(__file__).resolve().parent.parent / "experiments" / "sglang_h200_llama70b.yaml"


def run(async_scheduling):
    engine = EngineConfig(policy="sglang", max_num_batched_tokens=2048, async_scheduling=async_scheduling)
    specs = [RequestSpec(0.0, 10, 10), RequestSpec(0.15, 10, 2)]  # b arrives during a's first decode step
    return simulate(OpenLoopWorkload(specs), ReplicaSetup(engine, 1000, 4096, ConstantCostModel(D)),
                    seed_seq=np.random.SeedSequence(0))


def test_overlap_delays_a_new_request_by_exactly_one_step():
    sync, overlap = run(False).requests, run(True).requests
    # synchronous: a prefills [0, 0.1), decodes [0.1, 0.2); b is seen at 0.2 and prefills [0.2, 0.3)
    assert sync.first_scheduled_s.iloc[1] == pytest.approx(0.2)
    assert sync.ttft_s.iloc[1] == pytest.approx(0.3 - 0.15)
    # overlap: the batch of [0.2, 0.3) was planned at 0.1, before b arrived: b prefills [0.3, 0.4)
    assert overlap.first_scheduled_s.iloc[1] == pytest.approx(0.3)
    assert overlap.ttft_s.iloc[1] == pytest.approx(0.4 - 0.15)
    assert overlap.first_scheduled_s.iloc[0] == pytest.approx(0.0)  # an idle scheduler starts at once


def test_the_datacrunch_example_runs_sglang_v04_defaults():
    engine = load_experiment(EXAMPLE).engine
    assert engine.async_scheduling is True  # overlap scheduler on (disable_overlap_schedule = False)
    assert engine.policy_options["cuda_graph_max_bs"] == "default"
