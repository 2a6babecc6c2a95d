"""The report section of an autoscaled run: load and replicas over time, latency per interval with the
SLO line, and the fleet's GPU-hours and cost (from ``summary.json → autoscaling`` and the
``fleet_intervals`` table)."""
from __future__ import annotations

from typing import Any

import numpy as np

from sim.report import fmt, plots
from sim.report.document import Document, Figure, Table, Text
from sim.report.thresholds import slo_criteria

__all__ = ["fleet_section"]

_ROWS = (("peak GPUs (billed)", "peak_gpus"), ("mean GPUs (billed)", "mean_gpus"),
         ("peak / mean GPUs", "peak_to_mean_gpus"), ("GPU-hours", "gpu_hours"),
         ("GPU-hours per day", "gpu_hours_per_day"), ("$ per day, on demand", "usd_per_day_on_demand"),
         ("scale-ups (cold or warm starts)", "num_scale_ups"), ("drained replicas", "num_drains"),
         ("cancelled starts", "num_cancelled_starts"), ("mean cold start (s)", "mean_cold_start_s"),
         ("requests that waited on a cold start", "cold_start_requests"),
         ("SLO attainment of those requests", "cold_start_slo_attainment"),
         ("lowest per-interval SLO attainment", "min_interval_slo_attainment"))


def fleet_section(doc: Document, result: Any) -> None:
    """Add the "Fleet over time" section when the run autoscaled (else nothing)."""
    block = (result.summary or {}).get("autoscaling")
    fleet = getattr(result, "fleet", None)
    if not block or not fleet or "intervals" not in fleet:
        return
    iv = fleet["intervals"]
    sec = doc.section("Fleet over time", "fleet")
    sec.add(Text(f"Autoscaling policy {block.get('policy', {}).get('policy', '?')}, a decision every "
                 f"{fmt.scalar(block.get('interval_s'))} s. Replicas are billed from the moment they are asked "
                 "for until they are released (docs/metrics.md#fleet)."))
    t = iv["start_s"].to_numpy(dtype=np.float64)
    png = plots.load_and_replicas(t, iv["arrival_rate"].to_numpy(dtype=np.float64), {
        "replicas taking traffic": iv["mean_replicas_ready"].to_numpy(dtype=np.float64),
        "replicas billed": iv["mean_replicas_billed"].to_numpy(dtype=np.float64)})
    if png is not None:
        sec.add(Figure("fleet_load_replicas", png, "Arrival rate (grey, left axis) and replicas (right axis), "
                       "time-averaged per controller interval", True))
    cfg = result.config or {}
    model = (result.meta or {}).get("model", {}).get("name") or cfg.get("model", "")
    limits = {c.summary_key: c.limit_ms for c in slo_criteria(cfg.get("slo"), str(model))}
    panels = []
    for title, col, key in (("P99 TTFT per interval", "p99_ttft_ms", "p99_ttft_ms"),
                            ("P99 TPOT per interval", "p99_tpot_ms", "p99_tpot_ms")):
        y = iv[col].to_numpy(dtype=np.float64)
        y = np.where(np.isinf(y), np.nan, y)
        th = [plots.Threshold(f"SLO {limits[key]:g} ms", limits[key])] if key in limits else []
        panels.append((title, "ms", {"P99 of the requests arriving in the interval": (t, y)}, th))
    png = plots.curves(panels, "arrival time of the requests (s)")
    if png is not None:
        sec.add(Figure("fleet_latency", png, "Latency of the requests arriving in each interval, with the SLO "
                       "line (requests that never completed count as infinitely late and are not drawn)", True))
    rows = [[label, fmt.scalar(block.get(key))] for label, key in _ROWS if key in block]
    res = block.get("reserved_plus_on_demand")
    if res:
        rows.append([f"$ per day, {res['reserved_gpus']} GPUs reserved + on demand", fmt.scalar(res.get("usd_per_day"))])
    sec.add(Table(["fleet", "value"], rows))
