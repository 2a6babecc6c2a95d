"""The KV-tier examples run end to end: experiments/agentic_offload_routing.yaml (cache-aware routing +
CPU tier beat round-robin without a tier) and experiments/cpu_offload_crossover_sweep.yaml (offload
pays only where the reused context exceeds the GPU cache)."""
from __future__ import annotations

import json
from pathlib import Path

from sim.config import load_experiment, with_overrides
from sim.plan.sweep import sweep
from sim.runs.runner import run

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def test_agentic_offload_routing_example():
    cfg = load_experiment(EXPERIMENTS / "agentic_offload_routing.yaml")
    tiered = run(cfg).summary
    plain = run(with_overrides(cfg, {"router": "round-robin", "router_options": {},
                                     "engine.kv_offload": None})).summary
    assert tiered["kv_tiers"]["tiers"]["cpu"]["hit_rate"] > 0.1
    assert tiered["prefix_cache_hit_rate"] > plain["prefix_cache_hit_rate"] + 0.2
    assert tiered["mean_ttft_ms"] < plain["mean_ttft_ms"]
    # asynchronous loads (vllm-native) never leave a request stuck: all end (finished or rejected)
    assert tiered["backlog"]["unfinished"] == 0 and tiered["kv_tiers"]["engine_stall_s"] == 0.0
    # round-robin with the tier preempts long requests ahead of landed loads: none may hang
    rr = run(with_overrides(cfg, {"router": "round-robin", "router_options": {}})).summary
    assert rr["backlog"]["unfinished"] == 0
    json.dumps(tiered["kv_tiers"])  # the block is plain JSON


def test_cpu_offload_crossover_sweep_example(tmp_path):
    table = sweep(load_experiment(EXPERIMENTS / "cpu_offload_crossover_sweep.yaml"), tmp_path, jobs=1)
    on = table["engine.kv_offload"].notna()
    key = ["workload.prefix.prefix_tokens", "workload.prefix.num_groups"]
    p99 = [c for c in table.columns if "p99" in c and "ttft" in c.lower()][0]
    t = table.assign(on=on).pivot_table(index=key, columns="on", values=p99)
    # few groups fit on the GPU: identical with and without the tier
    assert t.loc[(2000, 4), True] == t.loc[(2000, 4), False]
    assert t.loc[(8000, 4), True] == t.loc[(8000, 4), False]
    # many long groups thrash the GPU cache: the tier cuts the tail TTFT several-fold
    assert t.loc[(8000, 32), True] < 0.5 * t.loc[(8000, 32), False]
