"""Arrival processes: rates and dispersion match theory (no truncated gaps), rate changes only scale
times (capacity search), closed-loop clients and max_concurrency bound requests in flight."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import parse_experiment, with_overrides
from tests.test_workload_helpers import make, run
from workloads.arrivals import ARRIVAL_PROCESSES, parse_arrival

BASE = {"input_tokens": {"dist": "lognormal", "mean": 300, "std": 200}, "output_tokens": {"dist": "uniform", "low": 10, "high": 300}}


def _times(proc: dict, n=None, duration=None, seed=0) -> np.ndarray:
    return parse_arrival(proc).arrival_times(np.random.default_rng(seed), n, duration)


# ---- open-loop processes -----------------------------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.floats(0.05, 500), seed=st.integers(0, 2**31))
def test_poisson_gaps_are_exponential(rate, seed):
    n = 20_000
    gaps = np.diff(np.concatenate([[0.0], _times({"process": "poisson", "rate": rate}, n, seed=seed)]))
    mean = 1 / rate
    assert abs(gaps.mean() - mean) <= 6 * mean / math.sqrt(n)
    # squared coefficient of variation 1; the variance of the sample CV² is ≈ 8/n for exponentials
    cv2 = gaps.var() / gaps.mean() ** 2
    assert abs(cv2 - 1) <= 6 * math.sqrt(8 / n)
    # no truncation: P(gap > 3/λ) = e^-3 ≈ 5% (a 3/λ cap would leave none)
    frac = np.mean(gaps > 3 * mean)
    assert abs(frac - math.exp(-3)) <= 6 * math.sqrt(math.exp(-3) / n)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rate=st.floats(0.1, 100), burstiness=st.floats(0.2, 8), seed=st.integers(0, 2**31))
def test_gamma_gaps_match_vllm_burstiness(rate, burstiness, seed):
    n = 20_000
    gaps = np.diff(np.concatenate([[0.0], _times({"process": "gamma", "rate": rate, "burstiness": burstiness}, n, seed=seed)]))
    k, theta = burstiness, 1 / (rate * burstiness)  # vllm bench serve: shape = burstiness, scale = 1/(rate·burstiness)
    assert abs(gaps.mean() - k * theta) <= 6 * math.sqrt(k * theta ** 2 / n)
    var = k * theta ** 2  # CV² = 1/burstiness
    fourth = 3 * k * (k + 2) * theta ** 4  # central 4th moment of a gamma
    assert abs(gaps.var() - var) <= 6 * math.sqrt((fourth - var ** 2) / n)


def test_poisson_count_in_duration():
    counts = [len(_times({"process": "poisson", "rate": 4.0}, duration=50.0, seed=s)) for s in range(400)]
    # N(50) ~ Poisson(200)
    assert abs(np.mean(counts) - 200) <= 6 * math.sqrt(200 / 400)
    assert abs(np.var(counts) / 200 - 1) < 0.3


def test_constant_and_offline():
    t = _times({"process": "constant", "rate": 4}, duration=10)
    assert len(t) == 40 and np.allclose(t, np.arange(1, 41) / 4)
    assert np.array_equal(_times({"process": "offline"}, 7), np.zeros(7))


def test_stages_rates_per_stage():
    proc = {"process": "stages", "stages": [{"rate": 10, "duration_s": 100}, {"rate": 0, "duration_s": 50}, {"rate": 40, "duration_s": 100}]}
    t = _times(proc, seed=3)
    assert t.max() <= 250 and np.all(np.diff(t) >= 0)
    c1, c0, c2 = np.sum(t < 100), np.sum((t >= 100) & (t < 150)), np.sum(t >= 150)
    assert c0 == 0
    assert abs(c1 - 1000) <= 6 * math.sqrt(1000) and abs(c2 - 4000) <= 6 * math.sqrt(4000)
    assert parse_arrival(proc).mean_rate == pytest.approx((1000 + 4000) / 250)


def test_registry_lists_every_process():
    assert {"poisson", "gamma", "constant", "offline", "closed", "single-stream", "stages"} <= set(ARRIVAL_PROCESSES.names())


# ---- capacity search: a rate change only rescales arrival times -----------------------------------
def _same_sequence(a, b, ratio):
    assert len(a.specs) == len(b.specs) > 0
    for x, y in zip(a.specs, b.specs):
        assert (x.num_prompt_tokens, x.max_output_tokens, x.class_name, x.prefix_group) == \
               (y.num_prompt_tokens, y.max_output_tokens, y.class_name, y.prefix_group)
        assert x.arrival_s == pytest.approx(y.arrival_s * ratio, rel=1e-12)


@pytest.mark.parametrize("process", [{"process": "poisson"}, {"process": "gamma", "burstiness": 0.5}, {"process": "constant"}])
def test_rate_change_keeps_request_sequence(process):
    cfg = {**BASE, "num_requests": 500, "arrival": {**process, "rate": 2.0}, "prefix": {"num_groups": 5, "prefix_tokens": 100}}
    slow, fast = make(cfg, seed=11), make({**cfg, "arrival": {**process, "rate": 7.0}}, seed=11)
    _same_sequence(slow, fast, 7.0 / 2.0)


def test_rate_change_duration_mode_is_a_prefix():
    cfg = {**BASE, "duration_s": 100, "arrival": {"process": "poisson", "rate": 3.0}}
    slow, fast = make(cfg, seed=5), make({**cfg, "arrival": {"process": "poisson", "rate": 6.0}}, seed=5)
    assert len(fast.specs) > len(slow.specs)
    for x, y in zip(slow.specs, fast.specs):
        assert (x.num_prompt_tokens, x.max_output_tokens) == (y.num_prompt_tokens, y.max_output_tokens)
        assert x.arrival_s == pytest.approx(2 * y.arrival_s, rel=1e-12)


def test_with_rate_and_overrides_and_mixtures():
    exp = parse_experiment({"model": "llama-3.1-8b", "hardware": "h100-sxm",
                            "workload": {**BASE, "num_requests": 300, "arrival": {"process": "poisson", "rate": 2.0}}}, "x.yaml")
    via_override = with_overrides(exp, {"workload.arrival.rate": 8.0}).workload
    assert via_override == exp.workload.with_rate(8.0)
    _same_sequence(make(exp.workload.model_dump()), make(via_override.model_dump()), 4.0)
    mixture = {"num_requests": 400, "classes": [
        {"name": "chat", "arrival": {"process": "poisson", "rate": 3}, **BASE},
        {"name": "batch", "arrival": {"process": "gamma", "rate": 1, "burstiness": 0.3}, "input_tokens": 2000, "output_tokens": 50}]}
    from workloads import WorkloadConfig

    wc = WorkloadConfig.model_validate(mixture)
    assert wc.mean_rate == pytest.approx(4.0)
    doubled = wc.with_rate(8.0)
    assert doubled.mean_rate == pytest.approx(8.0)
    _same_sequence(make(mixture), make(doubled.model_dump()), 2.0)
    with pytest.raises(ValueError):
        WorkloadConfig.model_validate({**BASE, "num_requests": 5, "arrival": {"process": "closed", "clients": 2}}).with_rate(3)


def test_same_seed_same_workload_other_seed_differs():
    cfg = {**BASE, "num_requests": 50, "arrival": {"process": "poisson", "rate": 5}}
    assert make(cfg, 1).specs == make(cfg, 1).specs
    assert make(cfg, 1).specs != make(cfg, 2).specs


def test_adding_a_class_leaves_other_streams_alone():
    one = {"num_requests": 100, "classes": [{"name": "a", "arrival": {"process": "poisson", "rate": 1}, **BASE}]}
    two = {"num_requests": 100, "duration_s": 1e9, "classes": [*one["classes"], {"name": "b", "arrival": {"process": "poisson", "rate": 1}, **BASE}]}
    a_only = [s for s in make(one, 4).specs]
    a_in_two = [s for s in make(two, 4).specs if s.class_name == "a"]
    assert [(s.arrival_s, s.num_prompt_tokens) for s in a_in_two] == [(s.arrival_s, s.num_prompt_tokens) for s in a_only[:len(a_in_two)]]


def test_weighted_classes_share_one_stream():
    cfg = {"num_requests": 4000, "arrival": {"process": "poisson", "rate": 10}, **BASE,
           "classes": [{"name": "short", "weight": 3, "input_tokens": 100}, {"name": "long", "weight": 1, "input_tokens": 4000}]}
    specs = make(cfg).specs
    frac = np.mean([s.class_name == "short" for s in specs])
    assert abs(frac - 0.75) < 6 * math.sqrt(0.75 * 0.25 / 4000)
    assert all(s.num_prompt_tokens == (100 if s.class_name == "short" else 4000) for s in specs)


# ---- SimPy processes --------------------------------------------------------------------------------
def test_open_loop_sends_at_arrival_times():
    w = make({**BASE, "num_requests": 100, "arrival": {"process": "poisson", "rate": 5}})
    sent = run(w).sent
    assert [s for _, s in sent] == list(w.specs)
    assert all(t == pytest.approx(s.arrival_s) for t, s in sent)
    assert w.describe()["num_requests"] == 100


def test_closed_loop_keeps_clients_busy():
    w = make({**BASE, "num_requests": 200, "arrival": {"process": "closed", "clients": 4}})
    cluster = run(w, service=lambda s: 0.01 * s.max_output_tokens)
    assert len(cluster.sent) == 200 and cluster.max_in_flight == 4
    assert sum(1 for t, _ in cluster.sent if t == 0) == 4
    assert w.describe()["kind"] == "closed-loop" and w.describe()["num_requests"] == 200


def test_single_stream_never_overlaps_and_think_time():
    w = make({**BASE, "num_requests": 30, "arrival": {"process": "single-stream", "think_time_s": 2.0}})
    cluster = run(w, service=lambda s: 1.0)
    times = [t for t, _ in cluster.sent]
    assert cluster.max_in_flight == 1 and np.allclose(np.diff(times), 3.0)


def test_closed_loop_duration_and_think_distribution():
    w = make({**BASE, "duration_s": 100, "arrival": {"process": "closed", "clients": 3, "think_time_s": {"dist": "exponential", "mean": 1.0}}})
    cluster = run(w, service=lambda s: 0.5)
    assert max(t for t, _ in cluster.sent) <= 100
    # each cycle = 0.5 s service + Exp(1) think (continuous, not rounded) → about 3·100/1.5 requests
    assert abs(len(cluster.sent) - 200) < 40
    assert w.describe().get("num_requests") is None


def test_max_concurrency_caps_in_flight_and_delays_sends():
    w = make({**BASE, "num_requests": 200, "max_concurrency": 3, "arrival": {"process": "poisson", "rate": 50}})
    cluster = run(w, service=lambda s: 0.2)
    assert len(cluster.sent) == 200 and cluster.max_in_flight == 3
    delayed = [(t, s) for t, s in cluster.sent if t > s.arrival_s + 1e-12]
    assert not delayed  # the spec sent carries the actual send time
    assert [s.num_prompt_tokens for _, s in cluster.sent] == [s.num_prompt_tokens for s in w.specs]


def test_process_is_repeatable():
    w = make({**BASE, "num_requests": 60, "arrival": {"process": "closed", "clients": 2}, "prefix": {"num_groups": 3, "prefix_tokens": 50}})
    a = [s for _, s in run(w).sent]
    b = [s for _, s in run(w).sent]
    assert a == b


def test_vllm_bench_arrivals_end_exactly_at_n_over_rate():
    """vllm/benchmarks/serve.py get_request: cumulative gamma gaps rescaled to target_total_delay_s = N / rate."""
    proc = ARRIVAL_PROCESSES.get("vllm-bench")(rate=4.0, burstiness=0.5)
    for seed in range(3):
        t = proc.arrival_times(np.random.default_rng(seed), 500, None)
        assert len(t) == 500 and t[-1] == pytest.approx(500 / 4.0) and t[0] > 0
        assert np.all(np.diff(t) >= 0)
    assert proc.scaled(2.0).arrival_times(np.random.default_rng(0), 500, None)[-1] == pytest.approx(62.5)
    with pytest.raises(ValueError, match="num_requests"):
        proc.arrival_times(np.random.default_rng(0), None, 10.0)
