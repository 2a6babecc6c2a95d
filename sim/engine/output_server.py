"""The API-server output path as one FIFO server: when the *client* sees each engine step's tokens.

vLLM V1 runs the engine core and the OpenAI-compatible API server in two processes; the API server
(one asyncio thread) takes each step's ``EngineCoreOutputs`` — one chunk per running request that produced
tokens — detokenizes them, builds the ``RequestOutput``s and streams them. SGLang has the same structure
(scheduler -> detokenizer-manager process -> tokenizer-manager/HTTP process). That process is a single
server working in FIFO order, so step ``k``'s outputs reach the client at

    D_k = max(D_{k-1}, E_k) + S_k,   S_k = per_chunk_s * chunks_k + per_token_s * (tokens_k - chunks_k)

(Lindley's recursion; ``E_k`` = step ``k``'s end, ``chunks_k`` = requests that emitted in it, ``tokens_k``
= tokens emitted; a chunk's first token is in ``per_chunk_s``, extra tokens of a speculative burst cost
``per_token_s`` each). The engine does not wait for the API server (separate process), so the server only
shifts what the client measures: TTFT, ITL, TPOT and E2E as ``vllm bench serve`` sees them.

The recursion is evaluated vectorised after the run: with ``C_k = S_0 + … + S_k``,
``D_k = C_k + max_{j≤k}(E_j − C_{j−1})``. Request ends (``done`` events: a closed-loop client's next turn)
stay at the engine-side time; the shift is the server's sojourn (tens of µs to a few ms), documented in
docs/output-server.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["OutputServerSpec", "output_server_spec", "client_times", "emissions_per_iteration", "apply_output_server"]


@dataclass(frozen=True)
class OutputServerSpec:
    """Service costs of the API server's output path (seconds; sources in hwprofiles / docs/output-server.md)."""

    per_chunk_s: float  # one request's output of one step: detokenize its token, build + stream the chunk
    per_token_s: float  # each further token in the same chunk (speculative bursts): incremental detokenize


def output_server_spec(dep) -> OutputServerSpec | None:
    """The spec for a deployment (``sim.deploy.deployment.Deployment``): its hardware profile's
    ``output_per_chunk_s`` / ``output_per_token_s`` when ``engine.output_server`` is on, else None."""
    if not getattr(dep.engine, "output_server", False):
        return None
    params = dep.hardware.tunable_parameters()
    return OutputServerSpec(float(params["output_per_chunk_s"]), float(params["output_per_token_s"]))


def client_times(end_s: np.ndarray, chunks: np.ndarray, tokens: np.ndarray, spec: OutputServerSpec) -> np.ndarray:
    """Times the single FIFO server finishes each step's outputs (the Lindley recursion, vectorised)."""
    end_s = np.asarray(end_s, dtype=np.float64)
    if end_s.size == 0:
        return end_s.copy()
    chunks = np.asarray(chunks, dtype=np.float64)
    service = spec.per_chunk_s * chunks + spec.per_token_s * np.maximum(np.asarray(tokens, np.float64) - chunks, 0.0)
    cum = np.cumsum(service)
    return cum + np.maximum.accumulate(end_s - (cum - service))


def emissions_per_iteration(num_iterations: int, runs: np.ndarray, bursts: np.ndarray | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(chunks, tokens) per iteration of one replica from its requests' emission runs (flat inclusive
    ``(start, end)`` pairs) and speculative ``(iteration, extra tokens)`` pairs."""
    n = num_iterations
    if runs.size == 0 or n == 0:
        z = np.zeros(n, dtype=np.int64)
        return z, z.copy()
    starts, ends = runs[0::2], runs[1::2]
    diff = np.bincount(starts, minlength=n + 1)[: n + 1] - np.bincount(ends + 1, minlength=n + 1)[: n + 1]
    chunks = np.cumsum(diff)[:n]
    tokens = chunks.copy()
    if bursts is not None and bursts.size:
        tokens = tokens + np.bincount(bursts[0::2], weights=bursts[1::2], minlength=n)[:n].astype(np.int64)
    return chunks, tokens


def apply_output_server(req_df: pd.DataFrame, timeline, spec: OutputServerSpec) -> None:
    """Move ``timeline``'s token times and ``req_df``'s token-time columns to the client side, in place.

    One server per replica (each ``vllm serve`` instance has its own API server)."""
    offsets = timeline.run_offsets
    runs = timeline.runs
    replica_of = timeline.replica_of
    num = offsets.size - 1
    has = offsets[1:] > offsets[:-1]
    first_iter = np.where(has, runs[np.minimum(offsets[:-1], max(runs.size - 1, 0))] if runs.size else 0, -1)
    last_iter = np.where(has, runs[np.maximum(offsets[1:] - 1, 0)] if runs.size else 0, -1)
    first_s = np.full(num, np.nan)
    last_s = np.full(num, np.nan)
    pairs = runs.reshape(-1, 2) if runs.size else np.zeros((0, 2), np.int64)
    pair_rep = np.repeat(replica_of, np.diff(offsets) // 2)  # replica of each (start, end) pair
    bpairs = bpair_rep = None
    if timeline.bursts is not None:
        bpairs = timeline.bursts.reshape(-1, 2)
        bpair_rep = np.repeat(replica_of, np.diff(timeline.burst_offsets) // 2)
    for rep, ends in list(timeline.iteration_end_s.items()):
        rows = np.flatnonzero(replica_of == rep)
        bursts = None if bpairs is None else bpairs[bpair_rep == rep].ravel()
        chunks, tokens = emissions_per_iteration(len(ends), pairs[pair_rep == rep].ravel(), bursts)
        client = client_times(ends, chunks, tokens, spec)
        timeline.iteration_end_s[rep] = client
        sel = rows[has[rows]]
        first_s[sel] = client[first_iter[sel]]
        last_s[sel] = client[last_iter[sel]]
    ok = ~np.isnan(first_s) & req_df["first_token_s"].notna().to_numpy()
    arrival = req_df["arrival_s"].to_numpy()
    completed = (req_df["status"] == "completed").to_numpy() & ok
    first = req_df["first_token_s"].to_numpy(dtype=np.float64).copy()
    first[ok] = first_s[ok]
    req_df["first_token_s"] = first
    req_df["ttft_s"] = np.where(ok, first - arrival, req_df["ttft_s"].to_numpy())
    finish = req_df["finish_s"].to_numpy(dtype=np.float64).copy()
    finish[completed] = last_s[completed]
    req_df["finish_s"] = finish
    req_df["e2el_s"] = np.where(completed, finish - arrival, req_df["e2el_s"].to_numpy())
    nout = req_df["num_output_tokens"].to_numpy()
    multi = completed & (nout > 1)
    tpot = req_df["tpot_s"].to_numpy(dtype=np.float64).copy()
    tpot[multi] = (last_s[multi] - first[multi]) / (nout[multi] - 1)
    req_df["tpot_s"] = tpot
