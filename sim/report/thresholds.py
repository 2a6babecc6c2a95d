"""Latency thresholds drawn on the report's plots: the experiment's SLO and MLPerf's limits.

The SLO comes from the experiment's ``slo:`` section, presets expanded by :func:`sim.measure.slo.resolve_slo`;
MLPerf P99 TTFT/TPOT limits from :mod:`workloads.scenarios` (SEMANTICS.md §5). MLPerf has no Llama-3
70B benchmark: other Llama 70B models are drawn against llama2-70b, its 70B-class benchmark, and
labelled "closest benchmark".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import SimctlError
from sim.measure.slo import resolve_slo
from workloads.scenarios import MLPERF_LIMITS_MS, mlperf_model_key


@dataclass(frozen=True)
class Criterion:
    """One latency bound: ``stat`` of ``metric`` must be ≤ ``limit_ms``."""

    metric: str  # ttft | tpot | itl | e2el
    stat: str  # mean | median | pNN
    limit_ms: float
    source: str = "SLO"

    @property
    def summary_key(self) -> str:
        """The summary key holding the simulated value (``p99_ttft_ms``)."""
        return f"{self.stat}_{self.metric}_ms"

    @property
    def label(self) -> str:
        """Short text such as ``P99 TTFT ≤ 2,000 ms``."""
        stat = self.stat.upper() if self.stat.startswith("p") else self.stat
        return f"{stat} {self.metric.upper()} ≤ {self.limit_ms:,.0f} ms"


def mlperf_criteria(model_name: str, scenario: str) -> list[Criterion]:
    """MLPerf P99 TTFT/TPOT limits for ``model_name`` in ``scenario`` (server | interactive)."""

    bench, exact = mlperf_model_key(model_name), True
    compact = re.sub(r"[^a-z0-9]", "", model_name.lower())
    if bench is None and "llama" in compact and "70b" in compact:
        bench, exact = "llama2-70b", False
    limits = MLPERF_LIMITS_MS.get((bench, scenario)) if bench else None
    if not limits:
        return []
    source = f"MLPerf {bench} {scenario}" + ("" if exact else " (closest benchmark)")
    return [Criterion(key.removesuffix("_ms"), "p99", float(limit), source) for key, limit in limits.items()]


def slo_criteria(slo: Any, model_name: str = "") -> list[Criterion]:
    """Latency criteria of an experiment's ``slo:`` section (as saved in ``config.yaml``), presets
    expanded. Fluidity and goodput criteria have no latency line and are left out; an SLO section
    the current schema rejects gives no lines rather than failing the report."""
    if not slo:
        return []

    try:
        resolved = resolve_slo(slo, model_name)
    except (SimctlError, ValueError):
        return []
    if resolved is None:
        return []
    return [Criterion(metric, stat, float(limit)) for metric, bounds in resolved.latency_bounds().items()
            for stat, limit in bounds.items()]


def slo_passed(summary: dict[str, Any], criteria: list[Criterion]) -> bool | None:
    """Overall SLO verdict: the run's own (``summary['slo']['passed']``, or a sweep row's flattened
    ``slo.passed``) when present, else the latency criteria checked here; None if there is no SLO."""
    slo = summary.get("slo")
    if isinstance(slo, dict) and isinstance(slo.get("passed"), bool):
        return slo["passed"]
    flat = summary.get("slo.passed")
    if isinstance(flat, (bool, np.bool_)):
        return bool(flat)
    if not criteria:
        return None
    values = [summary.get(c.summary_key) for c in criteria]
    if any(not isinstance(v, (int, float)) or v != v for v in values):
        return None
    return all(v <= c.limit_ms for v, c in zip(values, criteria))
