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
    if block and fleet and "pools" in block:
        _pd_fleet_section(doc, result, block, fleet)
        return
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
    _latency_figure(sec, result, {"p99_ttft_ms": iv, "p99_tpot_ms": iv})
    rows = [[label, fmt.scalar(block.get(key))] for label, key in _ROWS if key in block]
    res = block.get("reserved_plus_on_demand")
    if res:
        rows.append([f"$ per day, {res['reserved_gpus']} GPUs reserved + on demand", fmt.scalar(res.get("usd_per_day"))])
    sec.add(Table(["fleet", "value"], rows))


def _latency_figure(sec: Any, result: Any, tables: dict[str, Any], note: str = "") -> None:
    """P99 TTFT and P99 TPOT per interval (``tables``: the interval table each is read from) with the
    SLO lines."""
    cfg = result.config or {}
    model = (result.meta or {}).get("model", {}).get("name") or cfg.get("model", "")
    limits = {c.summary_key: c.limit_ms for c in slo_criteria(cfg.get("slo"), str(model))}
    panels = []
    for title, key in (("P99 TTFT per interval", "p99_ttft_ms"), ("P99 TPOT per interval", "p99_tpot_ms")):
        iv = tables[key]
        y = iv[key].to_numpy(dtype=np.float64)
        y = np.where(np.isinf(y), np.nan, y)
        th = [plots.Threshold(f"SLO {limits[key]:g} ms", limits[key])] if key in limits else []
        panels.append((title, "ms", {"P99 of the requests arriving in the interval": (iv["start_s"].to_numpy(dtype=np.float64), y)}, th))
    png = plots.curves(panels, "arrival time of the requests (s)")
    if png is not None:
        sec.add(Figure("fleet_latency", png, "Latency of the requests arriving in each interval, with the SLO "
                       "line (requests that never completed count as infinitely late and are not drawn)" + note, True))


_PD_TOTALS = (("peak GPUs (billed, both pools)", "peak_gpus"), ("mean GPUs (billed, both pools)", "mean_gpus"),
              ("peak / mean GPUs", "peak_to_mean_gpus"), ("GPU-hours", "gpu_hours"),
              ("GPU-hours per day", "gpu_hours_per_day"), ("$ per day, on demand", "usd_per_day_on_demand"))


def _pd_fleet_section(doc: Document, result: Any, block: dict[str, Any], fleet: dict[str, Any]) -> None:
    """The fleet section of a disaggregated run with autoscaled pools: the arrival rate and every
    autoscaled pool's replicas on one chart, latency per interval with the SLO lines (TTFT from the
    prefill pool's intervals, TPOT from the decode pool's), and a table per pool plus the totals."""
    pools = {role: b for role, b in block["pools"].items() if f"{role}_intervals" in fleet}
    if not pools:
        return
    sec = doc.section("Fleet over time", "fleet")
    sec.add(Text("Each pool of the disaggregated deployment autoscales on its own: "
                 + "; ".join(f"{role} — policy {b.get('policy', {}).get('policy', '?')}, a decision every "
                             f"{fmt.scalar(b.get('interval_s'))} s" for role, b in pools.items())
                 + ". Instances are billed from the moment they are asked for until they are released; a "
                 "drained prefill instance is released once the KV it holds has been sent "
                 "(docs/autoscaling.md#disaggregated-pools)."))
    first = fleet[f"{next(iter(pools))}_intervals"]
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for role in pools:
        iv = fleet[f"{role}_intervals"]
        t = iv["start_s"].to_numpy(dtype=np.float64)
        series[f"{role} instances taking work"] = (t, iv["mean_replicas_ready"].to_numpy(dtype=np.float64))
        series[f"{role} instances billed"] = (t, iv["mean_replicas_billed"].to_numpy(dtype=np.float64))
    png = plots.load_and_replicas(first["start_s"].to_numpy(dtype=np.float64),
                                  first["arrival_rate"].to_numpy(dtype=np.float64), series)
    if png is not None:
        sec.add(Figure("fleet_load_replicas", png, "Arrival rate (grey, left axis) and each autoscaled pool's "
                       "instances (right axis), time-averaged per controller interval of that pool", True))
    by = {"p99_ttft_ms": fleet[f"{'prefill' if 'prefill' in pools else next(iter(pools))}_intervals"],
          "p99_tpot_ms": fleet[f"{'decode' if 'decode' in pools else next(iter(pools))}_intervals"]}
    _latency_figure(sec, result, by, "; TTFT per interval of the prefill pool's controller, TPOT of the "
                    "decode pool's" if len(pools) == 2 else "")
    roles = list(pools)
    rows = [[label, *(fmt.scalar(pools[r].get(key)) for r in roles)] for label, key in _ROWS
            if any(key in pools[r] for r in roles)]
    sec.add(Table(["fleet", *roles], rows))
    sec.add(Table(["deployment (both pools)", "value"],
                  [[label, fmt.scalar(block.get(key))] for label, key in _PD_TOTALS if key in block]))
