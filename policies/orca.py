"""Orca: iteration-level scheduling without chunking (Yu et al., OSDI '22, Algorithm 1 "Select").

Each iteration:

1. every running request decodes one token (all of them: a running request's prompt is always done,
   since prompts are never split);
2. waiting requests are admitted in FCFS order, each with its **whole** prompt (plus, after a recompute,
   the outputs so far) in this same iteration, while the token budget (``max_num_batched_tokens``)
   holds that whole prompt and fewer than ``max_num_seqs`` requests run. A prompt that does not fit
   the remaining budget stops admission (FCFS, no skipping).

Memory follows Orca's reservation rule: a request is admitted only if KV for its *maximum* length
(prompt + ``max_output_tokens`` − 1 positions, the paper's ``max_tokens``) fits next to what the running
requests have reserved (``n_rsrv + max_tokens ≤ n_slots``). Blocks are still allocated lazily (prompt
at admission, one slot per decode), but the reservation guarantees every allocation succeeds, so Orca
never preempts. The price is lower concurrency than vLLM's paged, on-demand allocation.

A step that admits prompts next to running decodes is "mixed"; Orca's *selective batching* (attention
per request, everything else batched) is exactly what ``BatchShape`` already prices.

Speed: decoding requests live in the base class's :class:`~policies.base.DecodeGroup` (every running
request decodes every iteration, exactly the group's contract), so an iteration costs O(1) plus the
requests crossing a KV block boundary, joining or finishing; the reserved-block total is kept
incrementally.
"""
from __future__ import annotations

from typing import Any

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.registry import register_policy
from sim.request import Request, RequestStatus

REJECT_OVER_BUDGET = "prompt longer than max_num_batched_tokens (prompts are never split)"


def reserved_blocks(kv: Any, req: Request) -> int:
    """KV blocks reserved for ``req``'s maximum length: prompt + max_output − 1 token positions."""
    return kv.num_blocks_for(max(req.num_prompt_tokens + req.max_output_tokens - 1, req.num_prompt_tokens))


@register_policy("orca")
class OrcaScheduler(Scheduler):
    """Orca's iteration-level scheduler: decode everyone, then admit whole prompts under reservation."""

    uses_decode_group = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_reserved_blocks = 0  # Σ reserved_blocks over running requests (Orca's n_rsrv)

    def rejection_reason(self, req: Request) -> str | None:
        """Base reasons, plus a prompt larger than the whole token budget (it could never run)."""
        reason = super().rejection_reason(req)
        if reason is None and req.num_prompt_tokens > self.max_num_batched_tokens:
            reason = REJECT_OVER_BUDGET
        return reason

    def schedule(self, now_s: float) -> SchedulerOutput:
        """All running requests decode; then whole prompts are admitted while budget and memory allow."""
        step = self.new_step(now_s)
        self._schedule_running(step)
        self._schedule_waiting(step)
        return step.build()


    def _schedule_group(self, step: StepBuilder) -> None:
        """Every decode-group member decodes one token (the caller checked budget and free blocks):
        members crossing a block boundary get a block; with prefix caching the block a member fills
        in this step is registered now (as ``VLLMV1Scheduler._schedule_group``)."""
        group, kv, k = self.decode_group, self.kv, self.next_iteration
        if group.num_boundary(k):
            kv.append_block_each(group.boundary(k, set_computed=kv.enable_prefix_caching))
        if kv.enable_prefix_caching:
            for req in group.filling(k):
                kv.allocate_slots(req, 1)  # allocates nothing: registers the block this step fills
        step.add_decodes(group.num, group.sum_context(k))
    def update_from_output(self, out: SchedulerOutput, iteration: int, now_s: float,
                           step_time_s: float = 0.0) -> list[Request]:
        """Shared update; finished requests release their reservation."""
        finished = super().update_from_output(out, iteration, now_s, step_time_s)
        for req in finished:
            self.num_reserved_blocks -= reserved_blocks(self.kv, req)
        return finished

    def drain_unfinished(self) -> list[Request]:
        """At the horizon: release everything (reservations included)."""
        self.num_reserved_blocks = 0
        return super().drain_unfinished()

    def _schedule_running(self, step: StepBuilder) -> None:
        """One decode token per running request (allocation cannot fail: the slots are reserved)."""
        group, kv, k = self.decode_group, self.kv, self.next_iteration
        if (group is not None and group.num == len(self.running) and group.num <= step.token_budget
                and group.num_boundary(k) <= kv.num_free_blocks):
            self._schedule_group(step)
            return
        self.dissolve_decode_group()
        for req in self.running:
            if step.token_budget <= 0:
                return  # only if max_num_seqs > max_num_batched_tokens: the rest decode next step
            n = req.num_tokens - req.num_computed_tokens
            if not self.kv.allocate_slots(req, n):
                raise AssertionError(f"orca: request {req.request_id} lost its reserved KV slots")
            step.add(req, n)

    def _schedule_waiting(self, step: StepBuilder) -> None:
        """Admit waiting requests FCFS with their whole prompt, under Orca's KV reservation."""
        waiting, running, kv = self.waiting, self.running, self.kv
        while waiting and step.token_budget > 0 and len(running) < self.max_num_seqs:
            req = waiting[0]
            need = reserved_blocks(kv, req)
            if self.num_reserved_blocks + need > kv.num_blocks:
                return
            self.admit_prefix(req)
            n = req.num_tokens - req.num_computed_tokens
            if n > step.token_budget or not kv.allocate_slots(req, n):
                self.undo_prefix(req)
                return
            self.num_reserved_blocks += need
            waiting.popleft()
            req.status = RequestStatus.RUNNING
            running.append(req)
            step.add(req, n)
