"""Queueing theory as an oracle for the engine (SEMANTICS.md §6, STYLE.md §9).

Each request is 1 prompt token + 1 output token, so with ``max_num_seqs = 1`` it is served in exactly
one constant step D: the replica is an M/D/1 queue and the mean wait in queue (``queue_s``) must match
Pollaczek–Khinchine, Wq = ρ·D / (2(1 − ρ)).

Tolerance design (ρ = 0.5, D = 1 s, Wq = 0.5 s, 50,000 requests): across 8 seeds the sample mean of
the wait had a standard deviation of 0.0073 s, so ±5 % (0.025 s) is 3.4 standard errors wide; a real
bug moves it much more (one extra step per request doubles ρ and makes the queue unstable; starting
service at the next step boundary instead of on arrival adds D/2 = 100 %).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from workloads.base import OpenLoopWorkload


def poisson(n, rate, prompt, out, seed):
    rng = np.random.default_rng(seed)
    return [RequestSpec(float(t), prompt, out) for t in np.cumsum(rng.exponential(1.0 / rate, n))]


def simulate_md1(n, rate, step_s, seed):
    specs = poisson(n, rate, 1, 1, seed)
    su = ReplicaSetup(EngineConfig(max_num_seqs=1, max_num_batched_tokens=16, async_scheduling=False), 16, 64, ConstantCostModel(step_s))
    return simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(seed))


def test_md1_mean_wait_matches_pollaczek_khinchine():
    rate, step_s = 0.5, 1.0
    rho = rate * step_s
    out = simulate_md1(50_000, rate, step_s, seed=11)
    req = out.requests
    assert (req.status == "completed").all()
    wq_expected = rho * step_s / (2 * (1 - rho))
    assert req.queue_s.mean() == pytest.approx(wq_expected, rel=0.05)
    # every request is exactly one step once it starts
    np.testing.assert_allclose(req.e2el_s - req.queue_s, step_s, atol=1e-9)
    # Little's law on the same run: mean number waiting = λ·Wq (time-average from the records)
    horizon = float(req.finish_s.max())
    assert req.queue_s.sum() / horizon == pytest.approx(len(req) / horizon * req.queue_s.mean(), rel=1e-9)


@settings(max_examples=8, deadline=None)
@given(rate=st.floats(0.5, 20.0), step_ms=st.floats(5.0, 50.0), out_tokens=st.integers(1, 30))
def test_unbounded_batch_with_constant_step_has_no_queueing(rate, step_ms, out_tokens):
    """M/G/∞: with no batch cap and a constant step, nobody waits longer than the step in progress and
    every request takes exactly ``out_tokens`` steps once scheduled."""
    step_s = step_ms / 1e3
    specs = poisson(400, rate, 1, out_tokens, seed=int(rate * 1000))
    su = ReplicaSetup(EngineConfig(max_num_seqs=100_000, max_num_batched_tokens=1_000_000, async_scheduling=False), 100_000, 4096,
                      ConstantCostModel(step_s))
    req = simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(0)).requests
    assert (req.status == "completed").all()
    assert (req.queue_s < step_s + 1e-9).all()
    np.testing.assert_allclose(req.e2el_s - req.queue_s, out_tokens * step_s, rtol=1e-9, atol=1e-9)


def test_unbounded_batch_occupancy_is_poisson_mean():
    """M/G/∞: the mean number of requests in service equals λ·E[S]."""
    rate, step_s, out_tokens = 20.0, 0.01, 50
    specs = poisson(20_000, rate, 1, out_tokens, seed=4)
    su = ReplicaSetup(EngineConfig(max_num_seqs=100_000, max_num_batched_tokens=1_000_000, async_scheduling=False), 100_000, 4096,
                      ConstantCostModel(step_s))
    out = simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(0))
    it = out.iterations
    busy_mean = float((it.num_running * it.time_s).sum() / it.time_s.sum())
    idle_s = out.end_s - specs[0].arrival_s - float(it.time_s.sum())
    mean_in_service = busy_mean * it.time_s.sum() / (it.time_s.sum() + idle_s)
    assert mean_in_service == pytest.approx(rate * out_tokens * step_s, rel=0.03)


def test_async_scheduling_adds_exactly_one_step_of_waiting():
    """Async scheduling (vLLM V1): when the engine never idles, a Poisson arrival waits for the residual
    of the step in progress (mean D/2, arrivals see time averages) plus the whole next step, already
    planned without it: mean wait 1.5·D, every wait in (D, 2D]. Synchronous: mean D/2, waits in [0, D)."""
    rate, step_s, out_tokens = 200.0, 0.01, 40  # ~80 requests in flight: the engine is never idle
    specs = poisson(20_000, rate, 1, out_tokens, seed=5)

    def waits(async_scheduling):
        su = ReplicaSetup(EngineConfig(max_num_seqs=100_000, max_num_batched_tokens=1_000_000,
                                       async_scheduling=async_scheduling), 100_000, 4096, ConstantCostModel(step_s))
        req = simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(0)).requests
        return req.queue_s.to_numpy()[100:]  # skip the ramp-up, when the engine still idles

    sync, asyn = waits(False), waits(True)
    assert sync.mean() == pytest.approx(0.5 * step_s, rel=0.03)
    assert asyn.mean() == pytest.approx(1.5 * step_s, rel=0.03)
    assert sync.max() < step_s + 1e-9
    assert asyn.min() > step_s - 1e-9 and asyn.max() < 2 * step_s + 1e-9
