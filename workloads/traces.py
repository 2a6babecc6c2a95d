"""Trace files: read, check and window request traces (CSV or JSON Lines, optionally ``.gz``).

Recognised layouts (header names; override any with ``trace.columns``):

- simctl: ``arrival_time_s, input_tokens, output_tokens`` (seconds from the start of the run)
- Azure LLM inference 2023: ``TIMESTAMP, ContextTokens, GeneratedTokens`` (wall-clock timestamps,
  turned into offsets from the first row)
- Vidur / Splitwise processed traces: ``num_prefill_tokens, num_decode_tokens`` (lengths only — the
  arrivals then come from ``workload.arrival``)

Every problem raises :class:`sim.errors.TraceError` naming the file, the row (1 = first data row; the
CSV line number is given too) and the column.
"""
from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import TraceError

# Candidate header names, first match wins (compared case-insensitively).
ARRIVAL_COLUMNS = ("arrival_time_s", "arrival_s", "arrival_time", "arrived_at", "timestamp", "TIMESTAMP", "time_s")
INPUT_COLUMNS = ("input_tokens", "ContextTokens", "num_prefill_tokens", "prompt_tokens", "input_len", "input_length", "num_prompt_tokens")
OUTPUT_COLUMNS = ("output_tokens", "GeneratedTokens", "num_decode_tokens", "completion_tokens", "output_len", "output_length", "num_output_tokens")
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Trace:
    """A checked trace: row-aligned arrays; ``arrival_s`` is None for length-only traces."""

    path: Path
    input_tokens: np.ndarray  # int64, ≥ 1
    output_tokens: np.ndarray  # int64, ≥ 1
    arrival_s: np.ndarray | None  # float64, non-decreasing, ≥ 0 (offsets in trace time)
    columns: dict[str, str]  # role -> header name used

    @property
    def num_rows(self) -> int:
        """Number of requests in the trace."""
        return len(self.input_tokens)

    @property
    def span_s(self) -> float:
        """Last arrival − first arrival (0 for length-only traces)."""
        if self.arrival_s is None or len(self.arrival_s) == 0:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])


def _row_ref(path: Path, fmt: str, i: int) -> str:
    """Human reference to data row ``i`` (0-based): ``row 5 (line 6)`` for CSV, ``line 5`` for JSONL."""
    return f"row {i + 1} (line {i + 2})" if fmt == "csv" else f"row {i + 1} (line {i + 1})"


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower().removesuffix(".gz")
    return "jsonl" if name.endswith((".jsonl", ".ndjson", ".json")) else "csv"


def read_table(path: Path, fmt: str = "auto") -> tuple[pd.DataFrame, str]:
    """Read a CSV/JSONL file as strings-or-numbers; TraceError for missing, empty or malformed files
    (a truncated or corrupt ``.gz`` included)."""
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        return _read_table(path, _detect_format(path, fmt))
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceError(f"{path}: the gzip data is truncated or corrupt ({exc or type(exc).__name__}); "
                         "re-download or re-compress the file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every non-blank line of a JSON Lines file (optionally ``.gz``) as an object; TraceError naming
    the line otherwise. Also reads benchmark exports (sim.fidelity.export_readers)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}: line {lineno}: not valid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise TraceError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def _read_table(path: Path, fmt: str) -> tuple[pd.DataFrame, str]:
    if fmt == "csv":
        try:
            df = pd.read_csv(path, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise TraceError(f"{path}: the trace is empty (no header, no rows)") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise TraceError(f"{path}: not a readable CSV file: {exc}") from None
    else:
        df = pd.DataFrame(read_json_lines(path))
    if len(df) == 0:
        raise TraceError(f"{path}: the trace has no rows")
    return df, fmt


def _find_column(df: pd.DataFrame, candidates: tuple[str, ...], explicit: str | None, role: str, path: Path, required: bool) -> str | None:
    if explicit is not None:
        if explicit not in df.columns:
            raise TraceError(f"{path}: column '{explicit}' (trace.columns.{role}) not found; columns present: {', '.join(map(str, df.columns))}")
        return explicit
    lower = {str(c).lower(): str(c) for c in df.columns}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    if required:
        raise TraceError(
            f"{path}: missing column for {role} (looked for {', '.join(candidates)}; set trace.columns.{role}); "
            f"columns present: {', '.join(map(str, df.columns))}")
    return None


def _token_column(df: pd.DataFrame, col: str, path: Path, fmt: str) -> np.ndarray:
    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: {raw.iloc[i]!r} is not a number")
    frac = values != np.floor(values)
    if frac.any():
        i = int(np.argmax(frac))
        raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: {raw.iloc[i]!r} is not a whole number of tokens")
    small = values < 1
    if small.any():
        i = int(np.argmax(small))
        raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: {raw.iloc[i]!r} tokens; must be ≥ 1")
    return values.astype(np.int64)


def _time_column(df: pd.DataFrame, col: str, path: Path, fmt: str, time_unit: str) -> np.ndarray:
    raw = df[col]
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        t = numeric.to_numpy(dtype=float) * _TIME_UNITS[time_unit]
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: {raw.iloc[i]!r} is not a finite time")
        neg = t < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: negative arrival time {raw.iloc[i]!r}")
    elif numeric.notna().any():  # mostly numbers, some not
        i = int(np.argmax(numeric.isna().to_numpy()))
        raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: {raw.iloc[i]!r} is not a number of seconds")
    else:
        # Wall-clock timestamps (Azure): offsets in seconds from the first row.
        stamps = pd.to_datetime(raw.astype(str), errors="coerce", format="ISO8601")
        bad = stamps.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {col}: {raw.iloc[i]!r} is neither a number nor a timestamp")
        ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        t = (ns - ns[0]) / 1e9
    back = np.diff(t) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise TraceError(
            f"{path}: {_row_ref(path, fmt, i)}, column {col}: arrival time {raw.iloc[i]!r} is before the previous row's "
            f"{raw.iloc[i - 1]!r} (traces must be sorted by arrival time)")
    return t


def load_trace(path: Path, fmt: str = "auto", columns: dict[str, str] | None = None, time_unit: str = "s") -> Trace:
    """Read and check a trace. ``columns`` maps roles ``arrival``/``input_tokens``/``output_tokens`` to
    header names; a role left out is auto-detected (``arrival`` may be absent: length-only trace)."""
    columns = dict(columns or {})
    df, fmt = read_table(path, fmt)
    in_col = _find_column(df, INPUT_COLUMNS, columns.get("input_tokens"), "input_tokens", path, True)
    out_col = _find_column(df, OUTPUT_COLUMNS, columns.get("output_tokens"), "output_tokens", path, True)
    t_col = _find_column(df, ARRIVAL_COLUMNS, columns.get("arrival"), "arrival", path, False)
    assert in_col is not None and out_col is not None
    inp = _token_column(df, in_col, path, fmt)
    out = _token_column(df, out_col, path, fmt)
    arrival = _time_column(df, t_col, path, fmt, time_unit) if t_col is not None else None
    used = {"input_tokens": in_col, "output_tokens": out_col}
    if t_col is not None:
        used["arrival"] = t_col
    return Trace(path=path, input_tokens=inp, output_tokens=out, arrival_s=arrival, columns=used)


def window_trace(trace: Trace, start_s: float = 0.0, duration_s: float | None = None,
                 max_requests: int | None = None, speedup: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Select rows and map trace time to simulated time.

    Keeps rows with ``start_s ≤ t < start_s + duration_s`` (trace seconds, before speedup; ``t`` is the
    arrival column as written for numeric columns, the offset from the first row for wall-clock
    timestamps), then the first ``max_requests`` of them; simulated arrival = ``(t − start_s) / speedup``.
    Returns ``(arrival_s, input_tokens, output_tokens)``.
    """
    assert trace.arrival_s is not None
    t = trace.arrival_s
    keep = t >= start_s
    if duration_s is not None:
        keep &= t < start_s + duration_s
    idx = np.flatnonzero(keep)
    if idx.size == 0 and t.size:  # an empty window is a mistake, not a run of 0 requests
        span = f"[{float(t.min()):g}, {float(t.max()):g}] s"
        raise TraceError(f"{trace.path}: trace.start_s = {start_s:g}" + (f", duration_s = {duration_s:g}" if duration_s else "")
                         + f" selects no request: the trace's arrivals span {span}")
    if max_requests is not None:
        idx = idx[:max_requests]
    return (t[idx] - start_s) / speedup, trace.input_tokens[idx], trace.output_tokens[idx]


def read_length_column(path: Path, column: str) -> np.ndarray:
    """One numeric column of a CSV/JSONL file as int64 (rounded), for ``dist: empirical``."""
    df, fmt = read_table(path)
    if column not in df.columns:
        raise TraceError(f"{path}: column '{column}' not found; columns present: {', '.join(map(str, df.columns))}")
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"{path}: {_row_ref(path, fmt, i)}, column {column}: {raw.iloc[i]!r} is not a number")
    return np.rint(values).astype(np.int64)
