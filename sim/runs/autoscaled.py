"""The run-level side of autoscaling: the engine's controller spec from the experiment and deployment,
and the fleet outputs (the summary's ``autoscaling`` block and the per-interval ``fleet.parquet``)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.config import ExperimentConfig
from sim.deploy.deployment import Deployment
from sim.engine.autoscaler import TICK_COLUMNS, UNIT_COLUMNS, AutoscalerSpec
from sim.engine.autoscaling_policies import get_autoscaling_policy
from sim.errors import ConfigError
from sim.measure.fleet import fleet_summary
from sim.measure.pricing import gpu_hour_price

__all__ = ["autoscaler_spec", "fleet_outputs", "replica_weight_bytes"]


def replica_weight_bytes(dep: Deployment) -> float:
    """Bytes of weights one replica loads (every GPU's shard)."""
    return float(dep.memory_plan.weights_bytes) * dep.num_gpus_per_replica


def autoscaler_spec(cfg: ExperimentConfig, dep: Deployment) -> AutoscalerSpec | None:
    """The engine's :class:`AutoscalerSpec` (None without an ``autoscaling:`` section); ConfigError
    naming the key when the section does not fit the experiment."""
    auto = cfg.autoscaling
    if auto is None:
        return None
    if not auto.min_replicas <= cfg.replicas <= auto.max_replicas:
        raise ConfigError(f"{cfg.name}: replicas = {cfg.replicas} (the replicas ready at t = 0) must lie within "
                          f"autoscaling.min_replicas = {auto.min_replicas} and autoscaling.max_replicas = {auto.max_replicas}")
    try:  # fail on a missing option before simulating
        get_autoscaling_policy(auto.policy, auto.policy_options).check_runnable()
    except ConfigError as exc:
        raise ConfigError(f"{cfg.name}: {exc}") from None
    prov = auto.provisioning
    if prov.cold_start_s is not None:
        dist = prov.cold_start_s

        def draw(rng: np.random.Generator) -> float:
            return float(dist.sample_real(rng, 1)[0])
    else:
        fixed = prov.fixed_parts_s(replica_weight_bytes(dep))

        def draw(rng: np.random.Generator) -> float:
            return fixed
    return AutoscalerSpec(auto, draw)


def fleet_outputs(cfg: ExperimentConfig, dep: Deployment, out: Any) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """(summary ``autoscaling`` block, fleet tables) of an autoscaled engine output: ``intervals``
    (per interval, :data:`sim.measure.fleet.INTERVAL_COLUMNS`), ``replicas`` (one row per replica
    life) and ``ticks`` (one row per controller decision)."""
    auto = cfg.autoscaling
    price, _ = gpu_hour_price(dep.hardware, cfg.cost)
    reserved = auto.reserved
    block, frame = fleet_summary(
        out.fleet, out.requests, end_s=out.end_s, gpus_per_replica=dep.num_gpus_per_replica, gpu_hour_usd=price,
        reserved_gpu_hour_usd=reserved.gpu_hour_usd if reserved else None,
        reserved_gpus=reserved.gpus if reserved else None, slo=cfg.slo, model_name=dep.model.name,
        warmup_s=cfg.warmup_s)
    block["provisioning"] = auto.provisioning.describe(replica_weight_bytes(dep))
    tables = {"intervals": frame, "replicas": pd.DataFrame(out.fleet["units"], columns=list(UNIT_COLUMNS)),
              "ticks": pd.DataFrame(out.fleet["ticks"], columns=list(TICK_COLUMNS))}
    return block, tables
