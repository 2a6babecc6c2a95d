"""Run one experiment: deployment → workload → engine → metrics, optionally saved to a directory.

This is the stage that composes the ones below it (sim.deploy, sim.engine, sim.measure, workloads);
planning (sim.plan), fidelity checks (sim.fidelity) and reports build on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.config import ExperimentConfig, load_experiment
from sim.deploy.deployment import Deployment, build_deployment
from sim.deploy.models.spec import dtype_bytes
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from sim.measure.metrics import spec_decode_metrics, summarize
from sim.runs.result import RunResult
from sim.runs.storage import save_result, to_jsonable
from sim.version import __version__
from workloads import build_workload


def replica_setup(dep: Deployment, num_kv_blocks: int | None = None) -> ReplicaSetup:
    """The engine's :class:`ReplicaSetup` for a deployment (``num_kv_blocks`` overrides the memory
    plan's, as ``engine.num_kv_blocks`` does)."""
    hw = dep.hardware
    return ReplicaSetup(
        engine=dep.engine, num_kv_blocks=num_kv_blocks or dep.memory_plan.num_kv_blocks,
        max_model_len=dep.max_model_len, cost_model=dep.cost_model,
        kv_block_bytes=int(dep.memory_plan.block_bytes),
        swap_bandwidth_bytes_per_s=float(hw.pcie_bandwidth_bytes_per_s),
        frontend_s=float(hw.tunable_parameters()["frontend_s"]), dp=dep.dp)


def run(cfg: ExperimentConfig | str | Path, *, out_dir: str | Path | None = None,
        progress: bool = False) -> RunResult:
    """Simulate one experiment and return its :class:`RunResult` (optionally also written to ``out_dir``)."""
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    if cfg.workload is None:
        raise ConfigError(f"{cfg.name}: the experiment has no 'workload:' section")
    dep = build_deployment(cfg)
    seq = np.random.SeedSequence(cfg.seed)
    workload_seq, engine_seq = seq.spawn(2)
    workload = build_workload(cfg.workload, workload_seq, Path(cfg.base_dir), model_name=dep.model.name)
    setup = replica_setup(dep, cfg.engine.num_kv_blocks)
    num_kv_blocks = setup.num_kv_blocks
    out = simulate(workload, setup, num_replicas=cfg.replicas, router=cfg.router, seed_seq=engine_seq,
                   max_duration_s=cfg.max_duration_s)
    meta = _meta(cfg, dep, out, workload, num_kv_blocks)
    summary = summarize(
        out.requests, out.iterations, out.timeline, warmup_s=cfg.warmup_s, slo=cfg.slo,
        cost=cfg.cost, hardware=dep.hardware, num_gpus=dep.num_gpus_per_replica * cfg.replicas,
        prefill_time_fn=dep.cost_model.prefill_time_s, model_name=dep.model.name,
        end_s=out.end_s, backlog=out.backlog, horizon_reached=out.horizon_reached)
    if "spec_decode" in out.stats:
        summary["spec_decode"] = spec_decode_metrics(out.stats["spec_decode"])
    result = RunResult(summary=summary, requests=out.requests, iterations=out.iterations,
                       timeline=out.timeline, config=cfg.to_dict(), meta=meta)
    if out_dir is not None:
        save_result(result, out_dir, csv=cfg.save_csv)
    return result


def _meta(cfg: ExperimentConfig, dep: Deployment, out: Any, workload: Any, num_kv_blocks: int) -> dict[str, Any]:
    """What was simulated, for reports (benchmark-reporting practice) and honesty warnings."""
    hw = dep.hardware
    warnings = []
    if not getattr(hw, "is_calibrated", False):
        warnings.append(f"hardware profile '{hw.name}' is not calibrated against measurements: "
                        "efficiencies and overheads are assumed; treat absolute latencies as ±30% estimates")
    if out.horizon_reached:
        warnings.append("the run reached its horizon with requests unfinished (overload): see backlog")
    return to_jsonable({
        "simctl_version": __version__,
        "model": {"name": dep.model.name, "total_params": dep.model.total_params(),
                  "active_params": dep.model.active_params(),
                  "kv_cache_bytes_per_token": dep.model.kv_cache_bytes_per_token(
                      dtype_bytes(cfg.precision.kv_dtype))},
        "hardware": hw.describe() if hasattr(hw, "describe") else {"name": hw.name},
        "parallel": cfg.parallel.model_dump(), "replicas": cfg.replicas, "router": cfg.router,
        "gpus_total": dep.num_gpus_per_replica * cfg.replicas,
        "precision": cfg.precision.model_dump(), "engine": dep.engine.model_dump(),
        "max_model_len": dep.max_model_len,
        "memory_plan": dep.memory_plan,
        "num_kv_blocks_used": num_kv_blocks,
        "workload": workload.describe(),
        "backlog": out.backlog, "horizon_reached": out.horizon_reached, "end_s": out.end_s,
        "seed": cfg.seed, "warnings": warnings,
    })
