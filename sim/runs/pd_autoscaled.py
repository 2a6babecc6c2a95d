"""The run-level side of autoscaled PD pools: each pool's controller spec (its own cold start, from
that pool's weights) and the summary's per-pool ``autoscaling`` block and fleet tables
(docs/autoscaling.md#disaggregated-pools)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.engine.autoscaler import TICK_COLUMNS, UNIT_COLUMNS, AutoscalerSpec
from sim.errors import ConfigError
from sim.measure.fleet import fleet_summary
from sim.measure.pricing import gpu_hour_price
from sim.runs.autoscaled import autoscaler_spec, replica_weight_bytes

__all__ = ["autoscaled_pool_keys", "pd_autoscaler_specs", "pd_fleet_outputs", "pd_peak_pricing", "pool_instance_s"]

ROLES = ("prefill", "decode")


def pd_autoscaler_specs(cfg: Any, configs: dict[str, Any], deps: dict[str, Any]) -> dict[str, AutoscalerSpec] | None:
    """``{pool: AutoscalerSpec}`` of the pools with ``disaggregation.<pool>.autoscaling`` (None if none)."""
    specs = {}
    for role in ROLES:
        auto = getattr(cfg.disaggregation, role).autoscaling
        if auto is None:
            continue
        try:
            specs[role] = autoscaler_spec(configs[role].model_copy(update={"autoscaling": auto}), deps[role])
        except ConfigError as exc:
            raise ConfigError(f"{cfg.name}: disaggregation.{role}.autoscaling: {str(exc).split(': ', 2)[-1]}") from None
    return specs or None


def _combined_gpus(lives: list[tuple[np.ndarray, np.ndarray, int]], fixed_gpus: int, end_s: float) -> tuple[float, float]:
    """(peak, time-mean) of the deployment's billed GPUs: every pool's unit lives weighted by its GPUs
    per replica, plus the fixed pools' GPUs."""
    a = np.concatenate([x[0] for x in lives] + [np.zeros(0)])
    b = np.concatenate([x[1] for x in lives] + [np.zeros(0)])
    w = np.concatenate([np.full(x[0].size, float(x[2])) for x in lives] + [np.zeros(0)])
    edges = np.concatenate([a, b])
    delta = np.concatenate([w, -w])
    order = np.lexsort((delta, edges))  # at equal times, leave before joining
    level = fixed_gpus + np.cumsum(delta[order])
    peak = float(max(level.max(initial=0.0), fixed_gpus))
    mean = (fixed_gpus * end_s + float((w * (b - a)).sum())) / end_s if end_s > 0 else float(fixed_gpus)
    return peak, mean


def pd_fleet_outputs(pd_setup: Any, cfg: Any, out: Any) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """(summary ``autoscaling`` block, fleet tables) of a run with autoscaled PD pools: ``pools`` holds
    each autoscaled pool's block (:func:`sim.measure.fleet.fleet_summary` with that pool's GPUs per
    replica and price); the top level the whole deployment's billed GPUs (peak of the sum, mean),
    GPU-hours and $. Tables: ``<pool>_intervals``, ``<pool>_replicas``, ``<pool>_ticks``."""
    end_s = float(out.end_s)
    pools: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    lives, fixed, gpu_hours, usd = [], 0, 0.0, 0.0
    priced = True
    for role in ROLES:
        dep = pd_setup.deployments[role]
        price, _ = gpu_hour_price(dep.hardware, cfg.cost)
        fleet = out.fleet["pools"].get(role)
        if fleet is None:  # a fixed-size pool: its GPUs the whole run
            g = pd_setup.pool_gpus(role)
            fixed += g
            gpu_hours += g * end_s / 3600.0
            usd += g * end_s / 3600.0 * (price or 0.0)
            priced &= price is not None
            continue
        auto = getattr(cfg.disaggregation, role).autoscaling
        reserved = auto.reserved
        block, frame = fleet_summary(
            fleet, out.requests, end_s=end_s, gpus_per_replica=dep.num_gpus_per_replica, gpu_hour_usd=price,
            reserved_gpu_hour_usd=reserved.gpu_hour_usd if reserved else None,
            reserved_gpus=reserved.gpus if reserved else None, slo=cfg.slo, model_name=dep.model.name,
            warmup_s=cfg.warmup_s)
        block["provisioning"] = auto.provisioning.describe(replica_weight_bytes(dep))
        pools[role] = block
        units = pd.DataFrame(fleet["units"], columns=list(UNIT_COLUMNS))
        tables[f"{role}_intervals"] = frame
        tables[f"{role}_replicas"] = units
        tables[f"{role}_ticks"] = pd.DataFrame(fleet["ticks"], columns=list(TICK_COLUMNS))
        a = units["requested_s"].to_numpy(dtype=np.float64)
        b = units["released_s"].to_numpy(dtype=np.float64)
        b = np.where(np.isnan(b), end_s, np.minimum(b, end_s))
        lives.append((a, b, dep.num_gpus_per_replica))
        gpu_hours += block["gpu_hours"]
        usd += block["usd_on_demand"] or 0.0
        priced &= price is not None
    peak, mean = _combined_gpus(lives, fixed, end_s)
    top = {"pools": pools, "span_s": end_s, "peak_gpus": peak, "mean_gpus": mean,
           "peak_to_mean_gpus": peak / mean if mean else None, "gpu_hours": gpu_hours,
           "gpu_hours_per_day": gpu_hours * 86_400.0 / end_s if end_s else None,
           "usd_on_demand": usd if priced else None,
           "usd_per_day_on_demand": usd * 86_400.0 / end_s if priced and end_s else None}
    return top, tables


def pool_instance_s(fleet_pool: dict[str, Any], end_s: float) -> float:
    """Σ over an autoscaled pool's instances of the time each was up, from taking work (``ready_s``) to
    its release (a drained one works until then) or the run's end: the instance-seconds that the pool's
    step time and queue lengths are averaged over."""
    total = 0.0
    for u in fleet_pool["units"]:
        if u["replica"] < 0 or np.isnan(u["ready_s"]):
            continue  # cancelled before it was ready, or a warm-pool sleeper never woken
        released = end_s if np.isnan(u["released_s"]) else min(u["released_s"], end_s)
        total += max(released - u["ready_s"], 0.0)
    return total


def autoscaled_pool_keys(block: dict[str, Any], gpu_hour_usd: float | None) -> dict[str, Any]:
    """What ``disaggregation.pools.<pool>`` says of an autoscaled pool (docs/metrics.md#disaggregation),
    from its ``autoscaling.pools.<pool>`` block: ``replicas`` stays the count at t = 0; ``peak_replicas``
    and ``mean_replicas`` are billed instances (max, time mean), ``mean_replicas_ready`` those taking
    work; ``num_gpus`` and ``cost_per_hour_usd`` are the peak's (the fleet to provision, as the
    top-level keys of an autoscaled run), ``mean_num_gpus`` the time mean."""
    return {"autoscaled": True, "peak_replicas": block["peak_replicas_billed"],
            "mean_replicas": block["mean_replicas_billed"], "mean_replicas_ready": block["mean_replicas_ready"],
            "num_gpus": block["peak_gpus"], "mean_num_gpus": block["mean_gpus"],
            **({"cost_per_hour_usd": gpu_hour_usd * block["peak_gpus"]} if gpu_hour_usd is not None else {})}


def pd_peak_pricing(pd_setup: Any, cost: Any, fleet_block: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(GPUs, stand-in hardware record) for the top-level cost keys of a run with autoscaled pools: the
    peak of the deployment's summed billed GPUs (``autoscaling.peak_gpus``), at the pools' GPU-weighted
    mean $/GPU-hour with each pool at its own peak GPUs (exact when both pools use one GPU type)."""
    gpus = {role: (fleet_block["pools"][role]["peak_gpus"] if role in fleet_block["pools"] else pd_setup.pool_gpus(role))
            for role in ROLES}
    usd = 0.0
    for role in ROLES:
        price, _ = gpu_hour_price(pd_setup.deployments[role].hardware, cost)
        if price is None:
            usd = None
            break
        usd += price * gpus[role]
    names = {pd_setup.deployments[r].hardware.name for r in ROLES}
    peak = round(fleet_block["peak_gpus"])
    return peak, {"name": "+".join(sorted(names)), "usd_per_gpu_hour": None if usd is None else usd / sum(gpus.values())}
