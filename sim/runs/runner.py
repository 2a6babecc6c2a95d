"""Run one experiment: deployment → workload → engine → metrics, optionally saved to a directory.

This is the stage that composes the ones below it (sim.deploy, sim.engine, sim.measure, workloads);
planning (sim.plan), fidelity checks (sim.fidelity) and reports build on it.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sim.config import ExperimentConfig, load_experiment
from sim.deploy.deployment import Deployment, build_deployment
from sim.deploy.models.spec import dtype_bytes
from sim.engine.kv_tiers import tier_spec
from sim.engine.output_server import output_server_spec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from sim.measure.metrics import spec_decode_metrics, summarize
from sim.measure.vllm_compat import (
    closed_loop_clients,
    detailed_lists,
    peak_rates,
    setup_keys,
)
from sim.runs.autoscaled import autoscaler_spec, fleet_outputs
from sim.runs.pd_autoscaled import pd_fleet_outputs, pd_peak_pricing
from sim.runs.disagg import pd_setup, pd_summary
from sim.runs.replica_groups import groups_setup, groups_summary
from sim.runs.progress import RunProgress
from sim.runs.result import RunResult
from sim.runs.storage import save_result, to_jsonable
from sim.runs.uncertainty import drawn_profiles, sources, summary_intervals
from sim.version import __version__
from workloads import build_workload
from workloads.scenarios import mlperf_validity


def replica_setup(dep: Deployment, num_kv_blocks: int | None = None, kv_store: Any = None) -> ReplicaSetup:
    """The engine's :class:`ReplicaSetup` for a deployment (``num_kv_blocks`` overrides the memory
    plan's, as ``engine.num_kv_blocks`` does; ``kv_store`` is the experiment's shared KV store)."""
    hw = dep.hardware
    tiers = tier_spec(dep.engine.kv_offload, kv_store, enable_prefix_caching=bool(dep.engine.enable_prefix_caching),
                      block_size=dep.engine.block_size, block_bytes_per_gpu=int(dep.memory_plan.block_bytes),
                      num_kv_gpus=dep.num_gpus_per_replica // dep.dp,
                      pcie_bytes_per_s_per_gpu=float(hw.pcie_bandwidth_bytes_per_s))
    return ReplicaSetup(
        engine=dep.engine, num_kv_blocks=num_kv_blocks or dep.memory_plan.num_kv_blocks,
        max_model_len=dep.max_model_len, cost_model=dep.cost_model,
        kv_block_bytes=int(dep.memory_plan.block_bytes),
        swap_bandwidth_bytes_per_s=float(hw.pcie_bandwidth_bytes_per_s),
        frontend_s=float(hw.tunable_parameters()["frontend_s"]), dp=dep.dp, kv_tiers=tiers,
        output_server=output_server_spec(dep))


def run(cfg: ExperimentConfig | str | Path, *, out_dir: str | Path | None = None,
        progress: bool | Callable[[dict[str, Any]], None] = False,
        percentiles: Sequence[float] | None = None, save_detailed: bool = False) -> RunResult:
    """Simulate one experiment and return its :class:`RunResult` (optionally also written to ``out_dir``).

    - ``progress``: True shows a progress bar on stderr for runs longer than ~2 s (the CLI does when
      stderr is a terminal); a callable receives the engine's progress dicts instead.
    - ``percentiles``: latency percentiles in the summary (``vllm bench serve --metric-percentiles``;
      default 50, 90, 95, 99).
    - ``save_detailed``: also write ``detailed.json`` (vLLM's ``--save-detailed`` result: the summary
      plus per-request ``ttfts``, ``itls``, ``input_lens``, ``output_lens``, ``start_times``).
    """
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    if cfg.workload is None:
        raise ConfigError(f"{cfg.name}: the experiment has no 'workload:' section")
    pd = pd_setup(cfg, replica_setup) if cfg.disaggregation is not None else None  # prefill/decode pools
    rg = groups_setup(cfg, replica_setup) if cfg.replica_groups is not None else None  # heterogeneous replicas
    dep = (pd.deployments["prefill"] if pd is not None else rg.deployments[0] if rg is not None
           else build_deployment(cfg))
    seq = np.random.SeedSequence(cfg.seed)
    workload_seq, engine_seq = seq.spawn(2)
    workload = build_workload(cfg.workload, workload_seq, Path(cfg.base_dir), model_name=dep.model.name)
    setup = (pd.setups["prefill"] if pd is not None else rg.setups[0] if rg is not None
             else replica_setup(dep, cfg.engine.num_kv_blocks, cfg.kv_store))
    num_kv_blocks = setup.num_kv_blocks
    scaling = autoscaler_spec(cfg, dep) if pd is None else pd.autoscaling  # PD: {pool: spec}
    bar = RunProgress(workload.describe().get("num_requests")) if progress is True else None
    try:
        num_replicas = pd.spec.num_prefill if pd is not None else rg.num_replicas if rg is not None else cfg.replicas
        out = simulate(workload, setup, num_replicas=num_replicas,
                       router=cfg.router if pd is None else pd.spec.prefill_router, seed_seq=engine_seq,
                       max_duration_s=cfg.max_duration_s, progress=bar or (progress if callable(progress) else None),
                       autoscaling=scaling, disagg=None if pd is None else pd.spec,
                       replica_setups=None if rg is None else rg.replica_setups,
                       router_options=dict(cfg.router_options))
    finally:
        if bar is not None:
            bar.close()
    meta = _meta(cfg, dep, out, workload, num_kv_blocks)
    if pd is not None or rg is not None:  # every pool / group, not the first one's replicas
        meta["gpus_total"] = pd.num_gpus if pd is not None else rg.num_gpus
    fleet_block, fleet = ((None, None) if scaling is None else fleet_outputs(cfg, dep, out) if pd is None
                          else pd_fleet_outputs(pd, cfg, out))
    # an autoscaled run's top-level cost keys price its peak fleet; the autoscaling block what it used
    replicas = cfg.replicas if fleet_block is None or pd is not None else fleet_block["peak_replicas_billed"]
    pd_gpus, pd_hw = ((pd.num_gpus, pd.price_hardware(cfg.cost)) if pd is not None and fleet_block is None
                      else pd_peak_pricing(pd, cfg.cost, fleet_block) if pd is not None else (None, None))
    summary = summarize(
        out.requests, out.iterations, out.timeline, warmup_s=cfg.warmup_s, slo=cfg.slo,
        cost=cfg.cost, hardware=(pd_hw if pd is not None else rg.price_hardware()
                                 if rg is not None else dep.hardware),
        num_gpus=pd_gpus if pd is not None else rg.num_gpus if rg is not None else dep.num_gpus_per_replica * replicas,
        prefill_time_fn=dep.cost_model.prefill_time_s, model_name=dep.model.name,
        end_s=out.end_s, backlog=out.backlog, horizon_reached=out.horizon_reached,
        **({"percentiles": percentiles} if percentiles else {}))
    summary.update(_benchmark_keys(cfg, dep, out, summary))
    if fleet_block is not None:
        summary["autoscaling"] = fleet_block
    if pd is not None:
        summary["disaggregation"] = pd_summary(pd, out, cfg.cost, summary)
    if rg is not None:
        summary["replica_groups"] = groups_summary(rg, out)
    if "kv_tiers" in out.stats:
        summary["kv_tiers"] = out.stats["kv_tiers"]
    if "spec_decode" in out.stats:
        summary["spec_decode"] = spec_decode_metrics(out.stats["spec_decode"])
    if cfg.uncertainty is not None:
        summary["intervals"] = _intervals(cfg, dep.hardware, summary)
    result = RunResult(summary=summary, requests=out.requests, iterations=out.iterations,
                       timeline=out.timeline, config=cfg.to_dict(), meta=meta, fleet=fleet)
    if out_dir is not None:
        save_result(result, out_dir, csv=cfg.save_csv)
        if save_detailed:
            write_detailed(result, out_dir)
    return result


def _intervals(cfg: ExperimentConfig, hardware: Any, point: dict[str, Any]) -> dict[str, Any]:
    """Re-run ``cfg`` with drawn profile parameters and new seeds (``sim.runs.uncertainty``); the intervals."""
    ucfg = cfg.uncertainty
    profiles = drawn_profiles(hardware, ucfg)
    samples = []
    with tempfile.TemporaryDirectory(prefix="simctl-uncertainty-") as tmp:
        for k, prof in enumerate(profiles):
            path = Path(tmp) / f"draw{k}.yaml"
            path.write_text(prof.to_yaml())
            update: dict[str, Any] = {"hardware": str(path), "uncertainty": None}
            if ucfg.seeds:
                update["seed"] = cfg.seed + 1 + k
            samples.append(run(cfg.model_copy(update=update)).summary)
    return summary_intervals(point, samples, ucfg, sources(hardware, ucfg))


def _benchmark_keys(cfg: ExperimentConfig, dep: Deployment, out: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """Keys added after simctl's own metrics: ``vllm bench serve``'s setup and peak keys, and the
    MLPerf validity of a scenario run (docs/metrics.md)."""
    req = out.requests
    measured = np.flatnonzero(req["arrival_s"].to_numpy(dtype=np.float64) >= cfg.warmup_s) if len(req) else np.zeros(0, np.int64)
    completed = measured[req["status"].astype(str).to_numpy()[measured] == "completed"] if measured.size else measured
    keys = setup_keys(cfg.workload, dep.model.name, int(measured.size), int(summary.get("rejected", 0)))
    keys.update(peak_rates(req, out.timeline, completed))
    if cfg.workload.scenario is not None:
        keys["mlperf"] = mlperf_validity(cfg.workload.scenario, dep.model.name, req)
    return keys


def write_detailed(result: RunResult, out_dir: str | Path) -> Path:
    """``detailed.json``: summary.json's keys plus vLLM's ``--save-detailed`` per-request lists."""
    path = Path(out_dir) / "detailed.json"
    data = {**to_jsonable(result.summary), **detailed_lists(result.requests, result.timeline)}
    path.write_text(json.dumps(data))
    return path


def _meta(cfg: ExperimentConfig, dep: Deployment, out: Any, workload: Any, num_kv_blocks: int) -> dict[str, Any]:
    """What was simulated, for reports (benchmark-reporting practice) and honesty warnings."""
    hw = dep.hardware
    warnings = []
    if not getattr(hw, "is_calibrated", False):
        warnings.append(f"hardware profile '{hw.name}' is not calibrated against measurements: "
                        "efficiencies and overheads are assumed; treat absolute latencies as ±30% estimates")
    clients = closed_loop_clients(cfg.workload)
    unfinished = int((out.backlog or {}).get("unfinished", 0)) if isinstance(out.backlog, dict) else 0
    # a closed loop cut at its horizon has at most one request per client in flight: not overload
    in_flight_only = clients is not None and unfinished <= clients
    if out.horizon_reached and not in_flight_only:
        warnings.append("the run reached its horizon with requests unfinished (overload): see backlog")
    return to_jsonable({
        "simctl_version": __version__,
        "name": cfg.name,
        # vllm bench serve's `date`; here, not in summary.json, so the same seed gives the same summary
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
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
        "leap": out.stats.get("leap"),  # iteration leaping: share of iterations leapt, why not (sim.engine.leap)
        "resolved_engine_defaults": [{"key": r.key, "value": r.value, "reason": r.reason}
                                     for r in dep.resolved_defaults],
    })
