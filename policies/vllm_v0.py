"""vLLM V0 scheduling, the legacy engine (``vllm/core/scheduler.py``; SEMANTICS.md §3).

**Default mode** (``_schedule_default``, chunked prefill off): *prefill priority*.

1. If no request is swapped out, admit waiting requests in FCFS order. Each needs its whole prompt
   (plus, after a recompute preemption, the outputs generated so far) in one step: it is admitted only
   if those tokens fit in the remaining token budget, fewer than ``max_num_seqs`` requests would run,
   and the KV cache keeps a *watermark* (1 % of the blocks) free after **all** its prompt blocks are
   allocated up front. The first request that does not fit stops admission.
2. A step that admitted any prefill runs **no decodes** (a prefill-only iteration; no mixing).
3. Otherwise every running request decodes one token, in FCFS order. When one cannot get a slot, the
   *last* running request is preempted — recompute by default (blocks freed, front of the waiting
   queue), or swapped to host memory with ``engine.preemption_mode: swap`` — until it fits, or until it
   is itself the one preempted.
4. If nothing was preempted, swapped requests come back (oldest first) while the watermark holds.

**Chunked-prefill mode** (``_schedule_chunked_prefill``; ``engine.policy_options.enable_chunked_prefill:
true``): running requests first (prefill chunks and decodes alike, each ``min(remaining, budget)``,
preempting from the tail), then swapped requests (if nothing was preempted), then new prefills, each
chunk ``min(remaining, budget)``. New prefills still allocate all their prompt blocks up front and
respect the watermark. V0's own default is off; ``engine.enable_chunked_prefill`` is V1's switch
(default true) and is not read here, so that ``policy: vllm-v0`` alone gives the legacy behaviour.

Speed: requests in steady decode live in the base class's :class:`~policies.base.DecodeGroup`. A step
whose running requests all fit the budget and the free blocks schedules the group in O(1) (+ block
boundary crossings) and walks only the others (prefill chunks); the in-order loop would give every
running request its full need too, so the result is the same. Otherwise the group is dissolved and the
exact loop runs. A prefill-only step, in which the group does not decode, dissolves it too; its
requests rejoin after their next decode.

Simplifications (docs/policies.md): V0's ``delay_factor`` (0 by default), LoRA limits, beam search and
multi-step scheduling are not modelled; when the host swap pool is full a swap preemption falls back to
recompute instead of aborting the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.registry import register_policy
from sim.engine.request import Request, RequestStatus
from sim.errors import ConfigError

# V0's BlockSpaceManager keeps this fraction of the GPU blocks free when admitting a prompt
# (``CacheConfig``/``BlockSpaceManager(watermark=0.01)``).
DEFAULT_WATERMARK = 0.01

REJECT_OVER_BUDGET = "prompt longer than max_num_batched_tokens (vllm-v0 without chunked prefill)"


@dataclass(frozen=True)
class VLLMV0Options:
    """``engine.policy_options`` of ``vllm-v0``."""

    enable_chunked_prefill: bool = False  # V0's chunked-prefill scheduler (vLLM V0 default: off)
    watermark: float = DEFAULT_WATERMARK  # fraction of KV blocks kept free at admission / swap-in


@register_policy("vllm-v0")
class VLLMV0Scheduler(Scheduler):
    """vLLM V0's scheduler: prefill-priority by default, chunked prefill when enabled explicitly."""

    uses_decode_group = True
    supports_leap = True  # with nothing waiting or swapped, a step is the group's fast path alone

    def __init__(self, engine_cfg: Any, kv: Any, max_model_len: int, **policy_options: Any) -> None:
        super().__init__(engine_cfg, kv, max_model_len, **policy_options)
        self.enable_chunked_prefill = self.options.enable_chunked_prefill
        self.watermark_blocks = int(self.options.watermark * kv.num_blocks)

    def parse_options(self, options: dict[str, Any]) -> VLLMV0Options:
        """Validate ``engine.policy_options``: ``enable_chunked_prefill`` (bool), ``watermark`` (a
        fraction in [0, 1))."""
        unknown = sorted(set(options) - {"enable_chunked_prefill", "watermark"})
        if unknown:
            raise ConfigError(f"engine.policy_options: unknown key(s) {unknown} for policy 'vllm-v0' "
                              f"(known: enable_chunked_prefill, watermark)")
        chunked = options.get("enable_chunked_prefill", False)
        if not isinstance(chunked, bool):
            raise ConfigError(f"engine.policy_options.enable_chunked_prefill must be true or false, "
                              f"got {chunked!r}")
        wm = options.get("watermark", DEFAULT_WATERMARK)
        if not isinstance(wm, (int, float)) or isinstance(wm, bool) or not 0.0 <= wm < 1.0:
            raise ConfigError(f"engine.policy_options.watermark must be a fraction in [0, 1), got {wm!r}")
        return VLLMV0Options(enable_chunked_prefill=chunked, watermark=float(wm))

    def rejection_reason(self, req: Request) -> str | None:
        """Base reasons, plus (without chunked prefill) a prompt larger than the whole token budget
        and a prompt whose blocks exceed the cache minus the watermark (V0's ``AllocStatus.NEVER``)."""
        reason = super().rejection_reason(req)
        if reason is not None:
            return reason
        if not self.enable_chunked_prefill and req.num_prompt_tokens > self.max_num_batched_tokens:
            return REJECT_OVER_BUDGET
        if self.kv.num_blocks_for(req.num_prompt_tokens) > self.kv.num_blocks - self.watermark_blocks:
            return "prompt exceeds KV cache capacity minus the watermark"
        return None

    # ------------------------------------------------------------------ the step
    def schedule(self, now_s: float) -> SchedulerOutput:
        """One V0 step (default or chunked-prefill mode)."""
        step = self.new_step(now_s)
        if self.enable_chunked_prefill:
            self._schedule_running(step, chunked=True)
            if not step.preempted_ids:
                self.schedule_swapped(step, self.watermark_blocks, cap_long_prefills=False)
            self._schedule_prefills(step, chunked=True)
            return step.build(info={"mode": "chunked"})
        if not self.swapped:  # swapped requests have priority over new prefills
            self._schedule_prefills(step, chunked=False)
        if step.scheduled:  # prefill priority: a step with prefills runs no decodes
            self.dissolve_decode_group()  # its members skip this iteration
            self.individual = list(self.running)
            return step.build(kind="prefill")
        self._schedule_running(step, chunked=False)
        if not step.preempted_ids:
            self.schedule_swapped(step, self.watermark_blocks, cap_long_prefills=False)
        return step.build()

    def leap_waiting_blocked(self) -> bool:
        """Prefills are not tried: ``max_num_seqs`` run (or, chunked, the decodes took the budget)."""
        return len(self.running) >= self.max_num_seqs or (
            self.enable_chunked_prefill and self.max_num_batched_tokens - self.decode_group.num <= 0)

    def _schedule_running(self, step: StepBuilder, chunked: bool) -> None:
        """Running requests in FCFS order; a KV shortage preempts the last running request. When all
        fit in full, the decode group goes in O(1) and only the others are walked."""
        individual = self.individual
        chunks = [req.num_tokens - req.num_computed_tokens for req in individual]
        if self.try_schedule_decode_group(step, individual, chunks):
            return
        self.dissolve_decode_group()
        self.individual = list(self.running)
        running = self.running
        i = 0
        while i < len(running) and step.token_budget > 0:
            req = running[i]
            remaining = req.num_tokens - req.num_computed_tokens
            n = min(remaining, step.token_budget) if chunked else remaining
            if n > step.token_budget:
                break  # cannot happen in default mode (all running requests decode one token)
            if not self.allocate_or_preempt(req, n, step):
                return
            step.add(req, n)
            i += 1

    def _schedule_prefills(self, step: StepBuilder, chunked: bool) -> None:
        """Admit waiting requests in FCFS order (whole prompt blocks allocated up front, watermark kept)."""
        waiting, kv = self.waiting, self.kv
        while waiting and step.token_budget > 0 and len(self.running) < self.max_num_seqs:
            req = waiting[0]
            if not chunked and req.num_tokens > self.max_num_batched_tokens:
                # V0 ignores a (recomputing) sequence longer than the prompt limit; it could never run.
                waiting.popleft()
                self._reject(req, REJECT_OVER_BUDGET, step)
                continue
            self.admit_prefix(req)
            remaining = req.num_tokens - req.num_computed_tokens
            n = min(remaining, step.token_budget) if chunked else remaining
            needed = kv.num_blocks_for(req.num_tokens) - kv.num_held_blocks(req)
            if (n > step.token_budget
                    or kv.num_free_blocks - needed < self.watermark_blocks  # AllocStatus.LATER
                    or not kv.allocate_slots(req, remaining)):  # all prompt blocks, up front
                self.undo_prefix(req)
                return
            self.start_running(req, step, n)

    def _reject(self, req: Request, reason: str, step: StepBuilder) -> None:
        """Drop a request that can never be scheduled (V0's FINISHED_IGNORED)."""
        self.kv.free(req)
        req.status = RequestStatus.REJECTED
        req.reject_reason = reason
        step.rejected_ids.append(req.request_id)
