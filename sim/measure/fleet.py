"""Fleet metrics of an autoscaled run: replicas and GPUs over time, GPU-hours and $ per day, SLO per
interval, and the requests that waited on a cold start (docs/metrics.md#fleet).

Inputs are the engine's fleet log (:meth:`sim.engine.autoscaler.Autoscaler.output`: one *unit* per
replica with the times it was asked for, took traffic, was drained and released; one *tick* per
controller decision) and the per-request table. Everything is exact on the step functions the unit
lives define — no sampling:

- ``ready(t)``: replicas taking traffic (ready ≤ t < drain); ``billed(t)``: replicas paid for
  (requested ≤ t < released, or the end of the run) — starting, sleeping and draining ones included;
- ``gpu_hours = gpus_per_replica · ∫ billed(t) dt / 3600`` over ``[0, end_s]``;
  ``usd_per_day = gpu_hours · price · 86400 / end_s``;
- reserved + on-demand: ``R`` GPUs reserved for the whole span at ``reserved_gpu_hour_usd`` and the
  rest on demand, ``cost(R) = R·p_r·T + p_o·∫ max(g(t) − R, 0) dt``; with no ``reserved_gpus`` given,
  the R that minimises it (over every level g takes);
- per interval ``[k·Δ, (k+1)·Δ)`` (Δ = ``interval_s``): arrivals, time-mean ready/billed replicas and
  GPUs, and over the requests *arriving* in it (warm-up excluded): SLO attainment and latency
  percentiles. A request that did not complete counts as infinitely late;
- a request *saw a cold start* when it arrived while a replica the controller had asked for was not
  yet taking traffic (asked ≤ arrival < ready).

Per-request SLO for attainment: the ``slo.goodput`` thresholds when given, else every latency bound's
limit applied to each request (e.g. ``ttft_ms: {p99: 2000}`` → TTFT ≤ 2 s).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sim.measure.slo import resolve_slo

__all__ = [
    "INTERVAL_COLUMNS",
    "billed_levels",
    "fleet_frames",
    "fleet_summary",
    "request_attainment",
    "request_thresholds_ms",
    "reserved_cost",
]

INTERVAL_COLUMNS = ("start_s", "end_s", "arrivals", "arrival_rate", "mean_replicas_ready", "mean_replicas_billed",
                    "mean_gpus", "starting", "desired", "num_requests", "completed", "slo_attainment",
                    "p50_ttft_ms", "p99_ttft_ms", "p99_tpot_ms", "p99_e2el_ms", "cold_start_requests")


def request_thresholds_ms(slo: Any, model_name: str = "") -> dict[str, float]:
    """Per-request limits (ms) a request must meet to count as good (module docstring)."""
    resolved = resolve_slo(slo, model_name)
    if resolved is None:
        return {}
    good = resolved.goodput_thresholds_ms()
    if good:
        return good
    out = {}
    for metric, bounds in resolved.latency_bounds().items():
        if metric in ("ttft", "tpot", "e2el"):
            out[metric] = min(bounds.values())
    return out


def _good(requests: pd.DataFrame, thresholds: dict[str, float]) -> np.ndarray:
    """Per request: completed and within every threshold (a NaN TPOT — one output token — passes)."""
    good = requests["status"].astype(str).to_numpy() == "completed"
    for m, limit in thresholds.items():
        good &= ~(requests[f"{m}_s"].to_numpy(dtype=np.float64) * 1000.0 > limit)
    return good


def request_attainment(requests: pd.DataFrame, slo: Any, model_name: str = "", warmup_s: float = 0.0) -> float | None:
    """Share of the measured requests that are good under :func:`request_thresholds_ms` (None without
    an SLO or requests)."""
    thresholds = request_thresholds_ms(slo, model_name)
    measured = requests[requests["arrival_s"].to_numpy(dtype=np.float64) >= warmup_s]
    if not thresholds or not len(measured):
        return None
    return float(_good(measured, thresholds).mean())


def _overlap(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Seconds each interval [a_i, b_i) overlaps each bin [lo_j, hi_j): shape (units, bins)."""
    return np.clip(np.minimum(b[:, None], hi[None, :]) - np.maximum(a[:, None], lo[None, :]), 0.0, None)


def _lives(units: pd.DataFrame, end_s: float) -> tuple[np.ndarray, ...]:
    """(ready_from, ready_to, billed_from, billed_to) per unit, NaN ends closed at ``end_s``."""
    ready_a = units["ready_s"].to_numpy(dtype=np.float64)
    ready_b = np.fmin(units["drain_s"].to_numpy(dtype=np.float64), units["released_s"].to_numpy(dtype=np.float64))
    ready_b = np.where(np.isnan(ready_b), end_s, ready_b)
    never = np.isnan(ready_a)
    ready_a = np.where(never, 0.0, ready_a)
    ready_b = np.where(never, 0.0, ready_b)
    bill_a = units["requested_s"].to_numpy(dtype=np.float64)
    bill_b = units["released_s"].to_numpy(dtype=np.float64)
    bill_b = np.where(np.isnan(bill_b), end_s, np.minimum(bill_b, end_s))
    return ready_a, ready_b, bill_a, bill_b


def billed_levels(units: pd.DataFrame, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The billed-replica step function on [0, end_s]: (levels, seconds at each level)."""
    _, _, a, b = _lives(units, end_s)
    edges = np.concatenate([a, b, [0.0, end_s]])
    delta = np.concatenate([np.ones_like(a), -np.ones_like(b), [0.0, 0.0]])
    order = np.argsort(edges, kind="stable")
    t, d = edges[order], delta[order]
    level = np.cumsum(d)
    dur = np.diff(t)
    return level[:-1], dur


def reserved_cost(levels_gpus: np.ndarray, dur_s: np.ndarray, on_demand: float, reserved: float,
                  reserved_gpus: int | None) -> dict[str, Any]:
    """Cost of R reserved GPUs for the whole span plus on-demand above R (module docstring)."""
    span_h = float(dur_s.sum()) / 3600.0
    candidates = [int(reserved_gpus)] if reserved_gpus is not None else sorted({0, *map(int, levels_gpus)})

    def cost(r: int) -> float:
        return r * reserved * span_h + on_demand * float((np.maximum(levels_gpus - r, 0.0) * dur_s).sum()) / 3600.0

    best = min(candidates, key=lambda r: (cost(r), r))
    total = cost(best)
    return {"reserved_gpus": best, "reserved_gpus_chosen": reserved_gpus is None,
            "usd": total, "usd_per_day": total * 24.0 / span_h if span_h else None,
            "on_demand_gpu_hours": float((np.maximum(levels_gpus - best, 0.0) * dur_s).sum()) / 3600.0}


def _cold_start_mask(arrival: np.ndarray, units: pd.DataFrame) -> np.ndarray:
    asked = units["asked_s"].to_numpy(dtype=np.float64)
    ready = units["ready_s"].to_numpy(dtype=np.float64)
    released = units["released_s"].to_numpy(dtype=np.float64)
    end = np.where(np.isnan(ready), released, ready)  # a cancelled start stops the wait
    keep = ~np.isnan(asked) & (units["kind"].isin(["cold", "warm"]).to_numpy()) & (np.nan_to_num(end, nan=np.inf) > asked)
    if not keep.any():
        return np.zeros(arrival.size, dtype=bool)
    a, b = asked[keep], np.nan_to_num(end[keep], nan=np.inf)
    # union of [a, b): an arrival is inside iff #starts ≤ t exceeds #ends ≤ t
    starts, ends = np.sort(a), np.sort(b)
    return np.searchsorted(starts, arrival, side="right") > np.searchsorted(ends, arrival, side="right")


def _percentile(x: np.ndarray, p: float) -> float:
    return float(np.percentile(x, p)) if x.size else math.nan


def fleet_frames(fleet: dict[str, Any], requests: pd.DataFrame, *, end_s: float, gpus_per_replica: int,
                 slo: Any = None, model_name: str = "", warmup_s: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(per-interval table with :data:`INTERVAL_COLUMNS`, unit table, per-request cold-start mask)."""
    units = pd.DataFrame(fleet["units"])
    ticks = pd.DataFrame(fleet["ticks"])
    interval = float(fleet["interval_s"])
    n_bins = max(1, int(math.ceil(end_s / interval - 1e-9)))
    lo = np.arange(n_bins, dtype=np.float64) * interval
    hi = np.minimum(lo + interval, end_s)
    width = np.maximum(hi - lo, 1e-12)
    ra, rb, ba, bb = _lives(units, end_s)
    ready = _overlap(ra, rb, lo, hi).sum(axis=0) / width
    billed = _overlap(ba, bb, lo, hi).sum(axis=0) / width
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    bin_of = np.minimum((arrival // interval).astype(np.int64), n_bins - 1)
    cold = _cold_start_mask(arrival, units)
    status = requests["status"].astype(str).to_numpy()
    measured = arrival >= warmup_s
    thresholds = request_thresholds_ms(slo, model_name)
    lat = {m: requests[f"{m}_s"].to_numpy(dtype=np.float64) * 1000.0 for m in ("ttft", "tpot", "e2el")}
    completed = status == "completed"
    good = _good(requests, thresholds)
    rows = []
    starting_at_end = np.zeros(n_bins)
    desired = np.full(n_bins, np.nan)
    if len(ticks):
        tk = np.minimum((ticks["time_s"].to_numpy() // interval).astype(np.int64) - 1, n_bins - 1)
        ok = tk >= 0
        starting_at_end[tk[ok]] = ticks["starting"].to_numpy()[ok]
        des = ticks["desired"].to_numpy(dtype=np.float64)
        desired[tk[ok]] = np.where(des[ok] >= 0, des[ok], np.nan)
    order = np.argsort(bin_of, kind="stable")
    bounds = np.searchsorted(bin_of[order], np.arange(n_bins + 1))
    for k in range(n_bins):
        idx = order[bounds[k]:bounds[k + 1]]
        m_idx = idx[measured[idx]]
        comp = m_idx[completed[m_idx]]
        ttft = np.where(completed[m_idx], lat["ttft"][m_idx], np.inf)
        rows.append({
            "start_s": lo[k], "end_s": hi[k], "arrivals": int(idx.size), "arrival_rate": idx.size / width[k],
            "mean_replicas_ready": ready[k], "mean_replicas_billed": billed[k],
            "mean_gpus": billed[k] * gpus_per_replica, "starting": int(starting_at_end[k]), "desired": desired[k],
            "num_requests": int(m_idx.size), "completed": int(comp.size),
            "slo_attainment": float(good[m_idx].mean()) if m_idx.size and thresholds else math.nan,
            "p50_ttft_ms": _percentile(ttft, 50), "p99_ttft_ms": _percentile(ttft, 99),
            "p99_tpot_ms": _percentile(lat["tpot"][comp][np.isfinite(lat["tpot"][comp])], 99),
            "p99_e2el_ms": _percentile(np.where(completed[m_idx], lat["e2el"][m_idx], np.inf), 99),
            "cold_start_requests": int(cold[idx].sum()),
        })
    frame = pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS))
    return frame, units, cold & measured


def fleet_summary(fleet: dict[str, Any], requests: pd.DataFrame, *, end_s: float, gpus_per_replica: int,
                  gpu_hour_usd: float | None, reserved_gpu_hour_usd: float | None = None,
                  reserved_gpus: int | None = None, slo: Any = None, model_name: str = "",
                  warmup_s: float = 0.0) -> tuple[dict[str, Any], pd.DataFrame]:
    """The ``autoscaling`` block of the summary and the per-interval table (module docstring)."""
    frame, units, cold = fleet_frames(fleet, requests, end_s=end_s, gpus_per_replica=gpus_per_replica,
                                      slo=slo, model_name=model_name, warmup_s=warmup_s)
    levels, dur = billed_levels(units, end_s)
    ra, rb, _, _ = _lives(units, end_s)
    gpu_s = float((levels * dur).sum()) * gpus_per_replica
    span = float(dur.sum())
    gpu_hours = gpu_s / 3600.0
    peak_billed = int(levels.max()) if levels.size else 0
    mean_gpus = gpu_s / span if span else None
    # peak of ready replicas: the step function's maximum from the ready lives
    edges = np.concatenate([ra, rb])
    delta = np.concatenate([np.ones_like(ra), -np.ones_like(rb)])
    order = np.lexsort((delta, edges))  # at equal times, leave before joining
    peak_ready = int(np.cumsum(delta[order]).max()) if edges.size else 0
    kinds = units["kind"].astype(str)
    cold_starts = units[kinds.isin(["cold", "warm"])]
    thresholds = request_thresholds_ms(slo, model_name)
    status = requests["status"].astype(str).to_numpy()
    measured = requests["arrival_s"].to_numpy(dtype=np.float64) >= warmup_s
    block: dict[str, Any] = {
        "policy": fleet.get("policy"), "interval_s": fleet["interval_s"], "span_s": span,
        "gpus_per_replica": int(gpus_per_replica),
        "peak_replicas_ready": peak_ready, "peak_replicas_billed": peak_billed,
        "mean_replicas_ready": float(((rb - ra).clip(min=0)).sum() / span) if span else None,
        "mean_replicas_billed": gpu_s / gpus_per_replica / span if span else None,
        "peak_gpus": peak_billed * gpus_per_replica, "mean_gpus": mean_gpus,
        "peak_to_mean_gpus": (peak_billed * gpus_per_replica / mean_gpus) if mean_gpus else None,
        "gpu_hours": gpu_hours, "gpu_hours_per_day": gpu_hours * 86_400.0 / span if span else None,
        "num_scale_ups": len(cold_starts),
        "num_cancelled_starts": int((units["ready_s"].isna() & units["released_s"].notna() & (kinds != "sleeping")).sum()),
        "num_drains": int(units["drain_s"].notna().sum()),
        "mean_cold_start_s": float(cold_starts["cold_start_s"].mean()) if len(cold_starts) else None,
        "cold_start_requests": int(cold.sum()),
        "cold_start_request_fraction": float(cold.sum() / measured.sum()) if measured.sum() else None,
        "gpu_hour_usd": gpu_hour_usd,
        "usd_on_demand": gpu_hours * gpu_hour_usd if gpu_hour_usd is not None else None,
        "usd_per_day_on_demand": (gpu_hours * gpu_hour_usd * 86_400.0 / span) if gpu_hour_usd is not None and span else None,
    }
    if thresholds:
        good_iv = frame["slo_attainment"].to_numpy(dtype=np.float64)
        block["request_thresholds_ms"] = thresholds
        block["min_interval_slo_attainment"] = float(np.nanmin(good_iv)) if np.isfinite(good_iv).any() else None
        block["cold_start_slo_attainment"] = (float(_good(requests.iloc[np.flatnonzero(cold)], thresholds).mean())
                                              if cold.any() else None)
    if reserved_gpu_hour_usd is not None and gpu_hour_usd is not None:
        block["reserved_plus_on_demand"] = {"reserved_gpu_hour_usd": reserved_gpu_hour_usd,
                                            **reserved_cost(levels * gpus_per_replica, dur, gpu_hour_usd,
                                                            reserved_gpu_hour_usd, reserved_gpus)}
    block["unfinished"] = int((status[measured] == "unfinished").sum())
    return block, frame
