"""Lockstep of the data-parallel attention ranks of one engine (``parallel.dp > 1``).

Each DP rank is an engine core of its own (scheduler, KV cache, iteration log), but the MoE layers
join all ranks through the all-to-all, so a step is synchronous across the group: every rank that has
work plans its batch, the group starts the step together, and the step lasts as long as its slowest
rank (ranks without work run a dummy batch, as vLLM's and SGLang's DP ranks do, which is never the
slowest). The cost model prices the group at once (:meth:`RooflineCostModel.group_step`): attention
on each rank's own batch, the experts on the tokens of all ranks.

A rank that becomes ready while a step is in flight joins the next one: the next step starts when the
one in flight ends, after every rank finishing it has planned again (same simulated instant).
"""
from __future__ import annotations

from typing import Any

import simpy

from sim.deploy.step_cost import BatchShape


class DPGroup:
    """Coordinates the synchronous steps of ``size`` DP ranks priced by ``cost_model.group_step``."""

    def __init__(self, env: simpy.Environment, size: int, cost_model: Any) -> None:
        self.env = env
        self.size = size
        self.cost_model = cost_model
        self._pending: dict[int, BatchShape] = {}  # rank -> planned shape of the forming step
        self._forming: simpy.Event | None = None  # succeeds with {rank: (start_s, time_s, cost)}
        self._in_flight: simpy.Event | None = None  # the step now running (None when idle)
        self.num_steps = 0

    def step(self, rank: int, shape: BatchShape):
        """SimPy sub-process of one rank: join the next group step with ``shape``; returns
        ``(start_s, time_s, cost)`` once the step has ended."""
        self._pending[rank] = shape
        if self._forming is None:
            self._forming = self.env.event()
            self.env.process(self._run_step(self._forming))
        result = yield self._forming
        return result[rank]

    def _run_step(self, forming: simpy.Event):
        env = self.env
        if self._in_flight is not None:
            yield self._in_flight  # the step in flight ends first; its ranks re-plan at that instant
        yield env.timeout(0)  # collect every rank that plans at this instant
        ranks = sorted(self._pending)
        shapes = [self._pending[r] for r in ranks]
        self._pending = {}
        self._forming = None
        dt, costs = self.cost_model.group_step(shapes)
        start = env.now
        self._in_flight = forming
        self.num_steps += 1
        yield env.timeout(dt)
        self._in_flight = None
        forming.succeed({r: (start, dt, c) for r, c in zip(ranks, costs)})
