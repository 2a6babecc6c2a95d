"""What ``vllm bench serve`` writes that simctl's own metrics do not: its setup keys, peak output
rate and peak concurrency, and the ``--save-detailed`` per-request lists.

Definitions follow ``vllm/benchmarks/serve.py`` (``calculate_metrics`` and ``main_async``):

- ``max_output_tokens_per_s``: the most output tokens emitted in one 1-second bucket, buckets
  counted from the first completed request's start (``int(t − t0)``), over completed requests;
- ``max_concurrent_requests``: the most completed requests active in one such bucket (a request is
  active in every bucket from its start's to its end's, inclusive) — vLLM reports the maximum over
  all buckets, not the concurrency at the output peak;
- ``failed``: requests that ended with an error (simctl: rejected); ``num_prompts``: requests sent;
  ``request_rate`` ``"inf"`` when every request is sent at once (offline, or closed loop, which vLLM
  runs as ``--request-rate inf --max-concurrency N``); ``burstiness`` the gamma shape (1 = Poisson,
  ``"inf"`` for constant gaps); ``max_concurrency`` the closed-loop clients or the open-loop cap.

The run's ``date`` goes to meta.json, never to summary.json: the same seed must give the same bytes.
All of it is vectorised: one pass over iterations, never over tokens in Python.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.engine.request import TokenTimeline
from sim.measure.metrics import (
    _flat_ends as flat_ends,  # all replicas' end times, one gather
    _runs_table as runs_table,  # the one flattening of token runs
)

BACKEND = "simctl"
# The per-request lists vLLM's --save-detailed adds to its result JSON.
DETAILED_KEYS = ("input_lens", "output_lens", "ttfts", "itls", "start_times", "generated_texts", "errors")


def _token_counts_per_iteration(timeline: TokenTimeline, rows: np.ndarray) -> dict[int, np.ndarray]:
    """Tokens emitted by requests ``rows`` at each iteration of each replica."""
    _, start, end, replica = runs_table(timeline, rows)
    out: dict[int, np.ndarray] = {}
    for rep in np.unique(replica):
        n = len(timeline.iteration_end_s[int(rep)])
        sel = replica == rep
        diff = np.bincount(start[sel], minlength=n + 1) - np.bincount(end[sel] + 1, minlength=n + 1)
        out[int(rep)] = np.cumsum(diff)[:n]
    return out


def peak_rates(requests: pd.DataFrame, timeline: TokenTimeline | None, rows: np.ndarray) -> dict[str, Any]:
    """``max_output_tokens_per_s`` and ``max_concurrent_requests`` of completed requests ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0 or timeline is None:
        return {"max_output_tokens_per_s": 0.0, "max_concurrent_requests": 0}
    start = requests["arrival_s"].to_numpy(dtype=np.float64)[rows]
    end = start + requests["e2el_s"].to_numpy(dtype=np.float64)[rows]
    t0 = float(start.min())
    nbuckets = int(np.ceil(float(end.max()) - t0)) + 1
    tokens = np.zeros(nbuckets)
    for rep, mult in _token_counts_per_iteration(timeline, rows).items():
        t = np.asarray(timeline.iteration_end_s[rep], dtype=np.float64)
        b = (t - t0).astype(np.int64)  # int() truncation, as vLLM
        ok = (b >= 0) & (b < nbuckets) & (mult > 0)
        tokens += np.bincount(b[ok], weights=mult[ok], minlength=nbuckets)[:nbuckets]
    s = (start - t0).astype(np.int64)
    e = (end - t0).astype(np.int64)
    active = np.cumsum(np.bincount(s, minlength=nbuckets + 1) - np.bincount(e + 1, minlength=nbuckets + 1))[:nbuckets]
    return {"max_output_tokens_per_s": float(tokens.max()), "max_concurrent_requests": int(active.max())}


def closed_loop_clients(workload: Any) -> int | None:
    procs = [getattr(workload, "arrival", None), *(c.arrival for c in getattr(workload, "classes", ()) or ())]
    clients = [p.clients for p in procs if p is not None and getattr(p, "closed_loop", False)]
    return sum(clients) if clients else None


def setup_keys(workload: Any, model_name: str, num_sent: int, num_failed: int) -> dict[str, Any]:
    """The keys ``vllm bench serve`` writes about how the benchmark was driven (module docstring)."""
    arrival = getattr(workload, "arrival", None)
    process = getattr(arrival, "process", None)
    clients = closed_loop_clients(workload)
    rate: Any = getattr(workload, "mean_rate", None)
    if process == "offline" or clients is not None:
        rate = "inf"
    burstiness: Any = 1.0
    if process == "gamma":
        burstiness = float(arrival.burstiness)
    elif process == "constant":
        burstiness = "inf"
    max_conc = getattr(workload, "max_concurrency", None)
    return {"backend": BACKEND, "model_id": model_name, "num_prompts": int(num_sent), "failed": int(num_failed),
            "request_rate": rate, "burstiness": burstiness,
            "max_concurrency": clients if clients is not None else max_conc}


def detailed_lists(requests: pd.DataFrame, timeline: TokenTimeline | None) -> dict[str, list[Any]]:
    """``--save-detailed``'s per-request lists, one entry per request in record order (seconds, as
    vLLM stores them). A request that did not complete has ``ttft`` 0, no ``itls``, ``output_len``
    0 and its reason in ``errors``, as a failed request in vLLM's output."""
    n = len(requests)
    status = requests["status"].astype(str).to_numpy()
    done = status == "completed"
    ttft = np.where(done, requests["ttft_s"].to_numpy(dtype=np.float64), 0.0)
    out_lens = np.where(done, requests["num_output_tokens"].to_numpy(dtype=np.int64), 0)
    itls: list[list[float]] = [[] for _ in range(n)]
    rows = np.flatnonzero(done)
    if timeline is not None and rows.size:
        rows_tab = _token_times(timeline, rows)
        for r, times in rows_tab.items():
            itls[r] = np.diff(times).tolist()
    errors = ["" if d else (reason or stat) for d, reason, stat in
              zip(done, requests["reject_reason"].astype(str).to_numpy(), status)]
    return {"input_lens": requests["num_prompt_tokens"].astype(np.int64).tolist(), "output_lens": out_lens.tolist(),
            "ttfts": ttft.tolist(), "itls": itls, "start_times": requests["arrival_s"].astype(float).tolist(),
            "generated_texts": [""] * n, "errors": errors}


def _token_times(timeline: TokenTimeline, rows: np.ndarray) -> dict[int, np.ndarray]:
    """Token times of requests ``rows`` (one array each), in one gather over all replicas' end times."""
    run_row, start, end, rep_of_run = runs_table(timeline, rows)
    ntok = end - start + 1
    tok_row = np.repeat(run_row, ntok)
    idx = np.repeat(start - (np.cumsum(ntok) - ntok), ntok) + np.arange(int(ntok.sum()))
    ends, base = flat_ends(timeline)
    times = ends[idx] if base is None else ends[base[np.repeat(rep_of_run, ntok)] + idx]
    bounds = np.flatnonzero(np.diff(tok_row)) + 1
    return {int(row[0]): t for row, t in zip(np.split(tok_row, bounds), np.split(times, bounds)) if row.size}
