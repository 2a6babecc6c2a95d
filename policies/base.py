"""The scheduler contract every policy implements.

The engine loop is::

    out = scheduler.schedule(now_s)          # -> SchedulerOutput (plain, frozen)
    cost = cost_model.step(out.shape)         # prices the batch
    yield env.timeout(cost.time_s)
    finished = scheduler.update_from_output(out, iteration, now_s)

Policies decide *who* runs and *how many tokens*; the KV-cache manager (``sim.kv_cache``) decides
whether memory allows it and says no by return value. Policies never touch block lists directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sim.cost import BatchShape
from sim.request import Request


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """What one iteration computes. The cost model reads only ``shape``."""

    # request -> number of new tokens computed for it this step (insertion order = batch order)
    num_scheduled_tokens: dict[int, int]
    # the scheduled Request objects, aligned with num_scheduled_tokens' order
    scheduled: tuple[Request, ...]
    # aggregate sums priced by the cost model
    shape: BatchShape
    # requests preempted (recompute or swap) while building this step
    preempted_ids: tuple[int, ...] = ()
    # requests rejected while building this step (e.g. longer than the whole KV cache)
    rejected_ids: tuple[int, ...] = ()
    # policy-specific label of the step kind ("mixed", "prefill", "decode") for the iteration log
    kind: str = "mixed"
    # extra info for the iteration log
    info: dict = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        """True when nothing was scheduled (the replica idles until the next arrival)."""
        return self.shape.num_tokens == 0
