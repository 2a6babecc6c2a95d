"""The contract between the scheduler and any cost model.

The scheduler summarises one iteration's batch as a :class:`BatchShape` (a handful of integer sums,
accumulated while it walks the requests it schedules, so pricing a batch is O(1) and never loops over
requests again). A cost model turns the shape into a :class:`StepCost`.

Each scheduled request i contributes ``new_i`` new tokens on top of ``ctx_i`` tokens already in its KV
cache. This covers prefill (ctx = 0, new = prompt), chunked prefill (ctx > 0, new > 1) and decode
(new = 1) uniformly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sim.deploy.kernel_shapes import ATTENTION_Q_TILE


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Aggregate description of one iteration's batch (all sums over scheduled requests)."""

    num_seqs: int = 0  # requests with ≥ 1 new token in this step
    num_tokens: int = 0  # Σ new_i: tokens the forward pass processes
    num_decode_seqs: int = 0  # requests with new_i == 1 and ctx_i > 0 (plain decode)
    sum_ctx_x_new: int = 0  # Σ ctx_i · new_i: attention pairs against the cached prefix
    sum_new_sq: int = 0  # Σ new_i²: for causal attention within the new chunk, Σ new_i(new_i+1)/2 = (sum_new_sq + num_tokens)/2
    sum_kv_tokens: int = 0  # Σ (ctx_i + new_i): KV entries attention reads/writes this step
    num_prefill_tokens: int = 0  # Σ new_i over requests that are not plain decodes
    # the prefill attention kernel's query tiles (sim/deploy/kernel_shapes.py), per prefill chunk i of
    # ≥ 2 tokens with T_i = ⌈new_i / ATTENTION_Q_TILE⌉ tiles whose rows see ctx_i + (new_i + 1)/2 keys on
    # average (one-token prompts run as one row, like decodes)
    num_prefill_chunks: int = 0  # prefill requests with new_i ≥ 2
    num_prefill_q_tiles: int = 0  # Σ T_i
    sum_prefill_tile_keys2: int = 0  # Σ T_i·(2·ctx_i + new_i + 1): twice the keys of all tiles' mean rows
    max_prefill_keys2: int = 0  # max_i (2·ctx_i + new_i + 1): twice the longest request's mean keys per row
    swap_bytes: int = 0  # bytes moved host<->device for swap preemption in this step
    sum_decode_kv_tokens: int = 0  # Σ (ctx_i + 1) over plain decodes: keys their queries attend to
    # speculative decoding: requests verifying k_i > 0 draft tokens (a (1 + k_i)-token chunk each) count
    # as decodes (num_decode_seqs), not as prefill tokens, and not in sum_decode_kv_tokens
    num_spec_seqs: int = 0  # requests verifying drafts in this step
    num_spec_tokens: int = 0  # Σ k_i: draft tokens verified (each needs logits and the rejection sampler)
    sum_spec_pairs: int = 0  # Σ over those requests of their (query, key) pairs: (1+k_i)·ctx_i + (1+k_i)(2+k_i)/2
    sum_spec_kv_tokens: int = 0  # Σ (ctx_i + 1 + k_i) over those requests: KV entries they read/write
    # images whose vision encoder runs in this step (multimodal models; sim/deploy/vision_cost.py): per
    # image j of T_j LM tokens, the encoder's GEMMs grow with T_j and its attention with T_j²
    num_images: int = 0  # images encoded
    sum_image_tokens: int = 0  # Σ_j T_j
    sum_image_tokens_sq: int = 0  # Σ_j T_j²

    @property
    def causal_pairs(self) -> int:
        """Number of (query, key) pairs attention computes: Σ new_i·ctx_i + new_i(new_i+1)/2."""
        return self.sum_ctx_x_new + (self.sum_new_sq + self.num_tokens) // 2

    def scaled(self, fraction: float) -> BatchShape:
        """The shape of ``fraction`` of this batch's requests (every sum is over requests, so each scales;
        e.g. one of two equal micro-batches is ``scaled(0.5)``; the longest request stays). Sums may become
        fractional."""
        f = fraction
        return BatchShape(num_seqs=self.num_seqs * f, num_tokens=self.num_tokens * f,
                          num_decode_seqs=self.num_decode_seqs * f, sum_ctx_x_new=self.sum_ctx_x_new * f,
                          sum_new_sq=self.sum_new_sq * f, sum_kv_tokens=self.sum_kv_tokens * f,
                          num_prefill_tokens=self.num_prefill_tokens * f, swap_bytes=self.swap_bytes * f,
                          num_prefill_chunks=self.num_prefill_chunks * f,
                          num_prefill_q_tiles=self.num_prefill_q_tiles * f,
                          sum_prefill_tile_keys2=self.sum_prefill_tile_keys2 * f,
                          max_prefill_keys2=self.max_prefill_keys2,
                          sum_decode_kv_tokens=self.sum_decode_kv_tokens * f, num_spec_seqs=self.num_spec_seqs * f,
                          num_spec_tokens=self.num_spec_tokens * f, sum_spec_pairs=self.sum_spec_pairs * f,
                          sum_spec_kv_tokens=self.sum_spec_kv_tokens * f, num_images=self.num_images * f,
                          sum_image_tokens=self.sum_image_tokens * f,
                          sum_image_tokens_sq=self.sum_image_tokens_sq * f)


class BatchShapeBuilder:
    """Accumulates a :class:`BatchShape` while a scheduler walks its requests (O(1) per request)."""

    __slots__ = ("num_seqs", "num_tokens", "num_decode_seqs", "sum_ctx_x_new", "sum_new_sq",
                 "sum_kv_tokens", "num_prefill_tokens", "num_prefill_chunks", "num_prefill_q_tiles",
                 "sum_prefill_tile_keys2", "max_prefill_keys2", "swap_bytes", "sum_decode_kv_tokens",
                 "num_spec_seqs", "num_spec_tokens", "sum_spec_pairs", "sum_spec_kv_tokens",
                 "num_images", "sum_image_tokens", "sum_image_tokens_sq")

    def __init__(self) -> None:
        self.num_seqs = self.num_tokens = self.num_decode_seqs = 0
        self.sum_ctx_x_new = self.sum_new_sq = self.sum_kv_tokens = 0
        self.num_prefill_tokens = self.swap_bytes = self.sum_decode_kv_tokens = 0
        self.num_prefill_chunks = self.num_prefill_q_tiles = self.sum_prefill_tile_keys2 = 0
        self.max_prefill_keys2 = 0
        self.num_spec_seqs = self.num_spec_tokens = self.sum_spec_pairs = self.sum_spec_kv_tokens = 0
        self.num_images = self.sum_image_tokens = self.sum_image_tokens_sq = 0

    def add(self, num_new_tokens: int, num_context_tokens: int) -> None:
        """Add one request scheduled for ``num_new_tokens`` on top of ``num_context_tokens`` cached."""
        n, c = num_new_tokens, num_context_tokens
        self.num_seqs += 1
        self.num_tokens += n
        if n == 1 and c > 0:
            self.num_decode_seqs += 1
            self.sum_decode_kv_tokens += c + 1
        else:
            self.num_prefill_tokens += n
            if n > 1:
                tiles = -(-n // ATTENTION_Q_TILE)
                keys2 = 2 * c + n + 1
                self.num_prefill_chunks += 1
                self.num_prefill_q_tiles += tiles
                self.sum_prefill_tile_keys2 += tiles * keys2
                if keys2 > self.max_prefill_keys2:
                    self.max_prefill_keys2 = keys2
        self.sum_ctx_x_new += c * n
        self.sum_new_sq += n * n
        self.sum_kv_tokens += c + n

    def add_images(self, num_images: int, image_tokens: int) -> None:
        """Add ``num_images`` images of ``image_tokens`` LM tokens each for the vision encoder to run."""
        self.num_images += num_images
        self.sum_image_tokens += num_images * image_tokens
        self.sum_image_tokens_sq += num_images * image_tokens * image_tokens

    def add_verify(self, num_new_tokens: int, num_context_tokens: int, num_draft_tokens: int) -> None:
        """Add one request verifying ``num_draft_tokens`` drafts: ``num_new_tokens`` = 1 + drafts on top
        of ``num_context_tokens`` cached (speculative decoding; counted as a decode, see BatchShape)."""
        n, c = num_new_tokens, num_context_tokens
        self.num_seqs += 1
        self.num_tokens += n
        self.num_decode_seqs += 1
        self.sum_ctx_x_new += c * n
        self.sum_new_sq += n * n
        self.sum_kv_tokens += c + n
        self.num_spec_seqs += 1
        self.num_spec_tokens += num_draft_tokens
        self.sum_spec_pairs += c * n + n * (n + 1) // 2
        self.sum_spec_kv_tokens += c + n

    def build(self) -> BatchShape:
        """Freeze the sums into a :class:`BatchShape`."""
        return BatchShape(num_seqs=self.num_seqs, num_tokens=self.num_tokens,
                          num_decode_seqs=self.num_decode_seqs, sum_ctx_x_new=self.sum_ctx_x_new,
                          sum_new_sq=self.sum_new_sq, sum_kv_tokens=self.sum_kv_tokens,
                          num_prefill_tokens=self.num_prefill_tokens, num_prefill_chunks=self.num_prefill_chunks,
                          num_prefill_q_tiles=self.num_prefill_q_tiles,
                          sum_prefill_tile_keys2=self.sum_prefill_tile_keys2,
                          max_prefill_keys2=self.max_prefill_keys2, swap_bytes=self.swap_bytes,
                          sum_decode_kv_tokens=self.sum_decode_kv_tokens, num_spec_seqs=self.num_spec_seqs,
                          num_spec_tokens=self.num_spec_tokens, sum_spec_pairs=self.sum_spec_pairs,
                          sum_spec_kv_tokens=self.sum_spec_kv_tokens, num_images=self.num_images,
                          sum_image_tokens=self.sum_image_tokens, sum_image_tokens_sq=self.sum_image_tokens_sq)


@dataclass(frozen=True, slots=True)
class StepCost:
    """Price of one iteration."""

    time_s: float  # wall time of the iteration, overheads included
    flops: float = 0.0  # floating-point operations of the forward pass (per GPU)
    bytes_moved: float = 0.0  # HBM bytes read+written (per GPU)
    mfu: float = 0.0  # flops / (time_s · peak flops of one GPU)
    mbu: float = 0.0  # bytes_moved / (time_s · peak HBM bandwidth of one GPU)
    prefill_time_s: float = 0.0  # share of time_s attributed to prefill tokens (for the MFU/MBU split)
    breakdown: dict[str, float] = field(default_factory=dict)  # op -> seconds (may be empty on the hot path)


class CostModel(Protocol):
    """Anything that can price an iteration. The engine only ever calls :meth:`step`."""

    def step(self, shape: BatchShape) -> StepCost:
        """Return the cost of running one iteration of ``shape``."""
        ...


@dataclass(frozen=True)
class ConstantCostModel:
    """Every non-empty iteration takes ``step_time_s`` (queueing-theory oracles and tests).

    With ``per_token_s`` > 0 the step is ``step_time_s + per_token_s · num_tokens``.
    """

    step_time_s: float
    per_token_s: float = 0.0
    step_is_pure = True  # a function of the shape alone (see RooflineCostModel.step_is_pure)

    def step(self, shape: BatchShape) -> StepCost:
        """Constant (plus optional per-token) iteration time."""
        return StepCost(time_s=self.step_time_s + self.per_token_s * shape.num_tokens)

    def group_step(self, shapes: list[BatchShape]) -> tuple[float, list[StepCost]]:
        """A lockstep group of DP ranks (:mod:`sim.engine.dp_group`): the step lasts as long as its
        slowest rank's."""
        costs = [self.step(s) for s in shapes]
        return max(c.time_s for c in costs), costs
