"""The contract between workloads and the engine.

A workload is a SimPy process factory: ``workload.process(env, submit)``. ``submit(spec)`` hands a
:class:`sim.engine.request.RequestSpec` to the cluster at ``env.now`` and returns a SimPy event that succeeds
(with the finished :class:`sim.engine.request.Request`) when that request ends — completed or rejected.
Open-loop workloads ignore the event; closed-loop clients and multi-turn sessions wait on it.
One SimPy event per request, never per token.
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

import simpy

from sim.engine.request import RequestSpec

Submit = Callable[[RequestSpec], simpy.Event]


class Workload(Protocol):
    """Anything that can drive requests into a cluster."""

    def process(self, env: simpy.Environment, submit: Submit) -> Generator[Any, Any, None]:
        """SimPy process generator that submits requests over simulated time."""
        ...

    def describe(self) -> dict[str, Any]:
        """Short description for reports (arrival process, lengths, expected counts)."""
        ...


class OpenLoopWorkload:
    """Submit a fixed list of requests at their ``arrival_s`` (sorted), ignoring completions."""

    def __init__(self, specs: Sequence[RequestSpec], description: dict[str, Any] | None = None) -> None:
        self.specs = sorted(specs, key=lambda s: s.arrival_s)
        self._description = description or {"kind": "open-loop", "num_requests": len(self.specs)}

    def process(self, env: simpy.Environment, submit: Submit) -> Generator[Any, Any, None]:
        """Wait until each arrival time, then submit."""
        for spec in self.specs:
            delay = spec.arrival_s - env.now
            if delay > 0:
                yield env.timeout(delay)
            submit(spec)

    def describe(self) -> dict[str, Any]:
        """The description given at construction."""
        return dict(self._description)
