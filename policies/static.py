"""Static (request-level) batching, as FasterTransformer and early serving stacks do it.

1. When no batch is running, form one: take waiting requests in FCFS order while fewer than
   ``max_num_seqs`` are in it, their prompts together fit the token budget (``max_num_batched_tokens``)
   and KV for each one's *maximum* length (prompt + ``max_output_tokens`` − 1 positions) fits in the
   cache. The whole batch is prefilled in **one** iteration (kind "prefill").
2. Then the batch decodes, one token per request per iteration (kind "decode"), until *every* request
   in it has finished. Finished requests leave (their KV is freed and they are no longer computed), but
   no newcomer joins until the batch is empty — so a request's TTFT includes waiting for the whole
   previous batch, and short requests sit idle slots next to long ones.

Because each request's maximum KV is reserved when the batch forms, nothing is ever preempted.

Speed: the batch's decoding requests live in the base class's :class:`~policies.base.DecodeGroup`,
so a decode iteration costs O(1) plus the few requests crossing a KV block boundary, not O(batch).
Simplification (docs/policies.md): FasterTransformer pads every prompt to the batch's longest and keeps
computing finished rows; simctl prices only the real tokens, so real static batching is somewhat
slower than modelled here.
"""
from __future__ import annotations

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.orca import reserved_blocks
from policies.registry import register_policy
from sim.request import Request, RequestStatus

REJECT_OVER_BUDGET = "prompt longer than max_num_batched_tokens (the batch prefill is one iteration)"


@register_policy("static")
class StaticBatchScheduler(Scheduler):
    """Request-level batching: form a batch, run it to completion, only then form the next."""

    uses_decode_group = True

    def rejection_reason(self, req: Request) -> str | None:
        """Base reasons, plus a prompt larger than the whole token budget (it could never run)."""
        reason = super().rejection_reason(req)
        if reason is None and req.num_prompt_tokens > self.max_num_batched_tokens:
            reason = REJECT_OVER_BUDGET
        return reason

    def schedule(self, now_s: float) -> SchedulerOutput:
        """Decode the running batch, or — once it is empty — prefill a new one."""
        step = self.new_step(now_s)
        if self.running:
            self._decode_batch(step)
            return step.build(kind="decode")
        self._form_batch(step)
        return step.build(kind="prefill" if step.scheduled else None)


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
    def _decode_batch(self, step: StepBuilder) -> None:
        """One token for every unfinished request of the batch (slots are reserved: cannot fail)."""
        if self._decode_group_fast(step):
            return
        self.dissolve_decode_group()
        for req in self.running:
            if step.token_budget <= 0:
                return  # only if max_num_seqs > max_num_batched_tokens: the rest decode next step
            n = req.num_tokens - req.num_computed_tokens
            if not self.kv.allocate_slots(req, n):
                raise AssertionError(f"static: request {req.request_id} lost its reserved KV slots")
            step.add(req, n)

    def _decode_group_fast(self, step: StepBuilder) -> bool:
        """Decode the whole batch in O(1) (+ block-boundary crossings) when every running request is a
        decode-group member and all fit the budget and the free blocks; else change nothing."""
        group, kv, k = self.decode_group, self.kv, self.next_iteration
        if (group is None or group.num != len(self.running) or group.num > step.token_budget
                or group.num_boundary(k) > kv.num_free_blocks):
            return False
        self._schedule_group(step)
        return True

    def _form_batch(self, step: StepBuilder) -> None:
        """Take waiting requests FCFS into a new batch and prefill all of them in this step."""
        waiting, running, kv = self.waiting, self.running, self.kv
        num_reserved = 0
        while waiting and len(running) < self.max_num_seqs:
            req = waiting[0]
            need = reserved_blocks(kv, req)
            if num_reserved + need > kv.num_blocks:
                return
            self.admit_prefix(req)
            n = req.num_tokens - req.num_computed_tokens
            if n > step.token_budget or not kv.allocate_slots(req, n):
                self.undo_prefix(req)
                return
            num_reserved += need
            waiting.popleft()
            req.status = RequestStatus.RUNNING
            running.append(req)
            step.add(req, n)
