"""Readers for JSON Lines benchmark exports: SGLang ``bench_serving --output-file`` and AIPerf /
GenAI-Perf per-request ``profile_export.jsonl``.

- **SGLang** appends one JSON object per benchmark run (keys ``mean_e2e_latency_ms``,
  ``median_ttft_ms``, ``request_throughput``, ``duration``, ``completed``...). A file holding several
  runs is read at one of them (default: the last, the most recent append).
- **AIPerf** writes one record per request: ``{"metadata": {...request_start_ns | timestamp_ns},
  "metrics": {"time_to_first_token" | "ttft", "request_latency", "input_sequence_length",
  "output_sequence_length", "inter_chunk_latency": [...]}, "error": null | {...}}``, each metric a
  ``{"value", "unit"}`` pair. Failed records (``error`` set) are counted, not compared.

Both return plain dicts, turned into :class:`sim.fidelity.compare.BenchmarkResult` by the caller:
``{"format", "summary", "setup", "requests" (column → list) or None, "itls_s" or None, "notes"}``.
``setup`` holds what the benchmark was driven with (model, request count, token totals, rate,
concurrency) for the comparison's sanity checks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from workloads.traces import read_json_lines

_UNIT_TO_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0}
# SGLang key -> vllm-bench key (the ones that differ; the rest already share vLLM's names)
_SGLANG_KEYS = {"mean_e2e_latency_ms": "mean_e2el_ms", "median_e2e_latency_ms": "median_e2el_ms",
                "std_e2e_latency_ms": "std_e2el_ms", "p90_e2e_latency_ms": "p90_e2el_ms",
                "p99_e2e_latency_ms": "p99_e2el_ms"}
SETUP_KEYS = ("model_id", "completed", "num_prompts", "total_input_tokens", "total_output_tokens",
              "request_rate", "max_concurrency")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of ``path`` as a JSON object (errors name the line)."""
    try:
        out = read_json_lines(path)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as UTF-8 JSON Lines: {exc}") from None
    if not out:
        raise ConfigError(f"{path}: no JSON objects in the file")
    return out


def is_aiperf(records: list[dict[str, Any]]) -> bool:
    """AIPerf/GenAI-Perf per-request records (``metadata`` + ``metrics``)."""
    return all("metadata" in r and "metrics" in r for r in records[:5])


def is_sglang(records: list[dict[str, Any]]) -> bool:
    """SGLang bench_serving run summaries."""
    return any(k in records[-1] for k in _SGLANG_KEYS) or "median_ttft_ms" in records[-1]


def from_sglang(path: Path, records: list[dict[str, Any]], index: int = -1) -> dict[str, Any]:
    """One SGLang run (``index`` into the file's runs; default the last)."""
    try:
        run = records[index]
    except IndexError:
        raise ConfigError(f"{path}: run index {index} out of range: the file holds {len(records)} run(s)") from None
    summary = {_SGLANG_KEYS.get(k, k): float(v) for k, v in run.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    notes = []
    if len(records) > 1:
        chosen = index % len(records)
        notes.append(f"the file holds {len(records)} SGLang runs; compared run {chosen + 1} "
                     f"(request_rate {run.get('request_rate')}, {run.get('completed')} requests)")
    setup = {k: run.get(k) for k in SETUP_KEYS if run.get(k) is not None}
    if "model_id" not in setup and run.get("model"):
        setup["model_id"] = run["model"]
    return {"format": "sglang-bench", "summary": summary, "setup": setup, "requests": None,
            "itls_s": None, "notes": notes}


def _metric_s(metrics: dict[str, Any], *names: str) -> Any:
    """A time metric in seconds (a number, or a list for inter_chunk_latency); None when absent."""
    for name in names:
        m = metrics.get(name)
        if isinstance(m, dict) and m.get("value") is not None:
            scale = _UNIT_TO_S.get(str(m.get("unit", "ms")).lower())
            if scale is None:
                raise ConfigError(f"metrics.{name}.unit: unknown time unit {m.get('unit')!r}")
            v = m["value"]
            return [float(x) * scale for x in v] if isinstance(v, list) else float(v) * scale
    return None


def _metric_n(metrics: dict[str, Any], *names: str) -> float | None:
    for name in names:
        m = metrics.get(name)
        if isinstance(m, dict) and isinstance(m.get("value"), (int, float)):
            return float(m["value"])
    return None


def from_aiperf(path: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-request AIPerf records as request columns (seconds) and pooled inter-chunk gaps."""
    cols: dict[str, list[float]] = {"arrival_s": [], "input_tokens": [], "output_tokens": [], "ttft_s": [], "e2el_s": []}
    gaps: list[float] = []
    failed = chunked = 0
    for i, rec in enumerate(records, start=1):
        if rec.get("error"):
            failed += 1
            continue
        metrics = rec.get("metrics") or {}
        meta = rec.get("metadata") or {}
        try:
            ttft = _metric_s(metrics, "time_to_first_token", "ttft")
            e2e = _metric_s(metrics, "request_latency")
            chunks = _metric_s(metrics, "inter_chunk_latency", "inter_token_latencies")
        except ConfigError as exc:
            raise ConfigError(f"{path}: line {i}: {exc}") from None
        if ttft is None or e2e is None:
            failed += 1
            continue
        start_ns = meta.get("request_start_ns") or meta.get("timestamp_ns") or _metric_n(metrics, "min_request_timestamp")
        out_tok = _metric_n(metrics, "output_sequence_length", "output_token_count")
        cols["arrival_s"].append(float(start_ns) * 1e-9 if start_ns else float("nan"))
        cols["input_tokens"].append(_metric_n(metrics, "input_sequence_length") or float("nan"))
        cols["output_tokens"].append(out_tok if out_tok is not None else float("nan"))
        cols["ttft_s"].append(ttft)
        cols["e2el_s"].append(e2e)
        if isinstance(chunks, list):
            gaps.extend(chunks)
            if out_tok is not None and len(chunks) + 1 < out_tok:
                chunked += 1
    if not cols["ttft_s"]:
        raise ConfigError(f"{path}: no successful request in the AIPerf export ({failed} failed)")
    starts = [a for a in cols["arrival_s"] if a == a]
    if starts:
        t0 = min(starts)
        cols["arrival_s"] = [a - t0 for a in cols["arrival_s"]]
    notes = []
    if failed:
        notes.append(f"{failed} failed request(s) in the AIPerf export are left out")
    if chunked:
        notes.append(f"{chunked} request(s) streamed several tokens per chunk: AIPerf's inter-chunk gaps are not "
                     "per-token ITLs, so ITL is not compared")
    setup = {"completed": len(cols["ttft_s"]), "num_prompts": len(records),
             "total_input_tokens": sum(x for x in cols["input_tokens"] if x == x),
             "total_output_tokens": sum(x for x in cols["output_tokens"] if x == x)}
    return {"format": "aiperf-records", "summary": {}, "setup": setup, "requests": cols,
            "itls_s": gaps if gaps and not chunked else None, "notes": notes, "failed": failed}
