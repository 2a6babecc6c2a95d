"""MLPerf Inference scenarios: presets, latency limits and run-validity rules (SEMANTICS.md §5).

- Server: Poisson arrivals; valid when P99 TTFT and P99 TPOT are within the model's limits, the run
  lasts ≥ 600 s, and LoadGen's early-stopping check passes for both.
- Offline: every sample at t = 0; the metric is throughput (output tokens/s).
- SingleStream: one query at a time; the metric is the P90 latency (with LoadGen's early-stopping
  estimate).

Percentiles follow LoadGen: ``sorted[floor(n·p)]`` (no interpolation). Early stopping follows
LoadGen's ``early_stopping.cc``: with ``t`` over-limit queries, the run needs at least ``h + t``
queries, where ``h`` is the smallest count with ``BetaRegularized(p − d; h, t + 1) < 1 − c``
(the probability of seeing ≤ t over-limit queries among h + t if the true over-limit rate were
1 − p + d); p = 0.99, tolerance d = 0, confidence c = 0.99. For t = 0 that is 459 queries.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from scipy import special

from sim.errors import suggest

# P99 TTFT / TPOT limits in milliseconds, keyed by (MLPerf model key, variant).
MLPERF_LIMITS_MS: dict[tuple[str, str], dict[str, float]] = {
    ("llama2-70b", "server"): {"ttft_ms": 2000.0, "tpot_ms": 200.0},
    ("llama2-70b", "interactive"): {"ttft_ms": 450.0, "tpot_ms": 40.0},
    ("mixtral-8x7b", "server"): {"ttft_ms": 2000.0, "tpot_ms": 200.0},
    ("llama3.1-405b", "server"): {"ttft_ms": 6000.0, "tpot_ms": 175.0},
    ("llama3.1-405b", "interactive"): {"ttft_ms": 4500.0, "tpot_ms": 80.0},
    ("llama3.1-8b", "server"): {"ttft_ms": 2000.0, "tpot_ms": 100.0},
    ("llama3.1-8b", "interactive"): {"ttft_ms": 500.0, "tpot_ms": 30.0},
}

MLPERF_MIN_DURATION_S = 600.0
MLPERF_CONFIDENCE = 0.99
MLPERF_TOLERANCE = 0.0

# Scenario presets used by ``workload.scenario``.
SCENARIOS: dict[str, dict[str, Any]] = {
    "mlperf-server": {"process": "poisson", "variant": "server", "default_duration_s": MLPERF_MIN_DURATION_S},
    "mlperf-server-interactive": {"process": "poisson", "variant": "interactive", "default_duration_s": MLPERF_MIN_DURATION_S},
    "mlperf-offline": {"process": "offline", "variant": "offline"},
    "mlperf-singlestream": {"process": "single-stream", "variant": "singlestream", "default_duration_s": MLPERF_MIN_DURATION_S},
}
_SCENARIO_ALIASES = {
    "server": "mlperf-server", "mlperf-interactive": "mlperf-server-interactive", "interactive": "mlperf-server-interactive",
    "mlperf-server_interactive": "mlperf-server-interactive", "offline": "mlperf-offline",
    "singlestream": "mlperf-singlestream", "single-stream": "mlperf-singlestream", "mlperf-single-stream": "mlperf-singlestream",
}

# Substrings of a normalised model name (lower case, alphanumerics only) -> MLPerf model key.
_MODEL_KEYS: tuple[tuple[str, str], ...] = (
    ("llama270b", "llama2-70b"),
    ("llama31405b", "llama3.1-405b"),
    ("llama318b", "llama3.1-8b"),
    ("mixtral8x7b", "mixtral-8x7b"),
)


def canonical_scenario(name: str) -> str:
    """The preset name for ``name`` (or an alias); ValueError with suggestions if unknown."""
    key = name.strip().lower().replace("_", "-")
    if key in SCENARIOS:
        return key
    if key in _SCENARIO_ALIASES:
        return _SCENARIO_ALIASES[key]
    choices = sorted(SCENARIOS)
    raise ValueError(f"unknown scenario '{name}'{suggest(name, choices)}; known: {', '.join(choices)}")


def mlperf_model_key(model_name: str | None) -> str | None:
    """Map a catalog or HF model name (``llama-2-70b``, ``meta-llama/Llama-3.1-8B-Instruct``,
    ``mixtral-8x7b``) to its MLPerf key (``llama2-70b`` …); None if MLPerf has no LLM benchmark for it."""
    if not model_name:
        return None
    norm = re.sub(r"[^a-z0-9]", "", model_name.lower())
    for needle, key in _MODEL_KEYS:
        if needle in norm:
            return key
    return None


def mlperf_limits(model_name: str | None, variant: str = "server") -> dict[str, float] | None:
    """``{"ttft_ms", "tpot_ms"}`` P99 limits for a model and variant (server/interactive), or None."""
    key = mlperf_model_key(model_name)
    if key is None:
        return None
    limits = MLPERF_LIMITS_MS.get((key, variant))
    return dict(limits) if limits is not None else None


def mlperf_percentile(values: np.ndarray, p: float) -> float:
    """LoadGen's percentile: ``sorted[floor(n·p)]`` (NaN for an empty array)."""
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0:
        return float("nan")
    return float(v[min(int(math.floor(len(v) * p)), len(v) - 1)])


def _odds(h: int, t: int, p: float, d: float) -> float:
    """P(≤ t over-limit queries among h + t) when each is over the limit with probability 1 − p + d."""
    return float(special.betainc(h, t + 1, p - d)) if h > 0 else 1.0


def early_stopping_min_passing(overlatency: int, percentile: float = 0.99,
                               tolerance: float = MLPERF_TOLERANCE, confidence: float = MLPERF_CONFIDENCE) -> int:
    """Smallest number ``h`` of within-limit queries such that, with ``overlatency`` over-limit ones,
    LoadGen's early stopping passes (``odds(h, t) < 1 − confidence``)."""
    t = int(overlatency)
    if t < 0:
        raise ValueError("overlatency must be ≥ 0")
    target = 1.0 - confidence
    lo, hi = 1, max(2, int(math.ceil(math.log(target) / math.log(percentile - tolerance))))
    while _odds(hi, t, percentile, tolerance) >= target:  # exponential search for an upper bound
        lo, hi = hi, hi * 2
    while lo < hi:  # odds is decreasing in h
        mid = (lo + hi) // 2
        if _odds(mid, t, percentile, tolerance) < target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def early_stopping_min_queries(overlatency: int, percentile: float = 0.99,
                               tolerance: float = MLPERF_TOLERANCE, confidence: float = MLPERF_CONFIDENCE) -> int:
    """Total queries a run with ``overlatency`` over-limit queries needs to pass early stopping
    (``h + t``; 459 for t = 0 at the 99th percentile)."""
    return early_stopping_min_passing(overlatency, percentile, tolerance, confidence) + int(overlatency)


def early_stopping_estimate(latencies: np.ndarray, percentile: float = 0.90,
                            tolerance: float = MLPERF_TOLERANCE, confidence: float = MLPERF_CONFIDENCE) -> tuple[float, int]:
    """LoadGen SingleStream early-stopping percentile estimate: the largest ``t`` whose minimum run
    length fits in the ``n`` queries; the estimate is ``sorted[n − t]``. Returns ``(estimate, min_queries)``
    (NaN estimate when ``n`` is below the minimum ``h(1) + 1``)."""
    v = np.sort(np.asarray(latencies, dtype=float))
    n = len(v)
    h_min = early_stopping_min_passing(1, percentile, tolerance, confidence)
    if n < h_min + 1:
        return float("nan"), h_min + 1
    t = 1
    for i in range(2, n + 1):
        if n < early_stopping_min_passing(i, percentile, tolerance, confidence) + i:
            t = i - 1
            break
    else:
        t = n
    return float(v[max(n - t, 0)]), h_min + 1


def _latencies(df: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query TTFT, TPOT, E2E latency (s) and completed mask; unfinished/rejected queries count as
    infinitely late; a completed single-token answer has TPOT 0."""
    status = np.asarray(df["status"]).astype(str)
    done = status == "completed"
    ttft = np.where(done, np.asarray(df["ttft_s"], dtype=float), np.inf)
    tpot = np.asarray(df["tpot_s"], dtype=float)
    tpot = np.where(done, np.nan_to_num(tpot, nan=0.0), np.inf)
    e2el = np.where(done, np.asarray(df["e2el_s"], dtype=float), np.inf)
    return ttft, tpot, e2el, done


def _run_duration(df: Any, duration_s: float | None, scheduled: bool) -> float:
    """``duration_s`` if given; else the scheduled span (last arrival, runs start at t = 0) for the
    latency scenarios (LoadGen's min-duration rule), or last finish − first arrival for Offline."""
    if duration_s is not None:
        return float(duration_s)
    if len(df) == 0:
        return 0.0
    arr = np.asarray(df["arrival_s"], dtype=float)
    if scheduled:
        return float(np.nanmax(arr))
    fin = np.asarray(df["finish_s"], dtype=float)
    end = np.nanmax(fin) if np.isfinite(fin).any() else np.nanmax(arr)
    return float(end - np.nanmin(arr))


def mlperf_validity(scenario: str, model_name: str | None, requests_df: Any, duration_s: float | None = None) -> dict[str, Any]:
    """Check a finished run against MLPerf's rules for ``scenario``.

    ``requests_df`` has the columns of ``sim.engine.request.RECORD_COLUMNS``. ``duration_s`` is the run's
    length; by default the time of the last scheduled arrival (Server, SingleStream: LoadGen's
    min-duration rule) or last finish − first arrival (Offline throughput).
    Returns a dict with ``valid``, ``failed_rules`` (list), ``reason`` (first failure or ""), the
    metric of the scenario and the numbers each rule used.
    """
    name = canonical_scenario(scenario)
    variant = SCENARIOS[name]["variant"]
    n = int(len(requests_df))
    ttft, tpot, e2el, done = _latencies(requests_df) if n else (np.empty(0),) * 3 + (np.empty(0, bool),)  # type: ignore[assignment]
    duration = _run_duration(requests_df, duration_s, scheduled=variant != "offline")
    out: dict[str, Any] = {"scenario": name, "model_key": mlperf_model_key(model_name), "num_queries": n,
                           "num_completed": int(np.sum(done)), "duration_s": duration}
    failed: list[str] = []

    if variant in ("server", "interactive"):
        limits = mlperf_limits(model_name, variant)
        out["min_duration_s"] = MLPERF_MIN_DURATION_S
        if limits is None:
            failed.append(f"no MLPerf {variant} latency limits for model '{model_name}'")
            limits = {"ttft_ms": float("nan"), "tpot_ms": float("nan")}
        ttft_lim, tpot_lim = limits["ttft_ms"] / 1e3, limits["tpot_ms"] / 1e3
        p99_ttft, p99_tpot = mlperf_percentile(ttft, 0.99), mlperf_percentile(tpot, 0.99)
        over_ttft, over_tpot = int(np.sum(ttft > ttft_lim)), int(np.sum(tpot > tpot_lim))
        need = max(early_stopping_min_queries(over_ttft), early_stopping_min_queries(over_tpot))
        out.update({
            "ttft_limit_ms": limits["ttft_ms"], "tpot_limit_ms": limits["tpot_ms"],
            "p99_ttft_ms": p99_ttft * 1e3, "p99_tpot_ms": p99_tpot * 1e3,
            "overlatency_ttft": over_ttft, "overlatency_tpot": over_tpot,
            "early_stopping_min_queries": need,
            "completed_qps": float(np.sum(done)) / duration if duration > 0 else float("nan"),
        })
        if not p99_ttft <= ttft_lim:
            failed.append(f"P99 TTFT {p99_ttft * 1e3:.1f} ms > limit {limits['ttft_ms']:.0f} ms")
        if not p99_tpot <= tpot_lim:
            failed.append(f"P99 TPOT {p99_tpot * 1e3:.1f} ms > limit {limits['tpot_ms']:.0f} ms")
        if duration < MLPERF_MIN_DURATION_S:
            failed.append(f"run lasted {duration:.1f} s < {MLPERF_MIN_DURATION_S:.0f} s minimum")
        if n < need:
            failed.append(f"early stopping: {n} queries < {need} needed with {max(over_ttft, over_tpot)} over-limit")
    elif variant == "offline":
        out_tokens = float(np.sum(np.asarray(requests_df["num_output_tokens"], dtype=float)[done])) if n else 0.0
        out["tokens_per_s"] = out_tokens / duration if duration > 0 else float("nan")
        out["samples_per_s"] = float(np.sum(done)) / duration if duration > 0 else float("nan")
        if n == 0 or not done.all():
            failed.append(f"{n - int(np.sum(done))} of {n} samples did not complete")
    else:  # singlestream
        estimate, need = early_stopping_estimate(e2el, 0.90)
        out.update({"p90_latency_ms": mlperf_percentile(e2el, 0.90) * 1e3,
                    "early_stopping_p90_latency_ms": estimate * 1e3, "early_stopping_min_queries": need,
                    "min_duration_s": MLPERF_MIN_DURATION_S})
        if n < need:
            failed.append(f"early stopping: {n} queries < {need} needed")
        if duration < MLPERF_MIN_DURATION_S:
            failed.append(f"run lasted {duration:.1f} s < {MLPERF_MIN_DURATION_S:.0f} s minimum")
    out["valid"] = not failed
    out["failed_rules"] = failed
    out["reason"] = failed[0] if failed else ""
    return out
