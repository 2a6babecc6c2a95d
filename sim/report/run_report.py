"""The report of one run: what was simulated, latency, behaviour over time, where time and memory go.

Built from a :class:`sim.runs.result.RunResult` (usually read back from a result directory). Latency
statistics come from ``summary.json`` (the numbers ``simctl run`` printed); the plots are drawn from
the per-request records, the iteration log and the token timeline.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.plan.sweep import flatten
from sim.report import fmt, plots
from sim.report.document import Document, Figure, Note, Table, Text
from sim.report.fleet_report import fleet_section
from sim.report.pd_report import pd_section
from sim.report.thresholds import Criterion, mlperf_criteria, slo_criteria, slo_passed

LATENCY_ROWS = (("TTFT", "ttft", "ttft_s"), ("TPOT", "tpot", "tpot_s"), ("ITL", "itl", None),
                ("E2E latency", "e2el", "e2el_s"), ("Queueing", "queue", "queue_s"))
STATS = (("mean", "mean"), ("std", "std"), ("P50", "p50"), ("P90", "p90"), ("P95", "p95"), ("P99", "p99"))
NUM_TIME_BINS = 150
MAX_ITL_REQUESTS = 2000  # requests whose token gaps are pooled for the ITL CDF


# ---------------------------------------------------------------------------------------------
# Data helpers


def measured_requests(result: Any) -> pd.DataFrame:
    """Completed requests that count for latency statistics (arrived after the warm-up)."""
    req = result.requests
    if req.empty:
        return req
    warmup_s = float(result.config.get("warmup_s") or 0.0)
    return req[(req["status"] == "completed") & (req["arrival_s"] >= warmup_s)]


def _stat(values: np.ndarray, stat: str) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    if stat == "mean":
        return float(values.mean())
    if stat == "std":
        return float(values.std())
    return float(np.percentile(values, float(stat[1:])))


def latency_stat(summary: dict[str, Any], requests: pd.DataFrame, metric: str, column: str | None, stat: str) -> Any:
    """``stat`` of ``metric`` in ms: the summary's value (vllm-bench key), else computed from records."""
    for key in (f"{stat}_{metric}_ms", f"median_{metric}_ms" if stat == "p50" else None):
        if key and summary.get(key) is not None:
            return summary[key]
    if column and column in requests:
        return _stat(requests[column].to_numpy(float) * 1000.0, stat)
    return None


def itl_samples_ms(result: Any, rows: np.ndarray, limit: int = MAX_ITL_REQUESTS) -> np.ndarray:
    """Inter-token gaps (ms) pooled over up to ``limit`` of the given request rows, rebuilt from the
    compact token timeline (no per-token storage exists)."""
    tl = result.timeline
    if tl is None or tl.runs is None or tl.run_offsets is None or rows.size == 0:
        return np.empty(0)
    if rows.size > limit:
        rows = rows[np.linspace(0, rows.size - 1, limit).astype(int)]
    gaps = []
    for i in rows:
        pairs = np.asarray(tl.runs[tl.run_offsets[i]:tl.run_offsets[i + 1]]).reshape(-1, 2)
        if pairs.size == 0:
            continue
        ends = tl.iteration_end_s[int(tl.replica_of[i])]
        idx = np.concatenate([np.arange(a, b + 1) for a, b in pairs])
        gaps.append(np.diff(np.asarray(ends)[idx]))
    return np.concatenate(gaps) * 1000.0 if gaps else np.empty(0)


def binned(it: pd.DataFrame, num_bins: int = NUM_TIME_BINS) -> dict[str, np.ndarray]:
    """Iteration log aggregated into time bins (each iteration counted in the bin of its midpoint).

    Returns bin centres ``t`` and, per bin: time-weighted batch size / queue length summed over
    replicas, mean KV usage over replicas, token rates, busy-time shares, and busy-time-weighted
    MFU/MBU (NaN in bins without iterations).
    """
    end = it["end_s"].to_numpy(float)
    dt = it["time_s"].to_numpy(float)
    horizon = float(end.max()) if end.size else 0.0
    if horizon <= 0:
        return {}
    width = horizon / num_bins
    b = np.minimum(((end - dt / 2) / width).astype(int), num_bins - 1)
    num_replicas = max(int(it["replica"].nunique()), 1)

    def per_bin(weights: np.ndarray) -> np.ndarray:
        return np.bincount(b, weights=weights, minlength=num_bins)

    busy = per_bin(dt)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {
            "t": (np.arange(num_bins) + 0.5) * width,
            "batch": per_bin(it["num_seqs"].to_numpy(float) * dt) / width,
            "queue": per_bin(it["num_waiting"].to_numpy(float) * dt) / width,
            "kv": per_bin(it["kv_usage"].to_numpy(float) * dt) / busy,
            "prefill_tok_s": per_bin(it["num_prefill_tokens"].to_numpy(float)) / width,
            "decode_tok_s": per_bin(it["num_decode_seqs"].to_numpy(float)) / width,
            "prefill_share": per_bin(it["prefill_time_s"].to_numpy(float)) / (width * num_replicas),
            "decode_share": per_bin(dt - it["prefill_time_s"].to_numpy(float)) / (width * num_replicas),
            "mfu": per_bin(it["mfu"].to_numpy(float) * dt) / busy,
            "mbu": per_bin(it["mbu"].to_numpy(float) * dt) / busy,
        }
    # KV usage persists while a replica idles: carry the last value forward over empty bins
    kv = out["kv"]
    for i in range(1, kv.size):
        if not np.isfinite(kv[i]):
            kv[i] = kv[i - 1]
    return out


MEMORY_PARTS = (("weights_bytes", "weights"), ("activation_bytes", "activations"),
                ("non_torch_bytes", "non-torch (CUDA, NCCL)"), ("kv_cache_bytes", "KV cache"))


def memory_parts(plan: Any) -> tuple[dict[str, float], float | None]:
    """The per-GPU memory plan (``sim.deploy.memory_plan.MemoryPlan`` as saved in meta.json) as ``{part: bytes}``
    and the GPU's capacity in bytes."""
    if not isinstance(plan, dict):
        return {}, None
    parts = {label: float(plan[key]) for key, label in MEMORY_PARTS if fmt.is_number(plan.get(key))}
    capacity = plan.get("capacity_bytes")
    return parts, float(capacity) if fmt.is_number(capacity) else None


def _label(d: dict[str, Any], keys: tuple[str, ...], default: Any = None) -> Any:
    """First present key of ``d``."""
    for k in keys:
        if d.get(k) not in (None, ""):
            return d[k]
    return default


# ---------------------------------------------------------------------------------------------
# Sections


def _setup_section(doc: Document, result: Any) -> None:
    cfg, meta, summary = result.config, result.meta or {}, result.summary
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    hw = meta.get("hardware") if isinstance(meta.get("hardware"), dict) else {}
    par = cfg.get("parallel") or {}
    prec = meta.get("precision") or cfg.get("precision") or {}
    eng = meta.get("engine") or cfg.get("engine") or {}
    tp, pp = int(par.get("tp", 1)), int(par.get("pp", 1))
    replicas = int(cfg.get("replicas", 1))
    gpus = meta.get("gpus_total") or tp * pp * replicas
    gpu_name = _label(hw, ("display_name", "name")) or cfg.get("hardware")
    mem = f"{hw['memory_gib']:,.1f} GiB each" if fmt.is_number(hw.get("memory_gib")) else "memory unknown"
    inter = " ".join(str(x) for x in (hw.get("intra_node"),
                                      f"{hw['intra_node_bandwidth_gb_s']:,.0f} GB/s" if fmt.is_number(
                                          hw.get("intra_node_bandwidth_gb_s")) else None) if x)
    price = f", {fmt.usd(hw['usd_per_gpu_hour'])}/GPU-hour" if fmt.is_number(hw.get("usd_per_gpu_hour")) else ""
    total = model.get("total_params")
    active = model.get("active_params")
    param_text = fmt.params(total)
    if fmt.is_number(active) and fmt.is_number(total) and active < total:
        param_text += f", {fmt.params(active)} active per token"
    wl = meta.get("workload") or {}
    wl_cfg = cfg.get("workload") or {}
    rows = [
        ["Model", f"{model.get('name') or cfg.get('model')} — {param_text} parameters"],
        ["Precision", f"weights {prec.get('weights', 'bf16')}, activations {prec.get('activations') or 'default'}, "
                      f"KV cache {prec.get('kv_cache', 'auto')}"],
        ["Hardware", f"{gpus} × {gpu_name} ({mem}{price}); profile {hw.get('calibration_status') or 'n/a'}"],
        ["Interconnect", inter or fmt.MISSING],
        ["Parallelism", f"TP {tp} × PP {pp} per replica ({tp * pp} GPUs), {replicas} replica(s), "
                        f"router {cfg.get('router', 'round-robin')}"],
        ["Engine", f"{eng.get('policy', 'vllm')}: max_num_seqs {eng.get('max_num_seqs')}, "
                   f"max_num_batched_tokens {eng.get('max_num_batched_tokens')}, "
                   f"chunked prefill {eng.get('enable_chunked_prefill')}, prefix caching {eng.get('enable_prefix_caching')}, "
                   f"block size {eng.get('block_size')}, gpu_memory_utilization {eng.get('gpu_memory_utilization')}, "
                   f"max_model_len {meta.get('max_model_len') or eng.get('max_model_len')}"],
        *([["Speculative decoding", fmt.scalar(eng["speculative"])]] if eng.get("speculative") else []),
        ["KV cache", f"{fmt.num(meta.get('num_kv_blocks_used'))} blocks per replica"],
        ["Workload", fmt.describe_workload(wl) if wl else fmt.scalar(wl_cfg)],
        ["Run", f"seed {cfg.get('seed', 0)}, warm-up {cfg.get('warmup_s', 0)} s, "
                f"horizon {cfg.get('max_duration_s') or 'until drained'}, "
                f"simulated {fmt.num(summary.get('duration'))} s"],
        ["simctl", str(meta.get("simctl_version", ""))],
    ]
    sec = doc.section("What was simulated", "setup")
    sec.add(Table(["", "configuration"], rows, align="ll"))
    for warning in meta.get("warnings") or []:
        sec.add(Note(str(warning), "warn", "Warning"))
    if hw:
        hw_rows = [list(fmt.keyed(k, v)) for k, v in hw.items() if not isinstance(v, (dict, list))][:24]
        sec.add(Table(["hardware profile", "value"], hw_rows, caption="Hardware profile as simulated", align="ll"))


HEADLINE = (
    ("completed requests", "completed", fmt.num), ("rejected", "rejected", fmt.num),
    ("unfinished (backlog)", "unfinished", fmt.num), ("duration (s)", "duration", fmt.num),
    ("request throughput (req/s)", "request_throughput", fmt.num),
    ("output throughput (tok/s)", "output_throughput", lambda v: fmt.num(v, 1)),
    ("total token throughput (tok/s)", "total_token_throughput", lambda v: fmt.num(v, 1)),
    ("goodput (req/s)", "request_goodput", fmt.num), ("mean batch size", "mean_batch_size", fmt.num),
    ("mean KV-cache usage", "mean_kv_cache_usage", fmt.pct), ("peak KV-cache usage", "peak_kv_cache_usage", fmt.pct),
    ("preemptions", "num_preemptions", fmt.num), ("prefix-cache hit rate", "prefix_cache_hit_rate", fmt.pct),
    ("MFU (time-weighted)", "mfu", fmt.pct), ("MBU (time-weighted)", "mbu", fmt.pct),
)
COST = (
    ("$ per GPU-hour", "gpu_hour_usd", fmt.usd), ("deployment $ per hour", "cost_per_hour_usd", fmt.usd),
    ("$ per 1M output tokens", "usd_per_million_output_tokens", fmt.usd),
    ("$ per 1M input tokens", "usd_per_million_input_tokens", fmt.usd),
    ("$ per 1M tokens (input + output)", "usd_per_million_tokens", fmt.usd),
)


def _results_section(doc: Document, result: Any, criteria: list[Criterion]) -> None:
    s = result.summary
    sec = doc.section("Results", "results")
    verdict = slo_passed(s, criteria)
    if verdict is not None:
        binding = (s.get("slo") or {}).get("binding") if isinstance(s.get("slo"), dict) else None
        text = "All SLO criteria are met." if verdict else "The SLO is not met" + (f" (binding: {binding})." if binding else ".")
        sec.add(Note(text, "good" if verdict else "warn", f"SLO {fmt.passfail(verdict)}"))
    mlperf = s.get("mlperf")
    if isinstance(mlperf, dict):  # an MLPerf scenario: the run's validity under LoadGen's rules
        ok = bool(mlperf.get("valid"))
        text = ("The run meets MLPerf's validity rules (minimum duration, minimum queries, early stopping)."
                if ok else "Not a valid MLPerf result: " + "; ".join(mlperf.get("failed_rules", [])) + ".")
        sec.add(Note(text, "good" if ok else "warn", f"MLPerf {mlperf.get('scenario')} {'VALID' if ok else 'INVALID'}"))
    rows = [[label, f(s.get(key))] for label, key, f in HEADLINE + COST if s.get(key) is not None]
    spec = s.get("spec_decode")
    if isinstance(spec, dict):  # vLLM's spec-decode metrics (docs/metrics.md)
        rows += [["mean acceptance length (tokens/verification)", fmt.num(spec.get("mean_acceptance_length"))],
                 ["draft acceptance rate", fmt.pct(spec.get("draft_acceptance_rate"))]]
    sec.add(Table(["metric", "value"], rows))
    api = s.get("api_price_comparison")
    if isinstance(api, dict) and api:
        sec.add(Table(["API (price as of)", "$/1M input", "$/1M output", "same traffic on the API ($/hour)",
                       "self-hosted ÷ API"],
                      [[f"{name} ({p.get('as_of', '?')})", fmt.usd(p.get("input_usd_per_mtok")),
                        fmt.usd(p.get("output_usd_per_mtok")), fmt.usd(p.get("api_usd_per_hour")),
                        fmt.num(p.get("self_hosted_vs_api"))] for name, p in api.items() if isinstance(p, dict)],
                      caption="What this run's token traffic would cost on public APIs (docs/metrics.md#cost)"))
    own = s.get("slo", {}).get("criteria") if isinstance(s.get("slo"), dict) else None
    if own:  # the run's own evaluation (sim.measure.slo.evaluate_slo): every criterion, fluidity included
        sec.add(Table(["criterion", "source", "simulated", "limit", "verdict"],
                      [[str(c.get("name")), str(c.get("source", "")), fmt.scalar(c.get("value")),
                        f"{c.get('op', '<=')} {fmt.scalar(c.get('limit'))}", fmt.passfail(c.get("passed"))]
                       for c in own if isinstance(c, dict)], align="llrrr"))
    elif criteria:
        crit_rows = []
        for c in criteria:
            value = s.get(c.summary_key)
            ok = value <= c.limit_ms if fmt.is_number(value) else None
            crit_rows.append([c.label, c.source, fmt.ms(value), fmt.passfail(ok)])
        sec.add(Table(["criterion", "source", "simulated (ms)", "verdict"], crit_rows, align="llrr"))


def _thresholds(metric: str, criteria: list[Criterion], mlperf: list[Criterion]) -> list[plots.Threshold]:
    lines = [plots.Threshold(f"SLO {c.stat} {c.limit_ms:,.0f} ms", c.limit_ms, "#d62728", "-")
             for c in criteria if c.metric == metric]
    styles = {"server": ("#9467bd", "--"), "interactive": ("#ff7f0e", ":")}
    for c in mlperf:
        if c.metric == metric:
            scenario = "interactive" if "interactive" in c.source else "server"
            color, style = styles[scenario]
            lines.append(plots.Threshold(f"MLPerf {scenario} p99 {c.limit_ms:,.0f} ms", c.limit_ms, color, style))
    return lines


def _latency_section(doc: Document, result: Any, measured: pd.DataFrame, criteria: list[Criterion]) -> None:
    s = result.summary
    sec = doc.section("Latency", "latency")
    rows = []
    for label, metric, column in LATENCY_ROWS:
        cells = [latency_stat(s, measured, metric, column, stat) for _, stat in STATS]
        if any(fmt.is_number(c) for c in cells):
            rows.append([label] + [fmt.ms(c) for c in cells])
    sec.add(Table(["ms"] + [name for name, _ in STATS], rows,
                  caption=f"{len(measured):,} completed requests after warm-up; ITL pools every inter-token gap"))
    model_name = str((result.meta or {}).get("model", {}).get("name") or result.config.get("model", ""))
    mlperf = mlperf_criteria(model_name, "server") + mlperf_criteria(model_name, "interactive")
    itl = itl_samples_ms(result, np.flatnonzero(result.requests.index.isin(measured.index)))
    panels = [("TTFT", measured["ttft_s"].to_numpy(float) * 1000 if "ttft_s" in measured else np.empty(0),
               _thresholds("ttft", criteria, mlperf)),
              ("TPOT", measured["tpot_s"].to_numpy(float) * 1000 if "tpot_s" in measured else np.empty(0),
               _thresholds("tpot", criteria, mlperf)),
              ("ITL (sampled requests)", itl, _thresholds("itl", criteria, [])),
              ("E2E latency", measured["e2el_s"].to_numpy(float) * 1000 if "e2el_s" in measured else np.empty(0),
               _thresholds("e2el", criteria, []))]
    mlperf_note = (f" ({mlperf[0].source.split(' server')[0]}{', closest benchmark' if 'closest' in mlperf[0].source else ''})"
                   if mlperf else " (no MLPerf benchmark for this model)")
    sec.add(_fig("latency_cdf", plots.cdf_panels(panels),
                 "Latency CDFs. Solid red: the experiment's SLO; dashed/dotted: MLPerf P99 limits" + mlperf_note,
                 wide=True))


def _fig(name: str, png: bytes | None, caption: str, wide: bool = False) -> Figure | None:
    """A document figure, or None when the plot had no data."""
    return None if png is None else Figure(name, png, caption, wide)


def _over_time_section(doc: Document, b: dict[str, np.ndarray], num_replicas: int) -> None:
    sec = doc.section("Over time", "time")
    if not b:
        sec.add(Text("No iterations were logged."))
        return
    t = b["t"]
    png = plots.time_panels([
        ("Batch size (running requests per step)", "requests" + (" (all replicas)" if num_replicas > 1 else ""),
         t, {"batch size": b["batch"]}, False),
        ("KV-cache usage", "% of blocks", t, {"KV usage": 100 * b["kv"]}, False),
        ("Queue length (waiting requests)", "requests", t, {"waiting": b["queue"]}, False),
        ("Token throughput", "tokens/s", t, {"prefill": b["prefill_tok_s"], "decode": b["decode_tok_s"]}, True),
    ])
    sec.add(_fig("over_time", png, "Engine state over simulated time (averaged in "
                 f"{len(t)} time bins); a growing queue and KV usage near 100% mean saturation", wide=True))


def _breakdown_section(doc: Document, result: Any, measured: pd.DataFrame, b: dict[str, np.ndarray]) -> None:
    sec = doc.section("Where the time goes", "breakdown")
    it = result.iterations
    if not it.empty:
        has_prefill = it["num_prefill_tokens"].to_numpy() > 0
        times_ms = it["time_s"].to_numpy(float) * 1000
        sec.add(_fig("iteration_time", plots.histograms(
            "Iteration time", "ms per iteration",
            {"with prefill tokens": times_ms[has_prefill], "decode only": times_ms[~has_prefill]}),
            "Per-iteration time: steps that compute prompt tokens vs pure decode steps"))
        if b:
            sec.add(_fig("busy_share", plots.time_panels([
                ("GPU busy time by phase", "share of wall time", b["t"],
                 {"prefill": b["prefill_share"], "decode": b["decode_share"]}, True)], wide=False),
                "Fraction of each time bin a replica spent computing prefill vs decode tokens (the rest is idle)"))
        total = float(it["time_s"].sum())
        prefill = float(it["prefill_time_s"].sum())
        sec.add(Table(["iteration time", "total (s)", "share"], [
            ["prefill", fmt.num(prefill), fmt.pct(prefill / total if total else None)],
            ["decode", fmt.num(total - prefill), fmt.pct((total - prefill) / total if total else None)],
            ["iterations", fmt.num(len(it)), ""]]))
    if not measured.empty and {"ttft_s", "queue_s", "prefill_compute_s"} <= set(measured.columns):
        m = measured.sort_values("ttft_s")
        ttft = m["ttft_s"].to_numpy(float) * 1000
        queue = np.nan_to_num(m["queue_s"].to_numpy(float)) * 1000
        prefill = m["prefill_compute_s"].to_numpy(float) * 1000
        other = np.clip(ttft - queue - prefill, 0, None)
        n = len(m)
        groups = [("all requests", slice(0, n)), ("fastest 50%", slice(0, n // 2)),
                  ("P50–P90", slice(n // 2, int(n * 0.9))), ("P90–P99", slice(int(n * 0.9), int(n * 0.99))),
                  ("slowest 1%", slice(int(n * 0.99), n))]
        groups = [(g, sl) for g, sl in groups if sl.stop > sl.start]
        parts = {"queueing": [queue[sl].mean() for _, sl in groups],
                 "prefill compute": [prefill[sl].mean() for _, sl in groups],
                 "other (chunk gaps, first token)": [other[sl].mean() for _, sl in groups]}
        sec.add(_fig("ttft_split", plots.stacked_hbars("TTFT split (mean per group, by TTFT rank)", "ms",
                                                       [g for g, _ in groups], parts, " ms"),
                     "What the first token waits for: queueing before the first scheduled step, the steps that "
                     "computed the prompt, and the rest (steps between prefill chunks)", wide=True))


def _memory_section(doc: Document, result: Any, b: dict[str, np.ndarray]) -> None:
    sec = doc.section("Memory and utilisation", "memory")
    meta = result.meta or {}
    parts, capacity = memory_parts(meta.get("memory_plan"))
    hw = meta.get("hardware") if isinstance(meta.get("hardware"), dict) else {}
    if capacity is None and fmt.is_number(hw.get("memory_bytes")):
        capacity = float(hw["memory_bytes"])
    if parts:
        if capacity:
            parts["free"] = max(capacity - sum(parts.values()), 0.0)  # incl. 1 − gpu_memory_utilization
        gib = {k: [v / fmt.GIB] for k, v in parts.items()}
        sec.add(_fig("memory", plots.stacked_hbars("Memory per GPU", "GiB", ["per GPU"], gib, " GiB"),
                     "Memory plan of the most loaded GPU: weights, activation peak, non-torch memory, KV-cache "
                     "pool, and what gpu_memory_utilization leaves free"
                     + (f" (of {fmt.gib(capacity)})" if capacity else ""), wide=True))
    plan = meta.get("memory_plan")
    if isinstance(plan, dict):
        rows = [[k, fmt.gib(v) if k.endswith("bytes") and "per_token" not in k and "block" not in k else fmt.scalar(v)]
                for k, v in plan.items() if not isinstance(v, (dict, list))]
        sec.add(Table(["memory plan (per GPU)", "value"], rows))
    if b:
        sec.add(_fig("utilisation", plots.time_panels([
            ("Model FLOPs / bandwidth utilisation", "%", b["t"], {"MFU": 100 * b["mfu"], "MBU": 100 * b["mbu"]}, False)],
            wide=False),
            "Busy-time-weighted MFU and MBU per time bin: decode is bandwidth-bound (high MBU), prefill compute-bound"))


def _replica_section(doc: Document, result: Any, measured: pd.DataFrame) -> None:
    req, it = result.requests, result.iterations
    if req.empty or req["replica"].nunique() < 2:
        return
    rows = []
    for rep, g in req.groupby("replica"):
        mg = measured[measured["replica"] == rep]
        itg = it[it["replica"] == rep] if not it.empty else it
        busy = float(itg["time_s"].sum()) if not itg.empty else 0.0
        kv = float((itg["kv_usage"] * itg["time_s"]).sum() / busy) if busy else float("nan")
        rows.append([str(rep), fmt.num(len(g)), fmt.num(int((g["status"] == "completed").sum())),
                     fmt.ms(mg["ttft_s"].mean() * 1000), fmt.ms(mg["ttft_s"].quantile(0.99) * 1000),
                     fmt.ms(mg["tpot_s"].mean() * 1000), fmt.pct(kv)])
    doc.section("Per replica", "replicas").add(Table(
        ["replica", "requests", "completed", "mean TTFT (ms)", "P99 TTFT (ms)", "mean TPOT (ms)", "mean KV usage"], rows))


def _all_metrics_section(doc: Document, summary: dict[str, Any]) -> None:
    rows = [[k, *fmt.keyed(k.rsplit(".", 1)[-1], v)[1:]] for k, v in flatten(summary).items()
            if not k.startswith("api_price_comparison.")]
    doc.section("All summary metrics", "summary").add(
        Text("Every key of summary.json (definitions and units: docs/metrics.md)."), Table(["key", "value"], rows))


def build_run_document(result: Any, title: str | None = None) -> Document:
    """The whole report of one run."""
    cfg = result.config
    meta = result.meta or {}
    model = (meta.get("model") or {}).get("name") or cfg.get("model")
    gpu = (meta.get("hardware") or {}).get("name") or cfg.get("hardware")
    par = cfg.get("parallel") or {}
    replicas = int(cfg.get("replicas", 1))
    gpus = meta.get("gpus_total") or int(par.get("tp", 1)) * int(par.get("pp", 1)) * replicas
    doc = Document(
        title=title or f"simctl report — {cfg.get('name', 'run')}",
        subtitle=(f"{model} on {gpus}× {gpu} · TP{par.get('tp', 1)} PP{par.get('pp', 1)} × {replicas} replica(s) · "
                  f"{(cfg.get('engine') or {}).get('policy', 'vllm')} · seed {cfg.get('seed', 0)}"),
        footer=f"Generated by simctl {meta.get('simctl_version', '')} — simulated, not measured. "
               "Metric definitions: docs/metrics.md.")
    criteria = slo_criteria(cfg.get("slo"), str(model))
    measured = measured_requests(result)
    b = binned(result.iterations) if not result.iterations.empty else {}
    _setup_section(doc, result)
    _results_section(doc, result, criteria)
    _latency_section(doc, result, measured, criteria)
    _over_time_section(doc, b, replicas)
    fleet_section(doc, result)
    pd_section(doc, result)
    _breakdown_section(doc, result, measured, b)
    _memory_section(doc, result, b)
    _replica_section(doc, result, measured)
    _all_metrics_section(doc, result.summary)
    return doc

