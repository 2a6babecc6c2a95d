"""Metron fluidity-index, exact minimum decode deadline and fluid token generation rate."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.measure.metrics import (
    fluid_token_generation_rate,
    fluidity_counts,
    fluidity_index,
    min_decode_deadline_s,
    min_decode_deadlines_rows,
)


def reference_counts(gaps, prefill_deadline, decode_deadline, ignore_first=False):
    """SEMANTICS.md §2 literally (etalon's loop), in exact rational arithmetic."""
    gaps = [Fraction(str(g)) for g in gaps]
    d_p, d_d = Fraction(str(prefill_deadline)), Fraction(str(decode_deadline))
    slack = Fraction(0)
    missed = total = 0
    for i, g in enumerate(gaps):
        if i == 0:
            if ignore_first:
                continue
            if g <= d_p + slack:
                slack += d_p - g
                total += 1
                continue
            misses = 1 + (g - slack - d_p) // d_d
        else:
            if g <= d_d + slack:
                slack += d_d - g
                total += 1
                continue
            misses = (g - slack) // d_d
        missed += int(misses)
        total += int(misses)
        slack = Fraction(0)
    return missed, total


def reference_decode_miss_rate(decode_gaps, decode_deadline):
    """Miss rate with TTFT ignored, as etalon's fluid-rate search evaluates it."""
    missed, total = reference_counts([0.0, *decode_gaps], 0.0, decode_deadline, ignore_first=True)
    return 0.0 if total == 0 else missed / total


# ---------------------------------------------------------------- the definition
def test_etalon_worked_examples():
    assert fluidity_counts([0.2, 0.12, 0.2, 0.04], 0.3, 0.05) == (3, 6)
    assert fluidity_index([0.2, 0.12, 0.2, 0.04], 0.3, 0.05) == 0.5
    assert fluidity_counts([0.5, 0.05, 0.05], 0.3, 0.05) == (5, 7)
    assert fluidity_index([0.5, 0.05, 0.05], 0.3, 0.05) == pytest.approx(2 / 7)


def test_no_tokens_is_perfectly_fluid():
    assert fluidity_counts([], 0.1, 0.05) == (0, 0)
    assert fluidity_index([], 0.1, 0.05) == 1.0


def test_exact_deadline_ties_count_as_met():
    # every gap exactly on its deadline: nothing missed, slack stays 0
    assert fluidity_counts([0.3, 0.05, 0.05, 0.05], 0.3, 0.05) == (0, 4)
    # a late token landing exactly on a later deadline: that deadline counts as missed too
    # (floor((0.1 - 0) / 0.05) = 2), then re-anchoring at the late token
    assert fluidity_counts([0.1, 0.1, 0.05], 0.1, 0.05) == (2, 4)


def test_slack_absorbs_a_later_late_gap():
    # 0.1 s TTFT under a 0.3 s deadline banks 0.2 s of slack; a 0.2 s gap then still meets
    assert fluidity_counts([0.1, 0.2], 0.3, 0.05) == (0, 2)


def test_stall_spanning_several_deadlines():
    # a 0.26 s stall with 0.05 s deadlines misses floor(0.26/0.05) = 5 deadlines, then re-anchors
    assert fluidity_counts([0.05, 0.26, 0.05, 0.05], 0.05, 0.05) == (5, 8)
    # with 0.05 s of slack banked by the first token, the same stall misses floor(0.21/0.05) = 4
    assert fluidity_counts([0.05, 0.26, 0.05, 0.05], 0.1, 0.05) == (4, 7)
    # first token 0.45 s late against 0.1 s: 1 + floor(0.35/0.05) = 8 missed
    assert fluidity_counts([0.45], 0.1, 0.05) == (8, 8)


def test_multi_token_chunk_is_gap_then_zeros():
    # a chunk of 3 tokens after 0.12 s: the first misses 2 deadlines, the zeros then meet
    assert fluidity_counts([0.05, 0.12, 0.0, 0.0], 0.05, 0.05) == (2, 5)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=40),
       st.sampled_from([0.0, 0.05, 0.1, 0.3]), st.sampled_from([0.01, 0.03, 0.05, 0.1]))
def test_matches_the_definition_exactly(gaps_tenth_ms, d_p, d_d):
    gaps = [g / 10_000 for g in gaps_tenth_ms]  # 0.1 ms grid: many exact ties
    assert fluidity_counts(gaps, d_p, d_d) == reference_counts(gaps, d_p, d_d)


# ---------------------------------------------------------------- exact minimum decode deadline
def _times(decode_gaps):
    return np.concatenate([[0.0], np.cumsum(decode_gaps)])


def _check_is_infimum(decode_gaps, target):
    d_star = min_decode_deadline_s(_times(decode_gaps), target)
    max_rate = 1 - target
    assert reference_decode_miss_rate(decode_gaps, d_star * (1 + 1e-9)) <= max_rate + 1e-12
    assert reference_decode_miss_rate(decode_gaps, d_star * (1 - 1e-9)) > max_rate + 1e-12
    return d_star


def test_min_deadline_all_met_case_is_max_average_rate():
    # target 1: no miss allowed ⇒ D* = max_k (t_k − t_0) / k
    gaps = [0.01, 0.05, 0.01, 0.01]
    t = _times(gaps)
    expected = max((t[k] - t[0]) / k for k in range(1, len(t)))
    assert min_decode_deadline_s(t, 1.0) == pytest.approx(expected, rel=1e-12)


def test_min_deadline_equal_gaps():
    assert min_decode_deadline_s(_times([0.02] * 50), 0.9) == pytest.approx(0.02, rel=1e-9)


def test_min_deadline_without_decode_tokens_is_zero():
    assert min_decode_deadline_s([5.0], 0.9) == 0.0
    assert min_decode_deadline_s([], 0.9) == 0.0


@pytest.mark.parametrize("seed", range(15))
def test_min_deadline_matches_a_fine_brute_force_scan(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    kind = seed % 3
    if kind == 0:
        gaps = rng.exponential(0.03, n)
    elif kind == 1:
        gaps = rng.choice([0.01, 0.02, 0.03, 0.1, 0.25], n)
    else:
        gaps = rng.uniform(0, 0.1, n)
    gaps = np.round(gaps, 6)  # whole microseconds: token times are exact in the ns representation
    target = float(rng.choice([0.5, 0.8, 0.9, 0.95]))
    d_star = _check_is_infimum(gaps, target)
    # the first feasible point of a fine grid lies within one step above D*
    grid = np.linspace(1e-5, gaps.max() * 1.01, 800)
    feasible = np.array([reference_decode_miss_rate(gaps, d) <= 1 - target + 1e-12 for d in grid])
    assert feasible[-1]
    first = grid[np.argmax(feasible)]
    assert d_star <= first + 1e-12
    assert first - d_star <= grid[1] - grid[0] + 1e-12
    # monotonicity (the property the exact search relies on): feasible set is an up-set
    assert np.all(feasible[np.argmax(feasible):])


def test_rows_agree_with_single_requests():
    rng = np.random.default_rng(7)
    rows, width = 30, 60
    t = np.cumsum(rng.exponential(0.02, (rows, width)), axis=1)
    t -= t[:, :1]
    num = rng.integers(1, width + 1, rows)
    t_ns = np.rint(t * 1e9).astype(np.int64)
    batch = min_decode_deadlines_rows(t_ns, num, 0.9)
    single = [min_decode_deadline_s(t_ns[i, :num[i]] / 1e9, 0.9) for i in range(rows)]
    np.testing.assert_allclose(batch, single, rtol=0, atol=0)


def test_fluid_token_generation_rate():
    minima = np.array([0.01, 0.02, 0.04, 0.05])
    assert fluid_token_generation_rate(minima, 99) == pytest.approx(1 / np.percentile(minima, 99))
    assert fluid_token_generation_rate(np.array([]), 99) is None
    assert fluid_token_generation_rate(np.zeros(3), 99) is None


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=200),
       widths=st.lists(st.floats(0.0, 0.3), min_size=200, max_size=200),
       shifts=st.lists(st.floats(0.0, 1.0), min_size=200, max_size=200),
       pct=st.floats(0.0, 100.0))
def test_percentile_from_bounds_equals_numpy_percentile(values, widths, shifts, pct):
    """Exact np.percentile from [lo, hi] brackets, asking for exact values only where needed."""
    from sim.measure.metrics import percentile_from_bounds

    x = np.array(values)
    w = np.array(widths[:x.size])
    # brackets must contain x; floating-point rounding of lo + w can land a hair below x, so clamp
    lo = np.minimum(x - w * np.array(shifts[:x.size]), x)
    hi = np.maximum(lo + w, x)
    asked = []

    def exact(idx):
        asked.append(len(idx))
        return x[idx]

    assert percentile_from_bounds(lo, hi, pct, exact) == float(np.percentile(x, pct))  # bit-identical
    # exact bounds need no exact solves beyond the ranks themselves
    asked.clear()
    percentile_from_bounds(x, x, pct, exact)
    assert asked[0] <= 2 + int(np.sum(x == np.percentile(x, pct)))


def test_summary_fluid_rate_is_the_exact_percentile_of_per_request_minima():
    """The summary brackets most requests and solves only undecided ones, yet equals the full
    computation bit for bit (a bursty run with preemptions, so minima spread widely)."""
    from sim.config import EngineConfig
    from sim.deploy.step_cost import ConstantCostModel
    from sim.engine.request import RequestSpec
    from sim.engine.simulator import ReplicaSetup, simulate
    from sim.measure.metrics import request_fluidity, summarize
    from workloads.base import OpenLoopWorkload

    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(0.02, 3000))
    specs = [RequestSpec(float(a), int(p), int(o)) for a, p, o in
             zip(t, rng.integers(10, 800, t.size), rng.integers(2, 200, t.size))]
    setup = ReplicaSetup(EngineConfig(max_num_seqs=64, max_num_batched_tokens=1024), 400, 4096,
                         ConstantCostModel(0.004, 2e-5))
    out = simulate(OpenLoopWorkload(specs), setup, seed_seq=np.random.SeedSequence(0))
    s = summarize(out.requests, out.iterations, out.timeline)
    rows = np.flatnonzero(out.requests.status.to_numpy() == "completed")
    fl = request_fluidity(out.requests, out.timeline, rows)
    mins = fl.min_decode_deadline_s.to_numpy()[out.requests.num_output_tokens.to_numpy()[rows] > 1]
    assert mins.std() > 0.1 * mins.mean()  # a spread, not one value
    assert s["p99_min_decode_deadline_ms"] == float(np.percentile(mins, 99)) * 1000.0
    assert s["fluid_token_generation_rate"] == pytest.approx(1.0 / np.percentile(mins, 99), rel=1e-12)


def _both_paths(t_ns, num, target, max_steps=400):
    """(kernel, numpy) results of the bounded bisection on the same rows."""
    import sim.measure.metrics as metrics
    from sim.measure import fluidity_kernel

    if not fluidity_kernel.AVAILABLE:
        pytest.skip("numba not installed: only the numpy path exists")
    min_cells, fluidity_kernel.MIN_CELLS = fluidity_kernel.MIN_CELLS, 0  # use the kernel at any size
    try:
        k = min_decode_deadlines_rows(t_ns, num, target, max_steps=max_steps, bounds=True)
    finally:
        fluidity_kernel.MIN_CELLS = min_cells
    assert fluidity_kernel._kernel is not None  # the compiled path ran
    metrics._USE_KERNEL = False
    try:
        n = min_decode_deadlines_rows(t_ns, num, target, max_steps=max_steps, bounds=True)
    finally:
        metrics._USE_KERNEL = True
    return k, n


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_steps", [3, 400])
def test_compiled_kernel_is_bit_identical_to_numpy(seed, max_steps):
    """The numba kernel and the numpy passes give the same bits (random bursty rows, padding, ties)."""
    rng = np.random.default_rng(seed)
    rows, width = 60, 90
    gaps = rng.choice([0, 1, 2, 7, 25, 300], size=(rows, width), p=[.2, .3, .2, .15, .1, .05])
    gaps = gaps * rng.integers(1, 5_000_000, size=(rows, 1))
    gaps[:, 0] = 0
    t_ns = np.cumsum(gaps, axis=1).astype(np.int64)
    num = rng.integers(0, width + 5, size=rows)  # some rows shorter than the width, some 0/1 tokens
    for target in (0.5, 0.9, 0.99, 1.0):
        (klo, khi), (nlo, nhi) = _both_paths(t_ns, num, target, max_steps)
        assert np.array_equal(klo, nlo) and np.array_equal(khi, nhi)
