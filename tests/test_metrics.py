"""Summary metrics: vLLM-exact statistics, ITL without materialised tokens, goodput, breakdowns."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.request import RECORD_COLUMNS, RequestSpec, TokenTimeline
from sim.engine.simulator import ReplicaSetup, simulate
from sim.measure.metrics import (
    itl_sample,
    latency_stats,
    percentile_key,
    request_fluidity,
    request_token_times,
    summarize,
    weighted_stats,
)
from workloads.base import OpenLoopWorkload

VLLM_KEYS = ["completed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
             "total_input_tokens", "total_output_tokens", "request_goodput"] + [
    f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
    for s in ("mean", "median", "std", "p50", "p90", "p95", "p99")]


def simulated(num_requests=400, rate=30.0, replicas=2, num_kv_blocks=3000, seed=0, classes=("a", "b")):
    """A small open-loop run on the real engine with a constant-plus-per-token step cost."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, num_requests))
    specs = [RequestSpec(float(a), int(rng.integers(16, 400)), int(rng.integers(1, 120)),
                         class_name=str(rng.choice(classes))) for a in arrivals]
    setup = ReplicaSetup(engine=EngineConfig(max_num_seqs=24, max_num_batched_tokens=512),
                         num_kv_blocks=num_kv_blocks, max_model_len=2048,
                         cost_model=ConstantCostModel(0.008, 3e-5))
    return simulate(OpenLoopWorkload(specs), setup, num_replicas=replicas)


@pytest.fixture(scope="module")
def run():
    return simulated()


@pytest.fixture(scope="module")
def preempting_run():
    # few KV blocks: requests are preempted and recomputed, so token runs break
    return simulated(num_requests=150, rate=60.0, replicas=1, num_kv_blocks=90, seed=3)


# ---------------------------------------------------------------- statistics
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(0, 6)), min_size=1, max_size=30),
       st.lists(st.floats(0, 100), min_size=1, max_size=5))
def test_weighted_percentiles_are_bit_identical_to_numpy(pairs, percentiles):
    values = np.array([v / 7 for v, _ in pairs])
    counts = np.array([c for _, c in pairs])
    expanded = np.repeat(values, counts)
    stats = weighted_stats(values, counts, percentiles)
    if expanded.size == 0:
        assert stats is None
        return
    for p in percentiles:
        assert stats[percentile_key(p)] == np.percentile(expanded, p)
    assert stats["median"] == np.median(expanded)
    assert stats["mean"] == pytest.approx(np.mean(expanded), rel=1e-12, abs=1e-12)
    assert stats["std"] == pytest.approx(np.std(expanded), rel=1e-9, abs=1e-12)


def test_latency_stats_keys_and_units():
    out = latency_stats("ttft", np.array([0.1, 0.2, 0.3]), [50, 99.9])
    assert out == {"mean_ttft_ms": pytest.approx(200), "median_ttft_ms": 200.0,
                   "std_ttft_ms": pytest.approx(np.std([0.1, 0.2, 0.3]) * 1000),
                   "p50_ttft_ms": 200.0, "p99.9_ttft_ms": pytest.approx(np.percentile([0.1, 0.2, 0.3], 99.9) * 1000)}
    assert all(v is None for v in latency_stats("itl", np.zeros(0), [99]).values())


# ---------------------------------------------------------------- ITL
def _materialised_gaps(out, rows):
    return np.concatenate([np.diff(request_token_times(out.timeline, int(i))) for i in rows])


@pytest.mark.parametrize("which", ["run", "preempting_run"])
def test_itl_equals_brute_force_on_materialised_tokens(which, request):
    out = request.getfixturevalue(which)
    rows = np.flatnonzero(out.requests["status"].to_numpy() == "completed")
    gaps = _materialised_gaps(out, rows)
    values, counts = itl_sample(out.timeline, rows)
    assert counts.sum() == gaps.size == int(out.requests["num_output_tokens"].iloc[rows].sum() - rows.size)
    s = summarize(out.requests, out.iterations, out.timeline, percentiles=(50, 90, 95, 99, 99.9))
    for p in (50, 90, 95, 99, 99.9):
        assert s[f"{percentile_key(p)}_itl_ms"] == np.percentile(gaps, p) * 1000
    assert s["median_itl_ms"] == np.median(gaps) * 1000
    assert s["mean_itl_ms"] == pytest.approx(np.mean(gaps) * 1000, rel=1e-12)
    assert s["std_itl_ms"] == pytest.approx(np.std(gaps) * 1000, rel=1e-9)


def test_preempting_run_has_broken_runs(preempting_run):
    tl = preempting_run.timeline
    num_runs = np.diff(tl.run_offsets) // 2
    assert preempting_run.requests["num_preemptions"].sum() > 0
    assert (num_runs > 1).any()


def test_itl_on_a_hand_built_timeline():
    # replica 0 iterations end at 0,1,3,6,10; replica 1 at 0,0.5,2
    tl = TokenTimeline(iteration_end_s={0: np.array([0.0, 1.0, 3.0, 6.0, 10.0]), 1: np.array([0.0, 0.5, 2.0])},
                       replica_of=np.array([0, 0, 1]),
                       runs=np.array([0, 2, 4, 4,   1, 3,   0, 2]), run_offsets=np.array([0, 4, 6, 8]))
    # request 0: tokens at 0,1,3 then 10 → gaps 1,2,7; request 1: 1,3,6 → 2,3; request 2: 0,0.5,2 → 0.5,1.5
    values, counts = itl_sample(tl, np.array([0, 1, 2]))
    assert sorted(np.repeat(values, counts).tolist()) == [0.5, 1, 1.5, 2, 2, 3, 7]
    assert request_token_times(tl, 0).tolist() == [0.0, 1.0, 3.0, 10.0]


# ---------------------------------------------------------------- summary
def test_summary_has_vllm_keys_and_consistent_values(run):
    req = run.requests
    s = summarize(req, run.iterations, run.timeline)
    for k in VLLM_KEYS:
        assert k in s, k
    done = req[req["status"] == "completed"]
    assert s["completed"] == len(done)
    assert s["duration"] == pytest.approx(done["finish_s"].max() - req["arrival_s"].min())
    assert s["total_output_tokens"] == done["num_output_tokens"].sum()
    assert s["request_throughput"] == pytest.approx(len(done) / s["duration"])
    assert s["output_throughput"] == pytest.approx(done["num_output_tokens"].sum() / s["duration"])
    assert s["total_token_throughput"] == pytest.approx(
        (done["num_output_tokens"].sum() + done["num_prompt_tokens"].sum()) / s["duration"])
    assert s["p99_ttft_ms"] == np.percentile(done["ttft_s"], 99) * 1000
    assert s["median_e2el_ms"] == np.median(done["e2el_s"]) * 1000
    tpot = done["tpot_s"].dropna()
    assert s["mean_tpot_ms"] == pytest.approx(tpot.mean() * 1000)
    # TTFT decomposition adds up
    assert (s["mean_ttft_queue_ms"] + s["mean_ttft_prefill_compute_ms"] + s["mean_ttft_other_ms"]
            == pytest.approx(s["mean_ttft_ms"], rel=1e-9))
    assert s["request_goodput"] is None  # no goodput thresholds given (as vllm without --goodput)


def test_iteration_metrics_are_time_weighted(run):
    it = run.iterations
    s = summarize(run.requests, it, run.timeline)
    busy = it[it["num_seqs"] > 0]
    assert s["mean_batch_size"] == pytest.approx(busy["num_seqs"].mean())
    assert s["mean_kv_cache_usage"] == pytest.approx(np.average(it["kv_usage"], weights=it["time_s"]))
    assert s["peak_kv_cache_usage"] == pytest.approx(it["kv_usage"].max())


def test_per_class_and_per_replica_partition_the_requests(run):
    s = summarize(run.requests, run.iterations, run.timeline)
    assert sum(b["completed"] for b in s["per_class"].values()) == s["completed"]
    assert sum(b["completed"] for b in s["per_replica"].values()) == s["completed"]
    cls_a = run.requests[(run.requests["class"] == "a") & (run.requests["status"] == "completed")]
    assert s["per_class"]["a"]["p90_ttft_ms"] == np.percentile(cls_a["ttft_s"], 90) * 1000
    gaps_a = _materialised_gaps(run, cls_a.index.to_numpy())
    assert s["per_class"]["a"]["p99_itl_ms"] == np.percentile(gaps_a, 99) * 1000


def test_warmup_excludes_early_arrivals(run):
    req = run.requests
    cut = float(req["arrival_s"].quantile(0.3))
    s = summarize(req, run.iterations, run.timeline, warmup_s=cut)
    kept = req[(req["arrival_s"] >= cut) & (req["status"] == "completed")]
    assert s["completed"] == len(kept)
    assert s["num_warmup_requests"] == int((req["arrival_s"] < cut).sum())
    assert s["p50_ttft_ms"] == np.percentile(kept["ttft_s"], 50) * 1000
    assert s["duration"] == pytest.approx(kept["finish_s"].max() - req.loc[req["arrival_s"] >= cut, "arrival_s"].min())


def test_goodput_follows_vllm(run):
    req = run.requests
    done = req[req["status"] == "completed"]
    ttft_ms = float(np.percentile(done["ttft_s"], 60) * 1000)
    tpot_ms = float(np.percentile(done["tpot_s"].dropna(), 70) * 1000)
    s = summarize(req, run.iterations, run.timeline, slo={"goodput": {"ttft_ms": ttft_ms, "tpot_ms": tpot_ms}})
    tpot0 = done["tpot_s"].fillna(0.0)  # vLLM: one-token requests have TPOT 0 for goodput
    good = ((done["ttft_s"] <= ttft_ms / 1000) & (tpot0 <= tpot_ms / 1000)).sum()
    assert s["goodput_completed"] == good
    assert s["request_goodput"] == pytest.approx(good / s["duration"])
    assert s["slo_attainment"] == pytest.approx(good / len(req))


def test_rejected_and_unfinished_are_counted():
    base = {c: np.nan for c in RECORD_COLUMNS}
    rows = []
    for i, (status, reason) in enumerate([("completed", ""), ("rejected", "too long"), ("rejected", "too long"),
                                          ("unfinished", "")]):
        r = dict(base, request_id=i, replica=0, status=status, reject_reason=reason, arrival_s=float(i),
                 num_prompt_tokens=10, num_output_tokens=1 if status == "completed" else 0, num_cached_tokens=0,
                 num_preemptions=0, prefill_compute_s=0.0)
        r["class"] = "default"
        if status == "completed":
            r.update(first_token_s=0.5, finish_s=0.5, ttft_s=0.5, e2el_s=0.5, queue_s=0.1,
                     first_scheduled_s=0.1, prefill_compute_s=0.4)
        rows.append(r)
    req = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    tl = TokenTimeline(iteration_end_s={0: np.array([0.5])}, replica_of=np.zeros(4, dtype=np.int64),
                       runs=np.array([0, 0]), run_offsets=np.array([0, 2, 2, 2, 2]))
    s = summarize(req, None, tl, slo={"ttft_ms": {"p99": 1000}})
    assert (s["completed"], s["rejected"], s["unfinished"]) == (1, 2, 1)
    assert s["rejected_by_reason"] == {"too long": 2}
    assert s["unfinished_fraction"] == 0.25
    assert s["slo"]["passed"] is False and "unfinished_fraction" in s["slo"]["failed"]
    assert s["mean_itl_ms"] is None and s["mean_tpot_ms"] is None


def test_summary_fluidity_matches_per_request_definition(run):
    from sim.measure.metrics import fluidity_counts

    req = run.requests
    s = summarize(req, run.iterations, run.timeline,
                  slo={"fluidity": {"decode_deadline_ms": 20, "prefill_deadline_ms": 150}})
    rows = np.flatnonzero(req["status"].to_numpy() == "completed")
    idx = []
    for i in rows[:60]:
        t = request_token_times(run.timeline, int(i))
        gaps = np.diff(np.concatenate([[req["arrival_s"].iloc[i]], t]))
        missed, total = fluidity_counts(gaps, 0.15, 0.02)
        idx.append(1 - missed / total)
    fl = request_fluidity(req, run.timeline, rows[:60], prefill_deadline_s=0.15, decode_deadline_s=0.02)
    np.testing.assert_allclose(fl["fluidity_index"], idx)
    all_fl = request_fluidity(req, run.timeline, rows, prefill_deadline_s=0.15, decode_deadline_s=0.02)
    assert s["p99_fluidity_miss_rate"] == pytest.approx(np.percentile(1 - all_fl["fluidity_index"], 99))
    assert s["fluidity_decode_deadline_ms"] == 20


def test_prefill_slack_deadline_uses_the_cost_models_prediction(run):
    req = run.requests
    calls = []

    def prefill_time_s(n):
        calls.append(n)
        return 1e-4 * n

    s = summarize(req, run.iterations, run.timeline, prefill_time_fn=prefill_time_s,
                  slo={"fluidity": {"decode_deadline_ms": 30, "prefill_slack_ms": 50}})
    rows = np.flatnonzero(req["status"].to_numpy() == "completed")
    pre = 1e-4 * req["num_prompt_tokens"].to_numpy()[rows] + 0.05
    fl = request_fluidity(req, run.timeline, rows, prefill_deadline_s=pre, decode_deadline_s=0.03)
    assert s["mean_fluidity_index"] == pytest.approx(fl["fluidity_index"].mean())
    assert len(calls) == len(set(calls))  # one prediction per distinct prompt length


def test_fluid_token_generation_rate_in_summary(run):
    req = run.requests
    s = summarize(req, run.iterations, run.timeline)
    rows = np.flatnonzero((req["status"].to_numpy() == "completed") & (req["num_output_tokens"].to_numpy() > 1))
    fl = request_fluidity(req, run.timeline, rows)
    p99 = np.percentile(fl["min_decode_deadline_s"], 99)
    assert s["fluid_token_generation_rate"] == pytest.approx(1 / p99)
    assert s["p99_min_decode_deadline_ms"] == pytest.approx(p99 * 1000)


def test_token_matrix_gathers_each_replicas_times_exactly(run):
    """The padded token matrix and --save-detailed's per-request times (one gather over all replicas'
    end times) hold exactly each request's token times as request_token_times rebuilds them, on a
    two-replica run and on replicas numbered with gaps (an autoscaled fleet's)."""
    from sim.measure.metrics import NS_PER_S, _token_matrix

    req = run.requests
    rows = np.flatnonzero(req["status"].to_numpy() == "completed")
    assert set(run.timeline.replica_of[rows]) == {0, 1}
    origin = req["arrival_s"].to_numpy(dtype=np.float64)
    mat, ntok = _token_matrix(run.timeline, rows, origin[rows])
    for k, i in enumerate(rows):
        t = request_token_times(run.timeline, int(i))
        assert ntok[k] == t.size
        assert mat[k, :t.size].tolist() == np.rint((t - origin[i]) * NS_PER_S).astype(np.int64).tolist()
    from sim.measure.vllm_compat import _token_times  # --save-detailed's per-request lists, same gather
    detailed = _token_times(run.timeline, rows)
    assert all(detailed[int(i)].tolist() == request_token_times(run.timeline, int(i)).tolist() for i in rows)
    tl = TokenTimeline(iteration_end_s={0: np.array([0.0, 1.0]), 5: np.array([0.25, 0.5, 2.0])},
                       replica_of=np.array([5, 0]), runs=np.array([1, 2, 0, 1]), run_offsets=np.array([0, 2, 4]))
    mat, ntok = _token_matrix(tl, np.array([0, 1]), np.zeros(2))
    assert ntok.tolist() == [2, 2] and mat.tolist() == [[500_000_000, 2_000_000_000], [0, 1_000_000_000]]
