"""Autoscaling each pool of a disaggregated deployment (sim.engine.pd_autoscaler): fluid oracles per
pool, a step of load that scales the decode pool and loses no request, drains on both pools, the
per-pool outputs, and configuration errors.

The engine runs on a constant-step cost model (every step takes D seconds) so each pool's capacity is
known in closed form. A prefill instance runs at most ``min(B, budget // P)`` prompts of P tokens per
step; a decode instance at most B requests per step, each needing K − 1 steps (the first token came
from the prefill): c_prefill = min(B, budget // P) / D, c_decode = B / ((K − 1) · D).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from sim.config import EngineConfig, parse_experiment
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.autoscaler import AutoscalerSpec
from sim.engine.autoscaling_config import AutoscalingConfig
from sim.engine.disagg import PDSpec
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from workloads.arrivals import parse_arrival
from workloads.base import OpenLoopWorkload

B, D, BUDGET = 4, 0.1, 64


def _setup() -> ReplicaSetup:
    return ReplicaSetup(EngineConfig(max_num_seqs=B, max_num_batched_tokens=BUDGET, async_scheduling=False),
                        100_000, 4096, ConstantCostModel(D))


def _run(arrival: dict, horizon_s: float, autos: dict, prompt: int, out_tokens: int, cold_s: float = 0.0,
         seed: int = 0):
    proc = parse_arrival(arrival)
    times = proc.arrival_times(np.random.default_rng(seed), None, horizon_s)
    specs = [RequestSpec(float(t), prompt, out_tokens) for t in times]
    pd = PDSpec(prefill=_setup(), decode=_setup(), num_prefill=1, num_decode=1,
                prefill_router="least-outstanding-requests", decode_router="least-outstanding-requests",
                kv_bytes_fn=lambda n: 1e3 * n, bandwidth_bytes_per_s=1e12, latency_s=0.0)
    scaling = {role: AutoscalerSpec(AutoscalingConfig.model_validate(a), lambda rng: cold_s) for role, a in autos.items()}
    out = simulate(OpenLoopWorkload(specs), _setup(), num_replicas=1, router="least-outstanding-requests",
                   autoscaling=scaling, disagg=pd)
    return proc, out


def test_example_scales_both_pools_and_loses_no_request(tmp_path):
    """experiments/autoscale_pd_pools.yaml: a step of load (4 → 40 req/s) grows both pools, removed
    instances drain, every request completes exactly once; per-pool fleet tables are written."""
    from pathlib import Path

    from sim.runs.runner import run

    res = run(Path(__file__).resolve().parents[1] / "experiments" / "autoscale_pd_pools.yaml", out_dir=tmp_path)
    s = res.summary
    assert s["completed"] == s["num_requests"] and res.requests.request_id.is_unique
    pools = s["autoscaling"]["pools"]
    for role in ("prefill", "decode"):
        assert pools[role]["peak_replicas_ready"] >= 2 and pools[role]["num_drains"] >= 1
        assert (tmp_path / f"fleet_{role}_intervals.parquet").exists()
    total = s["autoscaling"]
    assert total["gpu_hours"] == pytest.approx(pools["prefill"]["gpu_hours"] + pools["decode"]["gpu_hours"])
    assert total["peak_gpus"] <= pools["prefill"]["peak_gpus"] + pools["decode"]["peak_gpus"]


BASE = {
    "model": "llama-3.1-8b", "hardware": "h100-sxm",
    "disaggregation": {"prefill": {"replicas": 1}, "decode": {"replicas": 1}},
    "workload": {"num_requests": 1, "arrival": {"process": "offline"},
                 "input_tokens": {"dist": "fixed", "value": 64}, "output_tokens": {"dist": "fixed", "value": 4}},
}


def _cfg(**pools):
    data = copy.deepcopy(BASE)
    for role, value in pools.items():
        data["disaggregation"][role].update(value)
    return parse_experiment(data, "pd.yaml")


def test_bad_pool_autoscaling_fails_with_the_key_and_file():
    with pytest.raises(ConfigError, match=r"^pd\.yaml: disaggregation\.decode\.autoscaling\.max_replica: unknown key"):
        _cfg(decode={"autoscaling": {"max_replicas": 2, "max_replica": 2}})
    with pytest.raises(ConfigError, match=r"^pd\.yaml: disaggregation\.prefill.*replicas = 3 .*max_replicas = 2"):
        _cfg(prefill={"replicas": 3, "autoscaling": {"max_replicas": 2}})
    err = pytest.raises(ConfigError, _cfg, decode={"autoscaling": {"max_replicas": 2, "policy": "hpaa"}}).value
    assert "disaggregation.decode.autoscaling" in str(err) and len(str(err).splitlines()) == 1
    data = copy.deepcopy(BASE)
    data["autoscaling"] = {"max_replicas": 2}
    from sim.runs.runner import run

    with pytest.raises(ConfigError, match=r"autoscaling: .*disaggregation\.prefill\.autoscaling"):
        run(parse_experiment(data, "pd.yaml"))
