"""Helpers for the workload tests: a fake cluster that ends each request after a fixed service time.

(Named ``test_workload_*`` to sit with the workload tests; it holds no tests itself.)
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import simpy

from sim.engine.request import RequestSpec, RequestStatus
from workloads import WorkloadConfig, build_workload

DATA = Path(__file__).parent / "data"


def make(cfg: dict[str, Any], seed: int = 0, base_dir: Path = Path(".")):
    """Validate ``cfg`` as a workload section and build it."""
    return build_workload(WorkloadConfig.model_validate(cfg), np.random.SeedSequence(seed), base_dir)


class FakeCluster:
    """``submit`` that completes each request after ``service(spec)`` seconds (or rejects it when
    ``reject(spec)``), recording send times and the number in flight."""

    def __init__(self, env: simpy.Environment, service=lambda s: 0.5, reject=lambda s: False) -> None:
        self.env = env
        self.service = service
        self.reject = reject
        self.sent: list[tuple[float, RequestSpec]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def submit(self, spec: RequestSpec) -> simpy.Event:
        env = self.env
        ev = env.event()
        self.sent.append((env.now, spec))
        if self.reject(spec):
            ev.succeed(SimpleNamespace(status=RequestStatus.REJECTED, num_output_tokens=0))
            return ev
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def finish():
            yield env.timeout(self.service(spec))
            self.in_flight -= 1
            ev.succeed(SimpleNamespace(status=RequestStatus.FINISHED, num_output_tokens=spec.max_output_tokens))

        env.process(finish())
        return ev


def run(workload, service=lambda s: 0.5, reject=lambda s: False, until: float | None = None) -> FakeCluster:
    """Drive ``workload`` against a :class:`FakeCluster` until it has sent everything."""
    env = simpy.Environment()
    cluster = FakeCluster(env, service, reject)
    proc = env.process(workload.process(env, cluster.submit))
    env.run(until=until if until is not None else proc)
    return cluster
