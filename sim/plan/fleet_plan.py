"""Fleet planning over a day: ``simctl plan FILE``.

For a day of traffic (``workload.arrival`` with a rate curve, e.g. ``diurnal`` or ``rate-curve``), an
``slo:`` and an ``autoscaling:`` policy, and for each candidate deployment in ``plan.candidates``
(dotted overrides such as ``{hardware: a100-sxm-80gb, parallel.tp: 2}``), compare

(a) **fixed for the peak**: ``n = ⌈λ_peak / c⌉`` replicas all day, simulated over the day;
(b) **autoscaled**: the experiment's policy in the loop, simulated over the day (``planner`` gets
    ``replica_capacity_rps = c`` unless set; ``max_replicas`` is raised to at least the fixed fleet);
(c) **oracle lower bound**: a fleet that knows the future and pays no cold start,
    ``replicas_k = max(min_replicas, ⌈λ̄_k / c⌉)`` for each interval ``k`` of ``oracle_interval_s``
    (λ̄_k the exact mean rate over it, from the curve's Λ) — not simulated: a bound;

where ``c`` is the capacity of *one* replica at a constant Poisson rate with the day's request mix
(:func:`sim.plan.capacity.capacity_search`, settings in ``plan.capacity``). Reported per candidate:
GPU-hours, $/day on demand (and reserved + on demand with ``autoscaling.reserved``), peak and mean
GPUs, SLO attainment and pass/fail of (a) and (b), and the gap of (b) to (c). The recommendation is
the cheapest simulated fleet — fixed or autoscaled, any candidate — that meets the SLO. Candidates run
in parallel (``jobs`` processes).

```yaml
plan:
  candidates:
    - {hardware: h100-sxm}
    - {hardware: a100-sxm-80gb}
  capacity: {num_requests: 600, warmup_requests: 100, tolerance: 0.05}
  oracle_interval_s: 60          # default: autoscaling.interval_s
```
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from sim.config import ExperimentConfig, Frozen, with_overrides
from sim.deploy.deployment import build_deployment
from sim.errors import ConfigError, SimctlError
from sim.measure.fleet import request_attainment
from sim.measure.pricing import gpu_hour_price
from sim.plan.capacity import SearchConfig, capacity_search
from sim.plan.sweep import _pool_context, default_jobs
from sim.runs.runner import run
from sim.runs.storage import to_jsonable
from workloads.arrivals import PoissonArrival

__all__ = [
    "CapacityProbe",
    "PlanConfig",
    "day_rate_curve",
    "evaluate_candidate",
    "oracle_fleet",
    "plan_fleet",
    "plan_markdown",
]

PLAN_FILE = "plan.json"
PLAN_MD = "plan.md"


class CapacityProbe(Frozen):
    """How one replica's capacity is searched (``search:`` keys, at a constant Poisson rate)."""

    num_requests: int = Field(600, ge=10, description="measured requests per probe")
    warmup_requests: int = Field(100, ge=0)
    tolerance: float = Field(0.05, gt=0, lt=1)
    start_rate: float | None = Field(None, gt=0, description="first probe (req/s); default: the day's mean rate")
    max_probes: int = Field(16, ge=2)


class PlanConfig(Frozen):
    """The ``plan:`` section (module docstring)."""

    candidates: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1,
                                             description="deployments to compare: dotted overrides of the experiment")
    capacity: CapacityProbe = CapacityProbe()
    oracle_interval_s: float | None = Field(None, gt=0, description="oracle's replica interval; default autoscaling.interval_s")


def _name(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "base"
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())


def day_rate_curve(cfg: ExperimentConfig) -> tuple[Any, float]:
    """The day's arrival process (files read) and its horizon (s)."""
    wl = cfg.workload
    if wl is None or wl.arrival is None or wl.trace is not None or any(c.arrival is not None for c in wl.classes):
        raise ConfigError(f"{cfg.name}: simctl plan needs workload.arrival (one rate curve, e.g. diurnal or rate-curve) "
                          "shared by every class")
    proc = wl.arrival
    if proc.closed_loop or proc.mean_rate is None and not hasattr(proc, "resolve"):
        raise ConfigError(f"{cfg.name}: workload.arrival.process {proc.process} has no rate to plan for")
    if hasattr(proc, "resolve"):
        proc = proc.resolve(Path(cfg.base_dir))
    horizon = wl.duration_s if wl.duration_s is not None else getattr(proc, "end_s", None)
    if horizon is None:
        raise ConfigError(f"{cfg.name}: simctl plan needs workload.duration_s (the span of the day to plan)")
    return proc, float(horizon)


def _cumulative(proc: Any, t: np.ndarray) -> np.ndarray:
    if hasattr(proc, "cumulative"):
        return proc.cumulative(t)
    return proc.mean_rate * t


def oracle_fleet(proc: Any, horizon_s: float, capacity_rps: float, interval_s: float, min_replicas: int,
                 gpus_per_replica: int) -> dict[str, Any]:
    """The future-knowing fleet (module docstring, (c)) and the peak rate for the fixed fleet."""
    edges = np.append(np.arange(0.0, horizon_s, interval_s), horizon_s)
    width = np.diff(edges)
    mean_rate = np.diff(_cumulative(proc, edges)) / width
    replicas = np.maximum(min_replicas, np.ceil(mean_rate / capacity_rps - 1e-9))
    grid = np.linspace(0.0, horizon_s, 20_001)
    peak_rate = float(np.max(proc.rate(grid))) if hasattr(proc, "rate") else float(proc.mean_rate)
    gpu_hours = float((replicas * width).sum()) * gpus_per_replica / 3600.0
    return {"interval_s": interval_s, "gpu_hours": gpu_hours, "peak_gpus": int(replicas.max()) * gpus_per_replica,
            "mean_gpus": gpu_hours * 3600.0 / horizon_s, "peak_rate": peak_rate,
            "mean_rate": float(_cumulative(proc, np.array([horizon_s]))[0]) / horizon_s,
            "replicas": replicas.astype(int).tolist()}


def _capacity_config(cfg: ExperimentConfig, rate: float, probe: CapacityProbe) -> ExperimentConfig:
    wl = cfg.workload.model_copy(update={"arrival": PoissonArrival(rate=rate), "duration_s": None,
                                         "num_requests": probe.num_requests + probe.warmup_requests})
    search = SearchConfig(target="rate", tolerance=probe.tolerance, start_rate=probe.start_rate or rate,
                          max_probes=probe.max_probes, warmup_requests=probe.warmup_requests,
                          num_requests=probe.num_requests)  # plan.capacity's size, not the search default
    return cfg.model_copy(update={"workload": wl, "autoscaling": None, "replicas": 1, "search": search,
                                  "max_duration_s": None})


def _fleet_run(cfg: ExperimentConfig, gpus_per_replica: int, price: float | None, horizon_s: float) -> dict[str, Any]:
    res = run(cfg)
    s = res.summary
    out: dict[str, Any] = {"slo_passed": bool((s.get("slo") or {}).get("passed")),
                           "slo_binding": (s.get("slo") or {}).get("binding"),
                           "slo_attainment": request_attainment(res.requests, cfg.slo, str(cfg.model), cfg.warmup_s),
                           "p99_ttft_ms": s.get("p99_ttft_ms"), "p99_tpot_ms": s.get("p99_tpot_ms"),
                           "completed": s.get("completed"), "unfinished": s.get("unfinished")}
    block = s.get("autoscaling")
    if block is not None:
        out.update({k: block.get(k) for k in ("gpu_hours", "peak_gpus", "mean_gpus", "usd_per_day_on_demand",
                                              "cold_start_requests", "cold_start_slo_attainment", "num_scale_ups")})
        if block.get("reserved_plus_on_demand"):
            out["usd_per_day_reserved_plus_on_demand"] = block["reserved_plus_on_demand"]["usd_per_day"]
    else:
        gpus = cfg.replicas * gpus_per_replica
        out.update(gpu_hours=gpus * horizon_s / 3600.0, peak_gpus=gpus, mean_gpus=float(gpus),
                   usd_per_day_on_demand=gpus * 24.0 * price if price is not None else None)
        reserved = cfg.autoscaling.reserved if cfg.autoscaling is not None else None
        if reserved is not None:
            out["usd_per_day_reserved_plus_on_demand"] = gpus * 24.0 * reserved.gpu_hour_usd
    return out


def evaluate_candidate(cfg: ExperimentConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """Capacity, oracle, fixed and autoscaled fleets of one candidate (module docstring)."""
    name = _name(overrides)
    out: dict[str, Any] = {"name": name, "overrides": overrides, "status": "ok", "reason": ""}
    try:
        point = with_overrides(cfg, overrides) if overrides else cfg
        plan: PlanConfig = point.plan or PlanConfig()
        auto = point.autoscaling
        proc, horizon = day_rate_curve(point)
        cap_cfg = _capacity_config(point, float(_cumulative(proc, np.array([horizon]))[0]) / horizon, plan.capacity)
        cap = capacity_search(cap_cfg)
        c = cap.max_request_rate
        gpus = point.parallel.num_gpus
        out.update(gpus_per_replica=gpus, replica_capacity_rps=c, capacity_binding=cap.binding_constraint,
                   capacity_converged=cap.converged)
        if c is None:
            out.update(status="infeasible", reason="one replica does not meet the SLO at any probed rate")
            return out
        price, _ = gpu_hour_price(build_deployment(point).hardware, point.cost)
        out["gpu_hour_usd"] = price
        oracle = oracle_fleet(proc, horizon, c, plan.oracle_interval_s or auto.interval_s, auto.min_replicas, gpus)
        oracle["usd_per_day_on_demand"] = oracle["gpu_hours"] * price * 86_400.0 / horizon if price is not None else None
        out["oracle"] = {k: v for k, v in oracle.items() if k != "replicas"}
        n_fixed = max(auto.min_replicas, math.ceil(oracle["peak_rate"] / c - 1e-9))
        fixed_cfg = point.model_copy(update={"autoscaling": None, "replicas": n_fixed, "plan": None})
        out["fixed"] = {"replicas": n_fixed, **_fleet_run(fixed_cfg, gpus, price, horizon)}
        options = dict(auto.policy_options)
        if auto.policy == "planner":
            options.setdefault("replica_capacity_rps", c)
        scaled_auto = auto.model_copy(update={"policy_options": options, "max_replicas": max(auto.max_replicas, n_fixed)})
        scaled_cfg = point.model_copy(update={"autoscaling": scaled_auto, "plan": None,
                                              "replicas": min(max(point.replicas, auto.min_replicas), scaled_auto.max_replicas)})
        out["autoscaled"] = _fleet_run(scaled_cfg, gpus, price, horizon)
        a, o = out["autoscaled"], out["oracle"]
        out["autoscaled"]["gpu_hours_gap_to_oracle"] = a["gpu_hours"] / o["gpu_hours"] - 1.0 if o["gpu_hours"] else None
        out["fixed"]["gpu_hours_gap_to_oracle"] = out["fixed"]["gpu_hours"] / o["gpu_hours"] - 1.0 if o["gpu_hours"] else None
    except SimctlError as exc:
        out.update(status="infeasible", reason=str(exc))
    except Exception as exc:  # a bug: report it with the others instead of losing the whole plan
        out.update(status="error", reason=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    return out


def _recommend(rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(candidate, fleet kind) of the cheapest simulated fleet (fixed or autoscaled, $/day on demand)
    meeting the SLO; ties go to the autoscaled fleet, then to the earlier candidate."""
    options = [(r[kind]["usd_per_day_on_demand"], kind != "autoscaled", i, r["name"], kind)
               for i, r in enumerate(rows) if r["status"] == "ok" for kind in ("autoscaled", "fixed")
               if r[kind]["slo_passed"] and r[kind].get("usd_per_day_on_demand") is not None]
    if not options:
        return None, None
    best = min(options)
    return best[3], best[4]


def plan_fleet(cfg: ExperimentConfig, *, out_dir: str | Path | None = None, jobs: int | None = None,
               progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Evaluate every candidate (in ``jobs`` processes) and recommend one; writes ``plan.json`` and
    ``plan.md`` into ``out_dir``."""
    if cfg.autoscaling is None:
        raise ConfigError(f"{cfg.name}: simctl plan needs an autoscaling: section (the policy to evaluate)")
    if cfg.slo is None:
        raise ConfigError(f"{cfg.name}: simctl plan needs an slo: section (what every fleet must meet)")
    day_rate_curve(cfg)  # fail early on a workload that cannot be planned
    plan: PlanConfig = cfg.plan or PlanConfig()
    tasks = [dict(c) for c in plan.candidates]
    jobs = max(1, min(jobs or default_jobs(), len(tasks)))
    rows: list[dict[str, Any]] = []
    if jobs == 1:
        for t in tasks:
            rows.append(evaluate_candidate(cfg, t))
            if progress is not None:
                progress(rows[-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=_pool_context()) as pool:
            futures = [pool.submit(evaluate_candidate, cfg, t) for t in tasks]
            for f in futures:
                rows.append(f.result())
                if progress is not None:
                    progress(rows[-1])
    best, kind = _recommend(rows)
    result = {"name": cfg.name, "candidates": rows, "recommended": best, "recommended_fleet": kind,
              "slo": cfg.slo.model_dump(mode="json", exclude_none=True),
              "autoscaling": cfg.autoscaling.model_dump(mode="json", exclude_none=True)}
    if out_dir is not None:
        _write_text(Path(out_dir), PLAN_FILE, json.dumps(to_jsonable(result), indent=2))
        _write_text(Path(out_dir), PLAN_MD, plan_markdown(to_jsonable(result)))
    return to_jsonable(result)


def plan_markdown(result: dict[str, Any]) -> str:
    """``plan.md``: one table row per candidate and fleet, and the recommendation."""
    def f(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    lines = [f"# Fleet plan — {result['name']}", "",
             "| candidate | c (req/s per replica) | fleet | GPU-hours | $/day on demand | peak GPUs | mean GPUs | "
             "SLO attainment | SLO | GPU-hours vs oracle |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["candidates"]:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {f(row.get('replica_capacity_rps'), '.3g')} | {row['status']}: "
                         f"{row['reason']} | | | | | | | |")
            continue
        for kind in ("oracle", "fixed", "autoscaled"):
            r = row[kind]
            att = r.get("slo_attainment")
            verdict = "lower bound" if kind == "oracle" else ("pass" if r["slo_passed"] else "FAIL")
            gap = "" if kind == "oracle" else f"{100 * r['gpu_hours_gap_to_oracle']:+.1f} %"
            label = kind + (f" ({r['replicas']} replicas)" if kind == "fixed" else "")
            lines.append(f"| {row['name']} | {f(row['replica_capacity_rps'], '.3g')} | {label} | {f(r['gpu_hours'], ',.2f')} | "
                         f"{f(r.get('usd_per_day_on_demand'), ',.0f')} | {f(r.get('peak_gpus'), 'd')} | "
                         f"{f(r.get('mean_gpus'), ',.2f')} | {'–' if att is None else f'{100 * att:.1f} %'} | {verdict} | {gap} |")
    best = result.get("recommended")
    lines += ["", f"Cheapest fleet meeting the SLO: **{best}** ({result['recommended_fleet']})." if best
              else "No simulated fleet meets the SLO.", "",
              "Oracle: ⌈λ̄/c⌉ replicas per interval with no cold start (a bound, not simulated); "
              "fixed: ⌈λ_peak/c⌉ replicas all day; autoscaled: the experiment's policy (docs/autoscaling.md)."]
    return "\n".join(lines) + "\n"


def _write_text(out: Path, name: str, text: str) -> Path:
    """Write ``out/name`` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fd, tmp = tempfile.mkstemp(dir=out, prefix=name + ".")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
