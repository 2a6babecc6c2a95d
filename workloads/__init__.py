"""Workloads: arrival processes, token-length distributions, traces, closed-loop clients, MLPerf
scenarios, shared prefixes and multi-turn conversations (docs/workloads.md).

The integrator calls :func:`build_workload` with the validated ``workload:`` section
(:class:`WorkloadConfig`), the run's ``numpy.random.SeedSequence`` and the experiment file's
directory; the result implements the :class:`workloads.base.Workload` protocol.
"""
from __future__ import annotations

from workloads.arrivals import ARRIVAL_PROCESSES, ArrivalProcess
from workloads.base import OpenLoopWorkload, Submit, Workload
from workloads.builder import GeneratedWorkload, build_workload
from workloads.config import WorkloadConfig
from workloads.lengths import LENGTH_DISTRIBUTIONS, LengthDistribution, parse_length
from workloads.rate_curves import DiurnalArrival, RateCurveArrival, TimeVaryingArrival

__all__ = [
    "ARRIVAL_PROCESSES", "ArrivalProcess", "DiurnalArrival", "RateCurveArrival", "TimeVaryingArrival", "GeneratedWorkload", "LENGTH_DISTRIBUTIONS", "LengthDistribution",
    "OpenLoopWorkload", "Submit", "Workload", "WorkloadConfig", "build_workload", "parse_length",
]
