"""The run report's "Disaggregated pools" section: per-pool load and the KV-transfer pipeline
(summary.json's ``disaggregation`` block, docs/metrics.md#disaggregation)."""
from __future__ import annotations

from typing import Any

from sim.report import fmt
from sim.report.document import Document, Note, Table

__all__ = ["pd_section"]


def pd_section(doc: Document, result: Any) -> None:
    """Add the section when the run was disaggregated (nothing otherwise)."""
    block = (result.summary or {}).get("disaggregation")
    if not block:
        return
    sec = doc.section("Disaggregated pools", "disaggregation")
    sec.add(Note("The setup above describes one prefill instance; the pools are below.", "info"))
    rows = []
    for role, p in block["pools"].items():
        par = p.get("parallel") or {}
        count = (f"{p['replicas']} at t = 0, peak {p['peak_replicas']}, mean {fmt.num(p['mean_replicas'])}"
                 if p.get("autoscaled") else f"{p['replicas']}")  # autoscaled: GPUs and $/hour at the peak
        rows.append([role, f"{count} × {p['hardware']} TP{par.get('tp', 1)}", fmt.num(p["num_gpus"]),
                     fmt.pct(p["utilization"]), fmt.num(p["mean_num_waiting"]), fmt.pct(p["peak_kv_cache_usage"]),
                     fmt.num(p.get("capacity_rps")), fmt.usd(p.get("cost_per_hour_usd"))])
    sec.add(Table(["pool", "instances", "GPUs", "busy", "mean waiting", "peak KV", "capacity (req/s)", "$/hour"], rows))
    kv = block["kv_transfer"]
    rows = [[name.replace("_", " "), fmt.ms(kv[key]["mean_ms"]), fmt.ms(kv[key]["p50_ms"]), fmt.ms(kv[key]["p99_ms"]),
             fmt.ms(kv[key]["max_ms"])]
            for key, name in (("transfer_time", "KV transfer"), ("kv_wait_time", "wait for decode admission"),
                              ("kv_hold_after_prefill", "prefill KV held after prefill"))]
    rows.append(["prefill queue", *(fmt.ms(block["prefill_queue_time"][k]) for k in ("mean_ms", "p50_ms", "p99_ms", "max_ms"))])
    sec.add(Table(["stage", "mean (ms)", "P50 (ms)", "P99 (ms)", "max (ms)"], rows))
    store = kv.get("store")
    if store is not None:  # via: store (docs/disaggregation.md#kv-hand-off-paths)
        path = (f"{kv['num_transfers']} hand-offs of {fmt.num(kv['mean_kv_bytes'] / 1e6)} MB on average through the "
                f"KV store ({store['staging']} staging; put {fmt.ms(store['put_time']['mean_ms'])} ms, get "
                f"{fmt.ms(store['get_time']['mean_ms'])} ms on average; at most "
                f"{fmt.num(store['peak_bytes'] / 1e6)} MB held, {store['num_puts_waited_for_room']} puts waited for room).")
    else:
        one = "NIC port" if kv.get("sharing") == "nic" else "link"
        path = (f"{kv['num_transfers']} transfers of {fmt.num(kv['mean_kv_bytes'] / 1e6)} MB on average over "
                f"{fmt.num(kv['bandwidth_gbps'])} Gb/s {one}s (at most {kv['max_concurrent_per_link']} sharing one "
                f"{one}; busiest {one} busy {fmt.pct(kv['max_link_utilization'])}).")
    sec.add(Note(f"{path} The {block['bottleneck']} pool has the lower capacity from the cost model.", "info", "Pipeline"))
