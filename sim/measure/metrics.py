"""Summary metrics of a run, computed from the flat per-request records, the iteration log and the
compact token timeline (never from per-token objects).

Every key :func:`summarize` returns is defined in ``docs/metrics.md`` with its formula, unit and source.
The latency keys are those of ``vllm bench serve`` (``mean_ttft_ms``, ``p99_itl_ms`` …), computed the
same way: ``np.mean``, ``np.median``, ``np.std`` (population) and ``np.percentile`` with linear
interpolation, on seconds, then × 1000.

**ITL without materialising tokens.** vLLM's ITL pools every gap between consecutive tokens of every
request. A token is emitted at the end of an iteration, and a request's tokens form a few runs of
consecutive iterations (``sim.engine.request``), so inside a run the gaps are exactly the replica's
iteration-end differences ``E[k] − E[k−1]``. The pooled multiset is therefore

    { E[k] − E[k−1]  with multiplicity  #(runs with start < k ≤ end) }  ∪  { the few between-run gaps }

The multiplicities come from a difference array over the runs (``bincount`` + ``cumsum``), and
:func:`weighted_stats` computes mean, std, median and ``np.percentile``-exact percentiles of the
weighted sample. Memory and time are O(iterations + runs), whatever the number of tokens.

**Fluidity (Metron, arXiv 2407.07000; SEMANTICS.md §2).** Definitions (docs/metrics.md#fluidity). A request's tokens arrive at ``t0 < t1 ≤ … ≤ tm`` after its
arrival ``a``; the gaps are ``g0 = t0 − a`` (TTFT) and ``gk = tk − t(k−1)``. With a prefill deadline
``D_p`` and a decode deadline ``D_d``, Metron walks the tokens with an (uncapped) slack:

- token 0 meets iff ``g0 ≤ D_p`` (slack += D_p − g0); else it misses ``1 + ⌊(g0 − D_p)/D_d⌋`` deadlines;
- token k ≥ 1 meets iff ``gk ≤ D_d + slack`` (slack += D_d − gk); else it misses ``⌊(gk − slack)/D_d⌋``;
- a miss adds its count to both ``missed`` and ``total`` and resets the slack to 0 (later deadlines
  re-anchor at the late token); a met token adds 1 to ``total``. fluidity = 1 − missed/total.

**The closed form used here.** Let ``s_k`` be token k's *virtual deadline*: ``s_k = s_(k−1) + D_d``
when token k meets it and ``s_k = t_k`` when it misses (re-anchoring), so the slack before token k is
``s_(k−1) − t_(k−1)`` and

    token k meets  ⇔  t_k ≤ s_(k−1) + D_d,        s_k = max(s_(k−1) + D_d, t_k)        (Lindley)

hence ``s_k − k·D_d = max(s_0, max_(1≤i≤k)(t_i − i·D_d))``: with ``z_i = t_i − i·D_d`` (``z_0 = s_0``)
and ``C = cummax(z)``, token k meets iff ``z_k ≤ C_(k−1)`` and otherwise misses
``⌊(t_k − s_(k−1))/D_d⌋ = 1 + ⌊(z_k − C_(k−1))/D_d⌋`` deadlines. One ``np.maximum.accumulate``
replaces the Python loop, and many requests are evaluated at once as rows of a padded 2-D array.

Fixed deadlines are evaluated in integer nanoseconds (times and deadlines rounded to 1 ns), so the
definition's ties ("equality counts as met", a deadline falling exactly on a late token counts as
missed) hold exactly, whatever order floating-point sums were taken in.

**Minimum decode deadline (exact).** For the fluid token generation rate we need, per request, the
smallest ``D_d`` whose miss rate with TTFT ignored (token 0 is the anchor, ``s_0 = t_0``) is at most
``1 − target``. From the closed form, ``s_k(D)`` is non-decreasing in ``D`` (induction on the Lindley
recursion), so ``u_k(D) = t_k − s_(k−1)(D)`` is non-increasing, and so are the number of missed tokens
``K(D) = #{k: u_k > D}`` and the number of missed deadlines ``M(D) = Σ_(u_k > D) ⌊u_k/D⌋``. Feasibility
``M ≤ α·(m − K + M)`` (α = 1 − target, m decode tokens) is ``(1−α)·M(D) ≤ α·(m − K(D))``: its left side
only falls and its right side only rises with D, so the feasible set is an interval ``[D*, ∞)`` or
``(D*, ∞)`` and D* is its infimum (the answer we report).

Between events, with anchor j (last missed token before k, or 0), ``u_k = (t_k − t_j) − (k−1−j)·D``,
so the whole *trace* (which tokens miss and by how many deadlines) is constant on an interval of D
whose ends are ratios ``(t_k − t_j)/n`` for integers n: a met token needs ``D ≥ x/(a+1)``, a token
missing q deadlines needs ``x/(a+q+1) < D ≤ x/(a+q)`` (``x = t_k − t_j``, ``a = k−1−j``). One pass at
any D yields that interval exactly. The search bisects D but, after each evaluation, jumps the
bracket to the end of the evaluated trace interval (``hi = L`` if feasible, ``lo = U`` if not). It
stops when ``lo == hi``, i.e. when it has evaluated the two traces adjacent to D*, and returns D* as
the breakpoint ratio itself — no search granularity (etalon binary-searches with a 0.1 ms step).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sim.engine.request import TokenTimeline
from sim.measure import fluidity_kernel
from sim.measure.pricing import cost_summary
from sim.measure.slo import evaluate_slo, resolve_slo

__all__ = [
    "DEFAULT_PERCENTILES", "DEFAULT_PREFILL_DEADLINE_S", "DEFAULT_DECODE_DEADLINE_S",
    "percentile_key", "np_percentile_weighted", "weighted_stats", "latency_stats", "itl_sample",
    "request_token_times", "fluidity_counts", "fluidity_index", "min_decode_deadline_s",
    "min_decode_deadlines_rows", "fluid_token_generation_rate", "request_fluidity", "summarize",
    "spec_decode_metrics",
]

DEFAULT_PERCENTILES: tuple[float, ...] = (50, 90, 95, 99)
# Metron's deadlines for plain runs (etalon defaults; SEMANTICS.md §2) when the SLO sets none.
DEFAULT_PREFILL_DEADLINE_S = 0.1
DEFAULT_DECODE_DEADLINE_S = 0.05
DEFAULT_FLUIDITY_TARGET = 0.9
DEFAULT_FLUIDITY_PERCENTILE = 99.0
# Token chunks processed at once in post-processing (bounds memory of the fluidity pass).
_TOKENS_PER_CHUNK = 2_000_000
NS_PER_S = 1_000_000_000
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


# ----------------------------------------------------------------------------- statistics
def percentile_key(p: float) -> str:
    """``99 → "p99"``, ``99.9 → "p99.9"`` (vLLM's key spelling)."""
    p = float(p)
    return f"p{int(p)}" if p.is_integer() else f"p{p:g}"


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp`` (function_base): the exact arithmetic ``np.percentile`` uses."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1 - t)
    return a + diff * t


def np_percentile_weighted(sorted_values: np.ndarray, cum_counts: np.ndarray, p: float) -> float:
    """``np.percentile(x, p)`` (method "linear") of the multiset where ``sorted_values[i]`` (ascending)
    occurs ``cum_counts[i] − cum_counts[i−1]`` times, without expanding it. Bit-identical to numpy."""
    n = int(cum_counts[-1])
    q = float(np.true_divide(p, 100))
    virtual = (n - 1) * q  # numpy's virtual index for method "linear"
    prev = math.floor(virtual)
    if virtual >= n - 1:
        prev_i = next_i = n - 1
        gamma = virtual - (-1)  # numpy sets the previous index to -1 here; a == b so it is unused
    elif virtual < 0:
        prev_i = next_i = 0
        gamma = virtual - prev
    else:
        prev_i, next_i = prev, prev + 1
        gamma = virtual - prev
    a = sorted_values[np.searchsorted(cum_counts, prev_i, side="right")]
    b = sorted_values[np.searchsorted(cum_counts, next_i, side="right")]
    return float(_lerp(float(a), float(b), float(gamma)))


def weighted_stats(values: np.ndarray, counts: np.ndarray | None, percentiles: Iterable[float]
                   ) -> dict[str, float] | None:
    """mean, median, std (ddof 0) and percentiles of ``values`` repeated ``counts`` times.

    Percentiles and the median are bit-identical to ``np.percentile`` / ``np.median`` on the expanded
    sample; mean and std are the exact weighted formulas (equal to numpy's up to summation rounding).
    None for an empty sample.
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.ones(values.size, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    keep = counts > 0
    if not keep.all():
        values, counts = values[keep], counts[keep]
    del keep
    if values.size == 0:
        return None
    # temporaries freed as soon as they are used: the pooled ITL sample of a 1M-request run has ~7M values
    order = np.argsort(values, kind="stable")
    v, c = values[order], counts[order]
    del order
    cum = np.cumsum(c)
    c = c.astype(np.float64)
    n = int(cum[-1])
    total = float(np.dot(v, c))
    mean = total / n
    dev = v - mean
    np.multiply(dev, dev, out=dev)  # (v - mean) ** 2, the same products
    var = float(np.dot(dev, c)) / n
    del dev, c
    mid = n // 2
    if n % 2:
        median = float(v[np.searchsorted(cum, mid, side="right")])
    else:
        lo = float(v[np.searchsorted(cum, mid - 1, side="right")])
        hi = float(v[np.searchsorted(cum, mid, side="right")])
        median = (lo + hi) / 2
    out = {"mean": mean, "median": median, "std": math.sqrt(var)}
    for p in percentiles:
        out[percentile_key(p)] = np_percentile_weighted(v, cum, p)
    return out


def latency_stats(name: str, values_s: np.ndarray, percentiles: Iterable[float],
                  counts: np.ndarray | None = None) -> dict[str, float | None]:
    """vLLM-style keys for one latency metric: ``mean_{name}_ms``, ``median_…``, ``std_…``, ``pNN_…``
    (milliseconds; None when there is no sample)."""
    percentiles = list(percentiles)
    stats = weighted_stats(values_s, counts, percentiles)
    keys = ["mean", "median", "std"] + [percentile_key(p) for p in percentiles]
    if stats is None:
        return {f"{k}_{name}_ms": None for k in keys}
    return {f"{k}_{name}_ms": stats[k] * 1000.0 for k in keys}


def _time_weighted(x: np.ndarray, w: np.ndarray) -> float | None:
    tw = float(w.sum())
    return float(np.dot(x, w) / tw) if tw > 0 else None


# ----------------------------------------------------------------------------- fluidity (Metron)
# Fraction slack when comparing a miss *rate* with its limit: rates are ratios of small integers,
# so this only absorbs float error in ``1 − target`` (1 − 0.9 = 0.09999999999999998).
_RATE_EPS = 1e-9
# False forces the numpy bisection (tests compare both paths; fluidity_kernel.AVAILABLE says if numba is there)
_USE_KERNEL = True
_NEG = np.iinfo(np.int64).min // 4  # padding for integer cummax (never a record)


def _to_ns(x: np.ndarray | float) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * NS_PER_S).astype(np.int64)


def fluidity_counts(gaps_s: Sequence[float] | np.ndarray, prefill_deadline_s: float,
                    decode_deadline_s: float) -> tuple[int, int]:
    """``(missed, total)`` deadlines of one request given its gaps (``gaps_s[0]`` = TTFT).

    A multi-token chunk is passed as its gap followed by zeros. See the module docstring.
    """
    gaps = np.asarray(gaps_s, dtype=np.float64)
    if gaps.size == 0:
        return 0, 0
    if decode_deadline_s <= 0:
        raise ValueError(f"decode deadline must be > 0 s, got {decode_deadline_s}")
    t_ns = np.cumsum(_to_ns(gaps))  # token times relative to the arrival, exact integer sums
    missed, total = _fixed_deadline_rows(t_ns[None, :], np.array([t_ns.size]),
                                         _to_ns(prefill_deadline_s)[()], _to_ns(decode_deadline_s)[()])
    return int(missed[0]), int(total[0])


def fluidity_index(gaps_s: Sequence[float] | np.ndarray, prefill_deadline_s: float,
                   decode_deadline_s: float) -> float:
    """Metron's fluidity-index of one request: ``1 − missed/total`` (1 when there is no token).

    >>> fluidity_index([0.2, 0.12, 0.2, 0.04], 0.3, 0.05)   # 3 of 6 deadlines missed
    0.5
    """
    missed, total = fluidity_counts(gaps_s, prefill_deadline_s, decode_deadline_s)
    return 1.0 if total == 0 else 1.0 - missed / total


def _fixed_deadline_rows(t_ns: np.ndarray, num_tokens: np.ndarray, prefill_ns: np.ndarray | int,
                         decode_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Missed and total deadlines for each row of ``t_ns`` (B × W int64 token times relative to each
    request's arrival; row b holds ``num_tokens[b]`` valid entries, the rest is ignored)."""
    num_rows, width = t_ns.shape
    if decode_ns < 1:
        raise ValueError("decode deadline must be at least 1 ns")
    prefill_ns = np.broadcast_to(np.asarray(prefill_ns, dtype=np.int64), (num_rows,))
    has_token = num_tokens > 0
    ttft = t_ns[:, 0]
    first_met = ttft <= prefill_ns
    first_misses = np.where(first_met, 0, 1 + np.maximum(ttft - prefill_ns, 0) // decode_ns)
    s0 = np.where(first_met, prefill_ns, ttft)  # virtual deadline of token 0
    missed = np.where(has_token, first_misses, 0)
    total = np.where(has_token, np.where(first_met, 1, first_misses), 0)
    if width > 1:
        idx = np.arange(width, dtype=np.int64)
        valid = idx[None, :] < num_tokens[:, None]
        z = t_ns - idx[None, :] * decode_ns
        z[:, 0] = s0
        z = np.where(valid, z, _NEG)
        c = np.maximum.accumulate(z, axis=1)
        zk, c_prev, vk = z[:, 1:], c[:, :-1], valid[:, 1:]
        late = vk & (zk > c_prev)
        misses = np.where(late, 1 + (zk - c_prev) // decode_ns, 0)
        missed = missed + misses.sum(axis=1)
        total = total + misses.sum(axis=1) + (vk & ~late).sum(axis=1)
    return missed, total


def min_decode_deadline_s(token_times_s: Sequence[float] | np.ndarray, target: float = 0.9) -> float:
    """Exact smallest decode deadline (s) keeping this request's fluidity ≥ ``target``, TTFT ignored.

    ``token_times_s`` are the request's token times (any origin). Returns the infimum of the feasible
    deadlines (module docstring); 0 for a request with fewer than two tokens or when ``target ≤ 0``.
    """
    t = np.asarray(token_times_s, dtype=np.float64)
    return float(min_decode_deadlines_rows(
        (_to_ns(t - t[0]) if t.size else np.zeros(1, np.int64))[None, :],
        np.array([t.size]), target)[0])


def min_decode_deadlines_rows(t_ns: np.ndarray, num_tokens: np.ndarray, target: float,
                              max_steps: int = 400, bounds: bool = False
                              ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`min_decode_deadline_s` over the rows of ``t_ns`` (B × W int64 token times,
    each row relative to its first token). Returns seconds (float64, length B).

    With ``bounds=True`` it returns ``(lo, hi)`` after at most ``max_steps`` passes: every row's exact
    minimum lies in ``[lo, hi]``, and ``lo == hi`` (the exact value) for rows that converged."""
    num_rows, width = t_ns.shape
    max_miss_rate = 1.0 - target
    out = np.zeros(num_rows)
    m = np.maximum(num_tokens - 1, 0)  # decode tokens per row
    rows = np.flatnonzero((m > 0) & (max_miss_rate < 1.0))
    if rows.size == 0 or width < 2:
        return (out, out.copy()) if bounds else out
    t = t_ns[rows].astype(np.float64)
    num_tok = num_tokens[rows]
    if _USE_KERNEL and t.size >= fluidity_kernel.MIN_CELLS and fluidity_kernel.AVAILABLE:
        # compiled row-by-row bisection: the same float operations, bit-identical (fluidity_kernel.py)
        lo, hi = fluidity_kernel.kernel()(t, np.asarray(num_tok, dtype=np.int64), max_miss_rate,
                                             max_steps, _RATE_EPS)
        out[rows] = hi / NS_PER_S
        if not bounds:
            return out
        mid = 0.5 * (lo + hi)
        still = (hi > lo) & (mid > lo) & (mid < hi)
        low = out.copy()
        low[rows] = np.where(still, lo, hi) / NS_PER_S
        return low, out
    idx = np.arange(width)
    valid = idx[None, :] < num_tok[:, None]
    gaps = np.where(valid[:, 1:], np.diff(t, axis=1), 0.0)
    lo = np.zeros(rows.size)
    hi = gaps.max(axis=1)  # every token meets its deadline at D = max gap: feasible
    tv = np.where(valid, t, 0.0)
    def still_open() -> np.ndarray:
        mid = 0.5 * (lo + hi)
        return (hi > lo) & (mid > lo) & (mid < hi)

    for _ in range(max_steps):
        active = still_open()
        if not active.any():
            break
        mid = 0.5 * (lo + hi)
        a_rows = np.flatnonzero(active)
        feasible, lower, upper = _trace_at(tv[a_rows], valid[a_rows], mid[a_rows], max_miss_rate)
        hi[a_rows] = np.where(feasible, np.minimum(hi[a_rows], lower), hi[a_rows])
        lo[a_rows] = np.where(feasible, lo[a_rows], np.maximum(lo[a_rows], upper))
    out[rows] = hi / NS_PER_S
    if not bounds:
        return out
    low = out.copy()
    low[rows] = np.where(still_open(), lo, hi) / NS_PER_S  # converged rows: the exact value
    return low, out


def percentile_from_bounds(lo: np.ndarray, hi: np.ndarray, percentile: float,
                           exact: Callable[[np.ndarray], np.ndarray]) -> float:
    """``np.percentile(x, percentile)`` (linear interpolation) of values known only as ``lo ≤ x ≤ hi``,
    computing exact values (``exact(indices) -> x[indices]``) only where the bounds cannot decide.

    The value at sorted rank r lies in [r-th smallest lo, r-th smallest hi]. Rows whose ``hi`` is below
    the first bound are certainly ranked before it, rows whose ``lo`` is above the second certainly after;
    the ranks needed are then found among the exactly-computed remaining rows.
    """
    n = lo.size
    k = (n - 1) * (percentile / 100.0)  # numpy's virtual index, rounded as numpy rounds it
    r0, r1 = int(np.floor(k)), int(np.ceil(k))
    low_bound = np.partition(lo, r0)[r0]
    high_bound = np.partition(hi, r1)[r1]
    below = hi < low_bound
    candidates = np.flatnonzero(~below & (lo <= high_bound))
    values = np.sort(np.asarray(exact(candidates), dtype=np.float64))
    n_below = int(below.sum())
    v0, v1 = values[r0 - n_below], values[r1 - n_below]
    t, diff = k - r0, v1 - v0
    # numpy's lerp: from the nearer end, so the result is bit-identical to np.percentile
    return float(v1 - diff * (1.0 - t)) if t >= 0.5 else float(v0 + diff * t)


def _trace_at(t: np.ndarray, valid: np.ndarray, d: np.ndarray, max_miss_rate: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate each row at decode deadline ``d`` (TTFT ignored: token 0 anchors the schedule).

    Returns (feasible, L, U): the trace — which tokens miss and by how many deadlines — is the same for
    every deadline in the interval between L and U (ends open or closed), so feasibility is too.
    """
    num_rows, width = t.shape
    idx = np.arange(width)
    dd = d[:, None]
    z = np.where(valid, t - idx[None, :] * dd, -np.inf)
    c = np.maximum.accumulate(z, axis=1)
    vk = valid[:, 1:]
    late = vk & (z[:, 1:] > c[:, :-1])
    # anchor of token k = last late token before k (or token 0)
    rec = np.zeros((num_rows, width), dtype=np.int64)
    rec[:, 1:] = np.where(late, idx[None, 1:], 0)
    anchor = np.maximum.accumulate(rec, axis=1)[:, :-1]
    x = t[:, 1:] - np.take_along_axis(t, anchor, axis=1)  # t_k − t_anchor (exact: integer-valued)
    a = (idx[None, 1:] - 1 - anchor).astype(np.float64)  # met tokens since the anchor
    q = np.maximum(np.floor(x / dd) - a, 1.0)  # deadlines missed by a late token
    num_missed = np.where(late, q, 0.0).sum(axis=1)
    num_late = late.sum(axis=1)
    m = vk.sum(axis=1)
    total = m - num_late + num_missed
    feasible = num_missed <= max_miss_rate * total + _RATE_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        lower_met = np.where(vk & ~late, x / (a + 1.0), 0.0)
        lower_late = np.where(late, x / (a + q + 1.0), 0.0)
        upper_late = np.where(late, x / (a + q), np.inf)
    lower = np.maximum(lower_met.max(axis=1), lower_late.max(axis=1))
    upper = upper_late.min(axis=1)
    # float guard: the interval must contain the evaluated point
    lower = np.minimum(lower, d)
    upper = np.maximum(upper, d)
    return feasible, lower, upper


def fluid_token_generation_rate(min_deadlines_s: np.ndarray, percentile: float = 99.0) -> float | None:
    """Metron's fluid token generation rate: ``1 / P-th percentile`` of per-request minimum decode
    deadlines (tokens/s); None when there is no request with a decode token (or the percentile is 0)."""
    d = np.asarray(min_deadlines_s, dtype=np.float64)
    if d.size == 0:
        return None
    p = float(np.percentile(d, percentile))
    return None if p <= 0 else 1.0 / p


# ----------------------------------------------------------------------------- token timeline
def _runs_table(timeline: TokenTimeline, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flatten the runs of request ``rows``: (row index per run, start, end, replica) arrays."""
    offs = np.asarray(timeline.run_offsets, dtype=np.int64)
    runs = np.asarray(timeline.runs, dtype=np.int64)
    lengths = (offs[rows + 1] - offs[rows]) // 2
    total = int(lengths.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    run_row = np.repeat(rows, lengths)
    first = np.repeat(offs[rows], lengths)
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos = first + 2 * within
    replica = np.asarray(timeline.replica_of, dtype=np.int64)[run_row]
    return run_row, runs[pos], runs[pos + 1], replica


def itl_sample(timeline: TokenTimeline, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pooled inter-token gaps of requests ``rows`` as ``(values_s, counts)`` (module docstring).

    Expanding ``values_s`` by ``counts`` gives exactly the multiset of ``t(k+1) − t(k)`` over all
    consecutive token pairs of those requests.
    """
    rows = np.asarray(rows, dtype=np.int64)
    run_row, start, end, replica = _runs_table(timeline, rows)
    values: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    # each replica's runs in their order, replicas ascending: one grouping pass, not a mask per replica
    groups = _group_rows(replica)
    for key in sorted(groups, key=int):
        ends_s = np.asarray(timeline.iteration_end_s[int(key)], dtype=np.float64)
        sel = groups[key]
        s, e = start[sel], end[sel]
        n = ends_s.size
        # within a run (s, e): gaps E[k] − E[k−1] for s < k ≤ e → +1 at s+1, −1 at e+1
        mult = np.bincount(s + 1, minlength=n + 1)
        mult -= np.bincount(e + 1, minlength=n + 1)
        np.cumsum(mult, out=mult)
        mult = mult[:n]
        if n > 1:
            values.append(np.diff(ends_s))
            counts.append(mult[1:])
        # between consecutive runs of the same request
        rr = run_row[sel]
        same = rr[1:] == rr[:-1]
        if same.any():
            values.append(ends_s[s[1:][same]] - ends_s[e[:-1][same]])
            counts.append(np.ones(int(same.sum()), dtype=np.int64))
    if not values:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    if len(values) == 1:  # one replica, no gaps between runs: no concatenated copy
        return values[0], counts[0].astype(np.int64, copy=False)
    return np.concatenate(values), np.concatenate(counts).astype(np.int64)


def request_token_times(timeline: TokenTimeline, row: int) -> np.ndarray:
    """Token emission times (s) of request ``row`` (materialised for this one request)."""
    row_a = np.array([row], dtype=np.int64)
    _, start, end, replica = _runs_table(timeline, row_a)
    if start.size == 0:
        return np.zeros(0)
    ends_s = np.asarray(timeline.iteration_end_s[int(replica[0])], dtype=np.float64)
    idx = np.concatenate([np.arange(s, e + 1) for s, e in zip(start, end)])
    if timeline.bursts is not None:  # speculative decoding: 1 + extra tokens per such emission
        idx = np.repeat(idx, _burst_repeats(timeline, row_a, np.zeros(idx.size, dtype=np.int64), idx))
    return ends_s[idx]


def _burst_repeats(timeline: TokenTimeline, rows: np.ndarray, tok_rpos: np.ndarray, tok_iter: np.ndarray
                   ) -> np.ndarray:
    """Tokens of each emission (1 + the extra tokens of a speculative burst), for emissions given in
    (row position, iteration) order: ``tok_rpos`` indexes ``rows``, ``tok_iter`` is the iteration."""
    offs = np.asarray(timeline.burst_offsets, dtype=np.int64)
    flat = np.asarray(timeline.bursts, dtype=np.int64)
    npairs = (offs[rows + 1] - offs[rows]) // 2
    reps = np.ones(tok_iter.size, dtype=np.int64)
    total = int(npairs.sum())
    if total == 0:
        return reps
    first = np.repeat(offs[rows], npairs) + 2 * (np.arange(total) - np.repeat(np.cumsum(npairs) - npairs, npairs))
    b_rpos = np.repeat(np.arange(rows.size, dtype=np.int64), npairs)
    # emissions are sorted by (row position, iteration): find each burst's emission by that key
    span = int(max(tok_iter.max(initial=0), flat[first].max(initial=0))) + 1
    keys = tok_rpos * span + tok_iter
    at = np.searchsorted(keys, b_rpos * span + flat[first])
    np.add.at(reps, at, flat[first + 1])
    return reps


def _flat_ends(timeline: TokenTimeline) -> tuple[np.ndarray, np.ndarray | None]:
    """Every replica's iteration end times as one array, and each replica's offset in it (None with one
    replica: its own array, no copy), so a token's time is one gather whatever the number of replicas."""
    ends = timeline.iteration_end_s
    if len(ends) == 1:
        return np.asarray(next(iter(ends.values())), dtype=np.float64), None
    keys = sorted(ends)
    base = np.zeros(max(keys) + 1 if keys else 1, dtype=np.int64)
    arrays, pos = [], 0
    for rep in keys:
        a = np.asarray(ends[rep], dtype=np.float64)
        base[rep] = pos
        pos += a.size
        arrays.append(a)
    return (np.concatenate(arrays) if arrays else np.zeros(0)), base


def _token_matrix(timeline: TokenTimeline, rows: np.ndarray, origin_s: np.ndarray,
                  flat_ends: tuple[np.ndarray, np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token times (int64 ns relative to ``origin_s`` per row) as a padded matrix, and counts.
    ``flat_ends`` is :func:`_flat_ends` of the timeline (computed here when not given)."""
    run_row, start, end, replica = _runs_table(timeline, rows)
    lengths = end - start + 1
    pos_of_row = np.full(int(rows.max()) + 1 if rows.size else 1, -1, dtype=np.int64)
    pos_of_row[rows] = np.arange(rows.size)
    rpos = pos_of_row[run_row]
    num_tokens = np.bincount(rpos, weights=lengths, minlength=rows.size).astype(np.int64)
    width = int(num_tokens.max()) if rows.size else 0
    mat = np.zeros((rows.size, max(width, 1)), dtype=np.int64)
    if lengths.size == 0:
        return mat, num_tokens
    total = int(lengths.sum())
    run_start_in_flat = np.cumsum(lengths) - lengths
    iter_idx = np.repeat(start - run_start_in_flat, lengths) + np.arange(total)
    tok_rpos = np.repeat(rpos, lengths)
    ends, base = flat_ends if flat_ends is not None else _flat_ends(timeline)
    # each token's replica offset into ``ends`` (none with one replica): the times are then one gather,
    # O(tokens), not one pass per replica
    tok_off = None if base is None else np.repeat(base[replica], lengths)
    if timeline.bursts is not None:  # speculative decoding: several tokens at one emission
        reps = _burst_repeats(timeline, rows, tok_rpos, iter_idx)
        iter_idx, tok_rpos = np.repeat(iter_idx, reps), np.repeat(tok_rpos, reps)
        if tok_off is not None:
            tok_off = np.repeat(tok_off, reps)
        total = int(reps.sum())
        num_tokens = np.bincount(tok_rpos, minlength=rows.size).astype(np.int64)
        mat = np.zeros((rows.size, max(int(num_tokens.max()), 1)), dtype=np.int64)
    times = ends[iter_idx] if tok_off is None else ends[tok_off + iter_idx]
    # column of each token within its row: runs of a request are stored in time order
    row_first_tok = np.cumsum(num_tokens) - num_tokens
    col = np.arange(total) - row_first_tok[tok_rpos]
    mat[tok_rpos, col] = np.rint((times - origin_s[tok_rpos]) * NS_PER_S).astype(np.int64)
    return mat, num_tokens


def request_fluidity(requests: pd.DataFrame, timeline: TokenTimeline, rows: np.ndarray | None = None, *,
                     prefill_deadline_s: float | np.ndarray = DEFAULT_PREFILL_DEADLINE_S,
                     decode_deadline_s: float = DEFAULT_DECODE_DEADLINE_S,
                     target: float = DEFAULT_FLUIDITY_TARGET,
                     min_deadline_passes: int | None = None,
                     flat_ends: tuple[np.ndarray, np.ndarray | None] | None = None) -> pd.DataFrame:
    """Per-request fluidity for ``rows`` (default: every request with a token).

    Columns: ``fluidity_missed``, ``fluidity_total`` (deadlines), ``fluidity_index``, and
    ``min_decode_deadline_s`` (exact smallest decode deadline keeping fluidity ≥ ``target``, TTFT
    ignored; 0 with fewer than two tokens). ``prefill_deadline_s`` may be one value per row.
    Work is done in chunks of about two million tokens, each vectorised over its requests.

    With ``min_deadline_passes`` the minimum is only bracketed, in that many passes: the columns are
    then ``min_decode_deadline_lo_s`` / ``min_decode_deadline_hi_s`` (equal where already exact), for
    :func:`percentile_from_bounds`. ``flat_ends``: :func:`_flat_ends` of the timeline, when the caller
    already has it (a summary's two passes share one).
    """
    if rows is None:
        rows = np.flatnonzero(np.isfinite(requests["first_token_s"].to_numpy(dtype=np.float64)))
    rows = np.asarray(rows, dtype=np.int64)
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    n_out = requests["num_output_tokens"].to_numpy(dtype=np.int64)
    prefill = np.broadcast_to(np.asarray(prefill_deadline_s, dtype=np.float64), rows.shape)
    decode_ns = int(round(decode_deadline_s * NS_PER_S))
    missed = np.zeros(rows.size, dtype=np.int64)
    total = np.zeros(rows.size, dtype=np.int64)
    min_dl = np.zeros(rows.size)
    min_lo = np.zeros(rows.size)
    flat = flat_ends if flat_ends is not None else _flat_ends(timeline)
    # sort by length so each chunk pads little
    order = np.argsort(n_out[rows], kind="stable")
    start = 0
    while start < rows.size:
        stop, budget = start, 0
        while stop < rows.size and (stop == start or budget + n_out[rows[order[stop]]] * (stop - start + 1) <= _TOKENS_PER_CHUNK):
            budget += n_out[rows[order[stop]]]
            stop += 1
        sel = order[start:stop]
        r = rows[sel]
        mat, ntok = _token_matrix(timeline, r, arrival[r], flat)
        pre_ns = np.rint(prefill[sel] * NS_PER_S).astype(np.int64)
        mi, to = _fixed_deadline_rows(mat, ntok, pre_ns, decode_ns)
        missed[sel], total[sel] = mi, to
        rel = mat - mat[:, :1]  # relative to the first token (TTFT ignored)
        if min_deadline_passes is None:
            min_dl[sel] = min_decode_deadlines_rows(rel, ntok, target)
        else:
            min_lo[sel], min_dl[sel] = min_decode_deadlines_rows(rel, ntok, target, max_steps=min_deadline_passes,
                                                                 bounds=True)
        start = stop
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.where(total > 0, 1.0 - missed / np.maximum(total, 1), 1.0)
    cols = {"row": rows, "fluidity_missed": missed, "fluidity_total": total, "fluidity_index": index}
    if min_deadline_passes is None:
        cols["min_decode_deadline_s"] = min_dl
    else:
        cols["min_decode_deadline_lo_s"], cols["min_decode_deadline_hi_s"] = min_lo, min_dl
    return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- summary
def _col(df: pd.DataFrame, name: str, default: float = np.nan) -> np.ndarray:
    if name in df.columns:
        return df[name].to_numpy()
    return np.full(len(df), default)


def _fnum(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _request_block(req: pd.DataFrame, rows: np.ndarray, timeline: TokenTimeline | None,
                   percentiles: Sequence[float], duration: float | None) -> dict[str, Any]:
    """Throughput and latency keys (vLLM names) of the completed requests ``rows``."""
    sub = req.iloc[rows]
    out: dict[str, Any] = {"completed": int(rows.size)}
    n_in = int(sub["num_prompt_tokens"].sum()) if rows.size else 0
    n_out = int(sub["num_output_tokens"].sum()) if rows.size else 0
    out["total_input_tokens"] = n_in
    out["total_output_tokens"] = n_out
    ok = duration is not None and duration > 0
    out["request_throughput"] = rows.size / duration if ok else None
    out["output_throughput"] = n_out / duration if ok else None
    out["total_token_throughput"] = (n_in + n_out) / duration if ok else None
    for name, col in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("e2el", "e2el_s")):
        vals = sub[col].to_numpy(dtype=np.float64)
        out.update(latency_stats(name, vals[np.isfinite(vals)], percentiles))
    if timeline is not None and timeline.runs is not None:
        v, c = itl_sample(timeline, rows)
        out.update(latency_stats("itl", v, percentiles, c))
    else:
        out.update(latency_stats("itl", np.zeros(0), percentiles))
    return out


def _order_latency_keys(block: dict[str, Any], percentiles: Sequence[float]) -> dict[str, Any]:
    """vLLM's key order: counts/throughputs, then per metric mean, median, std, percentiles."""
    head = ["completed", "duration", "total_input_tokens", "total_output_tokens", "request_throughput",
            "output_throughput", "total_token_throughput"]
    out = {k: block[k] for k in head if k in block}
    for m in LATENCY_METRICS:
        for s in ["mean", "median", "std"] + [percentile_key(p) for p in percentiles]:
            k = f"{s}_{m}_ms"
            if k in block:
                out[k] = block[k]
    out.update({k: v for k, v in block.items() if k not in out})
    return out


def _goodput_mask(sub: pd.DataFrame, thresholds_ms: dict[str, float]) -> np.ndarray:
    """vLLM ``--goodput``: a completed request is good iff each given metric ≤ its threshold (ms).
    As in vLLM, a request with one output token has TPOT 0 here."""
    good = np.ones(len(sub), dtype=bool)
    for name, limit_ms in thresholds_ms.items():
        vals = sub[f"{name}_s"].to_numpy(dtype=np.float64)
        if name == "tpot":
            vals = np.where(np.isfinite(vals), vals, 0.0)
        good &= vals <= limit_ms / 1000.0
    return good


# the iteration-log columns _iteration_block reads
_ITERATION_BLOCK_COLUMNS = ("num_seqs", "num_tokens", "time_s", "kv_usage", "prefill_time_s", "mfu", "mbu")


def _iteration_block(it: pd.DataFrame) -> dict[str, Any]:
    """Batch, KV-cache and utilisation keys from an iteration log (possibly one replica's)."""
    out: dict[str, Any] = {}
    if it is None or len(it) == 0:
        return {"num_iterations": 0, "mean_batch_size": None, "mean_batch_tokens": None,
                "mean_kv_cache_usage": None, "peak_kv_cache_usage": None, "mfu": None, "mbu": None,
                "prefill_mfu": None, "decode_mfu": None, "prefill_mbu": None, "decode_mbu": None,
                "busy_time_s": 0.0}
    # Column by column, each temporary freed before the next and no copy where nothing changes: at 1M
    # requests the log has ~7M rows and this block set the metrics stage's memory peak. asarray, not
    # astype: float columns are used as they are; the float copy of a count column is of its busy rows.
    time_s = np.asarray(_col(it, "time_s", 0.0), dtype=np.float64)
    busy = np.asarray(_col(it, "num_seqs", 0)) > 0
    out["num_iterations"] = int(busy.sum())
    for key, name in (("mean_batch_size", "num_seqs"), ("mean_batch_tokens", "num_tokens")):
        out[key] = float(np.asarray(_col(it, name, 0)[busy], dtype=np.float64).mean()) if busy.any() else None
    del busy
    kv = np.asarray(_col(it, "kv_usage", np.nan), dtype=np.float64)
    fin = np.isfinite(kv)
    if fin.all():  # the usual case: the selection would copy the same values
        out["mean_kv_cache_usage"] = _time_weighted(kv, time_s)
        out["peak_kv_cache_usage"] = float(kv.max())
    else:
        out["mean_kv_cache_usage"] = _time_weighted(kv[fin], time_s[fin]) if fin.any() else None
        out["peak_kv_cache_usage"] = float(kv[fin].max()) if fin.any() else None
    del kv, fin
    prefill_t = np.clip(np.asarray(_col(it, "prefill_time_s", 0.0), dtype=np.float64), 0, None)
    np.minimum(prefill_t, time_s, out=prefill_t)
    decode_t = time_s - prefill_t
    for name in ("mfu", "mbu"):
        x = np.asarray(_col(it, name, np.nan), dtype=np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            x = np.where(finite, x, 0.0)
        del finite
        out[name] = _time_weighted(x, time_s)
        out[f"prefill_{name}"] = _time_weighted(x, prefill_t)
        out[f"decode_{name}"] = _time_weighted(x, decode_t)
    out["busy_time_s"] = float(time_s.sum())
    return out


def _deadlines(slo: Any, prefill_time_fn: Callable[[int], float] | None, prompt_tokens: np.ndarray
               ) -> tuple[np.ndarray, float, float, float, dict[str, Any]]:
    """Fluidity deadlines for the measured requests: (D_p per request, D_d, target, percentile, info)."""
    fl = getattr(slo, "fluidity", None) if slo is not None else None
    decode = DEFAULT_DECODE_DEADLINE_S
    target, pct = DEFAULT_FLUIDITY_TARGET, DEFAULT_FLUIDITY_PERCENTILE
    info: dict[str, Any] = {}
    if fl is not None:
        decode = fl.decode_deadline_ms / 1000.0
        target, pct = fl.target, fl.percentile
    if fl is not None and fl.prefill_slack_ms is not None:
        slack = fl.prefill_slack_ms / 1000.0
        if prefill_time_fn is None:
            info["fluidity_note"] = ("no cost model to predict prefill times: prefill deadline = slack only")
            pre = np.full(prompt_tokens.shape, slack)
        else:
            cache: dict[int, float] = {}
            pre = np.empty(prompt_tokens.shape)
            for i, n in enumerate(prompt_tokens.tolist()):
                if n not in cache:
                    cache[n] = float(prefill_time_fn(int(n)))
                pre[i] = cache[n] + slack
        info["fluidity_prefill_slack_ms"] = fl.prefill_slack_ms
    else:
        d = (fl.prefill_deadline_ms / 1000.0 if fl is not None and fl.prefill_deadline_ms is not None
             else DEFAULT_PREFILL_DEADLINE_S)
        pre = np.full(prompt_tokens.shape, d)
        info["fluidity_prefill_deadline_ms"] = d * 1000.0
    info["fluidity_decode_deadline_ms"] = decode * 1000.0
    info["fluidity_target"] = target
    return pre, decode, target, pct, info


# Bisection passes that bracket every request's minimum decode deadline before the percentile's few
# undecided requests are solved exactly (more passes: fewer exact solves, each pass over every token)
_BOUND_PASSES = 2


def _fluidity_block(req: pd.DataFrame, timeline: TokenTimeline | None, rows: np.ndarray, slo: Any,
                    prefill_time_fn: Callable[[int], float] | None) -> tuple[dict[str, Any], pd.DataFrame | None]:
    prompt = req["num_prompt_tokens"].to_numpy(dtype=np.int64)[rows] if rows.size else np.zeros(0, np.int64)
    pre, decode, target, pct, info = _deadlines(slo, prefill_time_fn, prompt)
    out: dict[str, Any] = dict(info)
    out["fluidity_percentile"] = pct
    pk = percentile_key(pct)
    keys_pct = sorted({50.0, 90.0, 99.0, float(pct)})
    if timeline is None or timeline.runs is None or rows.size == 0:
        out.update({"mean_fluidity_index": None, "fluidity_attainment": None,
                    "fluid_token_generation_rate": None, f"{pk}_min_decode_deadline_ms": None})
        out.update({f"{percentile_key(p)}_fluidity_miss_rate": None for p in keys_pct})
        return out, None
    flat = _flat_ends(timeline)  # all replicas' end times, once for the bracketing and the exact pass
    fl = request_fluidity(req, timeline, rows, prefill_deadline_s=pre, decode_deadline_s=decode, target=target,
                          min_deadline_passes=_BOUND_PASSES, flat_ends=flat)
    idx = fl["fluidity_index"].to_numpy()
    miss = 1.0 - idx
    out["mean_fluidity_index"] = float(idx.mean())
    for p in keys_pct:
        out[f"{percentile_key(p)}_fluidity_miss_rate"] = float(np.percentile(miss, p))
    # attainment: share of requests with fluidity ≥ target (miss rate ≤ 1 − target, rational-safe)
    ok = fl["fluidity_missed"].to_numpy() <= (1.0 - target) * fl["fluidity_total"].to_numpy() + 1e-9
    out["fluidity_attainment"] = float(ok.mean())
    has_decode = req["num_output_tokens"].to_numpy(dtype=np.int64)[rows] > 1
    decode_rows = rows[has_decode]
    lo = fl["min_decode_deadline_lo_s"].to_numpy()[has_decode]
    hi = fl["min_decode_deadline_hi_s"].to_numpy()[has_decode]

    def exact(idx: np.ndarray) -> np.ndarray:  # exact minima of the rows the bounds leave undecided
        if idx.size == 0:
            return np.zeros(0)
        return request_fluidity(req, timeline, decode_rows[idx], decode_deadline_s=decode,
                                target=target, flat_ends=flat)["min_decode_deadline_s"].to_numpy()

    # exactly np.percentile of the per-request minima, computing few of them exactly
    p_min = percentile_from_bounds(lo, hi, pct, exact) if lo.size else None
    out[f"{pk}_min_decode_deadline_ms"] = None if p_min is None else p_min * 1000.0
    out["fluid_token_generation_rate"] = None if not p_min or p_min <= 0 else 1.0 / p_min
    return out, fl


def _measured_rows(req: pd.DataFrame, warmup_s: float) -> np.ndarray:
    arrival = req["arrival_s"].to_numpy(dtype=np.float64)
    return np.flatnonzero(arrival >= warmup_s)


def _duration(req: pd.DataFrame, measured: np.ndarray, completed: np.ndarray) -> float | None:
    """Last completion − first arrival over the measured requests (SEMANTICS.md §1)."""
    if completed.size == 0 or measured.size == 0:
        return None
    first = float(req["arrival_s"].to_numpy(dtype=np.float64)[measured].min())
    last = float(req["finish_s"].to_numpy(dtype=np.float64)[completed].max())
    return last - first


def summarize(requests: pd.DataFrame, iterations: pd.DataFrame | None, timeline: TokenTimeline | None, *,
              warmup_s: float = 0.0, slo: Any = None, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
              cost: Any = None, hardware: Any = None, num_gpus: int = 1,
              prefill_time_fn: Callable[[int], float] | None = None, model_name: str = "",
              end_s: float | None = None, backlog: Any = None, horizon_reached: bool | None = None,
              by_class: bool = True, by_replica: bool = True) -> dict[str, Any]:
    """The run's summary dict (docs/metrics.md defines every key).

    - ``requests``: the per-request table (``sim.engine.request.RECORD_COLUMNS``); row i ↔ timeline row i;
    - ``iterations``: the iteration log (``sim.engine.simulator.ITERATION_COLUMNS``);
    - ``timeline``: token timestamps (ITL and fluidity);
    - ``warmup_s``: requests arriving earlier are left out of every latency, throughput and SLO figure;
    - ``slo``: a :class:`sim.measure.slo.SLOConfig` (or its dict); adds goodput, fluidity deadlines and the
      ``slo`` verdict; ``model_name`` resolves MLPerf presets;
    - ``cost``/``hardware``/``num_gpus``: $/hour and $/token (``sim.measure.pricing``);
    - ``prefill_time_fn(num_prompt_tokens) -> s``: the cost model's prefill prediction (Metron's
      per-request prefill deadline, ``slo.fluidity.prefill_slack_ms``).
    """

    slo_resolved = resolve_slo(slo, model_name)
    percentiles = sorted({float(p) for p in percentiles} |
                         (set(slo_resolved.required_percentiles()) if slo_resolved is not None else set()))
    percentiles = [int(p) if float(p).is_integer() else p for p in percentiles]

    req = requests.reset_index(drop=True)
    status = req["status"].astype(str).to_numpy() if len(req) else np.zeros(0, dtype=object)
    measured = _measured_rows(req, warmup_s) if len(req) else np.zeros(0, dtype=np.int64)
    m_status = status[measured]
    completed = measured[m_status == "completed"]
    rejected = measured[m_status == "rejected"]
    unfinished = measured[m_status == "unfinished"]
    duration = _duration(req, measured, completed)

    summary: dict[str, Any] = {"duration": duration}
    summary.update(_request_block(req, completed, timeline, percentiles, duration))
    summary = _order_latency_keys(summary, percentiles)

    # requests that did not complete
    summary["num_requests"] = int(measured.size)
    summary["rejected"] = int(rejected.size)
    reasons = req["reject_reason"].iloc[rejected].astype(str) if rejected.size else pd.Series([], dtype=str)
    summary["rejected_by_reason"] = {str(k): int(v) for k, v in reasons.value_counts().items()}
    summary["unfinished"] = int(unfinished.size)
    summary["rejected_fraction"] = rejected.size / measured.size if measured.size else 0.0
    summary["unfinished_fraction"] = unfinished.size / measured.size if measured.size else 0.0
    summary["backlog"] = backlog if backlog is not None else {"unfinished": int(unfinished.size)}
    summary["horizon_reached"] = bool(horizon_reached) if horizon_reached is not None else bool(unfinished.size)
    summary["end_s"] = _fnum(end_s)
    summary["warmup_s"] = float(warmup_s)
    summary["num_warmup_requests"] = int(len(req) - measured.size)
    summary["num_preemptions"] = int(np.nansum(_col(req, "num_preemptions", 0)[measured])) if measured.size else 0

    # queueing and the TTFT decomposition (means over completed requests)
    sub = req.iloc[completed]
    queue = sub["queue_s"].to_numpy(dtype=np.float64) if completed.size else np.zeros(0)
    qs = weighted_stats(queue[np.isfinite(queue)], None, [99])
    summary["mean_queue_ms"] = qs["mean"] * 1000 if qs else None
    summary["median_queue_ms"] = qs["median"] * 1000 if qs else None
    summary["p99_queue_ms"] = qs["p99"] * 1000 if qs else None
    if completed.size:
        ttft = sub["ttft_s"].to_numpy(dtype=np.float64)
        pre = sub["prefill_compute_s"].to_numpy(dtype=np.float64)
        q = np.where(np.isfinite(queue), queue, 0.0)
        summary["mean_ttft_queue_ms"] = float(q.mean() * 1000)
        summary["mean_ttft_prefill_compute_ms"] = float(np.nan_to_num(pre).mean() * 1000)
        # the rest of TTFT: waits between prefill chunks, preempted time (≥ 0 up to float rounding)
        summary["mean_ttft_other_ms"] = float(np.maximum(ttft - q - np.nan_to_num(pre), 0.0).mean() * 1000)
    else:
        summary["mean_ttft_queue_ms"] = summary["mean_ttft_prefill_compute_ms"] = summary["mean_ttft_other_ms"] = None

    prompt_tok = float(_col(req, "num_prompt_tokens", 0)[completed].sum()) if completed.size else 0.0
    cached_tok = float(np.nansum(_col(req, "num_cached_tokens", 0)[completed])) if completed.size else 0.0
    summary["prefix_cache_hit_rate"] = cached_tok / prompt_tok if prompt_tok > 0 else None

    it_block = _iteration_block(iterations)
    summary.update(it_block)
    replicas_total = len(timeline.iteration_end_s) if timeline is not None and timeline.iteration_end_s else 1
    span = end_s if end_s else (float(iterations["end_s"].max()) if iterations is not None and len(iterations) else None)
    summary["busy_fraction"] = (it_block["busy_time_s"] / (span * replicas_total)
                                if span and it_block["busy_time_s"] else None)

    # fluidity (Metron)
    fl_block, fl_df = _fluidity_block(req, timeline, completed, slo_resolved, prefill_time_fn)
    summary.update(fl_block)

    # goodput (vLLM --goodput) and SLO attainment
    thresholds = slo_resolved.goodput_thresholds_ms() if slo_resolved is not None else {}
    if thresholds:
        good = _goodput_mask(sub, thresholds)
        n_good = int(good.sum())
        summary["goodput_completed"] = n_good
        summary["request_goodput"] = n_good / duration if duration else None
        summary["slo_attainment"] = n_good / measured.size if measured.size else None
    else:
        summary["request_goodput"] = None

    # cost
    summary.update(cost_summary(summary, num_gpus=num_gpus, hardware=hardware, cost=cost, model_name=model_name))

    # breakdowns
    if by_class and "class" in req.columns and measured.size:
        summary["per_class"] = _per_group(req, measured, "class", timeline, percentiles, duration,
                                          thresholds, fl_df)
    if by_replica and "replica" in req.columns and measured.size:
        per_rep = _per_group(req, measured, "replica", timeline, percentiles, duration, thresholds, fl_df)
        if iterations is not None and len(iterations) and "replica" in iterations.columns:
            # one grouping pass over the iteration log (row order kept), not one full scan per replica
            it_rows = _group_rows(iterations["replica"])
            no_rows = np.zeros(0, dtype=np.int64)
            # only the columns _iteration_block reads are taken per replica, and a replica owning the
            # whole log reads it in place (no copy of a 7M-row log)
            it_cols = iterations[[c for c in _ITERATION_BLOCK_COLUMNS if c in iterations.columns]]
            for rep, block in per_rep.items():
                rows = it_rows.get(rep, no_rows)
                ib = _iteration_block(it_cols if rows.size == len(it_cols) else it_cols.iloc[rows])
                block.update({k: ib[k] for k in ("mean_batch_size", "mean_kv_cache_usage", "peak_kv_cache_usage",
                                                 "mfu", "mbu", "busy_time_s")})
                block["busy_fraction"] = ib["busy_time_s"] / span if span else None
        summary["per_replica"] = per_rep

    if slo_resolved is not None:
        summary["slo"] = evaluate_slo(summary, slo_resolved)
    return summary


def _per_group(req: pd.DataFrame, measured: np.ndarray, col: str, timeline: TokenTimeline | None,
               percentiles: Sequence[float], duration: float | None, thresholds: dict[str, float],
               fl_df: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Per-class or per-replica blocks: counts, throughput, latency stats, goodput, fluidity."""
    out: dict[str, dict[str, Any]] = {}
    labels = req[col].astype(str).to_numpy()
    status = req["status"].astype(str).to_numpy()
    fl_by_row = None
    if fl_df is not None:
        fl_by_row = pd.Series(fl_df["fluidity_index"].to_numpy(), index=fl_df["row"].to_numpy())
    for label, rows in _group_rows(labels[measured], measured).items():
        comp = rows[status[rows] == "completed"]
        block = _order_latency_keys(_request_block(req, comp, timeline, percentiles, duration), percentiles)
        block["num_requests"] = int(rows.size)
        block["rejected"] = int((status[rows] == "rejected").sum())
        block["unfinished"] = int((status[rows] == "unfinished").sum())
        if thresholds:
            good = int(_goodput_mask(req.iloc[comp], thresholds).sum())
            block["request_goodput"] = good / duration if duration else None
            block["slo_attainment"] = good / rows.size if rows.size else None
        if fl_by_row is not None and comp.size:
            idx = fl_by_row.reindex(comp).to_numpy(dtype=np.float64)
            idx = idx[np.isfinite(idx)]
            block["mean_fluidity_index"] = float(idx.mean()) if idx.size else None
            block["p99_fluidity_miss_rate"] = float(np.percentile(1 - idx, 99)) if idx.size else None
        out[label] = block
    return out


def _group_rows(labels: pd.Series | np.ndarray, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``{str(label): rows with that label}`` in sorted label order, each group in its original order.

    One factorize and one stable argsort for all groups: the per-replica summary of a 64-replica run
    scanned the whole iteration log once per replica (O(replicas × iterations)). Stability keeps each
    group's rows in log order, so every sum over a group adds the same floats in the same order.
    ``rows`` maps positions in ``labels`` to the row numbers returned (default: the positions).
    """
    codes, uniques = pd.factorize(pd.Series(labels), use_na_sentinel=False)
    names = pd.Series(uniques).astype(str).to_numpy()
    order = np.argsort(codes, kind="stable")
    if rows is not None:
        order = np.asarray(rows)[order]
    groups = np.split(order, np.cumsum(np.bincount(codes, minlength=names.size))[:-1])
    out: dict[str, list[np.ndarray]] = {}
    for name, g in zip(names, groups):
        out.setdefault(str(name), []).append(g)
    # two raw values with one string form (1 and "1") form one group, rows back in original order
    return {k: (v[0] if len(v) == 1 else np.sort(np.concatenate(v))) for k, v in sorted(out.items())}


def spec_decode_metrics(counters: dict[str, Any]) -> dict[str, Any]:
    """vLLM's speculative-decoding metrics from the engine's counters (``EngineOutput.stats["spec_decode"]``;
    ``vllm/v1/spec_decode/metrics.py``), over the whole run:

    - ``mean_acceptance_length`` = 1 + accepted / drafts (tokens a verifying request gets per step);
    - ``draft_acceptance_rate`` = accepted / draft tokens;
    - ``acceptance_rate_per_position[i]`` = drafts whose position i+1 was accepted / drafts.
    """
    drafts, tokens = int(counters["num_drafts"]), int(counters["num_draft_tokens"])
    accepted = int(counters["num_accepted_tokens"])
    per_pos = [int(x) for x in counters["num_accepted_tokens_per_pos"]]
    return {
        "num_speculative_tokens": int(counters["num_speculative_tokens"]),
        "num_drafts": drafts, "num_draft_tokens": tokens, "num_accepted_tokens": accepted,
        "mean_acceptance_length": 1.0 + accepted / drafts if drafts else None,
        "draft_acceptance_rate": accepted / tokens if tokens else None,
        "acceptance_rate_per_position": [x / drafts for x in per_pos] if drafts else None,
    }
