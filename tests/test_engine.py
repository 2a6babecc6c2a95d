"""Engine timelines with a constant-time cost model, horizon, rejection, determinism, invariants."""
from __future__ import annotations

import numpy as np
import pytest

from sim.config import EngineConfig
from sim.deploy.step_cost import BatchShape, ConstantCostModel, StepCost
from sim.engine import simulator as engine_mod
from sim.engine.request import RECORD_COLUMNS, RequestSpec
from sim.engine.simulator import ITERATION_COLUMNS, ReplicaSetup, simulate
from workloads.base import OpenLoopWorkload

D = 0.1  # seconds per step


def setup(num_blocks=1000, step_s=D, max_model_len=4096, cost=None, frontend_s=0.0, **engine):
    """A replica with a constant step time. Timelines here are written for synchronous scheduling
    (plan step k+1 after step k ends); tests of vLLM's async scheduling turn it on explicitly."""
    engine.setdefault("max_num_batched_tokens", 2048)
    engine.setdefault("async_scheduling", False)
    if frontend_s:
        return ReplicaSetup(EngineConfig(**engine), num_blocks, max_model_len, cost or ConstantCostModel(step_s),
                            frontend_s=frontend_s)
    return ReplicaSetup(EngineConfig(**engine), num_blocks, max_model_len, cost or ConstantCostModel(step_s))


def run(specs, su=None, **kw):
    return simulate(OpenLoopWorkload(specs), su or setup(), seed_seq=np.random.SeedSequence(0), **kw)


def poisson_specs(n, rate, prompt=100, out=20, seed=0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    return [RequestSpec(float(a), prompt, out) for a in t]


def token_times(out, row):
    """Rebuild request ``row``'s token timestamps from the compact timeline."""
    tl = out.timeline
    runs = tl.runs[tl.run_offsets[row]:tl.run_offsets[row + 1]].reshape(-1, 2)
    ends = tl.iteration_end_s[int(tl.replica_of[row])]
    return np.concatenate([ends[a:b + 1] for a, b in runs]) if len(runs) else np.array([])


def test_single_request_timeline():
    out = run([RequestSpec(1.0, 100, 5)])
    r = out.requests.iloc[0]
    assert r.status == "completed"
    assert r.first_scheduled_s == pytest.approx(1.0)
    assert r.ttft_s == pytest.approx(D)  # the prompt in one step, first token at its end
    assert r.e2el_s == pytest.approx(5 * D)
    assert r.tpot_s == pytest.approx(D)
    assert r.prefill_compute_s == pytest.approx(D)
    np.testing.assert_allclose(token_times(out, 0), 1.0 + D * np.arange(1, 6))
    assert len(out.iterations) == 5
    assert list(out.iterations.kind) == ["prefill"] + ["decode"] * 4
    assert out.end_s == pytest.approx(1.5) and not out.horizon_reached and out.stop_reason == "drained"


def test_output_tables_have_the_documented_columns_and_order():
    out = run(poisson_specs(50, 5.0))
    assert tuple(out.requests.columns) == RECORD_COLUMNS
    assert tuple(out.iterations.columns) == ITERATION_COLUMNS
    assert list(out.requests.request_id) == list(range(50))
    assert len(out.timeline.run_offsets) == 51


def test_request_joining_mid_decode_shares_steps():
    out = run([RequestSpec(0.0, 10, 4), RequestSpec(0.05, 10, 2)])
    a, b = out.requests.iloc[0], out.requests.iloc[1]
    # b arrives during a's first step and is scheduled at its end (t = 0.1) together with a's decode
    assert b.first_scheduled_s == pytest.approx(0.1)
    assert b.finish_s == pytest.approx(0.3) and a.finish_s == pytest.approx(0.4)
    assert out.iterations.num_seqs.tolist() == [1, 2, 2, 1]
    assert out.iterations.kind.tolist() == ["prefill", "mixed", "decode", "decode"]


def test_async_scheduling_admits_a_request_one_step_later():
    """vLLM V1 plans step k+1 when step k starts: b, arriving during a's first step (0, 0.1), is not in
    the plan of step 2 (made at t = 0) and first runs in step 3, at t = 0.2."""
    out = run([RequestSpec(0.0, 10, 4), RequestSpec(0.05, 10, 2)], setup(async_scheduling=True))
    a, b = out.requests.iloc[0], out.requests.iloc[1]
    assert a.first_scheduled_s == pytest.approx(0.0)  # an idle engine core picks a request up at once
    assert b.first_scheduled_s == pytest.approx(0.2)
    assert b.ttft_s == pytest.approx(0.3 - 0.05) and b.finish_s == pytest.approx(0.4)
    assert out.iterations.num_seqs.tolist() == [1, 1, 2, 2]


def test_async_scheduling_is_vllm_default_only():
    from policies.registry import get_policy, policy_names
    assert {p for p in policy_names() if get_policy(p).async_scheduling_default} >= {"vllm"}
    assert not any(get_policy(p).async_scheduling_default
                   for p in ("vllm-v0", "sarathi", "orca", "static", "sglang"))
    # the default follows the policy; engine.async_scheduling overrides it either way
    specs = [RequestSpec(0.0, 10, 4), RequestSpec(0.05, 10, 2)]
    by_default = run(specs, ReplicaSetup(EngineConfig(max_num_batched_tokens=2048), 1000, 4096, ConstantCostModel(D)))
    assert by_default.requests.first_scheduled_s.iloc[1] == pytest.approx(0.2)
    assert run(specs, setup(async_scheduling=False)).requests.first_scheduled_s.iloc[1] == pytest.approx(0.1)


def test_frontend_delay_shifts_every_request_by_a_constant():
    specs = poisson_specs(300, 4.0)
    base = run(specs)
    late = run(specs, setup(frontend_s=0.003))
    # light load, one-step service: the engine sees each request 3 ms later, nothing else changes
    np.testing.assert_allclose(late.requests.first_scheduled_s - base.requests.first_scheduled_s, 0.003,
                               atol=D + 1e-9)
    assert (late.requests.ttft_s >= base.requests.ttft_s - 1e-12).all()
    assert late.requests.ttft_s.mean() > base.requests.ttft_s.mean()
    assert (late.requests.status == "completed").all()


def test_frontend_requests_in_flight_at_the_horizon_are_backlog():
    out = run([RequestSpec(0.0, 10, 2), RequestSpec(0.999, 10, 2)], setup(frontend_s=0.01), max_duration_s=1.0)
    assert out.backlog["unfinished"] == 1 and out.backlog["waiting"] == 1
    assert out.requests.status.tolist() == ["completed", "unfinished"]


def test_chunked_prefill_takes_several_steps():
    out = run([RequestSpec(0.0, 5000, 2)], setup(max_num_batched_tokens=2048, max_model_len=8192))
    r = out.requests.iloc[0]
    assert r.ttft_s == pytest.approx(3 * D)  # 2048 + 2048 + 904
    assert r.prefill_compute_s == pytest.approx(3 * D)
    assert out.iterations.num_tokens.tolist() == [2048, 2048, 904, 1]


def test_rejects_too_long_and_too_big_requests_and_ends_them():
    su = setup(num_blocks=10, block_size=16, max_model_len=200)
    specs = [RequestSpec(0.0, 190, 20), RequestSpec(0.0, 150, 20), RequestSpec(0.0, 50, 10)]
    out = run(specs, su)
    st = out.requests.set_index("request_id")
    assert st.loc[0, "status"] == "rejected" and st.loc[0, "reject_reason"] == "prompt longer than max_model_len"
    assert st.loc[1, "status"] == "rejected" and st.loc[1, "reject_reason"] == "exceeds KV cache capacity"
    assert st.loc[2, "status"] == "completed"
    assert np.isnan(st.loc[0, "ttft_s"])


def test_same_seed_same_output_and_routing_stream_is_separate():
    specs = poisson_specs(300, 30.0, seed=3)
    kw = dict(num_replicas=3, router="random")
    a = simulate(OpenLoopWorkload(specs), setup(), seed_seq=np.random.SeedSequence(7), **kw)
    b = simulate(OpenLoopWorkload(specs), setup(), seed_seq=np.random.SeedSequence(7), **kw)
    c = simulate(OpenLoopWorkload(specs), setup(), seed_seq=np.random.SeedSequence(8), **kw)
    assert a.requests.equals(b.requests) and a.iterations.equals(b.iterations)
    assert np.array_equal(a.timeline.runs, b.timeline.runs)
    assert not a.requests.replica.equals(c.requests.replica)


def test_overload_stops_at_max_duration_with_backlog():
    specs = poisson_specs(2000, 50.0, prompt=500, out=200)
    out = run(specs, setup(num_blocks=200, max_num_seqs=8), max_duration_s=10.0)
    assert out.horizon_reached and out.stop_reason == "horizon"
    assert out.end_s == pytest.approx(10.0)
    counts = out.requests.status.value_counts()
    assert counts.get("unfinished", 0) == out.backlog["unfinished"] > 0
    assert out.backlog["not_arrived"] == 2000 - len(out.requests)
    assert out.backlog["running"] <= 8
    assert (out.iterations.end_s <= 10.0 + 1e-9).all()
    # requests cut mid-decode report exactly the tokens they got (decode-group state written back)
    for row in np.flatnonzero((out.requests.status == "unfinished").to_numpy())[:20]:
        assert len(token_times(out, row)) == out.requests.num_output_tokens.iloc[row]


def test_progress_callback_reports_counts():
    seen = []
    run(poisson_specs(3000, 50.0, prompt=100, out=50), progress=seen.append)
    # about every 0.5 s of wall time, and once at the end
    for p in seen:
        assert set(p) == {"now_s", "num_submitted", "num_ended"} and p["num_ended"] <= p["num_submitted"]
    assert seen[-1]["num_ended"] == seen[-1]["num_submitted"] == 3000


def test_overload_without_horizon_still_ends(monkeypatch):
    monkeypatch.setattr(engine_mod, "DRAIN_MIN_S", 5.0)
    monkeypatch.setattr(engine_mod, "DRAIN_FACTOR", 0.5)
    specs = poisson_specs(400, 40.0, prompt=500, out=200)  # arrivals end near t = 10 s
    out = run(specs, setup(max_num_seqs=4))
    last_arrival = specs[-1].arrival_s
    assert out.horizon_reached and out.end_s == pytest.approx(last_arrival + max(5.0, 0.5 * last_arrival))
    assert out.backlog["unfinished"] > 0 and out.backlog.get("not_arrived", 0) == 0


def test_closed_loop_client_gets_the_finished_request():
    seen = []

    class TwoTurns:
        def process(self, env, submit):
            req = yield submit(RequestSpec(env.now, 50, 3))
            seen.append((env.now, req.num_output_tokens))
            req2 = yield submit(RequestSpec(env.now, 60, 2))
            seen.append((env.now, req2.num_output_tokens))

        def describe(self):
            return {"kind": "two-turns", "num_requests": 2}

    out = simulate(TwoTurns(), setup(), seed_seq=np.random.SeedSequence(0))
    assert seen == [(pytest.approx(3 * D), 3), (pytest.approx(5 * D), 2)]
    assert out.requests.status.tolist() == ["completed", "completed"]


def test_swap_preemption_is_priced_over_pcie():
    seen_swap_bytes = []

    class BytesCost:
        """Step time 0.1 s; swap priced by the engine (no prices_swap attribute)."""

        def step(self, shape: BatchShape) -> StepCost:
            seen_swap_bytes.append(shape.swap_bytes)
            return StepCost(time_s=D)

    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=2048, preemption_mode="swap", swap_space_gib=1.0,
                                   block_size=16),
                      num_kv_blocks=12, max_model_len=4096, cost_model=BytesCost(), kv_block_bytes=1_000_000,
                      swap_bandwidth_bytes_per_s=1e9)
    specs = [RequestSpec(0.0, 60, 60), RequestSpec(0.0, 60, 60)]
    out = run(specs, su)
    assert (out.requests.status == "completed").all()
    assert out.iterations.num_preempted.sum() >= 1
    slow = out.iterations[out.iterations.time_s > D + 1e-12]
    assert len(slow) >= 2  # a swap-out step and a swap-in step
    # each swap moves whole blocks: 1 MB per block at 1 GB/s = 1 ms per block
    extra_ms = (slow.time_s - D) * 1e3
    np.testing.assert_allclose(extra_ms, np.round(extra_ms), atol=1e-6)
    assert out.requests.num_preemptions.sum() >= 1
    assert max(seen_swap_bytes) == 0  # the cost model never sees swaps the engine prices: no double count


def test_littles_law_holds_on_a_stable_run():
    lam = 8.0
    specs = poisson_specs(3000, lam, prompt=200, out=30, seed=5)
    out = run(specs, setup(max_num_seqs=64))
    req, it = out.requests, out.iterations
    assert (req.status == "completed").all()
    # L from the iteration log (requests in the engine, weighted by step time) vs λ·W from the records
    busy = float(it.time_s.sum())
    horizon = float(req.finish_s.max() - req.arrival_s.min())
    L_log = float(((it.num_waiting + it.num_running) * it.time_s).sum()) / horizon
    lam_hat = len(req) / horizon
    W = float((req.finish_s - req.arrival_s).mean())
    assert busy <= horizon
    assert L_log == pytest.approx(lam_hat * W, rel=0.05)


def test_multiple_replicas_round_robin_and_invariants():
    out = run(poisson_specs(400, 40.0), num_replicas=4)
    assert out.requests.replica.tolist() == [i % 4 for i in range(400)]
    assert set(out.iterations.replica.unique()) == {0, 1, 2, 3}
    assert "KV blocks all free at the end" in out.invariants
    assert sorted(out.timeline.iteration_end_s) == [0, 1, 2, 3]
    for row in (0, 1, 399):
        t = token_times(out, row)
        r = out.requests.iloc[row]
        assert len(t) == r.num_output_tokens
        assert t[0] == pytest.approx(r.first_token_s) and t[-1] == pytest.approx(r.finish_s)


def test_token_timeline_survives_preemption():
    specs = poisson_specs(60, 20.0, prompt=100, out=100, seed=2)
    out = run(specs, setup(num_blocks=60, block_size=16))
    assert out.requests.num_preemptions.sum() > 0
    for row in range(len(out.requests)):
        r = out.requests.iloc[row]
        t = token_times(out, row)
        assert len(t) == r.num_output_tokens == 100
        assert np.all(np.diff(t) > 0)
        assert t[0] == pytest.approx(r.first_token_s) and t[-1] == pytest.approx(r.finish_s)


def test_negative_step_time_is_an_invariant_error():
    class Broken:
        def step(self, shape):
            return StepCost(time_s=-1.0)

    with pytest.raises(engine_mod.SimulationInvariantError):
        run([RequestSpec(0.0, 10, 2)], setup(cost=Broken()))
