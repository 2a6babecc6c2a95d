"""Simulated vs measured, side by side: ``simctl compare SIM_DIR REAL``.

``REAL`` is a benchmark result in one of the formats real load generators write; the format is
detected from the content, not the file name:

- ``vllm-bench``: the JSON of ``vllm bench serve --save-result`` (keys ``mean_ttft_ms``,
  ``p99_e2el_ms``, ``request_throughput``...). With ``--save-detailed`` it also holds per-request lists
  (``ttfts`` and ``itls`` in seconds, ``input_lens``, ``output_lens``, ``errors``, and in newer
  versions ``start_times``); they are used when present, so every statistic is recomputed from the
  requests exactly as vLLM does (``np.percentile``, linear interpolation).
- ``genai-perf``: GenAI-Perf's / AIPerf's ``profile_export_*.json``: one object per metric
  (``time_to_first_token``, ``inter_token_latency``, ``request_latency``, ``output_token_throughput``,
  ``request_throughput``) with ``avg``/``p50``/``p90``/``p99`` and a ``unit`` (ns, us, ms or s).
  GenAI-Perf's "inter token latency" is the per-request quantity vLLM calls TPOT
  (``docs/metrics.md``), so it is compared with TPOT.
- ``csv``: simctl's per-request measurement CSV (the calibration traces' format): ``arrival_time_s,
  input_tokens, output_tokens, ttft_s, e2e_s`` (optional ``has_error``).

Per-request metric definitions follow ``vllm bench serve``: TTFT, E2EL, TPOT = (E2EL − TTFT)/(n − 1),
ITL = every gap between consecutive tokens pooled over requests. When the measurement has no token
gaps (CSV, GenAI-Perf) the row ``itl_derived`` compares the stage-level derived inter-token latency
(mean E2EL − mean TTFT)/(mean output − 1) instead, as the calibration runs' summaries do.
The relative error of each row is (simulated − measured)/measured.
"""
from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError, TraceError
from sim.fidelity import export_readers

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "median", "p90", "p99")
THROUGHPUT_KEYS = ("request_throughput", "output_throughput")
# Per-request columns of a measurement table (times in seconds).
REQUEST_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "ttft_s", "e2el_s")
# Optional columns describing shared prompts, kept when a measurement CSV has them (sim.fidelity.calibrate.ReplayCase).
PROMPT_COLUMNS = ("prompt_id", "prefix_group", "prefix_tokens")
_UNIT_TO_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "sec": 1e3}


@dataclass
class BenchmarkResult:
    """One side of a comparison, normalised.

    ``summary`` uses ``vllm bench serve`` keys (latencies in ms, throughputs per second);
    ``requests`` (when the source has per-request data) has :data:`REQUEST_COLUMNS` for completed
    requests; ``itls_s`` is the pooled list of token gaps when the source recorded them.
    """

    source: str
    format: str
    summary: dict[str, float]
    requests: pd.DataFrame | None = None
    itls_s: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    setup: dict[str, Any] = field(default_factory=dict)  # model, request count, tokens, rate, concurrency


# ----------------------------------------------------------------------------------------------
# statistics (one definition used for both sides)

def _stats_ms(values_s: np.ndarray, prefix: str) -> dict[str, float]:
    """mean/median/p90/p99 in ms of ``values_s`` (seconds), NaNs dropped; empty → nothing."""
    v = np.asarray(values_s, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {}
    v = v * 1e3
    return {f"mean_{prefix}_ms": float(v.mean()), f"median_{prefix}_ms": float(np.median(v)),
            f"p90_{prefix}_ms": float(np.percentile(v, 90)), f"p99_{prefix}_ms": float(np.percentile(v, 99))}


def derived_itl_ms(requests: pd.DataFrame) -> float:
    """Stage-level inter-token latency (mean E2EL − mean TTFT)/(mean output − 1), in ms.

    This is how the calibration runs' ``measured_summary.csv`` derives ITL; it needs only TTFT, E2E
    and output counts, so it exists for every source with per-request data.
    """
    out = float(requests["output_tokens"].mean())
    if not out > 1:
        return float("nan")
    return 1e3 * float(requests["e2el_s"].mean() - requests["ttft_s"].mean()) / (out - 1)


def summarize_requests(requests: pd.DataFrame, itls_s: np.ndarray | None = None) -> dict[str, float]:
    """vllm-bench style summary of per-request data (:data:`REQUEST_COLUMNS`, completed requests).

    Duration = last completion − first arrival (SEMANTICS.md §1), when arrival times are known.
    """
    out: dict[str, float] = {"completed": int(len(requests))}
    if len(requests) == 0:
        return out
    out.update(_stats_ms(requests["ttft_s"].to_numpy(), "ttft"))
    out.update(_stats_ms(requests["e2el_s"].to_numpy(), "e2el"))
    n = requests["output_tokens"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(n > 1, (requests["e2el_s"].to_numpy() - requests["ttft_s"].to_numpy()) / (n - 1), np.nan)
    out.update(_stats_ms(tpot, "tpot"))
    if itls_s is not None and len(itls_s):
        out.update(_stats_ms(itls_s, "itl"))
    out["mean_itl_derived_ms"] = derived_itl_ms(requests)
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    if np.isfinite(arrival).all():
        duration = float((arrival + requests["e2el_s"].to_numpy()).max() - arrival.min())
        if duration > 0:
            out["duration"] = duration
            out["request_throughput"] = len(requests) / duration
            out["output_throughput"] = float(n.sum()) / duration
    return out


# ----------------------------------------------------------------------------------------------
# loading measurements

def _read_json(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return json.load(f)


def load_benchmark(path: str | Path) -> BenchmarkResult:
    """Load a measured benchmark result, detecting its format (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return _from_csv(path)
    if name.endswith((".jsonl", ".ndjson")):
        return _from_jsonl(path)
    try:
        data = _read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: neither a CSV nor valid JSON ({exc})") from None
    except (EOFError, OSError) as exc:  # a truncated or corrupt .gz
        raise ConfigError(f"{path}: cannot read: {exc or type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if "ttfts" in data or any(k.startswith(("mean_ttft", "mean_e2el", "median_ttft")) for k in data):
        return _from_vllm(path, data)
    genai = data.get("llm_metrics", data)  # AIPerf nests the metrics one level down
    if isinstance(genai, dict) and any(isinstance(genai.get(k), dict) for k in
                                       ("time_to_first_token", "request_latency", "inter_token_latency")):
        return _from_genai_perf(path, genai)
    keys = ", ".join(sorted(data)[:12])
    raise ConfigError(
        f"{path}: unrecognised benchmark format (top-level keys: {keys}). Expected a `vllm bench serve` "
        "result JSON (mean_ttft_ms, ...), a GenAI-Perf profile_export_genai_perf.json "
        "(time_to_first_token: {avg, p99, unit}, ...) or a per-request CSV "
        "(arrival_time_s, input_tokens, output_tokens, ttft_s, e2e_s)")


def _from_jsonl(path: Path) -> BenchmarkResult:
    """SGLang bench_serving runs or AIPerf per-request records (sim.fidelity.export_readers)."""
    records = export_readers.read_jsonl(path)
    if export_readers.is_aiperf(records):
        got = export_readers.from_aiperf(path, records)
    elif export_readers.is_sglang(records):
        got = export_readers.from_sglang(path, records)
    else:
        raise ConfigError(f"{path}: unrecognised JSON Lines export (keys: {', '.join(sorted(records[0])[:12])}); "
                          "expected SGLang bench_serving output or AIPerf profile_export.jsonl")
    summary, requests, gaps = dict(got["summary"]), None, None
    if got["requests"] is not None:
        requests = pd.DataFrame(got["requests"], columns=list(REQUEST_COLUMNS))
        gaps = np.asarray(got["itls_s"], dtype=float) if got["itls_s"] is not None else None
        summary.update(summarize_requests(requests, gaps))
        summary["failed"] = float(got.get("failed", 0))
    return BenchmarkResult(str(path), got["format"], summary, requests, gaps, got["notes"], got["setup"])


def read_request_csv(path: str | Path) -> pd.DataFrame:
    """Read a per-request measurement CSV into :data:`REQUEST_COLUMNS` (completed requests only).

    Required columns: ``input_tokens``, ``output_tokens``, ``ttft_s``, ``e2e_s`` (or ``e2el_s``);
    ``arrival_time_s`` (or ``arrival_s``) is needed for throughput and replay; rows with a true
    ``has_error`` are dropped; the shared-prompt columns :data:`PROMPT_COLUMNS` are kept when present.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for malformed files
        raise TraceError(f"{path}: cannot read as CSV: {exc}") from None
    rename = {"arrival_time_s": "arrival_s", "e2e_s": "e2el_s"}
    df = df.rename(columns={k: v for k, v in rename.items() if k in df.columns and v not in df.columns})
    missing = [c for c in ("input_tokens", "output_tokens", "ttft_s", "e2el_s") if c not in df.columns]
    if missing:
        raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                         "arrival_time_s,input_tokens,output_tokens,ttft_s,e2e_s "
                         f"(found: {', '.join(map(str, df.columns))})")
    if "has_error" in df.columns:
        df = df[~df["has_error"].astype(bool)]
    if "arrival_s" not in df.columns:
        df["arrival_s"] = np.nan
    for col in REQUEST_COLUMNS:
        bad = pd.to_numeric(df[col], errors="coerce")
        if col != "arrival_s" and bad.isna().any():
            row = int(np.flatnonzero(bad.isna().to_numpy())[0])
            raise TraceError(f"{path}: row {row + 2}, column {col}: not a number ({df[col].iloc[row]!r})")
        df[col] = bad
    keep = list(REQUEST_COLUMNS) + [c for c in PROMPT_COLUMNS if c in df.columns]
    return df[keep].reset_index(drop=True)


def _from_csv(path: Path) -> BenchmarkResult:
    requests = read_request_csv(path)
    return BenchmarkResult(str(path), "csv", summarize_requests(requests), requests)


def vllm_detailed_requests(data: dict, source: str = "<vllm result>") -> tuple[pd.DataFrame, np.ndarray]:
    """Per-request table and pooled token gaps from a ``--save-detailed`` vLLM result.

    E2EL of a request = TTFT + Σ its ITLs (vLLM stamps every streamed chunk). Failed requests
    (non-empty ``errors`` entry, or no first token) are dropped. ``start_times`` (newer vLLM) become
    arrival offsets; without it arrivals are NaN (fine for comparing, not for replaying).
    """
    ttfts = data.get("ttfts") or []
    itls = data.get("itls") or [[] for _ in ttfts]
    in_lens = data.get("input_lens") or [np.nan] * len(ttfts)
    out_lens = data.get("output_lens") or [np.nan] * len(ttfts)
    errors = data.get("errors") or [""] * len(ttfts)
    starts = data.get("start_times")
    n = len(ttfts)
    if not starts and str(data.get("request_rate")) == "inf":
        starts = [0.0] * n  # --request-rate inf: every request was sent at t = 0
    for key, val in (("itls", itls), ("input_lens", in_lens), ("output_lens", out_lens), ("errors", errors)):
        if len(val) != n:
            raise ConfigError(f"{source}: '{key}' has {len(val)} entries but 'ttfts' has {n}")
    rows, gaps = [], []
    t0 = min(starts) if starts else 0.0
    for i in range(n):
        if errors[i] or not ttfts[i] or ttfts[i] <= 0:
            continue
        gap = [float(g) for g in (itls[i] or [])]
        gaps.extend(gap)
        rows.append((float(starts[i]) - t0 if starts else np.nan, in_lens[i], out_lens[i],
                     float(ttfts[i]), float(ttfts[i]) + sum(gap)))
    df = pd.DataFrame(rows, columns=list(REQUEST_COLUMNS))
    return df, np.asarray(gaps, dtype=float)


def _from_vllm(path: Path, data: dict) -> BenchmarkResult:
    summary = {k: float(v) for k, v in data.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
    if data.get("ttfts"):
        requests, gaps = vllm_detailed_requests(data, str(path))
        per_req = summarize_requests(requests, gaps)
        # Recompute every latency statistic from the requests (p90 is absent unless the user asked
        # for it with --metric-percentiles); keep vLLM's own duration/throughput when arrivals are unknown.
        for key, val in per_req.items():
            if key in ("duration", "request_throughput", "output_throughput") and key in summary:
                continue
            summary[key] = val
        return BenchmarkResult(str(path), "vllm-bench-detailed", summary, requests,
                               gaps if gaps.size else None, setup=_setup(data))
    return BenchmarkResult(str(path), "vllm-bench", summary, setup=_setup(data))


def _setup(data: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's driving parameters, for the sanity checks of :func:`compare`."""
    return {k: data[k] for k in export_readers.SETUP_KEYS if data.get(k) is not None}


def _genai_value(obj: Any, stat: str, scale: float) -> float | None:
    if not isinstance(obj, dict):
        return None
    for key in {"mean": ("avg", "mean"), "median": ("p50", "median"), "p90": ("p90",), "p99": ("p99",)}[stat]:
        if isinstance(obj.get(key), (int, float)):
            return float(obj[key]) * scale
    return None


def _from_genai_perf(path: Path, data: dict) -> BenchmarkResult:
    summary: dict[str, float] = {}
    notes = []
    for gp_key, ours in (("time_to_first_token", "ttft"), ("inter_token_latency", "tpot"),
                         ("request_latency", "e2el")):
        obj = data.get(gp_key)
        if not isinstance(obj, dict):
            continue
        unit = str(obj.get("unit", "ms")).strip().lower()
        if unit not in _UNIT_TO_MS:
            raise ConfigError(f"{path}: {gp_key}.unit: unknown time unit {unit!r} (expected ns, us, ms or s)")
        for stat in STATS:
            v = _genai_value(obj, stat, _UNIT_TO_MS[unit])
            if v is not None:
                summary[f"{stat}_{ours}_ms"] = v
    for gp_key, ours in (("request_throughput", "request_throughput"),
                         ("output_token_throughput", "output_throughput")):
        v = _genai_value(data.get(gp_key), "mean", 1.0)
        if v is not None:
            summary[ours] = v
    notes.append("GenAI-Perf's inter_token_latency is per-request (E2E − TTFT)/(n − 1): compared as TPOT")
    return BenchmarkResult(str(path), "genai-perf", summary, notes=notes)


def load_simulated(sim_dir: str | Path) -> BenchmarkResult:
    """Read a simctl result directory (``summary.json`` + ``requests.parquet``)."""
    sim_dir = Path(sim_dir)
    summary_path = sim_dir / "summary.json"
    if not sim_dir.is_dir() or not summary_path.is_file():
        raise ConfigError(f"{sim_dir}: not a simctl result directory (no summary.json); "
                          "run `simctl run EXP.yaml --out DIR` first")
    summary = json.loads(summary_path.read_text())
    requests = None
    parquet = sim_dir / "requests.parquet"
    if parquet.is_file():
        requests = simulated_requests(pd.read_parquet(parquet), _warmup_s(sim_dir))
    flat = {k: float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return BenchmarkResult(str(sim_dir), "simctl", flat, requests, setup=_setup(summary))


def _warmup_s(sim_dir: Path) -> float:
    cfg = sim_dir / "config.yaml"
    if not cfg.is_file():
        return 0.0
    import yaml
    data = yaml.safe_load(cfg.read_text()) or {}
    return float(data.get("warmup_s") or 0.0)


def simulated_requests(records: pd.DataFrame, warmup_s: float = 0.0, *, keep_all: bool = False) -> pd.DataFrame:
    """Map simctl's per-request records onto :data:`REQUEST_COLUMNS`: the completed requests that arrived
    after warm-up, or with ``keep_all`` every row, latencies NaN where the request did not complete."""
    df = records
    done = (df["status"] == "completed").to_numpy() if "status" in df.columns else np.ones(len(df), bool)
    if not keep_all:
        df = df[done & (df["arrival_s"] >= warmup_s).to_numpy()]
        done = np.ones(len(df), bool)
    nan = np.nan
    return pd.DataFrame({
        "arrival_s": df["arrival_s"].to_numpy(dtype=float),
        "input_tokens": df["num_prompt_tokens"].to_numpy(),
        "output_tokens": df["num_output_tokens"].to_numpy(),
        "ttft_s": np.where(done, df["ttft_s"].to_numpy(dtype=float), nan),
        "e2el_s": np.where(done, df["e2el_s"].to_numpy(dtype=float), nan),
    })


# ----------------------------------------------------------------------------------------------
# the comparison

@dataclass
class Comparison:
    """Rows of (metric, simulated, measured, relative error) plus provenance."""

    simulated: BenchmarkResult
    measured: BenchmarkResult
    rows: list[dict[str, Any]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (compare.json)."""
        errs = [abs(r["rel_error"]) for r in self.rows if r["rel_error"] is not None and not r.get("excluded")]
        return {
            "simulated": {"source": self.simulated.source, "format": self.simulated.format},
            "measured": {"source": self.measured.source, "format": self.measured.format},
            "rows": self.rows,
            "median_abs_rel_error": float(np.median(errs)) if errs else None,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        """The table as Markdown (compare.md)."""
        d = self.to_dict()
        lines = ["# simulated vs measured", "",
                 f"- simulated: `{d['simulated']['source']}`",
                 f"- measured: `{d['measured']['source']}` ({d['measured']['format']})", "",
                 "| metric | simulated | measured | rel. error |", "|---|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r['metric']} | {_fmt(r['simulated'])} | {_fmt(r['measured'])} | "
                         f"{_fmt_err(r['rel_error'])} |")
        if d["median_abs_rel_error"] is not None:
            lines += ["", f"Median |relative error| over the rows: {100 * d['median_abs_rel_error']:.1f}%"]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"


def _fmt_err(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f}%"


def rel_error(simulated: float | None, measured: float | None) -> float | None:
    """(simulated − measured)/measured, or None when either is missing or measured is 0."""
    if simulated is None or measured is None or not math.isfinite(simulated) or not math.isfinite(measured) \
            or measured == 0:
        return None
    return (simulated - measured) / measured


def compare(simulated: BenchmarkResult, measured: BenchmarkResult) -> Comparison:
    """Compare two normalised results on every metric both sides have.

    When both sides carry per-request data, both summaries are recomputed from the requests with the
    same code (so percentile conventions cannot differ); otherwise each side's own summary is used.
    """
    notes = list(measured.notes)
    sim_sum, real_sum = dict(simulated.summary), dict(measured.summary)
    if simulated.requests is not None and measured.requests is not None:
        # (pooled-gap ITL keys are only recomputed where the requests carry gaps; else each side's own stays)
        sim_sum.update(summarize_requests(simulated.requests))
        real_sum.update(summarize_requests(measured.requests, measured.itls_s))
        if measured.requests["arrival_s"].isna().any():
            notes.append("the measurement has no arrival times: throughput taken from its own summary")
    elif simulated.requests is not None:
        sim_sum.setdefault("mean_itl_derived_ms", derived_itl_ms(simulated.requests))
    notes += setup_mismatches(simulated.setup, measured.setup, sim_sum, real_sum)
    chunked = chunked_streaming(measured.itls_s)
    if chunked:
        notes.append(chunked)
    rows = []
    for metric in LATENCY_METRICS:
        for stat in STATS:
            key = f"{stat}_{metric}_ms"
            if key in real_sum and key in sim_sum:
                rows.append(_row(key, sim_sum[key], real_sum[key], excluded=bool(chunked) and metric == "itl"))
    if "mean_itl_derived_ms" in real_sum and "mean_itl_derived_ms" in sim_sum:
        rows.append(_row("mean_itl_derived_ms", sim_sum["mean_itl_derived_ms"], real_sum["mean_itl_derived_ms"]))
    for key in THROUGHPUT_KEYS:
        if key in real_sum and key in sim_sum:
            rows.append(_row(key, sim_sum[key], real_sum[key]))
    if not rows:
        raise ConfigError(f"{measured.source}: no metric in common with {simulated.source}")
    if not any(r["metric"].endswith("_itl_ms") for r in rows) and any("itl_derived" in r["metric"] for r in rows):
        notes.append("no token gaps in the measurement: ITL compared as (mean E2EL − mean TTFT)/(mean output − 1)")
    return Comparison(simulated, measured, rows, notes)


def _row(metric: str, sim: float, real: float, excluded: bool = False) -> dict[str, Any]:
    sim_v = float(sim) if sim is not None else None
    real_v = float(real) if real is not None else None
    row = {"metric": metric, "simulated": sim_v, "measured": real_v, "rel_error": rel_error(sim_v, real_v)}
    if excluded:
        row["excluded"] = True  # shown, but kept out of the headline error
    return row


# A gap below this is a token that arrived in the same network chunk as the previous one.
_SAME_CHUNK_GAP_S = 0.5e-3


def chunked_streaming(itls_s: np.ndarray | None, share: float = 0.2) -> str:
    """A note when more than ``share`` of the measured token gaps are ~0 ms (tokens delivered several
    per streamed chunk): such ITLs measure the network, not the engine; "" otherwise."""
    if itls_s is None or len(itls_s) == 0:
        return ""
    frac = float(np.mean(np.asarray(itls_s) < _SAME_CHUNK_GAP_S))
    if frac <= share:
        return ""
    return (f"{100 * frac:.0f}% of the measured token gaps are < {_SAME_CHUNK_GAP_S * 1e3:g} ms: the server streamed "
            "several tokens per chunk, so its ITL is not comparable (ITL rows are shown but left out of the "
            "headline error)")


def _norm_model(name: Any) -> str:
    return "".join(ch for ch in str(name).lower().rsplit("/", 1)[-1] if ch.isalnum())


def setup_mismatches(sim: dict[str, Any], real: dict[str, Any], sim_sum: dict[str, Any],
                     real_sum: dict[str, Any], tol: float = 0.05) -> list[str]:
    """Warnings when the two sides were not driven alike: model, request count, token totals, rate
    or concurrency differing (counts and totals by more than ``tol``)."""
    out = []
    if sim.get("model_id") and real.get("model_id") and _norm_model(sim["model_id"]) not in _norm_model(real["model_id"]) \
            and _norm_model(real["model_id"]) not in _norm_model(sim["model_id"]):
        out.append(f"warning: different models: simulated {sim['model_id']!r}, measured {real['model_id']!r}")
    for key, label in (("completed", "completed requests"), ("total_input_tokens", "input tokens"),
                       ("total_output_tokens", "output tokens")):
        a, b = sim_sum.get(key, sim.get(key)), real_sum.get(key, real.get(key))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b and abs(a - b) > tol * abs(b):
            out.append(f"warning: {label} differ: simulated {a:,.0f}, measured {b:,.0f}")
    for key, label in (("request_rate", "request rate"), ("max_concurrency", "max concurrency")):
        if key not in real:  # the measurement does not record it
            continue
        a, b = sim.get(key), real.get(key)
        if key == "max_concurrency" and (a is None) != (b is None):  # one side capped, the other not
            a, b = a or "none", b or "none"
        if a is not None and b is not None and str(a) != str(b):
            try:
                same = abs(float(a) - float(b)) <= tol * abs(float(b))
            except (TypeError, ValueError):
                same = False
            if not same:
                out.append(f"warning: {label} differs: simulated {a}, measured {b}")
    return out


def compare_paths(sim_dir: str | Path, real: str | Path) -> Comparison:
    """Load both sides and compare them."""
    return compare(load_simulated(sim_dir), load_benchmark(real))


def write_comparison(comp: Comparison, out_json: str | Path) -> tuple[Path, Path]:
    """Write ``compare.json`` and the Markdown table beside it (same stem, ``.md``)."""
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(comp.to_dict(), indent=2))
    out_md = out_json.with_suffix(".md")
    out_md.write_text(comp.to_markdown())
    return out_json, out_md
