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
"""
from __future__ import annotations

import math
from typing import Any

from sim.config import with_overrides
from sim.measure.slo import evaluate_slo
from sim.runs.disagg import pd_probe_keys, pd_setup, pool_capacity_rps
from sim.runs.runner import replica_setup

__all__ = ["search_pd_replicas"]

# criteria more decode replicas cannot fix but more prefill replicas can (and vice versa)
_DECODE_BOUND = ("tpot", "itl")


def _probe(s: Any, rate: float, num_prefill: int, num_decode: int, cache: dict) -> Any:
    # the searcher's Probe class and kept keys (sim.plan.capacity passes them: no import back)
    Probe, PROBE_SUMMARY_KEYS = s.probe_cls, s.summary_keys  # noqa: N806

    key = (num_prefill, num_decode)
    if key in cache:
        return cache[key]
    cfg = with_overrides(s.config_at(rate), {"disaggregation.prefill.replicas": num_prefill,
                                             "disaggregation.decode.replicas": num_decode})
    result = s.run_fn(cfg)
    summary = getattr(result, "summary", result)
    verdict = summary.get("slo") if isinstance(summary, dict) else None
    if not isinstance(verdict, dict) or "passed" not in verdict:
        verdict = evaluate_slo(summary, cfg.slo, cfg.model)
    kept = {k: summary.get(k) for k in PROBE_SUMMARY_KEYS if k in summary}
    kept.update({"prefill_replicas": num_prefill, "decode_replicas": num_decode, **pd_probe_keys(summary)})
    probe = Probe(request_rate=float(f"{rate:.6g}"), replicas=num_prefill + num_decode,
                  passed=bool(verdict["passed"]), binding=verdict.get("binding"),
                  failed=list(verdict.get("failed", [])), criteria=list(verdict.get("criteria", [])), summary=kept)
    cache[key] = probe
    s.probes.append(probe)
    if s.progress is not None:
        s.progress(probe)
    return probe


def _cost(p: Any) -> tuple[float, float, int]:
    c = p.summary.get("cost_per_hour_usd")
    return (c if c is not None else float(p.replicas), float(p.summary.get("num_gpus") or 0),
            int(p.summary["prefill_replicas"]))


def search_pd_replicas(s: Any, cfg: Any, rate: float) -> tuple[Any, Any, bool, dict[str, Any]]:
    """The cheapest passing ``(P, D)`` at ``rate`` (module docstring): (best probe or None, the failing
    probe next to it, converged, detail for capacity.json)."""
    limit = s.search.max_replicas
    wl = cfg.workload
    prompt = getattr(getattr(wl, "input_tokens", None), "mean", None)
    output = getattr(getattr(wl, "output_tokens", None), "mean", None)
    start = {"prefill": 1, "decode": 1}
    caps: dict[str, float] = {}
    if prompt and output:
        caps = pool_capacity_rps(pd_setup(with_overrides(cfg, {"disaggregation.prefill.replicas": 1,
                                                               "disaggregation.decode.replicas": 1}),
                                          replica_setup), float(prompt), float(output))
        start = {r: max(1, min(limit, math.ceil(rate / caps[r]))) if math.isfinite(caps[r]) else 1 for r in caps}
    cache: dict = {}
    best = None
    fail_next = None
    per_decode: list[dict[str, Any]] = []
    d = max(1, start["decode"] - 1)
    worse_in_a_row = 0
    while d <= limit and s.budget_left:
        p_count = max(1, start["prefill"] - 1)
        found = None
        while p_count + d <= limit * 2 and p_count <= limit and s.budget_left:
            probe = _probe(s, rate, p_count, d, cache)
            if probe.passed:
                found = probe
                # one fewer prefill replica may pass too when the start overshot
                while p_count > 1 and s.budget_left:
                    lower = _probe(s, rate, p_count - 1, d, cache)
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
    detail = {"rate_matching_start": start, "capacity_rps_per_instance": caps, "per_decode_count": per_decode,
              "prefill_replicas": best.summary["prefill_replicas"] if best else None,
              "decode_replicas": best.summary["decode_replicas"] if best else None}
    converged = best is not None and s.budget_left
    return best, fail_next, converged, detail
