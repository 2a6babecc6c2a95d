"""Experiment configuration: frozen, validated pydantic models loaded from YAML.

Every validation error names the YAML key path and the file, e.g.::

    experiments/x.yaml: engine.max_num_seqs: must be ≥ 1, got 0
    experiments/x.yaml: engine.max_num_seq: unknown key (did you mean max_num_seqs?)

Sections owned by other modules (``workload``, ``slo``, ``search``, ``sweep``, ``cost``) are
validated by the pydantic model those modules register in :data:`SECTION_MODELS`, with the same
error formatting.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from sim.config_base import Frozen
from sim.errors import ConfigError, suggest
from sim.kv_tiers_config import KVOffloadConfig, KVStoreConfig
from sim.limits import MAX_REPLICAS
from sim.speculative_config import SpeculativeConfig
from sim.strict_yaml import check_numbers, load_yaml_file, load_yaml_text

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4"]


class MoEParallelConfig(Frozen):
    """How a MoE model's experts run across the GPUs of an expert-parallel group (``parallel.moe``)."""

    all_to_all: Literal["auto", "low_latency", "normal"] = Field(
        "auto", description="DeepEP kernel family for dispatch/combine: low_latency (decode: one RDMA write per "
        "(token, expert)), normal (prefill: one copy per destination node, forwarded over NVLink); auto = "
        "low_latency for decode-only steps, normal otherwise (SGLang's deepep_mode auto)")
    dispatch_dtype: Literal["bf16", "fp8", "nvfp4"] = Field(
        "fp8", description="dispatch payload format (DeepEP dispatches fp8 with per-128 scales; NVFP4 dispatch on "
        "Blackwell); combine is always bf16")
    two_batch_overlap: bool = Field(
        False, description="split each step into two micro-batches so one's all-to-all overlaps the other's compute "
        "(SGLang --enable-two-batch-overlap, vLLM dual-batch overlap)")
    eplb: bool = Field(False, description="expert-parallel load balancer: expert placement follows the observed load, so "
                       "only the per-step sampling noise of routing is left (DeepSeek EPLB; vLLM --enable-eplb)")
    redundant_experts: int = Field(0, ge=0, description="extra physical expert replicas spread over the EP group "
                                   "(vLLM num_redundant_experts, SGLang ep_num_redundant_experts)")
    expert_load_cv: float = Field(0.0, ge=0.0, le=10.0, description="coefficient of variation of the experts' "
                                  "routing popularity (0 = uniform routing); ignored with eplb")
    imbalance: Literal["statistical", "none"] = Field(
        "statistical", description="statistical: the busiest GPU's routed tokens follow the expected maximum over the EP "
        "ranks of the per-GPU load (sampling noise + popularity); none: every GPU gets exactly its share")
    shared_expert_overlap: bool = Field(
        False, description="run the shared expert while the combine is on the wire (vLLM SharedFusedMoE with an async "
        "DeepEP prepare/finalize); step cost max-based instead of a sum (docs/expert-parallel.md)")
    dispatch_tokens_per_rank: int = Field(
        256, ge=1, le=65536, description="most tokens one rank dispatches per low-latency call; sizes the DeepEP "
        "low-latency RDMA buffer (vLLM VLLM_MOE_DP_CHUNK_SIZE = 256; SGLang's default is 128)")
    deepep_buffer_mib: int = Field(
        1024, ge=0, le=65536, description="DeepEP NVLink buffer (and normal-kernel RDMA buffer across nodes) per GPU, MiB "
        "(vLLM VLLM_DEEPEP_BUFFER_SIZE_MB)")


class ParallelConfig(Frozen):
    """Parallelism of one replica (one engine), with vLLM's meanings.

    ``dp`` data-parallel attention ranks each run ``tp``-way tensor parallel attention with their own
    batch and KV cache; with ``ep > 1`` the routed experts are spread over ``ep = dp × tp`` GPUs and
    tokens reach them through all-to-all dispatch/combine. GPUs per replica = ``dp × tp × pp``.
    """

    tp: int = Field(1, ge=1, description="tensor-parallel degree (GPUs per pipeline stage of one DP rank)")
    pp: int = Field(1, ge=1, description="pipeline-parallel stages")
    dp: int = Field(1, ge=1, description="data-parallel attention ranks in one engine (each its own batch and KV cache; "
                    "steps are synchronous across them); MoE models only, with ep = dp × tp")
    ep: int = Field(1, ge=1, description="expert-parallel degree for MoE (1 = experts sharded by TP, as vLLM without "
                    "--enable-expert-parallel; with dp > 1 it must be dp × tp)")
    moe: MoEParallelConfig = MoEParallelConfig()

    @property
    def num_gpus(self) -> int:
        """GPUs one replica occupies."""
        return self.tp * self.pp * self.dp


class PrecisionConfig(Frozen):
    """Numeric formats: weights, activations (GEMM compute dtype) and KV cache."""

    weights: Dtype = "bf16"
    activations: Dtype | Literal["fp4"] | None = Field(None, description="GEMM input dtype; default fp8 for fp8 weights (W8A8), fp4 for nvfp4 weights (W4A4), else bf16")
    kv_cache: Literal["auto", "fp32", "bf16", "fp16", "fp8", "int8"] = Field("auto", description="auto = 16-bit (bf16) like vLLM's default")
    experts: Dtype | None = Field(None, description="routed experts' weight format when it differs from `weights` "
                                  "(nvfp4 experts with fp8 attention, as NVIDIA's DeepSeek-R1 FP4 checkpoints; mxfp4 "
                                  "experts for gpt-oss)")
    attention: Literal["bf16", "fp8"] = Field("bf16", description="attention math (QK^T and PV): fp8 runs at the GPU's fp8 "
                                              "tensor-core rate (FlashMLA/TRT-LLM fp8 attention; needs an fp8 KV cache)")

    @property
    def compute_dtype(self) -> str:
        """Dtype whose peak FLOPS applies to GEMMs."""
        if self.activations is not None:
            return {"nvfp4": "fp4", "mxfp4": "fp4"}.get(self.activations, self.activations)
        # NVFP4 checkpoints are W4A4 (activations quantised to NVFP4 on the fly); MXFP4 experts (gpt-oss)
        # run as weight-only quantisation by default. A GPU without the FP4 rate falls back to bf16.
        return {"fp8": "fp8", "fp32": "fp32", "nvfp4": "fp4"}.get(self.weights, "bf16")

    @property
    def expert_compute_dtype(self) -> str:
        """Dtype whose peak FLOPS applies to the routed experts' GEMMs."""
        if self.experts is None or self.activations is not None:
            return self.compute_dtype
        return {"fp8": "fp8", "fp32": "fp32", "nvfp4": "fp4"}.get(self.experts, "bf16")

    @property
    def kv_dtype(self) -> str:
        """Resolved KV-cache dtype."""
        return "bf16" if self.kv_cache == "auto" else self.kv_cache


class EngineConfig(Frozen):
    """Serving-engine settings, named as in vLLM."""

    policy: str = "vllm"
    max_num_seqs: int | None = Field(None, ge=1, description="default: the engine's (vLLM V1: 1024 on GPUs with ≥ 70 GiB that are not A100, else 256; sim/deploy/engine_defaults.py)")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="token budget per step; default: the engine's (vLLM V1: 8192 on GPUs with ≥ 70 GiB that are not A100, else 2048)")
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool | None = Field(None, description="default: the engine's (on for vllm and sglang, off for the others)")
    block_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_model_len: int | None = Field(None, ge=1, description="default: the model's max_position_embeddings")
    long_prefill_token_threshold: int = Field(0, ge=0)
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    swap_space_gib: float = Field(4.0, ge=0.0)
    num_kv_blocks: int | None = Field(None, ge=1, description="override the memory plan's KV block count (e.g. vLLM's logged '# GPU blocks')")
    async_scheduling: bool | None = Field(None, description="vLLM V1 async scheduling: step k+1 is planned while step k runs, so a request that arrives during step k first runs in step k+2 (and, for vllm, one finishing in step k keeps its slot and KV blocks through the plan of step k+1). Default: the policy's (on for vllm — vLLM's default since PR #27614, late 2025 — off for the others)")
    output_server: bool = Field(False, description="model the API server's output path (vLLM's API-server process, SGLang's detokenizer) as one FIFO server per replica: the client sees a step's tokens when it has processed them (hardware output_per_chunk_s / output_per_token_s; docs/output-server.md)")
    policy_options: dict[str, Any] = Field(default_factory=dict, description="policy-specific parameters, validated by the policy")
    speculative: SpeculativeConfig | None = Field(None, description="speculative decoding / multi-token prediction (docs/speculative.md); None = off")
    kv_offload: KVOffloadConfig | None = Field(None, description="CPU/disk KV-cache tiers per replica (docs/kv-tiers.md); None = off")

# Keys the loader sets; a file (or --set) may not.
INTERNAL_KEYS = ("base_dir",)

# Sections validated by models that live with the code that uses them: key -> "module:Class".
SECTION_MODELS: dict[str, str] = {
    "workload": "workloads.config:WorkloadConfig",
    "slo": "sim.measure.slo:SLOConfig",
    "search": "sim.plan.capacity:SearchConfig",
    "sweep": "sim.plan.sweep:SweepConfig",
    "cost": "sim.measure.pricing:CostConfig",
    "autoscaling": "sim.engine.autoscaling_config:AutoscalingConfig",
    "plan": "sim.plan.fleet_plan:PlanConfig",
    "uncertainty": "sim.runs.uncertainty:UncertaintyConfig",
    "disaggregation": "sim.engine.disagg_config:DisaggregationConfig",
    "replica_groups": "sim.runs.replica_groups:ReplicaGroupsConfig",
}
# Sections written into the resolved config only when present (older results stay byte-identical).
OMIT_WHEN_ABSENT = frozenset({"autoscaling", "plan", "disaggregation", "replica_groups"})
# Sections whose pools/groups override the top-level keys they name: dumped as written, so that the
# resolved config re-parses to the same overrides (a dumped default would override the top level).
DUMP_AS_WRITTEN = frozenset({"disaggregation", "replica_groups"})


class ExperimentConfig(Frozen):
    """A whole experiment file. ``workload``/``slo``/``search``/``sweep``/``cost`` hold the validated
    section models registered in :data:`SECTION_MODELS` (or None when absent)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str = Field("experiment", description="run name; the default output directory is results/<name sanitised>/")
    seed: int = Field(0, ge=0, le=2 ** 63 - 1, description="root of every random stream (numpy SeedSequence: non-negative)")
    model: str
    hardware: str
    parallel: ParallelConfig = ParallelConfig()
    precision: PrecisionConfig = PrecisionConfig()
    engine: EngineConfig = EngineConfig()
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    router: str = "round-robin"
    router_options: dict[str, Any] = Field(default_factory=dict, description="router-specific parameters, validated by the router (docs/kv-tiers.md)")
    kv_store: KVStoreConfig | None = Field(None, description="remote KV store shared by all replicas (docs/kv-tiers.md); None = none")
    max_duration_s: float | None = Field(None, gt=0, description="simulation horizon; unfinished requests are reported as backlog")
    warmup_s: float = Field(0.0, ge=0, description="requests arriving before this time are excluded from latency statistics")
    save_csv: bool = False
    workload: Any = None
    slo: Any = None
    search: Any = None
    sweep: Any = None
    cost: Any = None
    autoscaling: Any = None
    plan: Any = None
    uncertainty: Any = None
    disaggregation: Any = None  # sim.engine.disagg_config.DisaggregationConfig: prefill/decode pools
    replica_groups: Any = None  # sim.runs.replica_groups.ReplicaGroupsConfig: heterogeneous replicas
    base_dir: str = Field(".", description="directory relative paths in the file are resolved against (set by the loader)")

    def resolve_path(self, p: str | Path) -> Path:
        """Resolve a path written in the experiment file relative to that file's directory."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (the resolved config saved next to results). It parses back to an equal
        config: ``parse_experiment(cfg.to_dict(), base_dir=cfg.base_dir)`` simulates identically.
        ``base_dir`` is left out: it is where the file was, not a setting."""
        out = self.model_dump(mode="json", exclude=set(SECTION_MODELS) | {"base_dir"})
        for key in SECTION_MODELS:
            val = getattr(self, key)
            if val is None and key in OMIT_WHEN_ABSENT:
                continue
            out[key] = (val.model_dump(mode="json", exclude_unset=key in DUMP_AS_WRITTEN)
                        if isinstance(val, BaseModel) else val)
        return out


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def _model_fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the sub-model at ``loc`` (for 'did you mean' on unknown keys)."""
    cur: Any = model
    for part in loc:
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            break
        ann = fields[part].annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            break
        cur = sub
    return list(getattr(cur, "model_fields", {}))


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str, prefix: tuple = ()) -> ConfigError:
    """Turn a pydantic error into one :class:`ConfigError` naming the file and each key path."""
    lines = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        where = _format_loc(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            choices = _model_fields_at(model, tuple(err["loc"])[:-1])
            lines.append(f"{source}: {where}: unknown key{suggest(str(loc[-1]), choices)}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {where}: required key is missing")
        else:
            got = err.get("input")
            got_s = f", got {got!r}" if not isinstance(got, dict) else ""
            lines.append(f"{source}: {where}: {err['msg']}{got_s}")
    return ConfigError("\n".join(lines))


def _section_model(key: str) -> type[BaseModel] | None:
    mod_name, cls_name = SECTION_MODELS[key].split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError:
        return None
    return getattr(mod, cls_name, None)


def parse_experiment(data: dict[str, Any], source: str = "<experiment>", base_dir: str | Path = ".") -> ExperimentConfig:
    """Validate a parsed experiment mapping. ``source`` names the file in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the experiment must be a YAML mapping, got {type(data).__name__}")
    for key in INTERNAL_KEYS:
        if key in data:
            raise ConfigError(f"{source}: {key}: internal key, set from where the file is; remove it")
    check_numbers(data, source)
    data = copy.deepcopy(data)
    data["base_dir"] = str(base_dir)
    sections: dict[str, Any] = {}
    for key in SECTION_MODELS:
        raw = data.pop(key, None)
        if raw is None:
            sections[key] = None
            continue
        model = _section_model(key)
        if model is None:
            sections[key] = raw
            continue
        try:
            sections[key] = model.model_validate(raw)
        except ValidationError as exc:
            raise format_validation_error(exc, model, source, (key,)) from None
    try:
        return ExperimentConfig.model_validate({**data, **sections})
    except ValidationError as exc:
        raise format_validation_error(exc, ExperimentConfig, source) from None


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment YAML file (read strictly: :mod:`sim.strict_yaml`)."""
    path = Path(path)
    data = load_yaml_file(path, "experiment file")
    return parse_experiment(data, str(path), path.resolve().parent)


def parse_set_value(text: str, key: str = "") -> Any:
    """A ``--set KEY=VALUE`` value: YAML (``4``, ``true``, ``[1, 2]``, ``{dist: fixed, value: 8}``)."""
    return load_yaml_text(text, f"--set {key}={text}")


def _set_dotted(data: dict[str, Any], dotted: str) -> tuple[Any, str | int]:
    """The container and key/index ``dotted`` names inside ``data`` (creating missing mappings)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"--set {dotted}: empty key component")
    cur: Any = data
    for i, part in enumerate(parts):
        here = ".".join(parts[:i]) or "(top level)"
        if isinstance(cur, list):
            if not part.lstrip("-").isdigit() or not -len(cur) <= int(part) < len(cur):
                raise ConfigError(f"--set {dotted}: {here} is a list of {len(cur)} item(s); "
                                  f"'{part}' is not an index in it (0 to {len(cur) - 1})")
            key: str | int = int(part)
        elif isinstance(cur, dict):
            key = part
        else:
            raise ConfigError(f"--set {dotted}: {here} is the value {cur!r}, not a mapping; "
                              f"cannot set '{'.'.join(parts[i:])}' inside it")
        if i == len(parts) - 1:
            return cur, key
        if isinstance(cur, dict) and cur.get(key) is None:
            cur[key] = {}
        cur = cur[key]
    raise AssertionError("unreachable")


def with_overrides(cfg: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Return a new validated config with dotted-key overrides applied (``{"parallel.tp": 4}``;
    list items by index: ``{"workload.classes.0.weight": 2}``)."""
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        container, key = _set_dotted(data, dotted)
        container[key] = value
    return parse_experiment(data, f"<{cfg.name} with {overrides}>", cfg.base_dir)


def scoped_experiment(cfg: ExperimentConfig, section: str, scope: Any, replicas: int, source: str) -> ExperimentConfig:
    """The experiment as one member of a pool or replica group sees it: ``section`` removed, the
    scope's ``hardware`` (if set) and its written ``parallel``/``engine`` keys merged over the
    top-level ones, and ``replicas`` set to the scope's count. ``scope`` (a disaggregation pool or a
    replica group) has ``hardware``, ``parallel`` and ``engine``; only keys written in the file override."""
    data = cfg.to_dict()
    data.pop(section, None)
    if scope.hardware is not None:
        data["hardware"] = scope.hardware
    for key in ("parallel", "engine"):
        sub = getattr(scope, key)
        if sub is not None:
            data[key] = {**data[key], **sub.model_dump(mode="json", include=set(sub.model_fields_set))}
    data["replicas"] = replicas
    return parse_experiment(data, source, cfg.base_dir)
