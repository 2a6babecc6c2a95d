"""Iteration leaping (sim/engine/leap.py) changes nothing but speed.

Every configuration runs twice, leaping on and with ``SIMCTL_NO_LEAP=1``; the request records, the
iteration log, the token timeline, the summary and the run's end must be identical to the bit. The
configurations cover each policy that leaps, prefix caching on/off, KV pressure with preemption
(recompute and swap), several replicas behind each kind of router, closed loops, horizon cuts,
synchronous and async scheduling, an API-server delay, and lockstep replicas whose step ends tie
exactly (a constant step time), where SimPy's event order decides.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy

from sim.config import EngineConfig, parse_experiment
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.leap import NO_LEAP_ENV
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.runs.runner import run
from workloads.base import OpenLoopWorkload

BASE = {"seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm", "name": "leap"}


def _experiment(engine=None, workload=None, **top):
    cfg = dict(BASE, **top)
    cfg["engine"] = {"policy": "vllm", "max_num_batched_tokens": 8192, "max_model_len": 8192, **(engine or {})}
    cfg["workload"] = {"num_requests": 150, "arrival": {"process": "poisson", "rate": 4.0},
                       "input_tokens": {"dist": "lognormal", "mean": 300, "std": 150, "max": 2048},
                       "output_tokens": {"dist": "lognormal", "mean": 120, "std": 60, "max": 1024},
                       **(workload or {})}
    return parse_experiment(cfg)


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items() if "wall" not in k}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def _both(monkeypatch, fn):
    monkeypatch.setenv(NO_LEAP_ENV, "1")
    slow = fn()
    monkeypatch.delenv(NO_LEAP_ENV)
    fast = fn()
    return slow, fast


def _same_frames(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def _same_engine_output(slow, fast) -> None:
    _same_frames(slow.requests, fast.requests)
    _same_frames(slow.iterations, fast.iterations)
    assert slow.end_s == fast.end_s and slow.stop_reason == fast.stop_reason and slow.backlog == fast.backlog
    tl_a, tl_b = slow.timeline, fast.timeline
    assert tl_a.iteration_end_s.keys() == tl_b.iteration_end_s.keys()
    for r in tl_a.iteration_end_s:
        assert np.array_equal(tl_a.iteration_end_s[r], tl_b.iteration_end_s[r])
    assert np.array_equal(tl_a.runs, tl_b.runs) and np.array_equal(tl_a.run_offsets, tl_b.run_offsets)


def _check_run(monkeypatch, cfg, min_share=0.0):
    slow, fast = _both(monkeypatch, lambda: run(cfg))
    _same_frames(slow.requests, fast.requests)
    _same_frames(slow.iterations, fast.iterations)
    assert _clean(slow.summary) == _clean(fast.summary)
    assert slow.meta["leap"]["num_leapt_iterations"] == 0
    assert slow.meta["leap"]["off"] == {f"{NO_LEAP_ENV}=1": list(range(len(slow.meta["leap"]["off"][f"{NO_LEAP_ENV}=1"])))}
    assert fast.meta["leap"]["leapt_share"] >= min_share, fast.meta["leap"]
    return fast


@pytest.mark.parametrize("policy,engine", [
    ("vllm", {}),
    ("vllm", {"enable_prefix_caching": False, "async_scheduling": False}),
    ("sglang", {}),
    ("sarathi", {"policy_options": {"chunk_size": 512}}),
    ("orca", {"max_num_batched_tokens": 4096, "max_model_len": 4096}),
    ("static", {"max_num_batched_tokens": 8192}),
    ("vllm-v0", {}),
    ("vllm-v0", {"policy_options": {"enable_chunked_prefill": True}}),
])
def test_each_policy_identical_with_and_without_leaping(monkeypatch, policy, engine):
    fast = _check_run(monkeypatch, _experiment({"policy": policy, **engine}), min_share=0.3)
    assert fast.meta["leap"]["off"] == {}


def test_prefix_caching_with_shared_prefixes(monkeypatch):
    cfg = _experiment({"enable_prefix_caching": True},
                      {"prefix": {"num_groups": 3, "prefix_tokens": 200}, "num_requests": 200,
                       "arrival": {"process": "poisson", "rate": 8.0}})
    fast = _check_run(monkeypatch, cfg, min_share=0.3)
    assert fast.summary.get("prefix_cache_hit_rate", 1.0) != 0.0


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_kv_pressure_with_preemption(monkeypatch, mode):
    cfg = _experiment({"num_kv_blocks": 120, "block_size": 16, "preemption_mode": mode, "max_model_len": 2048},
                      {"num_requests": 80, "arrival": {"process": "poisson", "rate": 20.0},
                       "input_tokens": {"dist": "fixed", "value": 300},
                       "output_tokens": {"dist": "uniform", "low": 100, "high": 400}})
    fast = _check_run(monkeypatch, cfg, min_share=0.05)
    assert fast.iterations.num_preempted.sum() > 0  # the shortfall path really ran


@pytest.mark.parametrize("router", ["round-robin", "least-outstanding-requests", "least-kv-usage",
                                    "prefix-affinity", "precise-prefix", "random"])
def test_replicas_behind_routers(monkeypatch, router):
    cfg = _experiment({"enable_prefix_caching": True},
                      {"num_requests": 200, "arrival": {"process": "poisson", "rate": 12.0},
                       "prefix": {"num_groups": 4, "prefix_tokens": 160}},
                      replicas=4, router=router)
    _check_run(monkeypatch, cfg, min_share=0.3)


def test_closed_loop_multi_turn(monkeypatch):
    cfg = _experiment({}, {"num_requests": 150,
                           "arrival": {"process": "closed", "clients": 6, "think_time_s": {"dist": "exponential", "mean": 0.3}},
                           "conversation": {"turns": 3, "think_time_s": 0.2}}, replicas=2)
    _check_run(monkeypatch, cfg, min_share=0.3)


def test_horizon_cuts_a_leap(monkeypatch):
    cfg = _experiment({}, {"num_requests": 400, "arrival": {"process": "poisson", "rate": 3.0}},
                      max_duration_s=23.7)
    fast = _check_run(monkeypatch, cfg, min_share=0.3)
    assert fast.summary["backlog"]["unfinished"] > 0 if "backlog" in fast.summary else True


def test_frontend_delay_and_async(monkeypatch):
    def once():
        su = ReplicaSetup(EngineConfig(max_num_batched_tokens=2048, async_scheduling=True, block_size=4,
                                       enable_prefix_caching=True),
                          400, 4096, ConstantCostModel(0.01, 1e-5), frontend_s=0.003)
        rng = np.random.default_rng(3)
        t = np.cumsum(rng.exponential(0.05, 120))
        specs = [RequestSpec(float(a), int(p), int(o)) for a, p, o in
                 zip(t, rng.integers(5, 200, 120), rng.integers(1, 90, 120))]
        return simulate(OpenLoopWorkload(specs), su, num_replicas=2, router="least-outstanding-requests",
                        seed_seq=np.random.SeedSequence(0))
    slow, fast = _both(monkeypatch, once)
    _same_engine_output(slow, fast)
    assert fast.stats["leap"]["num_leapt_iterations"] > 0


class _LockstepClients:
    """Closed loop, zero think time: a client's next request arrives at the exact instant its last one
    ended — with a constant step time, at the same float time as other replicas' step ends."""

    def __init__(self, clients: int, per_client: int, prompt: int, out: int) -> None:
        self.clients, self.per_client, self.prompt, self.out = clients, per_client, prompt, out

    def process(self, env, submit):
        def client(c):
            for i in range(self.per_client):
                yield submit(RequestSpec(env.now, self.prompt + c, self.out + 3 * ((c + i) % 4)))
        for c in range(self.clients):
            env.process(client(c))
        yield env.timeout(0)

    def describe(self):
        return {"num_requests": self.clients * self.per_client}


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_exact_ties_keep_simpy_event_order(monkeypatch, async_scheduling):
    def once():
        su = ReplicaSetup(EngineConfig(max_num_batched_tokens=512, async_scheduling=async_scheduling),
                          500, 4096, ConstantCostModel(0.02))
        return simulate(_LockstepClients(6, 5, 40, 20), su, num_replicas=3, router="round-robin",
                        seed_seq=np.random.SeedSequence(0))
    slow, fast = _both(monkeypatch, once)
    _same_engine_output(slow, fast)
    ends = fast.iterations.end_s.to_numpy()
    assert len(ends) != len(np.unique(ends))  # replicas' step ends really tie
    assert fast.stats["leap"]["num_leapt_iterations"] > 0


def test_leap_off_reasons_are_reported(monkeypatch):
    monkeypatch.delenv(NO_LEAP_ENV, raising=False)
    cfg = _experiment({"speculative": {"method": "ngram", "num_speculative_tokens": 3, "acceptance": {"rate": 0.6}}},
                      {"num_requests": 30})
    out = run(cfg)
    assert out.meta["leap"]["num_leapt_iterations"] == 0
    assert any("speculative" in reason for reason in out.meta["leap"]["off"])


def test_invariants_hold_and_each_request_ends_once(monkeypatch):
    monkeypatch.delenv(NO_LEAP_ENV, raising=False)
    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=1024, block_size=8, enable_prefix_caching=True),
                      300, 4096, ConstantCostModel(0.01, 2e-6))
    rng = np.random.default_rng(7)
    specs = [RequestSpec(float(a), int(p), int(o)) for a, p, o in
             zip(np.cumsum(rng.exponential(0.2, 100)), rng.integers(1, 300, 100), rng.integers(1, 300, 100))]
    out = simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(0))
    assert "KV blocks all free at the end" in out.invariants
    assert "every request ended exactly once" in out.invariants
    assert (out.requests.status == "completed").all()
    assert out.stats["leap"]["leapt_share"] > 0.5


def test_leap_stops_before_the_finishing_step(monkeypatch):
    """One request of 10 tokens: the prefill step and the step emitting the last token run the per-step
    way; the 8 decode steps between them are leapt (the first iteration a member finishes in is
    s0 + max_output − o0 − 1 = 1 + 10 − 1 − 1 = 9)."""
    monkeypatch.delenv(NO_LEAP_ENV, raising=False)
    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=1024, async_scheduling=False), 100, 4096,
                      ConstantCostModel(0.01))
    out = simulate(OpenLoopWorkload([RequestSpec(0.5, 100, 10)]), su, seed_seq=np.random.SeedSequence(0))
    assert len(out.iterations) == 10
    assert out.stats["leap"]["num_leapt_iterations"] == 8
    assert list(out.iterations.kind) == ["prefill"] + ["decode"] * 9


def test_an_arrival_cuts_the_leap_at_the_next_plan(monkeypatch):
    """A second request arriving mid-step is admitted by the plan right after that step ends, as
    without leaping (synchronous scheduling: the plan at the step end sees it)."""
    monkeypatch.delenv(NO_LEAP_ENV, raising=False)
    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=1024, async_scheduling=False), 100, 4096,
                      ConstantCostModel(0.01))
    out = simulate(OpenLoopWorkload([RequestSpec(0.0, 100, 50), RequestSpec(0.2055, 30, 5)]), su,
                   seed_seq=np.random.SeedSequence(0))
    second = out.requests.iloc[1]
    assert second.first_scheduled_s == pytest.approx(0.21)  # the step end after the arrival
    it = out.iterations
    assert it.kind.iloc[21] == "mixed" and it.num_seqs.iloc[21] == 2


def test_autoscaling_gauges_see_the_same_replicas(monkeypatch):
    """The controller samples waiting/running/KV-usage gauges of every ready replica between steps
    (leaps included) and starts and drains replicas; nothing may differ."""
    cfg = _experiment({"max_num_seqs": 64},
                      {"num_requests": None, "duration_s": 240,
                       "arrival": {"process": "diurnal", "peak_rate": 10, "trough_rate": 1, "period_s": 200,
                                   "peak_at_s": 100},
                       "output_tokens": {"dist": "fixed", "value": 96}},
                      router="least-kv-usage",
                      autoscaling={"policy": "hpa", "interval_s": 5, "min_replicas": 1, "max_replicas": 4,
                                   "metrics_window_s": 15,
                                   "policy_options": {"metrics": {"num_requests_running": 3, "kv_cache_usage": 0.02}},
                                   "scale_up": {"stabilization_s": 0, "max_step": 2},
                                   "scale_down": {"stabilization_s": 30, "max_step": 1},
                                   "provisioning": {"node_s": 0, "image_s": 0, "weights_gb_per_s": 5.0,
                                                    "engine_init_s": 5}})
    slow, fast = _both(monkeypatch, lambda: run(cfg))
    _same_frames(slow.requests, fast.requests)
    _same_frames(slow.iterations, fast.iterations)
    assert _clean(slow.summary) == _clean(fast.summary)
    assert fast.summary["autoscaling"]["num_scale_ups"] > 0 and fast.summary["autoscaling"]["num_drains"] > 0
    assert fast.meta["leap"]["leapt_share"] > 0.3


def _hand_scheduler(num_blocks, block_size=4, prefix=False):
    from policies.registry import get_policy
    from sim.engine.kv_cache import KVCacheManager
    cfg = EngineConfig(block_size=block_size, enable_prefix_caching=prefix, max_num_batched_tokens=64,
                       async_scheduling=False)
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix)
    return get_policy("vllm")(cfg, kv, 1000), kv


@pytest.mark.parametrize("prefix", [False, True])
def test_leap_plan_matches_schedule_and_says_no_when_blocks_run_short(prefix):
    """Driven by hand: while blocks last, leap_plan(k) makes the KV changes schedule() makes (same
    free count, same block lists, same prefix-cache entries) and returns the shape's context sum;
    at a boundary with no free block it returns None and changes nothing."""
    from sim.engine.request import Request
    twins = []
    for _ in range(2):
        sched, kv = _hand_scheduler(num_blocks=5, prefix=prefix)
        for rid in range(2):
            assert sched.add_request(Request(rid, RequestSpec(0.0, 6, 10), 0.0))
        out = sched.schedule(0.0)  # both prompts (2 blocks each)
        sched.update_from_output(out, 0, 1.0)
        assert sched.leap_ready()
        twins.append((sched, kv))
    (per_step, kv_a), (leaping, kv_b) = twins
    k = 1
    while True:
        free_before = kv_b.num_free_blocks
        context = leaping.leap_plan(k)
        if context is None:
            assert kv_b.num_free_blocks == free_before == 1  # two members cross, one block is free
            assert not per_step.try_schedule_decode_group(per_step.new_step(0.0), num_outside=0)
            break
        out = per_step.schedule(float(k))
        assert out.kind == "decode" and out.shape.sum_ctx_x_new == context and out.num_grouped == 2
        assert kv_a.num_free_blocks == kv_b.num_free_blocks
        assert [kv_a._reqs[r].blocks for r in (0, 1)] == [kv_b._reqs[r].blocks for r in (0, 1)]
        assert kv_a._cached == kv_b._cached and kv_a.block_hash == kv_b.block_hash
        per_step.update_from_output(out, k, k + 1.0)
        leaping.leap_update(1, k + 1.0)
        k += 1
    assert k == 3  # steps from 6 and 7 computed tokens fit the second blocks; the step from 8 needs two more
    kv_b.check_invariants()


class _CountingEnvironment(simpy.Environment):
    """Counts the events SimPy processes (its heap entries)."""

    num_steps = 0

    def step(self):
        _CountingEnvironment.num_steps += 1
        super().step()


def test_steps_run_at_once_when_nothing_else_is_due(monkeypatch):
    """A leapt step whose end comes before every other event in SimPy's heap is run at once, without
    a heap entry (SimPy would pop that entry next): one request alone makes ~no events, and the
    results are those of the per-step path."""
    monkeypatch.setattr(simpy, "Environment", _CountingEnvironment)
    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=1024, async_scheduling=False), 100, 4096,
                      ConstantCostModel(0.01, 1e-5))
    counts = []

    def once():
        _CountingEnvironment.num_steps = 0
        out = simulate(OpenLoopWorkload([RequestSpec(0.5, 100, 300)]), su, seed_seq=np.random.SeedSequence(0))
        counts.append(_CountingEnvironment.num_steps)
        return out
    slow, fast = _both(monkeypatch, once)
    _same_engine_output(slow, fast)
    assert fast.stats["leap"]["num_leapt_iterations"] == 298
    assert counts[0] > 300 and counts[1] < 20, counts


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_an_arrival_at_exactly_a_step_end_breaks_the_tie_as_per_step(monkeypatch, async_scheduling):
    """Step times of 2⁻⁷ s add up exactly, so arrivals at multiples of it land exactly on step ends of a
    leap: the arrival's event is already in the heap, so it goes first, with or without leaping,
    whether the leap's step end would have been run at once or pushed."""
    dt = 2.0 ** -7
    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=1024, async_scheduling=async_scheduling), 100, 4096,
                      ConstantCostModel(dt))
    specs = [RequestSpec(0.0, 60, 200)] + [RequestSpec(dt * k, 20 + k % 7, 5 + k % 11) for k in range(20, 180, 13)]
    slow, fast = _both(monkeypatch, lambda: simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(0)))
    _same_engine_output(slow, fast)
    ends = set(fast.iterations.end_s)
    assert sum(s.arrival_s in ends for s in specs[1:]) >= 10  # the ties really happen
    assert fast.stats["leap"]["num_leapt_iterations"] > 100
