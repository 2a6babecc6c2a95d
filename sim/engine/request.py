"""Requests: what a workload submits (:class:`RequestSpec`), the engine's mutable per-request state
(:class:`Request`), and the flat per-request record the metrics are computed from.

There is no prefill phase and no decode phase: a request carries ``num_computed_tokens`` catching up to
``num_tokens`` (= prompt + output generated so far). A step that brings ``num_computed_tokens`` up to
``num_tokens`` samples one new output token (``num_output_tokens += 1``). Chunked prefill, recompute
after preemption and prefix-cache hits all follow from that one counter (vLLM V1 semantics).

Token timestamps are never stored one by one. A token is emitted at the end of an iteration, so a
request's token times are ``iteration_end_s[k]`` for the iterations ``k`` it emitted in. Those form
few contiguous *runs* of the replica's iteration index (a run breaks only when the request is skipped
in an iteration, e.g. preempted or a prefill-only step of vllm-v0), kept as a flat list
``[start0, end0, start1, end1, ...]`` (inclusive iteration indices). With speculative decoding an
emission may carry several tokens (accepted drafts + the sampled one); those few emissions are listed
apart as ``(iteration, extra tokens)`` pairs (``Request.bursts``), so a run still marks emission steps.
"""
from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request as a workload submits it.

    ``prompt_segments`` describes the prompt's *content* so prefix caching can find shared prefixes
    without token ids: a tuple of ``(content_key, num_tokens)``; two prompts share a KV block iff
    the segments covering that block (and everything before it) are equal. The default (empty) means
    one segment unique to this request.
    """

    arrival_s: float  # scheduled send time (seconds from the start of the run)
    num_prompt_tokens: int
    max_output_tokens: int  # tokens to generate (ignore_eos semantics: exactly this many)
    class_name: str = "default"  # request class label (workload mixtures)
    prompt_segments: tuple[tuple[Hashable, int], ...] = ()
    session_id: int = -1  # multi-turn conversation id, -1 if none
    prefix_group: int = -1  # shared-prefix group id, -1 if none
    output_key: Hashable | None = None  # content key of the generated answer (for multi-turn prompts)
    # images (multimodal models): ``num_images`` images of ``image_tokens`` placeholder tokens each, part
    # of ``num_prompt_tokens``; the vision encoder runs on the step of the first prefill chunk (docs/workloads.md)
    num_images: int = 0
    image_tokens: int = 0


class RequestStatus(enum.Enum):
    """Lifecycle of a request inside one replica."""

    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"  # back in the waiting queue after recompute preemption
    SWAPPED = "swapped"  # KV moved to host memory
    FINISHED = "finished"
    REJECTED = "rejected"


class Request:
    """Mutable engine state of one request. Policies read and advance it; the KV manager owns its blocks."""

    __slots__ = (
        "request_id", "spec", "replica", "num_prompt_tokens", "max_output_tokens",
        "num_output_tokens", "num_computed_tokens", "num_cached_tokens", "status", "reject_reason",
        "arrival_s", "first_scheduled_s", "prefill_done_s", "first_token_s", "last_token_s",
        "finish_s", "num_preemptions", "runs", "last_emit_iter", "done_event", "prefill_compute_s",
        "block_hashes", "bursts", "images_pending",
    )

    def __init__(self, request_id: int, spec: RequestSpec, arrival_s: float, replica: int = 0) -> None:
        self.request_id = request_id
        self.spec = spec
        self.replica = replica
        self.num_prompt_tokens = spec.num_prompt_tokens
        self.max_output_tokens = spec.max_output_tokens
        self.num_output_tokens = 0
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache (first admission)
        self.status = RequestStatus.WAITING
        self.reject_reason: str | None = None
        self.arrival_s = arrival_s  # when the engine received it
        self.first_scheduled_s = -1.0
        self.prefill_done_s = -1.0
        self.first_token_s = -1.0
        self.last_token_s = -1.0
        self.finish_s = -1.0
        self.num_preemptions = 0
        self.runs: list[int] = []  # flat [start, end, start, end, ...] iteration indices of emissions
        self.last_emit_iter = -2
        self.done_event = None  # simpy.Event succeeded when the request ends (closed-loop clients)
        self.prefill_compute_s = 0.0  # Σ iteration time of steps that computed its prompt tokens
        self.block_hashes: list | None = None  # prefix-cache hashes of full blocks (lazily computed)
        # speculative decoding: flat [iteration, extra, ...] for emissions of 1 + extra tokens (None: none)
        self.bursts: list[int] | None = None
        # the vision encoder still has to run for this request's images (again after a recompute preemption)
        self.images_pending = spec.num_images > 0

    @property
    def num_tokens(self) -> int:
        """Prompt plus output tokens generated so far."""
        return self.num_prompt_tokens + self.num_output_tokens

    @property
    def num_remaining_tokens(self) -> int:
        """Tokens still to compute before the next output token can be sampled."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        """True once the request completed or was rejected."""
        return self.status in (RequestStatus.FINISHED, RequestStatus.REJECTED)

    def record_emission(self, iteration: int, now_s: float) -> None:
        """Note that one output token was emitted at the end of ``iteration`` (time ``now_s``)."""
        if iteration == self.last_emit_iter + 1 and self.runs:
            self.runs[-1] = iteration
        else:
            self.runs.append(iteration)
            self.runs.append(iteration)
        self.last_emit_iter = iteration
        if self.first_token_s < 0:
            self.first_token_s = now_s
        self.last_token_s = now_s
        self.num_output_tokens += 1

    def record_burst(self, iteration: int, num_extra_tokens: int) -> None:
        """Note that the emission at the end of ``iteration`` (already recorded by
        :meth:`record_emission`) carried ``num_extra_tokens`` more tokens: accepted speculative drafts
        arrive together with the token the verification pass sampled."""
        bursts = self.bursts
        if bursts is None:
            bursts = self.bursts = []
        bursts.append(iteration)
        bursts.append(num_extra_tokens)
        self.num_output_tokens += num_extra_tokens

    def __repr__(self) -> str:
        return (f"Request(id={self.request_id}, prompt={self.num_prompt_tokens}, "
                f"out={self.num_output_tokens}/{self.max_output_tokens}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")


# Columns of the flat per-request table (requests.parquet); documented in docs/metrics.md.
RECORD_COLUMNS: tuple[str, ...] = (
    "request_id", "replica", "class", "status", "reject_reason",
    "arrival_s", "first_scheduled_s", "first_token_s", "finish_s",
    "num_prompt_tokens", "num_output_tokens", "max_output_tokens", "num_cached_tokens",
    "num_preemptions", "ttft_s", "tpot_s", "e2el_s", "queue_s", "prefill_compute_s",
    "session_id", "prefix_group",
)


def to_record(req: Request) -> dict:
    """Flatten a request into one row of the per-request table (times in seconds; -1/NaN if absent)."""
    nan = float("nan")
    completed = req.status is RequestStatus.FINISHED
    ttft = req.first_token_s - req.arrival_s if req.first_token_s >= 0 else nan
    e2el = req.finish_s - req.arrival_s if completed else nan
    tpot = ((req.last_token_s - req.first_token_s) / (req.num_output_tokens - 1)
            if completed and req.num_output_tokens > 1 else nan)
    queue = req.first_scheduled_s - req.arrival_s if req.first_scheduled_s >= 0 else nan
    status = req.status.value if req.is_finished else "unfinished"
    if status == "finished":
        status = "completed"
    return {
        "request_id": req.request_id, "replica": req.replica, "class": req.spec.class_name,
        "status": status, "reject_reason": req.reject_reason or "",
        "arrival_s": req.arrival_s, "first_scheduled_s": req.first_scheduled_s if req.first_scheduled_s >= 0 else nan,
        "first_token_s": req.first_token_s if req.first_token_s >= 0 else nan,
        "finish_s": req.finish_s if completed else nan,
        "num_prompt_tokens": req.num_prompt_tokens, "num_output_tokens": req.num_output_tokens,
        "max_output_tokens": req.max_output_tokens, "num_cached_tokens": req.num_cached_tokens,
        "num_preemptions": req.num_preemptions, "ttft_s": ttft, "tpot_s": tpot, "e2el_s": e2el,
        "queue_s": queue, "prefill_compute_s": req.prefill_compute_s,
        "session_id": req.spec.session_id, "prefix_group": req.spec.prefix_group,
    }



# requests per block of :func:`records_frame`: its Python lists hold one block (~20 MB), not the run
_RECORD_BLOCK = 1 << 16


def records_frame(requests: Iterable[Request]) -> pd.DataFrame:
    """The per-request table (:data:`RECORD_COLUMNS`), one row per request in order: the same frame
    as ``DataFrame.from_records([to_record(r) ...])`` (same values, same inferred dtypes).

    Built column by column and block by block: each block of requests is flattened into Python lists
    and converted at once (pandas' own inference), so a run of a million requests never holds a
    million row dicts, nor a million boxed values per column (~1 GB at 1M requests)."""
    import pandas as pd  # the engine's hot path does not need pandas; the results do

    blocks: dict[str, list] = {c: [] for c in RECORD_COLUMNS}
    it = iter(requests)
    while True:
        cols: dict[str, list] = {c: [] for c in RECORD_COLUMNS}
        appends = [(c, cols[c].append) for c in RECORD_COLUMNS]
        for req in islice(it, _RECORD_BLOCK):
            rec = to_record(req)
            for c, append in appends:
                append(rec[c])
        if not cols[RECORD_COLUMNS[0]]:
            break
        for c in RECORD_COLUMNS:
            blocks[c].append(pd.Series(cols[c]))
    if not blocks[RECORD_COLUMNS[0]]:
        return pd.DataFrame({c: [] for c in RECORD_COLUMNS}, columns=list(RECORD_COLUMNS))
    out = {}
    for c, parts in blocks.items():
        if len(parts) == 1:
            out[c] = parts[0]
        elif len({p.dtype for p in parts}) == 1:
            out[c] = pd.concat(parts, ignore_index=True)
        else:  # blocks inferred different dtypes (e.g. int and float values): infer over the whole column
            out[c] = pd.Series([v for p in parts for v in p.tolist()])
    return pd.DataFrame(out, columns=list(RECORD_COLUMNS))

@dataclass
class TokenTimeline:
    """Everything needed to rebuild any request's token timestamps without storing tokens.

    ``iteration_end_s[replica]`` is that replica's array of iteration end times; request ``i``
    (row ``i`` of the records table) emitted at iterations
    ``runs[run_offsets[i]:run_offsets[i+1]]`` read as inclusive ``(start, end)`` pairs.
    """

    iteration_end_s: dict[int, "object"] = field(default_factory=dict)  # replica -> np.ndarray[float64]
    replica_of: "object" = None  # np.ndarray[int] per request row
    runs: "object" = None  # np.ndarray[int64], flat start/end pairs
    run_offsets: "object" = None  # np.ndarray[int64], len = num_requests + 1 (indexes into runs, step 2)
    # speculative decoding (None without it): request i's multi-token emissions are the flat
    # (iteration, extra tokens) pairs bursts[burst_offsets[i]:burst_offsets[i+1]]; each such iteration
    # of its runs emitted 1 + extra tokens at once
    bursts: "object" = None  # np.ndarray[int64] or None
    burst_offsets: "object" = None  # np.ndarray[int64], len = num_requests + 1, or None
