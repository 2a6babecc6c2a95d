"""Autoscaling each pool of a disaggregated deployment (sim.engine.pd_autoscaler): fluid oracles per
pool, a step of load that scales the decode pool and loses no request, drains on both pools, the
per-pool outputs, and configuration errors.

The engine runs on a constant-step cost model (every step takes D seconds) so each pool's capacity is
known in closed form. A prefill instance runs at most ``min(B, budget // P)`` prompts of P tokens per
step; a decode instance at most B requests at once, each needing K − 1 steps (the first token came
from the prefill) and holding its sequence slot one step more: the slot is taken at the end of the step
that freed it, the KV lands a transfer time later, after the next step has started, so the request
joins the step after. c_prefill = min(B, budget // P) / D, c_decode = B / (K · D).
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig, parse_experiment
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.autoscaler import AutoscalerSpec
from sim.engine.autoscaling_config import AutoscalingConfig
from sim.engine.disagg import PDSpec
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from sim.measure.fleet import fleet_summary
from workloads.arrivals import parse_arrival
from workloads.base import OpenLoopWorkload

B, D, BUDGET = 4, 0.1, 64


def _setup() -> ReplicaSetup:
    return ReplicaSetup(EngineConfig(max_num_seqs=B, max_num_batched_tokens=BUDGET, async_scheduling=False),
                        100_000, 4096, ConstantCostModel(D))


def _run(arrival: dict, horizon_s: float, autos: dict, prompt: int, out_tokens: int, cold_s: float = 0.0,
         seed: int = 0, num_prefill: int = 1, num_decode: int = 1, bandwidth_bytes_per_s: float = 1e12,
         dp: int = 1):
    """Open-loop arrivals of ``prompt``-token prompts with ``out_tokens`` outputs on 1 KB of KV per
    prompt token; ``autos``: ``{pool: autoscaling section}``, every cold start ``cold_s``; ``dp``: DP
    ranks per instance of both pools."""
    proc = parse_arrival(arrival)
    times = proc.arrival_times(np.random.default_rng(seed), None, horizon_s)
    specs = [RequestSpec(float(t), prompt, out_tokens) for t in times]
    setup = _setup() if dp == 1 else dataclasses.replace(_setup(), dp=dp)
    pd = PDSpec(prefill=setup, decode=setup, num_prefill=num_prefill, num_decode=num_decode,
                prefill_router="least-outstanding-requests", decode_router="least-outstanding-requests",
                kv_bytes_fn=lambda n: 1e3 * n, bandwidth_bytes_per_s=bandwidth_bytes_per_s, latency_s=0.0)
    scaling = {role: AutoscalerSpec(AutoscalingConfig.model_validate(a), lambda rng: cold_s) for role, a in autos.items()}
    out = simulate(OpenLoopWorkload(specs), setup, num_replicas=num_prefill, router="least-outstanding-requests",
                   autoscaling=scaling, disagg=pd)
    return proc, out


def _units(out, role: str) -> list[dict]:
    return out.fleet["pools"][role]["units"]


def test_example_scales_both_pools_and_loses_no_request(tmp_path):
    """experiments/autoscale_pd_pools.yaml: a step of load (4 → 40 req/s) grows both pools, removed
    instances drain, every request completes exactly once; per-pool fleet tables are written, the
    disaggregation block reports each pool at t = 0, at its peak and on average, and the report draws
    the per-pool fleet charts."""
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
    # the disaggregation block: t = 0 count, peak and mean instances, GPUs and $/hour at the peak; busy
    # share and queue length per instance-second the pool's instances were up
    for role in ("prefill", "decode"):
        p, f = s["disaggregation"]["pools"][role], pools[role]
        assert p["autoscaled"] and p["replicas"] == 1
        assert (p["peak_replicas"], p["mean_replicas"]) == (f["peak_replicas_billed"], f["mean_replicas_billed"])
        assert p["num_gpus"] == f["peak_gpus"] and p["cost_per_hour_usd"] == pytest.approx(2.69 * f["peak_gpus"])
        ids = res.fleet[f"{role}_replicas"].query("replica >= 0")
        up_s = (ids.released_s.fillna(s["end_s"]).clip(upper=s["end_s"]) - ids.ready_s).sum()
        busy = res.iterations[res.iterations.replica.isin(ids.replica)].time_s.sum()
        assert 0 < p["utilization"] <= 1 and p["utilization"] == pytest.approx(busy / up_s)
    assert s["num_gpus"] == total["peak_gpus"]  # top-level cost keys price the peak fleet, as aggregated runs
    assert s["cost_per_hour_usd"] == pytest.approx(2.69 * total["peak_gpus"])
    from sim.report import write_report

    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "Fleet over time" in html and "1 at t = 0, peak" in html
    assert (tmp_path / "report_files" / "fleet_load_replicas.png").is_file()
    assert (tmp_path / "report_files" / "fleet_latency.png").is_file()


def test_fluid_oracle_per_pool_gpu_hours_match_integral_of_ceil_rate_over_each_capacity():
    """Zero cold start, rate measured over one interval, both pools autoscaled by the planner with their
    own capacity: each pool's GPU-hours ≈ ∫⌈λ(t)/c_pool⌉dt (within 10 %). P = 64 = the token budget, so
    a prefill instance runs one prompt per step: c_prefill = 1/D = 10 req/s; K = 4 outputs, so a decode
    instance serves B/(K·D) = 10 req/s (module docstring). With c_decode = B/((K − 1)·D), the slot's
    extra step forgotten, the decode pool runs 25 % over capacity and its drains hold for tens of
    seconds."""
    prompt, out_tokens = BUDGET, 4
    c = {"prefill": min(B, BUDGET // prompt) / D, "decode": B / (out_tokens * D)}
    assert c == {"prefill": 10.0, "decode": 10.0}
    span = 300.0
    arrival = {"process": "diurnal", "peak_rate": 5 * 10.0, "trough_rate": 1.5 * 10.0, "period_s": span,
               "peak_at_s": span / 2}
    autos = {role: {"policy": "planner", "interval_s": 5, "max_replicas": 12,
                    "policy_options": {"replica_capacity_rps": c[role]}, "scale_down": {"stabilization_s": 0}}
             for role in c}
    proc, out = _run(arrival, span, autos, prompt, out_tokens)
    assert (out.requests.status == "completed").all() and out.requests.request_id.is_unique
    grid = np.linspace(0.0, out.end_s, 100_001)
    for role, cap in c.items():
        block, _ = fleet_summary(out.fleet["pools"][role], out.requests, end_s=out.end_s, gpus_per_replica=1,
                                 gpu_hour_usd=1.0)
        oracle_h = np.trapezoid(np.ceil(proc.rate(np.minimum(grid, span)) / cap), grid) / 3600
        assert block["gpu_hours"] == pytest.approx(oracle_h, rel=0.10), role
        # the measured rate is Poisson counts over one interval: the peak may see one instance more
        assert math.ceil(5 * 10.0 / cap) <= block["peak_replicas_ready"] <= math.ceil(5 * 10.0 / cap) + 1


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_step_of_load_violation_window_is_cold_start_plus_interval(role):
    """Load steps from c/2 to 3c of the autoscaled pool (c = 10 req/s; the other pool keeps up) at a
    decision time: the first rate window showing the new load ends one interval later, the planner asks
    for ⌈3c·1.5/c⌉ = 5 instances at once, and they take work a cold start d after that. The pool's
    requests are late from just after the step until then — a window of d + interval — and none after:
    the backlog stays on the instances that held it and the new ones take the new arrivals. Late: TTFT
    over 1 s (ten prefill steps) on the prefill pool; on the decode pool a decode-side time (E2E − TTFT)
    over 3 s, seven times its 4 steps."""
    d, interval, t0, span, cap = 30.0, 10.0, 100.0, 200.0, 10.0
    if role == "prefill":  # one 64-token prompt per step: 1/D; two decode instances serve 2·B/(2·D) = 40 req/s
        prompt, out_tokens, others = BUDGET, 2, {"num_decode": 2}
    else:  # B/(K·D) with K = 4; a prefill instance runs four 16-token prompts per step, 40 req/s
        prompt, out_tokens, others = 16, 4, {}
    assert cap == (min(B, BUDGET // prompt) / D if role == "prefill" else B / (out_tokens * D))
    arrival = {"process": "rate-curve", "interpolation": "step",
               "points": [[0, 0.5 * cap], [t0, 3 * cap], [span, 3 * cap]]}
    auto = {"policy": "planner", "interval_s": interval, "max_replicas": 6,
            "policy_options": {"replica_capacity_rps": cap, "headroom": 0.5}, "scale_down": {"stabilization_s": 300}}
    _, out = _run(arrival, span, {role: auto}, prompt, out_tokens, cold_s=d, **others)
    req = out.requests
    assert (req.status == "completed").all() and req.request_id.is_unique
    late = req[req.ttft_s > 1.0] if role == "prefill" else req[(req.e2el_s - req.ttft_s) > 3.0]
    assert len(late) > 100 and (late.arrival_s >= t0).all()  # before the step one instance keeps up
    window = late.arrival_s.max() - t0
    assert window == pytest.approx(d + interval, abs=1.0)
    cold = [u for u in _units(out, role) if u["kind"] == "cold"]
    assert len(cold) == 4 and all(u["asked_s"] == t0 + interval and u["ready_s"] == t0 + interval + d for u in cold)


def test_prefill_drain_waits_for_its_kv_transfers_and_decode_drain_for_its_decodes():
    """A slow link (a 64-token prompt's 64 KB of KV takes 0.8 s alone at 80 KB/s, seconds when shared)
    and load falling from 4 to 0.5 req/s: a drained prefill instance takes no request after its drain
    and is released only once every transfer out of it has ended — here seconds after its last
    prefill, while it held KV and had no prefill left; a drained decode instance only once its last
    request has ended. Every request completes exactly once."""
    arrival = {"process": "rate-curve", "interpolation": "step", "points": [[0, 4.0], [30, 0.5], [90, 0.5]]}
    autos = {role: {"policy": "planner", "interval_s": 5, "max_replicas": 4,
                    "policy_options": {"replica_capacity_rps": 2.5}, "scale_down": {"stabilization_s": 0}}
             for role in ("prefill", "decode")}
    _, out = _run(arrival, 90, autos, BUDGET, 4, num_prefill=2, num_decode=2, bandwidth_bytes_per_s=80e3)
    req = out.requests
    assert (req.status == "completed").all() and req.request_id.is_unique
    xfer = out.disagg["requests"]
    arrival_s = req.set_index("request_id").arrival_s
    waited = 0
    drained_prefill = [u for u in _units(out, "prefill") if not math.isnan(u["drain_s"])]
    assert drained_prefill
    for u in drained_prefill:
        assert not math.isnan(u["released_s"])
        mine = xfer[xfer.prefill_replica == u["replica"]]
        assert (arrival_s.loc[mine.request_id] <= u["drain_s"]).all()
        assert u["released_s"] >= mine.transfer_end_s.max() - 1e-9
        waited += u["released_s"] > max(mine.prefill_done_s.max(), u["drain_s"]) + 1.0  # held KV, no prefill
    assert waited >= 1
    drained_decode = [u for u in _units(out, "decode") if not math.isnan(u["drain_s"])]
    assert drained_decode
    for u in drained_decode:
        mine = req[req.replica == u["replica"]]
        assert u["released_s"] >= mine.finish_s.max() - 1e-9
        assert (xfer[xfer.decode_replica == u["replica"]].kv_ready_s <= u["drain_s"]).all()  # routed before it
    assert any("replica lives ordered" in line for line in out.invariants)


def test_dp_pools_scale_whole_instances_of_lockstep_ranks():
    """Both pools with dp = 2 (each instance two lockstep ranks, capacity 2c): each pool's GPU-hours ≈
    ∫⌈λ(t)/2c⌉dt · 2 GPUs; every unit is a rank pair started, drained and released together; a drained
    prefill instance is released after the last transfer out of either rank, a drained decode instance
    after the last request on either rank; every request completes once."""
    prompt, out_tokens, cap = BUDGET, 4, 2 * 10.0  # per rank: 1/D prefill, B/(K·D) decode (module docstring)
    span = 200.0
    arrival = {"process": "diurnal", "peak_rate": 4 * cap, "trough_rate": 1.2 * cap, "period_s": span,
               "peak_at_s": span / 2}
    autos = {role: {"policy": "planner", "interval_s": 5, "max_replicas": 8,
                    "policy_options": {"replica_capacity_rps": cap}, "scale_down": {"stabilization_s": 0}}
             for role in ("prefill", "decode")}
    proc, out = _run(arrival, span, autos, prompt, out_tokens, dp=2)
    req, xfer = out.requests, out.disagg["requests"]
    assert (req.status == "completed").all() and req.request_id.is_unique
    grid = np.linspace(0.0, out.end_s, 100_001)
    oracle_h = 2 * np.trapezoid(np.ceil(proc.rate(np.minimum(grid, span)) / cap), grid) / 3600
    for role, col in (("prefill", "prefill_replica"), ("decode", "decode_replica")):
        block, _ = fleet_summary(out.fleet["pools"][role], req, end_s=out.end_s, gpus_per_replica=2, gpu_hour_usd=1.0)
        assert block["gpu_hours"] == pytest.approx(oracle_h, rel=0.10), role
        assert block["num_drains"] >= 2, role
        units = [u for u in _units(out, role) if u["replica"] >= 0]
        used = set(xfer[col])
        for u in units:
            pair = {u["replica"], u["replica"] + 1}
            assert pair <= used  # both ranks take work
            if math.isnan(u["drain_s"]):
                continue
            mine = xfer[xfer[col].isin(pair)]
            end = mine.transfer_end_s.max() if role == "prefill" else req[req.replica.isin(pair)].finish_s.max()
            assert u["released_s"] >= end - 1e-9
    assert out.iterations.replica.nunique() == len(set(xfer.prefill_replica) | set(xfer.decode_replica))


@settings(max_examples=4, deadline=None)
@given(cold_s=st.floats(0.0, 20.0), interval_s=st.sampled_from([2.0, 5.0]), down_s=st.sampled_from([0.0, 10.0]),
       warm=st.integers(0, 1), dp=st.sampled_from([1, 2]), bandwidth=st.sampled_from([2e5, 1e12]))
def test_any_pool_settings_end_and_lose_no_request(cold_s, interval_s, down_s, warm, dp, bandwidth):
    """Whatever the controller settings, DP layout and link speed, the run ends (no livelock), every
    request completes exactly once and each pool's replica lives stay consistent."""
    arrival = {"process": "diurnal", "peak_rate": 20.0, "trough_rate": 2.0, "period_s": 60, "peak_at_s": 20}
    autos = {role: {"policy": "hpa", "interval_s": interval_s, "max_replicas": 4,
                    "policy_options": {"metrics": {"outstanding": 4}}, "scale_down": {"stabilization_s": down_s},
                    "provisioning": {"warm_pool": warm, "wake_s": 1.0}} for role in ("prefill", "decode")}
    _, out = _run(arrival, 60, autos, 16, 4, cold_s=cold_s, dp=dp, bandwidth_bytes_per_s=bandwidth)
    req = out.requests
    assert (req.status == "completed").all() and req.request_id.is_unique
    for role in ("prefill", "decode"):
        block, frame = fleet_summary(out.fleet["pools"][role], req, end_s=out.end_s, gpus_per_replica=dp, gpu_hour_usd=1.0)
        assert (frame.mean_replicas_billed >= frame.mean_replicas_ready - 1e-9).all()
        assert block["mean_replicas_billed"] <= block["peak_replicas_billed"] + 1e-9


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
