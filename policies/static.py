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

from policies.base import Scheduler, SchedulerOutput
from policies.orca import admit_whole_prompts
from policies.registry import register_policy

REJECT_OVER_BUDGET = "prompt longer than max_num_batched_tokens (the batch prefill is one iteration)"


@register_policy("static")
class StaticBatchScheduler(Scheduler):
    """Request-level batching: form a batch, run it to completion, only then form the next."""

    uses_decode_group = True
    supports_leap = True  # a running batch's step is schedule_reserved_decodes' group path alone
    reject_prompt_over_budget = REJECT_OVER_BUDGET

    def leap_waiting_blocked(self) -> bool:
        """While a batch runs nobody joins it: waiting requests never stop a leap."""
        return True

    def schedule(self, now_s: float) -> SchedulerOutput:
        """Decode the running batch, or — once it is empty — prefill a new one."""
        step = self.new_step(now_s)
        if self.running:  # every request of the batch decodes (slots are reserved: cannot fail)
            self.schedule_reserved_decodes(step)
            return step.build(kind="decode")
        # form a new batch: waiting requests FCFS, all prefilled in this step
        admit_whole_prompts(self, step, 0, stop_when_budget_spent=False)
        return step.build(kind="prefill" if step.scheduled else None)
