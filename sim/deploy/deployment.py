"""A deployment: one replica's model, hardware, memory plan and cost model, resolved from the config.

This is the deployment/cost-model stage: it reads the experiment's model, hardware, parallelism,
precision and engine sections, fills the vLLM-style defaults that depend on the model and the GPU,
and yields everything the engine needs to size and price a replica.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwprofiles import load_profile
from sim.config import ExperimentConfig
from sim.deploy.cuda_graphs import GraphAwareCostModel, sglang_graph_plan
from sim.deploy.engine_defaults import (LEGACY_MAX_NUM_SEQS, ResolvedSetting, resolve_engine_defaults,
                                        sglang_max_running_requests)
from sim.deploy.memory_plan import plan_memory
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel
from sim.deploy.speculative_cost import speculative_deployment
from sim.deploy.vision_cost import check_vision_inputs
from sim.errors import ConfigError

@dataclass(frozen=True)
class Deployment:
    """One replica's resolved hardware/model side: what the engine needs to price and size it."""

    model: Any  # sim.deploy.models.spec.ModelSpec
    hardware: Any  # sim.deploy.hardware.HardwareProfile
    memory_plan: Any  # sim.deploy.memory_plan.MemoryPlan
    cost_model: Any  # sim.deploy.roofline.RooflineCostModel
    engine: Any  # sim.config.EngineConfig with defaults resolved
    max_model_len: int
    num_gpus_per_replica: int
    dp: int = 1  # data-parallel attention ranks per replica (each an engine core, stepping in lockstep)
    #: engine settings the experiment left out, with the value the engine picks and why
    resolved_defaults: tuple[ResolvedSetting, ...] = ()


def _resolve_engine(cfg: ExperimentConfig, model: Any, hardware: Any) -> tuple[Any, int, list[ResolvedSetting]]:
    """Fill the engine defaults that depend on the model and the GPU (``sim.deploy.engine_defaults``)."""
    engine = cfg.engine
    max_model_len = engine.max_model_len or int(model.max_position_embeddings)
    if engine.max_model_len and engine.max_model_len > model.max_position_embeddings:
        raise ConfigError(
            f"{cfg.name}: engine.max_model_len = {engine.max_model_len} exceeds the model's "
            f"max_position_embeddings = {model.max_position_embeddings}")
    updates, notes = resolve_engine_defaults(engine, hardware, max_model_len)
    if engine.max_model_len is None:
        notes.insert(0, ResolvedSetting("max_model_len", max_model_len, "the model's max_position_embeddings"))
    updates["max_model_len"] = max_model_len
    return engine.model_copy(update=updates), max_model_len, notes


def build_deployment(cfg: ExperimentConfig) -> Deployment:
    """Resolve model, hardware, memory plan and cost model for ``cfg`` (raises clear errors)."""

    model = load_model(str(_maybe_path(cfg, cfg.model)))
    check_vision_inputs(model, cfg.workload, cfg.name)
    hardware = load_profile(str(_maybe_path(cfg, cfg.hardware)))
    engine, max_model_len, notes = _resolve_engine(cfg, model, hardware)
    if engine.max_num_seqs is None:  # SGLang: max_running_requests follows the KV pool it sizes
        plan = plan_memory(model, hardware, cfg.parallel, cfg.precision,
                           engine.model_copy(update={"max_num_seqs": LEGACY_MAX_NUM_SEQS}), max_model_len)
        seqs = sglang_max_running_requests(plan.num_kv_blocks * engine.block_size, max_model_len)
        engine = engine.model_copy(update={"max_num_seqs": seqs})
        notes.append(ResolvedSetting("max_num_seqs", seqs, "SGLang max_running_requests default: KV pool tokens // 2, "
                                                         "capped by the request pool"))
    plan = plan_memory(model, hardware, cfg.parallel, cfg.precision, engine, max_model_len)
    cost_model = RooflineCostModel(model, hardware, cfg.parallel, cfg.precision)
    if engine.policy == "sglang":  # CUDA-graph padding and eager launches (sim/deploy/cuda_graphs.py), opt-in
        graphs = sglang_graph_plan(engine.policy_options, hardware, engine.max_num_seqs,
                                   -(-model.num_layers // cfg.parallel.pp), cfg.name)
        if graphs is not None:
            cost_model = GraphAwareCostModel(cost_model, graphs)
    if engine.speculative is not None:
        engine = _resolve_speculative(cfg, engine)
        spec = engine.speculative
        draft = load_model(str(_maybe_path(cfg, spec.draft_model))) if spec.method == "draft_model" else None
        cost_model, plan = speculative_deployment(spec, model, draft, hardware, cfg.parallel, cfg.precision, plan,
                                                  cost_model)
    return Deployment(model, hardware, plan, cost_model, engine, max_model_len, cfg.parallel.num_gpus, cfg.parallel.dp,
                      tuple(notes))


def _resolve_speculative(cfg: ExperimentConfig, engine: Any) -> Any:
    """``engine`` with the speculative acceptance trace path resolved against the experiment file."""
    spec = engine.speculative
    trace = spec.acceptance.trace
    if trace is None:
        return engine
    path = cfg.resolve_path(trace)
    if not path.is_file():
        raise ConfigError(f"{cfg.name}: engine.speculative.acceptance.trace: no such file: {path}")
    acc = spec.acceptance.model_copy(update={"trace": str(path)})
    return engine.model_copy(update={"speculative": spec.model_copy(update={"acceptance": acc})})


def _maybe_path(cfg: ExperimentConfig, name: str) -> str | Path:
    """Names that look like files are resolved relative to the experiment file."""
    if name.endswith((".json", ".yaml", ".yml")) or "/" in name and cfg.resolve_path(name).exists():
        p = cfg.resolve_path(name)
        return p if p.exists() else name
    return name
