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

3. Under async scheduling (``engine.async_scheduling``, vLLM's default) step k+1 is planned before
   step k's output is processed (``EngineCore.step_with_batch_queue``): a request that finishes in
   step k is still in ``running`` and still holds its KV blocks when step k+1 is planned. vLLM's
   scheduler skips it (it knows it reached ``max_tokens``: ``scheduler.py``, "Async scheduling: Avoid
   scheduling an extra step"), so it computes nothing, but it counts against ``max_num_seqs`` and its
   blocks are not free; they are released by ``update_from_output`` of step k, i.e. for the plan of
   step k+2. Here: finishing requests are *held* through the next plan, then freed.

V1 never swaps: ``engine.preemption_mode: swap`` is honoured through the shared
:meth:`Scheduler.preempt` (an extension; swapped requests come back before new admissions).
"""
from __future__ import annotations

from policies.base import Scheduler, SchedulerOutput, StepBuilder
from policies.registry import register_policy
from sim.engine.request import Request, RequestStatus
from sim.errors import ConfigError

_UNCAPPED = 1 << 62  # a token budget that never binds: what a request would take without the budget


@register_policy("vllm")
class VLLMV1Scheduler(Scheduler):
    """vLLM V1's FCFS scheduler (chunked prefill, optional prefix caching, recompute preemption).

    Requests in steady decode live in the base class's :class:`DecodeGroup`. A step whose running
    requests all fit the token budget and the free KV blocks takes the *fast path*: the group is
    scheduled in O(1) (+ the few members crossing a block boundary) and only the other running
    requests (``individual``: prefill chunks, just-resumed requests) are walked. Under that condition
    vLLM's in-order loop would schedule every running request in full too, so the result is the same.
    Otherwise the group is dissolved and the exact in-order loop runs (with preemption).
    """

    uses_decode_group = True
    # a decode-only plan is the group's fast path alone (sim.engine.leap), once nothing is held
    supports_leap = True
    # vLLM V1 schedules draft tokens of every speculative method (policies.speculative)
    supports_speculation = True
    # vLLM turned async scheduling on by default in late 2025 (vllm-project/vllm PR #27614); the
    # bundled v0.15.1 calibration runs use it
    async_scheduling_default = True

    #: whether, under async scheduling, requests finishing in step k keep their KV blocks and running
    #: slot through the plan of step k+1 (what vLLM does; a class switch only so the size of the effect
    #: can be measured: benchmarks/saturation.py)
    holds_finishing_through_next_plan = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # finished in the last step, output not yet processed by the engine core: blocks still held
        self.held: list[Request] = []
        self._hold = self.async_scheduling and self.holds_finishing_through_next_plan
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            # vLLM refuses this at start-up: a prompt (or a recompute) longer than the budget would
            # never be scheduled.
            raise ConfigError(
                f"engine.max_num_batched_tokens ({self.max_num_batched_tokens}) is smaller than "
                f"max_model_len ({self.max_model_len}) with engine.enable_chunked_prefill false: "
                "raise the budget, lower max_model_len or enable chunked prefill")

    def schedule(self, now_s: float) -> SchedulerOutput:
        """One step: running requests first, then (if nothing was preempted) waiting ones."""
        if self.held and now_s > self.last_step_end_s:
            # the engine core went idle after the last step: its output was processed before this
            # plan, so the requests that finished in it hold nothing any more
            self.release_held()
        step = self.new_step(now_s)
        if not self._schedule_running_fast(step):
            self.dissolve_decode_group()
            self.individual = list(self.running)
            self._schedule_running(step)
        if not step.preempted_ids:
            if self.swapped:  # swapped requests come back before new admissions
                self.schedule_swapped(step)
            if not self.swapped:
                self._schedule_waiting(step)
        out = step.build()
        if self.held:
            self.release_held()  # step k's output is processed while step k+1 (this plan) runs
            shape = out.shape
            if not (shape.num_tokens or shape.swap_bytes or out.preempted_ids or out.rejected_ids):
                # nothing to run: the engine core processes step k's output and plans again at once
                return self.schedule(now_s)
        return out

    def leap_ready(self) -> bool:
        """The base conditions, and no finished request held: its release belongs to the next plan."""
        return not self.held and super().leap_ready()

    def leap_waiting_blocked(self) -> bool:
        """Admission stops before its first attempt: ``max_num_seqs`` run or the decodes took the budget."""
        return (len(self.running) >= self.max_num_seqs - len(self.held)
                or self.max_num_batched_tokens - self.decode_group.num <= 0)

    def release_finished(self, req: Request) -> None:
        """Under async scheduling a finished request's blocks stay allocated through the next plan."""
        if self._hold:
            self.held.append(req)
        else:
            self.kv.free(req)

    def release_held(self) -> None:
        """Free the KV blocks of the requests finished in the last step (their output is processed)."""
        free = self.kv.free
        for req in self.held:
            free(req)
        self.held = []

    def drain_unfinished(self) -> list[Request]:
        """At the horizon: release the held requests' blocks too (they have finished)."""
        self.release_held()
        return super().drain_unfinished()

    def _schedule_running_fast(self, step: StepBuilder) -> bool:
        """Schedule all running requests in full if budget and free blocks allow; else change nothing.

        Still exact when only the last running request is short of budget: V1 gives it what is left.
        """
        group, running = self.decode_group, self.running
        if group is None:
            return False  # exact per-request loop only (uses_decode_group = False)
        running_status = RequestStatus.RUNNING
        individual = self.individual
        if any(r.status is not running_status for r in individual):
            individual = self.individual = [r for r in individual if r.status is running_status]
        if group.num + len(individual) != len(running):
            return False  # defensive: the bookkeeping must cover every running request
        chunks = [self.num_new_tokens(req, _UNCAPPED) for req in individual]
        over = group.num + sum(chunks) - step.token_budget
        if over > 0:
            if not individual or individual[-1] is not running[-1] or chunks[-1] <= over:
                return False
            chunks[-1] -= over
        return self.try_schedule_decode_group(step, individual, chunks)

    def _schedule_running(self, step: StepBuilder) -> None:
        """Exact V1 loop: each running request in order gets its chunk, preempting from the tail."""
        running = self.running
        i = 0
        while i < len(running) and step.token_budget > 0:
            req = running[i]
            n = self.num_new_tokens(req, step.token_budget)
            if not self.allocate_or_preempt(req, n, step):
                break  # req itself was preempted: nothing behind it is left to run
            step.add(req, n)
            i += 1

    def _schedule_waiting(self, step: StepBuilder) -> None:
        """Admit waiting requests in FCFS order until the budget, max_num_seqs or KV runs out."""
        tiers = self.kv.tier_hook
        if tiers is not None and tiers.loads_async:
            skipped: list[Request] = []
            try:
                self._admit_waiting(step, tiers, skipped)
            finally:  # vLLM prepends the requests it skipped (WAITING_FOR_REMOTE_KVS) to the queue
                self.waiting.extendleft(reversed(skipped))
        else:
            self._admit_waiting(step, None, None)

    def _admit_waiting(self, step: StepBuilder, tiers, skipped: list[Request] | None) -> None:
        waiting, running = self.waiting, self.running
        if tiers is not None and tiers.num_loading:
            # landed loads first: they hold their blocks, so a request queued ahead of them that cannot
            # fit (a preempted one) must not keep them waiting — in vLLM's queue order it would, and
            # with nothing running the engine would hang
            landed = [r for r in waiting if tiers.is_loading(r) and tiers.load_landed(r, step.now_s, self.async_scheduling)]
            if landed and waiting[0] is not landed[0]:
                for r in landed:
                    waiting.remove(r)
                waiting.extendleft(reversed(landed))
        # held requests are still in vLLM's running list when this step is planned
        max_running = self.max_num_seqs - len(self.held)
        while waiting and step.token_budget > 0 and len(running) < max_running:
            req = waiting[0]
            loaded = looked_up = False
            reserved = 0  # new tokens whose blocks a landed request already holds
            if tiers is not None:  # vllm-native connector: asynchronous tier loads (sim.engine.kv_tiers)
                if tiers.is_loading(req):
                    if not tiers.load_landed(req, step.now_s, self.async_scheduling):
                        skipped.append(waiting.popleft())
                        continue
                    reserved = tiers.finish_async_load(req, step.now_s)
                    self.kv.allocate_slots(req, 0)  # cache the loaded blocks (held since admission)
                    loaded = True
                elif req.num_computed_tokens == 0:
                    self.admit_prefix(req)
                    looked_up = True
                    if tiers.has_pending_load(req):
                        # load_kv_async: allocate the loaded tokens' blocks (vLLM) and those of the
                        # first chunk (simctl: so that a landed request can always start), hash later
                        n = min(self.num_new_tokens(req, _UNCAPPED), step.token_budget)
                        if not self.kv.allocate_slots(req, n, delay_cache_blocks=True):
                            self.undo_prefix(req)
                            return
                        tiers.start_async_load(req, step.now_s, n)
                        skipped.append(waiting.popleft())
                        continue
                else:
                    loaded = self.kv.num_held_blocks(req) > 0  # landed earlier, its rest did not fit yet
            if not (loaded or looked_up):
                self.admit_prefix(req)
            n = self.num_new_tokens(req, _UNCAPPED)
            if not self.enable_chunked_prefill and n > step.token_budget:
                if not loaded:  # a request whose KV was loaded keeps it while it waits (vLLM)
                    self.undo_prefix(req)
                return
            if n > step.token_budget:
                n = step.token_budget
            if not self.kv.allocate_slots(req, n):
                if not loaded:
                    self.undo_prefix(req)
                    return
                if not reserved:
                    return
                n = min(n, reserved)  # its reserved blocks hold these: no allocation needed
                self.kv.allocate_slots(req, n)
            self.start_running(req, step, n)
