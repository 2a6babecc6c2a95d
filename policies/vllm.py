"""vLLM V1 scheduling (``vllm/v1/core/sched/scheduler.py``; SEMANTICS.md §3).

No phases: every request needs ``num_tokens - num_computed_tokens`` more tokens. Per step, with the
token budget ``max_num_batched_tokens``:

1. *Running* requests first, in order; each gets
   ``min(needed, long_prefill_token_threshold if > 0, budget)``. If its KV slots cannot be allocated,
   the *last* running request is preempted (recompute: blocks freed, computed tokens reset to 0, front
   of the waiting queue), repeatedly, until it fits — or until it is itself the one preempted.
2. If nothing was preempted this step, *waiting* requests are admitted in order while the budget lasts
   and fewer than ``max_num_seqs`` run: a prefix-cache hit (full blocks, capped at num_tokens − 1) is
   taken first, then only the scheduled chunk's blocks are allocated (no watermark); the first failed
   allocation stops admission. Without chunked prefill a prompt larger than the remaining budget
   stops admission too (it waits for a step with enough budget).

V1 never swaps: ``engine.preemption_mode: swap`` is honoured through the shared
:meth:`Scheduler.preempt` (an extension; swapped requests come back before new admissions).
"""
from __future__ import annotations

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.registry import register_policy
from sim.request import Request, RequestStatus


@register_policy("vllm")
class VLLMV1Scheduler(Scheduler):
    """vLLM V1's FCFS scheduler (chunked prefill, optional prefix caching, recompute preemption)."""

    def schedule(self, now_s: float) -> SchedulerOutput:
        """One step: running requests first, then (if nothing was preempted) waiting ones."""
        step = self.new_step(now_s)
        self._schedule_running(step)
        if not step.preempted_ids:
            if self.swapped:
                self._schedule_swapped(step)
            if not self.swapped:
                self._schedule_waiting(step)
        return step.build()

    def _schedule_running(self, step: StepBuilder) -> None:
        """Give each running request its next chunk, preempting from the tail when KV runs out."""
        running = self.running
        i = 0
        while i < len(running) and step.token_budget > 0:
            req = running[i]
            n = self.num_new_tokens(req, step.token_budget)
            if not self._allocate_or_preempt(req, n, step):
                break  # req itself was preempted: nothing behind it is left to run
            step.add(req, n)
            i += 1

    def _allocate_or_preempt(self, req: Request, num_new_tokens: int, step: StepBuilder) -> bool:
        """Allocate ``req``'s chunk, preempting the last running request until it fits.

        Returns False when ``req`` itself had to be preempted.
        """
        running = self.running
        while not self.kv.allocate_slots(req, num_new_tokens):
            victim = running.pop()
            self.preempt(victim, step)
            if victim is req:
                return False
        return True

    def _schedule_swapped(self, step: StepBuilder) -> None:
        """Swap requests back in (oldest first) while there is room; only with preemption_mode swap."""
        swapped, running = self.swapped, self.running
        while swapped and step.token_budget > 0 and len(running) < self.max_num_seqs:
            req = swapped[0]
            n = self.num_new_tokens(req, step.token_budget)
            blocks_needed = (self.kv.num_swapped_blocks(req)
                             + self.kv.num_blocks_for(req.num_computed_tokens + n)
                             - self.kv.num_blocks_for(req.num_computed_tokens))
            if blocks_needed > self.kv.num_free_blocks or not self.swap_in(req, step):
                return
            swapped.popleft()
            if not self.kv.allocate_slots(req, n):  # cannot happen: room was checked above
                raise AssertionError("allocation failed after the swap-in check")
            running.append(req)
            step.add(req, n)

    def _schedule_waiting(self, step: StepBuilder) -> None:
        """Admit waiting requests in FCFS order until the budget, max_num_seqs or KV runs out."""
        waiting, running = self.waiting, self.running
        while waiting and step.token_budget > 0 and len(running) < self.max_num_seqs:
            req = waiting[0]
            self.admit_prefix(req)
            n = self.num_new_tokens(req, 1 << 62)
            if not self.enable_chunked_prefill and n > step.token_budget:
                self.undo_prefix(req)
                return
            if n > step.token_budget:
                n = step.token_budget
            if not self.kv.allocate_slots(req, n):
                self.undo_prefix(req)
                return
            waiting.popleft()
            req.status = RequestStatus.RUNNING
            running.append(req)
            step.add(req, n)
