"""Pricing of speculative decoding: the target's verification pass plus the drafter's passes.

The scheduler already put the verification into the step's :class:`BatchShape`: a request verifying
``k_i`` drafts is a ``(1 + k_i)``-token chunk on its context (attention included), and its ``k_i`` extra
positions get logits and go through the (rejection) sampler — the target's cost model prices that.
This module adds the drafter, which runs once per engine step (vLLM proposes the drafts for step t+1
right after step t's verification, in the same model-runner step):

- **EAGLE / EAGLE-3 / MTP heads / draft models** (``drafts_with_model``): the first drafter pass runs
  over every token the step processed (prompt chunks build the drafter's own KV; each verifying
  request's chunk yields its first draft), then ``k − 1`` more passes of one token per drafting request,
  one after the other. With ``parallel_drafting`` (P-EAGLE) the single pass also carries ``k − 1``
  mask tokens per drafting request and yields all k drafts at once.
- **n-gram / suffix**: proposals are looked up on the CPU in the request's own tokens — no GPU time.

Each drafter pass is priced by a cost model of the drafter's own architecture (an EAGLE head: one
dense decoder layer of the target's width — ``draft_num_layers`` of them — and its LM head; an MTP
module: a decoder layer of the target's own kind, MoE included, and the target's LM head; a draft
model: that model at ``draft_tp``), minus the engine's per-iteration and per-request CPU overheads,
which are paid once per engine step, not once per drafter pass.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from sim.deploy.memory_plan import ACTIVATION_BYTES, check_parallelism, kv_block_bytes, weights_bytes_per_gpu
from sim.deploy.roofline import RooflineCostModel
from sim.deploy.step_cost import BatchShape, StepCost
from sim.errors import ConfigError

__all__ = ["SpeculativeCostModel", "draft_head_spec", "with_drafter_memory", "drafter_weights_bytes",
           "speculative_deployment"]


def draft_head_spec(target: Any, method: str, num_layers: int = 1, vocab_size: int | None = None) -> Any:
    """The architecture an EAGLE head or MTP module runs, derived from the target's ``ModelSpec``.

    EAGLE heads are dense decoder layers of the target's width (attention as the target's; MLP as the
    target's dense MLP, or for an MoE target as wide as the experts a token activates); an MTP module
    is a layer of the target's own last kind (DeepSeek's MTP layer is an MoE layer). Both attend over
    the full context (no sliding window).
    """
    if method == "mtp":
        kind = target.kinds[-1] if target.kinds else "dense"
        return dataclasses.replace(
            target, name=f"{target.name}-mtp", num_layers=num_layers, layer_kinds=(kind,) * num_layers,
            layer_windows=(), sliding_window=None, num_mtp_layers=0,
            vocab_size=vocab_size or target.vocab_size)
    width = target.intermediate_size
    if target.moe is not None and (not width or target.num_dense_layers == 0):
        m = target.moe
        width = m.top_k * m.expert_intermediate_size + m.shared_intermediate_size
    return dataclasses.replace(
        target, name=f"{target.name}-{method}-head", num_layers=num_layers, layer_kinds=("dense",) * num_layers,
        moe=None, intermediate_size=width, layer_windows=(), sliding_window=None, num_mtp_layers=0,
        vocab_size=vocab_size or target.vocab_size)


def with_drafter_memory(plan: Any, draft_weights_bytes: float, draft_block_bytes: float) -> Any:
    """The memory plan with the drafter resident: its weights leave less room for KV, and every KV
    block also holds the drafter's layers (vLLM allocates the draft KV in the same blocks)."""
    kv = plan.kv_cache_bytes - draft_weights_bytes
    block = plan.block_bytes + draft_block_bytes
    blocks = max(0, math.floor(kv / block)) if block > 0 else 0
    return dataclasses.replace(plan, weights_bytes=plan.weights_bytes + draft_weights_bytes,
                               kv_cache_bytes=kv, block_bytes=block, num_kv_blocks=blocks)


def _decode_shape(num_seqs: int, sum_context_tokens: int) -> BatchShape:
    """``num_seqs`` one-token decodes on ``sum_context_tokens`` cached tokens in all."""
    c, b = sum_context_tokens, num_seqs
    return BatchShape(num_seqs=b, num_tokens=b, num_decode_seqs=b, sum_ctx_x_new=c, sum_new_sq=b,
                      sum_kv_tokens=c + b, sum_decode_kv_tokens=c + b)


@dataclass(frozen=True)
class SpeculativeCostModel:
    """Target cost model + drafter passes (module docstring). ``draft`` None: drafting is free."""

    target: Any
    draft: Any | None
    num_speculative_tokens: int
    parallel_drafting: bool = False

    @property
    def prices_swap(self) -> bool:
        """The target decides whether it prices swaps (the engine asks)."""
        return bool(getattr(self.target, "prices_swap", False))

    def prefill_time_s(self, num_prompt_tokens: int, chunk_size: int | None = None) -> float:
        """The target's prefill time (Metron's prefill deadline)."""
        return self.target.prefill_time_s(num_prompt_tokens, chunk_size)

    def _pass_s(self, shape: BatchShape) -> StepCost:
        return self.draft.step(shape)

    def _cpu_overhead_s(self, num_seqs: int) -> float:
        d = self.draft
        return getattr(d, "per_iteration_s", 0.0) + getattr(d, "per_request_s", 0.0) * num_seqs

    def draft_time_s(self, shape: BatchShape) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) the drafter spends in a step of ``shape``."""
        if self.draft is None or shape.num_tokens <= 0 or (shape.num_spec_seqs == 0 and shape.num_prefill_tokens == 0):
            return 0.0, 0.0, 0.0
        s, k = shape.num_spec_seqs, self.num_speculative_tokens
        first = self._first_pass_shape(shape)
        c1 = self._pass_s(first)
        t = c1.time_s - self._cpu_overhead_s(first.num_seqs)
        flops, bytes_ = c1.flops, c1.bytes_moved
        if s and k > 1 and not self.parallel_drafting:
            c = self._pass_s(_decode_shape(s, shape.sum_spec_kv_tokens))
            t += (k - 1) * (c.time_s - self._cpu_overhead_s(s))
            flops += (k - 1) * c.flops
            bytes_ += (k - 1) * c.bytes_moved
        return max(t, 0.0), flops, bytes_

    def group_step(self, shapes: list[BatchShape]) -> tuple[float, list[StepCost]]:
        """A synchronous step of data-parallel attention ranks (``RooflineCostModel.group_step``): the
        target's group step, then the drafter's passes, each pass a group step of its own (an MTP
        layer's experts span the ranks too), paced by the slowest rank."""
        dt, costs = self.target.group_step(shapes)
        if self.draft is None or not any(s.num_spec_seqs or s.num_prefill_tokens for s in shapes):
            return dt, costs
        k = self.num_speculative_tokens
        rows = max(s.num_seqs for s in shapes)
        first = [self._first_pass_shape(s) for s in shapes]
        td = self.draft.group_step(first)[0] - self._cpu_overhead_s(rows)
        if k > 1 and not self.parallel_drafting:
            later = [_decode_shape(s.num_spec_seqs, s.sum_spec_kv_tokens) for s in shapes]
            td += (k - 1) * (self.draft.group_step(later)[0] - self._cpu_overhead_s(max(s.num_spec_seqs for s in shapes)))
        td = max(td, 0.0)
        return dt + td, [dataclasses.replace(c, time_s=c.time_s + td) for c in costs]

    def _first_pass_shape(self, shape: BatchShape) -> BatchShape:
        """The drafter's first pass: every token of the step (one logit row per request), plus the
        mask tokens of parallel drafting."""
        s, k = shape.num_spec_seqs, self.num_speculative_tokens
        # (built directly: dataclasses.replace costs more than pricing the pass)
        first = BatchShape(num_seqs=shape.num_seqs, num_tokens=shape.num_tokens, num_decode_seqs=shape.num_decode_seqs,
                           sum_ctx_x_new=shape.sum_ctx_x_new, sum_new_sq=shape.sum_new_sq,
                           sum_kv_tokens=shape.sum_kv_tokens, num_prefill_tokens=shape.num_prefill_tokens,
                           num_prefill_chunks=shape.num_prefill_chunks, num_prefill_q_tiles=shape.num_prefill_q_tiles,
                           sum_prefill_tile_keys2=shape.sum_prefill_tile_keys2,
                           max_prefill_keys2=shape.max_prefill_keys2,
                           sum_decode_kv_tokens=shape.sum_decode_kv_tokens, num_spec_seqs=s,
                           sum_spec_pairs=shape.sum_spec_pairs, sum_spec_kv_tokens=shape.sum_spec_kv_tokens)
        if self.parallel_drafting and s and k > 1:
            extra = s * (k - 1)  # mask tokens, each attending to its request's context
            first = dataclasses.replace(
                first, num_tokens=first.num_tokens + extra, num_spec_tokens=extra,
                sum_ctx_x_new=first.sum_ctx_x_new + (k - 1) * shape.sum_spec_kv_tokens,
                sum_new_sq=first.sum_new_sq + extra, sum_kv_tokens=first.sum_kv_tokens + extra)
        return first

    def step(self, shape: BatchShape) -> StepCost:
        """Target step (verification included) plus the drafter's passes."""
        cost = self.target.step(shape)
        td, fd, bd = self.draft_time_s(shape)
        if td <= 0.0:
            return cost
        t = cost.time_s + td
        # utilisations: FLOPs and bytes of both over the whole step (same GPU peaks)
        scale = cost.time_s / t
        peak_f = cost.flops / (cost.mfu * cost.time_s) if cost.mfu > 0 else 0.0
        peak_b = cost.bytes_moved / (cost.mbu * cost.time_s) if cost.mbu > 0 else 0.0
        mfu = (cost.flops + fd) / (t * peak_f) if peak_f else cost.mfu * scale
        mbu = (cost.bytes_moved + bd) / (t * peak_b) if peak_b else cost.mbu * scale
        return StepCost(time_s=t, flops=cost.flops + fd, bytes_moved=cost.bytes_moved + bd, mfu=mfu, mbu=mbu,
                        prefill_time_s=cost.prefill_time_s, breakdown=dict(cost.breakdown, drafter=td)
                        if cost.breakdown else {})


def drafter_weights_bytes(draft: Any, parallel: Any, weights_dtype: str, *, is_head: bool,
                          own_lm_head: bool) -> float:
    """Weight bytes the drafter adds on one GPU. A head (EAGLE/MTP) shares the target's token
    embedding, and its LM head too unless it has its own (a reduced draft vocabulary); a draft model
    brings all of its weights."""
    total = weights_bytes_per_gpu(draft, parallel, weights_dtype)
    if not is_head:
        return total
    parts = draft.param_breakdown()
    shared = parts["embeddings"] + (0 if own_lm_head else parts["lm_head"])
    return max(0.0, total - shared * ACTIVATION_BYTES / parallel.tp)


def speculative_deployment(spec: Any, target: Any, draft_model: Any | None, hardware: Any, parallel: Any,
                           precision: Any, plan: Any, target_cost: Any) -> tuple[Any, Any]:
    """(cost model, memory plan) of a replica running ``spec`` (a SpeculativeConfig) on ``target``.

    ``draft_model``: the loaded ModelSpec of method ``draft_model`` (else None). n-gram and suffix
    drafting leave both unchanged but for the verification, which the target prices itself.
    """
    if not spec.drafts_with_model:
        return SpeculativeCostModel(target_cost, None, spec.num_speculative_tokens), plan
    dprec = precision if spec.draft_weights is None else precision.model_copy(
        update={"weights": spec.draft_weights, "activations": None, "experts": None})
    if spec.method == "draft_model":
        arch = draft_model
        if arch.vocab_size != target.vocab_size:
            raise ConfigError(
                f"engine.speculative.draft_model: {arch.name} has a {arch.vocab_size}-token vocabulary, "
                f"{target.name} {target.vocab_size}: a draft model must share the target's tokenizer")
        dpar = parallel.model_copy(update={"tp": spec.draft_tp or parallel.tp, "pp": 1,
                                           "ep": 1 if not draft_model.is_moe else parallel.ep})
        check_parallelism(arch, dpar)
        weights = drafter_weights_bytes(arch, dpar, dprec.weights, is_head=False, own_lm_head=True)
    else:
        arch = draft_head_spec(target, spec.method, spec.draft_num_layers, spec.draft_vocab_size)
        dpar = parallel.model_copy(update={"pp": 1})
        weights = drafter_weights_bytes(arch, dpar, dprec.weights, is_head=True,
                                        own_lm_head=spec.draft_vocab_size is not None)
    draft_cost = RooflineCostModel(arch, hardware, dpar, dprec)
    # every KV block also holds the drafter's layers (on the most loaded pipeline stage)
    draft_block = kv_block_bytes(arch, dpar, precision.kv_dtype, plan.block_size)
    cost = SpeculativeCostModel(target_cost, draft_cost, spec.num_speculative_tokens, spec.parallel_drafting)
    return cost, with_drafter_memory(plan, weights, draft_block)
