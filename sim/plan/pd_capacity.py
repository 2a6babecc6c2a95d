"""Capacity search over (prefill replicas, decode replicas) for a disaggregated experiment.

``search: {target: replicas, target_rate: R}`` on an experiment with a ``disaggregation:`` section finds
the cheapest ``(P, D)`` meeting the SLO at ``R`` req/s ($/hour of both pools, each at its own GPU price;
ties: fewer GPUs, then fewer prefill replicas).

**Algorithm.** A rate-matching start from the cost model: ``P₀ = ⌈R / prefill capacity of one
instance⌉``, ``D₀ = ⌈R / decode capacity of one instance⌉`` (``sim.runs.disagg.pool_capacity_rps``, for
the workload's mean prompt and output lengths). Then a local search: for each decode count
``D ∈ {D₀−1, D₀, D₀+1, …}`` the fewest prefill replicas passing (upwards from ``max(1, P₀−1)``; each
failing probe that names a TTFT/queue criterion adds a prefill replica, one that names TPOT/ITL moves
on to the next ``D`` since more prefill cannot fix decode), until a decode count no longer lowers the
cost, or ``max_replicas`` / ``max_probes``. Every probe is a full simulation (the engine's own
queueing, transfers and KV admission decide), so the capacity estimates only choose where to look.

The search runs on :mod:`sim.plan.capacity`'s probe oracle, so ``simctl capacity --jobs N`` simulates
the probes it may need next in parallel (assuming, for each point not simulated yet, that it passes,
fails on a prefill-side criterion or fails on TPOT/ITL) while only real verdicts choose the path:
``capacity.json`` is the same for every ``--jobs``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sim.config import with_overrides
from sim.errors import ConfigError
from sim.runs.disagg import pd_setup, pool_capacity_rps
from sim.runs.runner import replica_setup

__all__ = ["PDSearchStart", "search_pd_replicas"]

# criteria more decode replicas cannot fix but more prefill replicas can (and vice versa)
_DECODE_BOUND = ("tpot", "itl")


@dataclass
class PDSearchStart:
    """What the search derives once from the cost model: the rate-matching start and one instance's
    capacity per pool; and, for probes a parallel search only assumes, each pool's $/hour and GPUs per
    instance (worked out on first use: a sequential search never needs them)."""

    cfg: Any
    start: dict[str, int]
    caps: dict[str, float]
    _per_instance: dict[str, tuple[float | None, int]] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, cfg: Any, rate: float, limit: int) -> PDSearchStart:
        """The start for ``cfg`` at ``rate`` req/s, at most ``limit`` replicas per pool."""
        wl = cfg.workload
        prompt = getattr(getattr(wl, "input_tokens", None), "mean", None)
        output = getattr(getattr(wl, "output_tokens", None), "mean", None)
        start = {"prefill": 1, "decode": 1}
        caps: dict[str, float] = {}
        if prompt and output:
            caps = pool_capacity_rps(pd_setup(_one_each(cfg), replica_setup), float(prompt), float(output))
            start = {r: max(1, min(limit, math.ceil(rate / caps[r]))) if math.isfinite(caps[r]) else 1 for r in caps}
        return cls(cfg, start, caps)

    def assumed_summary(self, key: tuple) -> dict[str, Any]:
        """The summary keys the search reads of an assumed probe ``(rate, P, D)``: its pool sizes, and
        its $/hour and GPUs from the pools' prices (None where a price is unknown, as in a real run)."""
        if self._per_instance is None:
            try:
                setup = pd_setup(_one_each(self.cfg), replica_setup)
            except ConfigError:  # the real probe raises it, if the search ever needs that point
                self._per_instance = {r: (None, 0) for r in ("prefill", "decode")}
            else:
                _, detail = setup.cost_per_hour(getattr(self.cfg, "cost", None))
                self._per_instance = {r: (detail[r]["cost_per_hour_usd"] if r in detail else None, setup.pool_gpus(r))
                                      for r in ("prefill", "decode")}
        (c_p, g_p), (c_d, g_d) = self._per_instance["prefill"], self._per_instance["decode"]
        _, p, d = key
        cost = None if c_p is None or c_d is None else p * c_p + d * c_d
        return {"prefill_replicas": p, "decode_replicas": d, "cost_per_hour_usd": cost, "num_gpus": p * g_p + d * g_d}


def _one_each(cfg: Any) -> Any:
    return with_overrides(cfg, {"disaggregation.prefill.replicas": 1, "disaggregation.decode.replicas": 1})


def _cost(p: Any) -> tuple[float, float, int]:
    c = p.summary.get("cost_per_hour_usd")
    return (c if c is not None else float(p.replicas), float(p.summary.get("num_gpus") or 0),
            int(p.summary["prefill_replicas"]))


def search_pd_replicas(s: Any, plan: PDSearchStart, rate: float) -> tuple[Any, Any, bool, dict[str, Any]]:
    """The cheapest passing ``(P, D)`` at ``rate`` on the probe oracle ``s`` (module docstring): (best
    probe or None, the failing probe next to it, converged, detail for capacity.json)."""
    limit = s.search.max_replicas
    start = plan.start
    best = None
    fail_next = None
    per_decode: list[dict[str, Any]] = []
    d = max(1, start["decode"] - 1)
    worse_in_a_row = 0
    while d <= limit and s.budget_left:
        p_count = max(1, start["prefill"] - 1)
        found = None
        while p_count + d <= limit * 2 and p_count <= limit and s.budget_left:
            probe = s.probe_pd(rate, p_count, d)
            if probe.passed:
                found = probe
                # one fewer prefill replica may pass too when the start overshot
                while p_count > 1 and s.budget_left:
                    lower = s.probe_pd(rate, p_count - 1, d)
                    if not lower.passed:
                        fail_next = fail_next or lower
                        break
                    found, p_count = lower, p_count - 1
                break
            fail_next = probe
            if any(k in (probe.binding or "") for k in _DECODE_BOUND):
                break  # decode-bound: more prefill cannot help this D
            p_count += 1
        per_decode.append({"decode_replicas": d, "fewest_prefill_replicas": found.summary["prefill_replicas"] if found else None,
                           "cost_per_hour_usd": found.summary.get("cost_per_hour_usd") if found else None})
        if found is not None:
            if best is None or _cost(found) < _cost(best):
                best, worse_in_a_row = found, 0
            else:
                worse_in_a_row += 1
            if worse_in_a_row >= 1:
                break  # adding decode replicas no longer lowers the cost
        d += 1
    detail = {"rate_matching_start": start, "capacity_rps_per_instance": plan.caps, "per_decode_count": per_decode,
              "prefill_replicas": best.summary["prefill_replicas"] if best else None,
              "decode_replicas": best.summary["decode_replicas"] if best else None}
    converged = best is not None and s.budget_left
    return best, fail_next, converged, detail
