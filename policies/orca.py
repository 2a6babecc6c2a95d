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
from sim.engine.request import Request

REJECT_OVER_BUDGET = "prompt longer than max_num_batched_tokens (prompts are never split)"


def reserved_blocks(kv: Any, req: Request) -> int:
    """KV blocks reserved for ``req``'s maximum length: prompt + max_output − 1 token positions."""
    return kv.num_blocks_for(max(req.num_prompt_tokens + req.max_output_tokens - 1, req.num_prompt_tokens))


def admit_whole_prompts(sched: Scheduler, step: StepBuilder, num_reserved: int,
                        stop_when_budget_spent: bool = True) -> int:
    """Admit waiting requests FCFS, each with its whole prompt, while fewer than ``max_num_seqs`` run,
    the prompt fits the step's budget and its :func:`reserved_blocks` fit next to ``num_reserved``
    (``n_rsrv + max_tokens ≤ n_slots``); returns the new reserved total."""
    waiting, kv = sched.waiting, sched.kv
    while waiting and len(sched.running) < sched.max_num_seqs:
        if stop_when_budget_spent and step.token_budget <= 0:
            break
        req = waiting[0]
        need = reserved_blocks(kv, req)
        if num_reserved + need > kv.num_blocks:
            break
        sched.admit_prefix(req)
        n = req.num_tokens - req.num_computed_tokens
        if n > step.token_budget or not kv.allocate_slots(req, n):
            sched.undo_prefix(req)
            break
        num_reserved += need
        sched.start_running(req, step, n)
    return num_reserved


@register_policy("orca")
class OrcaScheduler(Scheduler):
    """Orca's iteration-level scheduler: decode everyone, then admit whole prompts under reservation."""

    uses_decode_group = True
    supports_leap = True  # with nothing waiting, a step is schedule_reserved_decodes' group path alone
    reject_prompt_over_budget = REJECT_OVER_BUDGET

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_reserved_blocks = 0  # Σ reserved_blocks over running requests (Orca's n_rsrv)

    def schedule(self, now_s: float) -> SchedulerOutput:
        """All running requests decode; then whole prompts are admitted while budget and memory allow."""
        step = self.new_step(now_s)
        self.schedule_reserved_decodes(step)
        self.num_reserved_blocks = admit_whole_prompts(self, step, self.num_reserved_blocks)
        return step.build()

    def leap_waiting_blocked(self) -> bool:
        """Admission stops before touching the front request: ``max_num_seqs`` run, the decodes took the
        budget, or its reservation does not fit next to the running ones' (which only a finish frees)."""
        return (len(self.running) >= self.max_num_seqs
                or self.max_num_batched_tokens - self.decode_group.num <= 0
                or self.num_reserved_blocks + reserved_blocks(self.kv, self.waiting[0]) > self.kv.num_blocks)

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
