"""The new-family examples run end to end: a hybrid (Qwen3-Next) and a 2025 MoE (GLM-4.7-Flash).

experiments/hybrid_qwen3_next.yaml and experiments/moe_glm47_flash.yaml; assertions are on
invariants and on the hybrid KV layout, not pinned latencies.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from sim.config import load_experiment
from sim.errors import ConfigError
from sim.runs.runner import run

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _check_every_request_ends_once(res, n: int) -> None:
    req = res.requests
    assert len(req) == n and req["request_id"].is_unique
    assert res.summary["completed"] + res.summary.get("rejected", 0) == n


def test_hybrid_example_runs_with_vllm_hybrid_layout():
    cfg = load_experiment(EXPERIMENTS / "hybrid_qwen3_next.yaml")
    res = run(cfg)
    _check_every_request_ends_once(res, cfg.workload.num_requests)
    plan = res.meta["memory_plan"]
    assert plan["block_size"] == 544 and plan["state_blocks_per_seq"] == 3  # tests/test_hybrid_kv.py by hand
    assert res.meta["engine"]["block_size"] == 544 and res.meta["engine"]["enable_prefix_caching"] is False
    again = run(cfg)
    assert again.summary == res.summary  # same seed, same result


def test_hybrid_under_kv_pressure_preempts_and_still_finishes_everything():
    cfg = load_experiment(EXPERIMENTS / "hybrid_qwen3_next.yaml")
    # 200 blocks of 544 tokens: 3 of each sequence's blocks are its state pages
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"num_kv_blocks": 200}),
                                 "workload": cfg.workload.model_copy(update={"num_requests": 80})})
    res = run(cfg)
    _check_every_request_ends_once(res, 80)
    assert res.requests["num_preemptions"].sum() > 0


def test_hybrid_rejects_prefix_caching():
    cfg = load_experiment(EXPERIMENTS / "hybrid_qwen3_next.yaml")
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"enable_prefix_caching": True})})
    with pytest.raises(ConfigError, match="enable_prefix_caching"):
        run(cfg)


def test_moe_example_runs():
    cfg = load_experiment(EXPERIMENTS / "moe_glm47_flash.yaml")
    res = run(cfg)
    _check_every_request_ends_once(res, cfg.workload.num_requests)
    assert res.meta["memory_plan"]["block_size"] == 16 and res.meta["memory_plan"]["state_blocks_per_seq"] == 0
