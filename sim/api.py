"""Python API: everything the CLI does, as functions notebooks can call.

    >>> import sim
    >>> cfg = sim.load_experiment("experiments/llama31-8b-h100-chat.yaml")
    >>> res = sim.run(cfg)
    >>> res.summary["p99_ttft_ms"], res.requests.head(), res.iterations.head()

Data flows one way: validated config → Deployment (model spec + hardware profile + parallelism +
precision → memory plan and cost model) and Workload → engine (SimPy) → request records and
iteration log → metrics → outputs.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.config import ExperimentConfig, load_experiment
from sim.errors import ConfigError
from sim.result import RunResult

__all__ = ["Deployment", "build_deployment", "run", "save_result", "load_result", "sweep", "capacity",
           "load_experiment", "RunResult"]

GIB = 1024 ** 3
# vLLM V1 chooses its default token budget by GPU memory (SEMANTICS.md §3, vllm/engine/arg_utils.py):
# 8192 for the API server on GPUs with ≥ 70 GiB (not A100), else 2048.
_V1_LARGE_GPU_BYTES = 70 * GIB


@dataclass(frozen=True)
class Deployment:
    """One replica's resolved hardware/model side: what the engine needs to price and size it."""

    model: Any  # sim.models.spec.ModelSpec
    hardware: Any  # sim.hardware.HardwareProfile
    memory_plan: Any  # sim.memory.MemoryPlan
    cost_model: Any  # sim.roofline.RooflineCostModel
    engine: Any  # sim.config.EngineConfig with defaults resolved
    max_model_len: int
    num_gpus_per_replica: int

    def replica_setup(self, num_kv_blocks: int | None = None) -> Any:
        """The engine's :class:`sim.engine.ReplicaSetup` for this deployment (``num_kv_blocks``
        overrides the memory plan's, as ``engine.num_kv_blocks`` does)."""
        from sim.engine import ReplicaSetup
        hw = self.hardware
        return ReplicaSetup(
            engine=self.engine, num_kv_blocks=num_kv_blocks or self.memory_plan.num_kv_blocks,
            max_model_len=self.max_model_len, cost_model=self.cost_model,
            kv_block_bytes=int(self.memory_plan.block_bytes),
            swap_bandwidth_bytes_per_s=float(hw.pcie_bandwidth_bytes_per_s),
            frontend_s=float(hw.tunable_parameters()["frontend_s"]))


def _resolve_engine(cfg: ExperimentConfig, model: Any, hardware: Any) -> tuple[Any, int]:
    """Fill vLLM-style defaults that depend on the model and the GPU."""
    engine = cfg.engine
    max_model_len = engine.max_model_len or int(model.max_position_embeddings)
    if engine.max_model_len and engine.max_model_len > model.max_position_embeddings:
        raise ConfigError(
            f"{cfg.name}: engine.max_model_len = {engine.max_model_len} exceeds the model's "
            f"max_position_embeddings = {model.max_position_embeddings}")
    updates: dict[str, Any] = {"max_model_len": max_model_len}
    if engine.max_num_batched_tokens is None:
        if engine.policy == "vllm-v0" and engine.policy_options.get("enable_chunked_prefill"):
            updates["max_num_batched_tokens"] = 2048  # V0 with chunked prefill (vllm/config.py)
        elif engine.policy in ("vllm-v0", "orca", "static") or not engine.enable_chunked_prefill:
            updates["max_num_batched_tokens"] = max(max_model_len, 2048)
        else:
            large = hardware.memory_bytes >= _V1_LARGE_GPU_BYTES
            updates["max_num_batched_tokens"] = 8192 if large else 2048
    return engine.model_copy(update=updates), max_model_len


def build_deployment(cfg: ExperimentConfig) -> Deployment:
    """Resolve model, hardware, memory plan and cost model for ``cfg`` (raises clear errors)."""
    from hwprofiles import load_profile
    from sim.memory import plan_memory
    from sim.models import load_model
    from sim.roofline import RooflineCostModel

    model = load_model(str(_maybe_path(cfg, cfg.model)))
    hardware = load_profile(str(_maybe_path(cfg, cfg.hardware)))
    engine, max_model_len = _resolve_engine(cfg, model, hardware)
    plan = plan_memory(model, hardware, cfg.parallel, cfg.precision, engine, max_model_len)
    cost_model = RooflineCostModel(model, hardware, cfg.parallel, cfg.precision)
    return Deployment(model, hardware, plan, cost_model, engine, max_model_len, cfg.parallel.num_gpus)


def _maybe_path(cfg: ExperimentConfig, name: str) -> str | Path:
    """Names that look like files are resolved relative to the experiment file."""
    if name.endswith((".json", ".yaml", ".yml")) or "/" in name and cfg.resolve_path(name).exists():
        p = cfg.resolve_path(name)
        return p if p.exists() else name
    return name


def run(cfg: ExperimentConfig | str | Path, *, out_dir: str | Path | None = None,
        progress: bool = False, report: bool = False) -> RunResult:
    """Simulate one experiment and return its :class:`RunResult` (optionally also written to ``out_dir``)."""
    from sim.engine import simulate
    from sim.metrics import summarize
    from workloads import build_workload

    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    if cfg.workload is None:
        raise ConfigError(f"{cfg.name}: the experiment has no 'workload:' section")
    dep = build_deployment(cfg)
    seq = np.random.SeedSequence(cfg.seed)
    workload_seq, engine_seq = seq.spawn(2)
    workload = build_workload(cfg.workload, workload_seq, Path(cfg.base_dir), model_name=dep.model.name)
    setup = dep.replica_setup(cfg.engine.num_kv_blocks)
    num_kv_blocks = setup.num_kv_blocks
    out = simulate(workload, setup, num_replicas=cfg.replicas, router=cfg.router, seed_seq=engine_seq,
                   max_duration_s=cfg.max_duration_s)
    meta = _meta(cfg, dep, out, workload, num_kv_blocks)
    summary = summarize(
        out.requests, out.iterations, out.timeline, warmup_s=cfg.warmup_s, slo=cfg.slo,
        cost=cfg.cost, hardware=dep.hardware, num_gpus=dep.num_gpus_per_replica * cfg.replicas,
        prefill_time_fn=dep.cost_model.prefill_time_s, model_name=dep.model.name,
        end_s=out.end_s, backlog=out.backlog, horizon_reached=out.horizon_reached)
    result = RunResult(summary=summary, requests=out.requests, iterations=out.iterations,
                       timeline=out.timeline, config=cfg.to_dict(), meta=meta)
    if out_dir is not None:
        save_result(result, out_dir, csv=cfg.save_csv)
        if report:
            from sim.report import write_report
            write_report(out_dir)
    return result


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types: dataclasses and ``to_dict()`` objects as dicts, numpy scalars and
    arrays as Python numbers and lists, non-finite floats as None."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (np.ndarray,)):
        return to_jsonable(obj.tolist())
    return obj


def _meta(cfg: ExperimentConfig, dep: Deployment, out: Any, workload: Any, num_kv_blocks: int) -> dict[str, Any]:
    """What was simulated, for reports (benchmark-reporting practice) and honesty warnings."""
    import sim as _sim
    hw = dep.hardware
    warnings = []
    if not getattr(hw, "is_calibrated", False):
        warnings.append(f"hardware profile '{hw.name}' is not calibrated against measurements: "
                        "efficiencies and overheads are assumed; treat absolute latencies as ±30% estimates")
    if out.horizon_reached:
        warnings.append("the run reached its horizon with requests unfinished (overload): see backlog")
    return to_jsonable({
        "simctl_version": _sim.__version__,
        "model": {"name": dep.model.name, "total_params": dep.model.total_params(),
                  "active_params": dep.model.active_params(),
                  "kv_cache_bytes_per_token": dep.model.kv_cache_bytes_per_token(
                      _dtype_bytes(cfg.precision.kv_dtype))},
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


def _dtype_bytes(dtype: str) -> float:
    return {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "int4": 0.5}[dtype]


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_result(result: RunResult, out_dir: str | Path, *, csv: bool = False) -> Path:
    """Write summary.json, requests.parquet (+csv), iterations.parquet, config.yaml, meta.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.requests.to_parquet(out / "requests.parquet", index=False)
    result.iterations.to_parquet(out / "iterations.parquet", index=False)
    if csv:
        result.requests.to_csv(out / "requests.csv", index=False)
        result.iterations.to_csv(out / "iterations.csv", index=False)
    tl = result.timeline
    np.savez_compressed(out / "timeline.npz", runs=tl.runs, run_offsets=tl.run_offsets,
                        replica_of=tl.replica_of,
                        **{f"iteration_end_s_{r}": v for r, v in tl.iteration_end_s.items()})
    _atomic_write_text(out / "config.yaml", yaml.safe_dump(to_jsonable(result.config), sort_keys=False))
    _atomic_write_text(out / "meta.json", json.dumps(to_jsonable(result.meta), indent=2))
    # summary.json last: its presence marks a complete result directory
    _atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result.summary), indent=2))
    return out


def load_result(out_dir: str | Path) -> RunResult:
    """Read back a result directory written by :func:`save_result`."""
    from sim.request import TokenTimeline
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        raise ConfigError(f"{out}: not a simctl result directory (no summary.json)")
    z = np.load(out / "timeline.npz")
    iters = {int(k.rsplit("_", 1)[1]): z[k] for k in z.files if k.startswith("iteration_end_s_")}
    tl = TokenTimeline(iteration_end_s=iters, replica_of=z["replica_of"], runs=z["runs"],
                       run_offsets=z["run_offsets"])
    return RunResult(
        summary=json.loads((out / "summary.json").read_text()),
        requests=pd.read_parquet(out / "requests.parquet"),
        iterations=pd.read_parquet(out / "iterations.parquet"),
        timeline=tl, config=yaml.safe_load((out / "config.yaml").read_text()),
        meta=json.loads((out / "meta.json").read_text()))


def sweep(cfg: ExperimentConfig | str | Path, out_dir: str | Path, **kwargs: Any) -> pd.DataFrame:
    """Run the experiment's ``sweep:`` grid (see :func:`sim.sweep_runner.sweep`)."""
    from sim.sweep_runner import sweep as _sweep
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    return _sweep(cfg, out_dir, **kwargs)


def capacity(cfg: ExperimentConfig | str | Path, out_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """Capacity search (see :func:`sim.capacity_search.capacity_search`)."""
    from sim.capacity_search import capacity_search
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_experiment(cfg)
    return capacity_search(cfg, out_dir=out_dir, **kwargs)
