"""Sarathi-Serve: stall-free batching with chunked prefill (Agrawal et al., OSDI '24;
``microsoft/sarathi-serve`` ``sarathi/core/scheduler/sarathi_scheduler.py``).

Every step has a token budget ``chunk_size`` (``engine.policy_options.chunk_size``, default
``engine.max_num_batched_tokens``) filled in this order:

1. **Decodes first, never stalled**: every running request whose prompt is done decodes one token, in
   FCFS order. When one cannot get a KV slot the *last* running request not yet scheduled is preempted
   (recompute: blocks freed, front of the waiting queue) until it fits, or it is itself preempted.
2. **In-flight partial prefills** continue, each with ``min(remaining prompt, budget left)``.
3. (With ``engine.preemption_mode: swap`` only, an extension: swapped requests resume, oldest first.)
4. **New prefills** are admitted in FCFS order while the budget lasts and fewer than ``max_num_seqs``
   run, the first chunk being ``min(prompt, budget left)``. As in Sarathi-Serve (whose block manager is
   vLLM V0's), admission allocates *all* the prompt's blocks up front and keeps a 1 % watermark free;
   the first request that cannot be allocated stops admission.

So a long prompt is spread over several steps while decodes keep flowing: that is what bounds
Sarathi-Serve's inter-token latency. The step is "mixed" whenever decodes and a prefill chunk share it.

Speed: requests in steady decode live in the base class's :class:`~policies.base.DecodeGroup`. When
all decodes fit the budget and the free blocks (so none is preempted or deferred), the group is
scheduled in O(1) (+ block boundary crossings) and only the other running requests are walked;
otherwise the group is dissolved and the exact in-order loop runs. Both give the same batch.

Simplification (docs/policies.md): Sarathi-Serve does not count decodes against ``chunk_size`` when
there are more decodes than ``chunk_size`` tokens; here decodes beyond the budget wait one step, so a
step never exceeds the budget. The dynamic chunk-size schedule is not modelled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.registry import register_policy
from sim.engine.request import Request
from sim.errors import ConfigError

# Sarathi-Serve's block manager is vLLM V0's: 1 % of the blocks stay free at admission.
WATERMARK = 0.01


@dataclass(frozen=True)
class SarathiOptions:
    """``engine.policy_options`` of ``sarathi``."""

    chunk_size: int | None = None  # per-step token budget; None = engine.max_num_batched_tokens


@register_policy("sarathi")
class SarathiScheduler(Scheduler):
    """Sarathi-Serve's stall-free scheduler: decodes, then partial prefills, then new prefills."""

    uses_decode_group = True
    # decode-only plan: the group's fast path alone, budget chunk_size (sim.engine.leap)
    supports_leap = True

    def __init__(self, engine_cfg: Any, kv: Any, max_model_len: int, **policy_options: Any) -> None:
        super().__init__(engine_cfg, kv, max_model_len, **policy_options)
        self.chunk_size: int = self.budget_bounded_option("chunk_size", self.options.chunk_size)
        self.watermark_blocks = int(WATERMARK * kv.num_blocks)

    def parse_options(self, options: dict[str, Any]) -> SarathiOptions:
        """Validate ``engine.policy_options`` (only ``chunk_size``, an integer ≥ 1)."""
        unknown = sorted(set(options) - {"chunk_size"})
        if unknown:
            raise ConfigError(f"engine.policy_options: unknown key(s) {unknown} for policy 'sarathi' "
                              f"(known: chunk_size)")
        chunk = options.get("chunk_size")
        if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
            raise ConfigError(f"engine.policy_options.chunk_size must be an integer ≥ 1, got {chunk!r}")
        return SarathiOptions(chunk_size=chunk)

    def rejection_reason(self, req: Request) -> str | None:
        """Base reasons, plus a prompt whose blocks exceed the cache minus the watermark."""
        reason = super().rejection_reason(req)
        if reason is None and (self.kv.num_blocks_for(req.num_prompt_tokens)
                               > self.kv.num_blocks - self.watermark_blocks):
            reason = "prompt exceeds KV cache capacity minus the watermark"
        return reason

    def new_step(self, now_s: float) -> StepBuilder:
        """A step whose token budget is ``chunk_size``."""
        return StepBuilder(self.chunk_size, now_s)

    def leap_token_budget(self) -> int:
        """A Sarathi step's budget is ``chunk_size``."""
        return self.chunk_size

    def leap_waiting_blocked(self) -> bool:
        """New prefills are not tried: ``max_num_seqs`` run or the decodes took the chunk."""
        return len(self.running) >= self.max_num_seqs or self.chunk_size - self.decode_group.num <= 0

    # ------------------------------------------------------------------ the step
    def schedule(self, now_s: float) -> SchedulerOutput:
        """Decodes, then in-flight prefills, then new prefills (one budget of ``chunk_size``)."""
        step = self.new_step(now_s)
        partial = self._schedule_decodes_fast(step)
        if partial is None:
            self.dissolve_decode_group()
            self.individual = list(self.running)
            partial = self._schedule_decodes(step)
        self._schedule_partial_prefills(step, partial)
        if self.swapped and not step.preempted_ids:
            # an extension (preemption_mode: swap only): Sarathi-Serve itself preempts by recompute
            self.schedule_swapped(step, self.watermark_blocks, cap_long_prefills=False)
        self._schedule_new_prefills(step)
        return step.build()

    def _schedule_decodes_fast(self, step: StepBuilder) -> list[Request] | None:
        """All decodes at once (the group in O(1)) when they fit the budget and the free blocks; returns
        the partial prefills in order, or None (nothing changed) when the exact loop must run."""
        individual = self.individual
        decodes = [r for r in individual if self._is_decode(r)]
        if not self.try_schedule_decode_group(step, decodes, [1] * len(decodes)):
            return None
        return [r for r in individual if not self._is_decode(r)] if decodes else list(individual)

    @staticmethod
    def _is_decode(req: Request) -> bool:
        """True when ``req``'s prompt (and any recomputed output) is done: one token to go."""
        return req.num_computed_tokens > 0 and req.num_tokens - req.num_computed_tokens == 1

    def _schedule_decodes(self, step: StepBuilder) -> list[Request]:
        """Decode every running request whose prefill is done; return the partial prefills (in order)."""
        running = self.running
        partial: list[Request] = []
        i = 0
        while i < len(running):
            req = running[i]
            if not self._is_decode(req):
                partial.append(req)
                i += 1
                continue
            if step.token_budget <= 0:
                i += 1  # over budget: this decode waits one step (see the module docstring)
                continue
            if not self.allocate_or_preempt(req, 1, step):
                break  # req itself was preempted: nothing behind it is left
            step.add(req, 1)
            i += 1
        return partial

    def _schedule_partial_prefills(self, step: StepBuilder, partial: list[Request]) -> None:
        """Continue in-flight prefills; their blocks were allocated at admission."""
        for req in partial:
            if step.token_budget <= 0:
                return
            n = min(req.num_tokens - req.num_computed_tokens, step.token_budget)
            if not self.kv.allocate_slots(req, n):  # cannot happen: all prompt blocks are held
                raise AssertionError(f"request {req.request_id}: partial prefill lost its blocks")
            step.add(req, n)

    def _schedule_new_prefills(self, step: StepBuilder) -> None:
        """Admit waiting requests FCFS; all prompt blocks up front, watermark kept."""
        waiting, kv = self.waiting, self.kv
        while waiting and step.token_budget > 0 and len(self.running) < self.max_num_seqs:
            req = waiting[0]
            self.admit_prefix(req)
            remaining = req.num_tokens - req.num_computed_tokens
            needed = kv.num_blocks_for(req.num_tokens) - kv.num_held_blocks(req)
            if kv.num_free_blocks - needed < self.watermark_blocks or not kv.allocate_slots(req, remaining):
                self.undo_prefix(req)
                return
            self.start_running(req, step, min(remaining, step.token_budget))
