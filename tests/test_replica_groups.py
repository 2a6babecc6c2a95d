"""``replica_groups:``: heterogeneous aggregated replicas behind one router, priced per group.

Oracle: one group of N replicas of the top-level hardware is the plain ``replicas: N`` deployment, request
for request. Two GPU types: every request ends once, GPUs and $/hour add up per group, the faster GPU
type serves its requests faster.
"""
from __future__ import annotations

import copy

import pytest

from sim.config import parse_experiment
from hwprofiles import load_profile as load_hardware
from sim.errors import ConfigError
from sim.runs.runner import run

BASE = {
    "name": "groups", "seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm",
    "engine": {"policy": "vllm", "max_num_seqs": 64, "max_num_batched_tokens": 4096, "max_model_len": 4096,
               "enable_prefix_caching": False},
    "router": "least-outstanding-requests",
    "replica_groups": [{"count": 2}, {"count": 1, "hardware": "a100-sxm-80gb"}],
    "workload": {"num_requests": 300, "arrival": {"process": "poisson", "rate": 20},
                 "input_tokens": {"dist": "uniform", "low": 200, "high": 2000},
                 "output_tokens": {"dist": "uniform", "low": 20, "high": 200}},
}


def _cfg(data=None, **changes):
    data = copy.deepcopy(data or BASE)
    data.update(changes)
    return parse_experiment(data, "g.yaml")


def test_one_group_is_the_plain_deployment():
    grouped = run(_cfg(replica_groups=[{"count": 3}]))
    plain_data = copy.deepcopy(BASE)
    del plain_data["replica_groups"]
    plain = run(parse_experiment({**plain_data, "replicas": 3}, "p.yaml"))
    assert grouped.requests.equals(plain.requests)
    for key in ("mean_ttft_ms", "p99_tpot_ms", "output_throughput", "num_gpus", "cost_per_hour_usd"):
        assert grouped.summary[key] == plain.summary[key]


def test_two_gpu_types_priced_per_group():
    res = run(_cfg())
    req = res.requests
    assert len(req) == 300 and req["request_id"].is_unique and (req["status"] == "completed").all()
    groups = res.summary["replica_groups"]
    assert [g["replicas"] for g in groups] == [[0, 1], [2]]
    assert [g["hardware"] for g in groups] == ["h100-sxm", "a100-sxm-80gb"]
    h100, a100 = (load_hardware(n).usd_per_gpu_hour for n in ("h100-sxm", "a100-sxm-80gb"))
    assert res.summary["num_gpus"] == 3
    assert res.summary["cost_per_hour_usd"] == pytest.approx(2 * h100 + a100, rel=1e-9)
    assert sum(g["cost_per_hour_usd"] for g in groups) == pytest.approx(2 * h100 + a100, rel=1e-9)
    assert sum(g["completed"] for g in groups) == 300
    # the A100 (2.0 vs 3.35 TB/s, 312 vs 989 dense bf16 TFLOPS) is slower per request
    assert groups[1]["mean_tpot_ms"] > groups[0]["mean_tpot_ms"]
    assert groups[1]["mean_ttft_ms"] > groups[0]["mean_ttft_ms"]


def test_group_price_and_overrides():
    cfg = _cfg(replica_groups=[{"count": 1, "gpu_hour_usd": 2.0},
                               {"count": 1, "hardware": "a100-sxm-80gb", "parallel": {"tp": 2}, "gpu_hour_usd": 1.0}],
               workload={**BASE["workload"], "num_requests": 40})
    res = run(cfg)
    assert res.summary["num_gpus"] == 3
    assert res.summary["cost_per_hour_usd"] == pytest.approx(2.0 + 2 * 1.0)
    assert res.summary["replica_groups"][1]["parallel"]["tp"] == 2
    again = parse_experiment(cfg.to_dict(), "again.yaml")  # the resolved config re-parses to the same groups
    assert again.replica_groups == cfg.replica_groups
    assert run(again).summary["cost_per_hour_usd"] == res.summary["cost_per_hour_usd"]


def test_errors_name_key_and_file():
    with pytest.raises(ConfigError, match=r"^g\.yaml: replica_groups\.0\.count"):
        _cfg(replica_groups=[{"count": 0}])
    with pytest.raises(ConfigError, match=r"^g\.yaml: replica_groups\.1\.hardwar"):
        _cfg(replica_groups=[{"count": 1}, {"hardwar": "h200"}])
    with pytest.raises(ConfigError, match="replica_groups"):
        run(_cfg(replicas=2))
    with pytest.raises(ConfigError, match="gpu_hour_usd"):
        run(_cfg(replica_groups=[{"count": 1, "gpu_hour_usd": 2.0}], cost={"gpu_hour_usd": 3.0}))
    assert "replica_groups" not in _cfg(replica_groups=None).to_dict()


def test_replica_groups_example_h100_a100():
    """experiments/replica_groups_h100_a100.yaml: the faster H100 group takes more of the traffic with a
    lower TPOT; every request ends once; GPUs and $/hour are the sum over the groups."""
    from pathlib import Path

    res = run(Path(__file__).resolve().parent.parent / "experiments" / "replica_groups_h100_a100.yaml")
    s = res.summary
    assert s["completed"] == 300 and res.requests["request_id"].is_unique
    h100, a100 = s["replica_groups"]
    assert h100["hardware"] == "h100-sxm" and a100["hardware"] == "a100-sxm-80gb"
    assert h100["completed"] + a100["completed"] == 300
    assert h100["completed"] > 1.3 * a100["completed"]
    assert h100["mean_tpot_ms"] < a100["mean_tpot_ms"]
    assert s["num_gpus"] == res.meta["gpus_total"] == 4
    assert s["replica_groups"][0]["cost_per_hour_usd"] + s["replica_groups"][1]["cost_per_hour_usd"] == pytest.approx(
        2 * h100["gpu_hour_usd"] + 2 * a100["gpu_hour_usd"])


DP_BASE = {
    "name": "dp-groups", "seed": 0, "model": "deepseek-v2-lite", "hardware": "h100-sxm",
    "parallel": {"tp": 1, "dp": 2, "ep": 2},
    "engine": {"policy": "vllm", "max_num_seqs": 64, "max_num_batched_tokens": 4096, "max_model_len": 4096,
               "enable_prefix_caching": False},
    "router": "least-outstanding-requests",
    "workload": {"num_requests": 120, "arrival": {"process": "poisson", "rate": 20},
                 "input_tokens": {"dist": "uniform", "low": 200, "high": 2000},
                 "output_tokens": {"dist": "uniform", "low": 20, "high": 120}},
}


def test_one_dp_group_is_the_plain_dp_deployment():
    """Oracle: one group of 2 DP2/EP2 replicas is the plain ``replicas: 2`` DP deployment, request for
    request (each replica = 2 lockstep ranks, 4 engine cores behind the router)."""
    plain = run(parse_experiment({**DP_BASE, "replicas": 2}, "p.yaml"))
    grouped = run(parse_experiment({**DP_BASE, "replica_groups": [{"count": 2}]}, "g.yaml"))
    assert grouped.requests.equals(plain.requests)
    for key in ("mean_ttft_ms", "p99_tpot_ms", "output_throughput", "num_gpus", "cost_per_hour_usd"):
        assert grouped.summary[key] == plain.summary[key]
    g = grouped.summary["replica_groups"][0]
    assert g["replicas"] == [0, 1, 2, 3] and g["num_gpus"] == 4 and g["parallel"]["dp"] == 2


def test_mixed_dp_and_plain_groups():
    """A DP2/EP2 group next to a TP2 group: the router sees 2 + 1 engine cores, both groups serve, every
    request ends once, GPUs add up (2 + 2)."""
    cfg = parse_experiment({**DP_BASE, "replica_groups": [
        {"count": 1}, {"count": 1, "hardware": "h200", "parallel": {"tp": 2, "dp": 1, "ep": 1}}]}, "g.yaml")
    res = run(cfg)
    req = res.requests
    assert len(req) == 120 and req["request_id"].is_unique and (req["status"] == "completed").all()
    dp_group, tp_group = res.summary["replica_groups"]
    assert dp_group["replicas"] == [0, 1] and tp_group["replicas"] == [2]
    assert dp_group["completed"] > 0 and tp_group["completed"] > 0
    assert dp_group["completed"] + tp_group["completed"] == 120
    assert res.summary["num_gpus"] == res.meta["gpus_total"] == 4
    # the two ranks of the DP replica step in lockstep: their iteration start times are the same
    it = res.iterations
    r0, r1 = it[it["replica"] == 0]["start_s"].to_numpy(), it[it["replica"] == 1]["start_s"].to_numpy()
    assert len(set(r0) & set(r1)) > 0.9 * min(len(r0), len(r1))
