"""Hardware profiles: one GPU's datasheet numbers, achievable efficiencies and fixed overheads.

A profile is a YAML file in ``hwprofiles/`` (loaded by :func:`hwprofiles.load_profile`) validated
into a frozen :class:`HardwareProfile`. It has three kinds of numbers:

* **datasheet facts** — usable memory, HBM bandwidth, dense peak TFLOPS per dtype, link bandwidths,
  price. Each has its source in a YAML comment next to it.
* **tunable parameters** (:class:`Tunable`) — achievable efficiencies and fixed overheads the roofline
  cost model (``sim/deploy/roofline.py``) and memory plan (``sim/deploy/memory_plan.py``) use. Each records whether it was
  ``calibrated`` (and on what) or ``assumed``. They are exposed as one flat dict
  (:meth:`HardwareProfile.tunable_parameters`) so a calibrator can fit them and write a new profile
  with :meth:`HardwareProfile.with_parameters` + :meth:`HardwareProfile.to_yaml`.

Units are SI and in the names (``*_bytes``, ``*_bytes_per_s``, ``*_s``), except ``peak_tflops``
(dense TFLOPS, 10¹² FLOP/s, exactly as datasheets print them).
"""
from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from sim.config import Frozen, format_validation_error
from sim.errors import ConfigError, suggest
from sim.strict_yaml import check_numbers, load_yaml_text

GIB = 1024 ** 3

#: dtypes a profile may list peak TFLOPS for
KNOWN_DTYPES = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")

Status = Literal["calibrated", "assumed"]


class Tunable(Frozen):
    """A fitted or assumed parameter with its provenance.

    In YAML either a mapping ``{value: 0.75, status: calibrated, basis: "..."}`` or a bare number
    (read as ``status: assumed`` with no basis).
    """

    value: float = Field(ge=0.0)
    status: Status = "assumed"
    basis: str = Field("", description="what it was calibrated on, or why the assumed value is reasonable")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"value": data}
        return data


class MemorySpec(Frozen):
    """Device memory."""

    capacity_bytes: int = Field(gt=0, description="total device memory as CUDA/ROCm reports it (cudaMemGetInfo total)")
    bandwidth_bytes_per_s: float = Field(gt=0, description="peak memory bandwidth from the datasheet")
    kind: str = Field("", description="HBM3, GDDR6, ...")


class InterconnectSpec(Frozen):
    """Links between GPUs and to the host. Bandwidths are per GPU, per direction."""

    intra_node: str = Field(description="link name, e.g. 'NVLink 4 via NVSwitch' or 'PCIe Gen4'")
    intra_node_bandwidth_bytes_per_s: float = Field(gt=0, description="switch: per GPU; mesh: per peer link")
    topology: Literal["switch", "mesh"] = Field(
        "switch", description="switch: every GPU gets the full bandwidth to any group (NVSwitch, PCIe switch); "
                              "mesh: point-to-point links (AMD xGMI), a group of n GPUs uses n−1 links per GPU")
    gpus_per_node: int = Field(8, ge=1, description="GPUs reachable over the intra-node link (TP beyond this crosses nodes)")
    inter_node_bandwidth_bytes_per_s: float = Field(gt=0, description="network bandwidth per GPU (e.g. one 400 Gb/s NIC per GPU)")
    pcie_bandwidth_bytes_per_s: float = Field(gt=0, description="host<->device bandwidth (KV swap)")
    allreduce_measurements: str | None = Field(
        None, description="measured NCCL all-reduce curve, sim/data/network/<name>.csv (sim/deploy/collectives.py); "
                          "default: the ring formula")


class EfficiencySpec(Frozen):
    """Achievable fractions of the datasheet peaks (all in (0, 1] except ``gemm_half_tokens``)."""

    gemm_compute_efficiency: Tunable  # large-GEMM fraction of peak FLOPS
    gemm_half_tokens: Tunable  # GEMM rows (tokens) at which compute efficiency is half its maximum
    memory_efficiency: Tunable  # fraction of peak HBM bandwidth a weight-streaming GEMM reaches
    elementwise_efficiency: Tunable  # fraction of peak bandwidth of norms / rotary / activation kernels
    attention_compute_efficiency: Tunable  # fraction of peak FLOPS of attention (prefill)
    attention_memory_efficiency: Tunable  # fraction of peak bandwidth reading the paged KV cache (decode)
    communication_efficiency: Tunable  # fraction of link bandwidth a ring collective reaches
    # sim/deploy/kernel_shapes.py: p of t = (t_c^p + t_m^p)^(1/p) for a GEMM (0 = perfect overlap, max)
    gemm_overlap_exponent: Tunable = Tunable(
        value=0.0, status="assumed",
        basis="0: compute and weight streaming overlap perfectly (time = max of the two)")
    # FlashAttention prefill efficiency ramp e·L/(L + L_half), L = twice the mean keys per query (0 = none)
    attention_half_length: Tunable = Tunable(
        value=0.0, status="assumed", basis="0: prefill attention at attention_compute_efficiency whatever its length")

    @model_validator(mode="after")
    def _fractions(self) -> EfficiencySpec:
        for name in type(self).model_fields:
            if name in ("gemm_half_tokens", "gemm_overlap_exponent", "attention_half_length"):
                continue
            v = getattr(self, name).value
            if not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {v}")
        return self


class OverheadSpec(Frozen):
    """Fixed times in seconds."""

    gemm_kernel_s: Tunable  # per GEMM kernel: launch + pipeline fill/drain on the GPU
    elementwise_kernel_s: Tunable  # per small (norm, rotary, activation, sampling) kernel
    attention_kernel_s: Tunable  # per attention kernel call (one per layer)
    launch_per_layer_s: Tunable  # GPU idle per layer between CUDA-graph pieces / eager launches
    per_iteration_s: Tunable  # scheduler + input preparation + sampling bookkeeping + output processing
    per_request_s: Tunable  # per scheduled request per iteration (block tables, detokenize, stream)
    allreduce_latency_s: Tunable  # fixed latency of one all-reduce (algorithm + synchronisation)
    p2p_latency_s: Tunable  # fixed latency of one pipeline send/recv
    # per request, before the engine sees it: the OpenAI-compatible API server's HTTP handling,
    # tokenization and hand-off to the engine core (host CPU work, the same serving stack on every GPU)
    frontend_s: Tunable = Tunable(
        value=3.0e-3, status="assumed",
        basis="vLLM API-server latency per request (HTTP + tokenization + IPC to the engine core); "
              "the H100 profile's value is fitted on the bundled vLLM v0.15.1 runs (docs/validation.md)")
    # the API server's output path (engine.output_server, sim/engine/output_server.py, docs/output-server.md):
    # host CPU work per step output chunk (one per request that emitted) and per extra token in a chunk
    output_per_chunk_s: Tunable = Tunable(
        value=1.58e-5, status="assumed",
        basis="median slope of Vidur's process_model_outputs vs batch size over its 6 A100 model/TP setups "
              "(../shared/data/gpu_profiles/a100__cpu_overheads.csv: 9.2-16.6 us per request per step; vLLM "
              "output processing incl. incremental detokenization of the step's token)")
    output_per_token_s: Tunable = Tunable(
        value=2.0e-5, status="assumed",
        basis="vLLM detokenize_incrementally per call (= per token): 19-21 us logged in vllm-project/vllm#5206 "
              "(v0.3.0); charged for each token of a chunk beyond its first (speculative bursts)")


class MemoryReserveSpec(Frozen):
    """Memory the serving engine keeps outside weights and KV cache (see ``sim/deploy/memory_plan.py``)."""

    non_torch_bytes: Tunable  # CUDA context pieces, cuBLAS handles... allocated outside PyTorch
    tp_communication_bytes: Tunable  # extra non-torch memory when TP/PP > 1 (NCCL + custom all-reduce buffers)
    activation_workspace_bytes: Tunable  # torch-allocated workspaces counted in the profiled activation peak


class ParameterCovariance(Frozen):
    """The uncertainty of a set of fitted parameters: standard errors and their correlation matrix (what
    ``simctl calibrate`` reports; ``sim/runs/uncertainty.py`` propagates it into intervals)."""

    parameters: tuple[str, ...]
    stderr: tuple[float, ...]
    correlation: tuple[tuple[float, ...], ...]
    basis: str = ""

    @model_validator(mode="after")
    def _shapes(self) -> ParameterCovariance:
        n = len(self.parameters)
        if len(self.stderr) != n or len(self.correlation) != n or any(len(r) != n for r in self.correlation):
            raise ValueError(f"stderr and correlation must match the {n} parameters")
        if any(s < 0 for s in self.stderr):
            raise ValueError("stderr must be ≥ 0")
        unknown = [p for p in self.parameters if p not in PARAMETER_SECTIONS]
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETER_SECTIONS)}")
        return self


#: flat tunable name -> section it lives in
_SECTIONS = {"efficiency": EfficiencySpec, "overheads": OverheadSpec, "memory_reserve": MemoryReserveSpec}
PARAMETER_SECTIONS: dict[str, str] = {name: sec for sec, cls in _SECTIONS.items() for name in cls.model_fields}
#: parameters that change iteration times (the calibrator fits these against latency measurements)
TIMING_PARAMETERS: tuple[str, ...] = tuple(n for n, s in PARAMETER_SECTIONS.items() if s != "memory_reserve")
#: parameters that change the memory plan (fit against logged KV block counts)
MEMORY_PARAMETERS: tuple[str, ...] = tuple(n for n, s in PARAMETER_SECTIONS.items() if s == "memory_reserve")
#: what a replay of whole serving runs can identify (end-to-end latencies constrain these; kernel floors and
#: GEMM-shape parameters need per-operator timings, e.g. ``simctl calibrate --microbench``)
REPLAY_PARAMETERS: tuple[str, ...] = ("frontend_s", "memory_efficiency", "attention_memory_efficiency", "gemm_compute_efficiency",
                                      "attention_compute_efficiency", "per_iteration_s", "per_request_s",
                                      "allreduce_latency_s")


class HardwareProfile(Frozen):
    """One GPU model: datasheet numbers plus the tunable efficiencies and overheads.

    Build it with :func:`hwprofiles.load_profile` (by name, alias or YAML path) or
    :meth:`from_yaml_text`. It is immutable; :meth:`with_parameters` returns a modified copy.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$", description="lower-case profile name")
    display_name: str
    aliases: tuple[str, ...] = ()
    vendor: Literal["nvidia", "amd", "other"] = "nvidia"
    architecture: str = ""
    compute_units: int | None = Field(
        None, ge=1, description="streaming multiprocessors (NVIDIA) / compute units (AMD): with it GEMMs, attention "
                                "and element-wise kernels are priced by their shape (sim/deploy/kernel_shapes.py); "
                                "without it GEMM efficiency follows the gemm_half_tokens ramp")
    memory: MemorySpec
    peak_tflops: dict[str, float] = Field(description="dense (not sparse) peak TFLOPS per dtype")
    interconnect: InterconnectSpec
    efficiency: EfficiencySpec
    overheads: OverheadSpec
    memory_reserve: MemoryReserveSpec
    calibration_covariance: ParameterCovariance | None = Field(
        None, description="standard errors and correlations of the replay-fitted parameters (error bars)")
    usd_per_gpu_hour: float | None = Field(None, gt=0, description="on-demand price of one GPU-hour")
    price_source: str = ""
    notes: str = ""
    source: str | None = Field(None, exclude=True, description="file the profile was read from")

    @field_validator("peak_tflops")
    @classmethod
    def _check_peaks(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if k not in KNOWN_DTYPES:
                raise ValueError(f"unknown dtype '{k}'{suggest(k, KNOWN_DTYPES)}; known: {', '.join(KNOWN_DTYPES)}")
            if not x > 0:
                raise ValueError(f"{k} must be > 0, got {x}")
        if "bf16" not in v and "fp16" not in v:
            raise ValueError("needs at least a bf16 or fp16 entry")
        return v

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, data: Any, source: str = "<hardware profile>") -> HardwareProfile:
        """Validate a parsed profile mapping; errors name ``source`` and the key path."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a hardware profile must be a YAML mapping, got {type(data).__name__}")
        check_numbers(data, source)  # non-finite bandwidths, FLOPS or overheads, anywhere in the file
        try:
            prof = cls.model_validate(data)
        except ValidationError as exc:
            raise format_validation_error(exc, cls, source) from None
        return prof.model_copy(update={"source": source})

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<hardware profile>") -> HardwareProfile:
        """Parse (strictly: duplicate keys refused, sim.strict_yaml) and validate YAML text."""
        return cls.from_dict(load_yaml_text(text, source), source)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (what :meth:`to_yaml` writes)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """YAML text that :meth:`from_yaml_text` reads back into an equal profile (comments are not kept;
        each tunable's ``basis`` carries its provenance)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)

    # ------------------------------------------------------------------ tunable parameters

    def tunable_parameters(self, which: Literal["all", "timing", "memory"] = "all") -> dict[str, float]:
        """Flat ``{name: value}`` of the tunable parameters (``timing``: those that change iteration
        times; ``memory``: those that change the memory plan)."""
        names = {"all": tuple(PARAMETER_SECTIONS), "timing": TIMING_PARAMETERS, "memory": MEMORY_PARAMETERS}[which]
        return {n: self.parameter(n).value for n in names}

    def calibration_parameters(self) -> list[str]:
        """The parameters a replay calibration should fit by default (:data:`REPLAY_PARAMETERS`)."""
        return list(REPLAY_PARAMETERS)

    def parameter(self, name: str) -> Tunable:
        """The :class:`Tunable` called ``name`` (value, status, basis)."""
        section = PARAMETER_SECTIONS.get(name)
        if section is None:
            raise ConfigError(f"unknown hardware parameter '{name}'{suggest(name, PARAMETER_SECTIONS)}; "
                              f"known: {', '.join(PARAMETER_SECTIONS)}")
        return getattr(getattr(self, section), name)

    def with_parameters(self, basis: str | None = None, status: Status = "calibrated", **values: float) -> HardwareProfile:
        """A copy with some tunable parameters replaced.

        ``basis``: when given, the replaced parameters get ``status`` (default ``calibrated``) with this
        basis (e.g. ``"fit to 4 vLLM v0.15.1 H100 runs, simctl calibrate"``); otherwise status and basis
        are kept. Raises :class:`ConfigError` for unknown names or out-of-range values.
        """
        data = self.to_dict()
        for name, v in values.items():
            section = PARAMETER_SECTIONS.get(name)
            if section is None:
                raise ConfigError(f"unknown hardware parameter '{name}'{suggest(name, PARAMETER_SECTIONS)}; "
                                  f"known: {', '.join(PARAMETER_SECTIONS)}")
            entry = data[section][name]
            entry["value"] = float(v)
            if basis is not None:
                entry["status"], entry["basis"] = status, basis
        return HardwareProfile.from_dict(data, f"{self.source or self.name} (with {sorted(values)})")

    @property
    def calibration_status(self) -> Literal["calibrated", "partial", "uncalibrated"]:
        """``calibrated`` when every timing parameter is calibrated, ``partial`` when some are,
        ``uncalibrated`` when all are assumed."""
        n = sum(self.parameter(p).status == "calibrated" for p in TIMING_PARAMETERS)
        return "calibrated" if n == len(TIMING_PARAMETERS) else ("partial" if n else "uncalibrated")

    @property
    def is_calibrated(self) -> bool:
        """True when at least some timing parameters were fitted to measurements of this GPU."""
        return self.calibration_status != "uncalibrated"

    def calibration_note(self) -> str:
        """One line for reports: what is calibrated and what is assumed."""
        if self.calibration_status == "uncalibrated":
            return "assumed efficiencies — uncalibrated (treat absolute latencies as ±30% estimates)"
        cal = [p for p in TIMING_PARAMETERS if self.parameter(p).status == "calibrated"]
        ass = [p for p in TIMING_PARAMETERS if self.parameter(p).status != "calibrated"]
        if not ass:
            return "calibrated: " + ", ".join(cal)
        return f"partially calibrated: {', '.join(cal)} calibrated; {', '.join(ass)} assumed"

    # ------------------------------------------------------------------ convenient accessors

    @property
    def memory_bytes(self) -> int:
        """Device memory as CUDA reports it (the base of ``gpu_memory_utilization``)."""
        return self.memory.capacity_bytes

    @property
    def memory_bandwidth_bytes_per_s(self) -> float:
        """Peak memory bandwidth."""
        return self.memory.bandwidth_bytes_per_s

    @property
    def pcie_bandwidth_bytes_per_s(self) -> float:
        """Host<->device bandwidth per direction."""
        return self.interconnect.pcie_bandwidth_bytes_per_s

    def link_bandwidth_bytes_per_s(self, num_gpus: int) -> float:
        """Per-GPU, per-direction bandwidth a collective among ``num_gpus`` GPUs can use (the slowest hop:
        the intra-node fabric while the group fits in a node, the network beyond)."""
        ic = self.interconnect
        if num_gpus > ic.gpus_per_node:
            return ic.inter_node_bandwidth_bytes_per_s
        if ic.topology == "mesh":
            return ic.intra_node_bandwidth_bytes_per_s * max(1, num_gpus - 1)
        return ic.intra_node_bandwidth_bytes_per_s

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for GEMMs in ``dtype``.

        ``fp16``/``bf16`` stand in for each other. A dtype the GPU has no tensor-core rate for (fp8 on
        Ampere, int4 on Hopper...) runs as weight-only quantisation: weights are dequantised and the
        GEMM runs at the 16-bit rate (what vLLM's Marlin kernels do), so the bf16 peak is returned.
        """
        return self.resolve_compute_dtype(dtype)[1]

    def resolve_compute_dtype(self, dtype: str) -> tuple[str, float]:
        """``(dtype actually used, its peak FLOP/s)`` following the fallbacks of :meth:`peak_flops`."""
        p = self.peak_tflops
        for d in (dtype, {"bf16": "fp16", "fp16": "bf16"}.get(dtype, ""), "bf16", "fp16"):
            if d in p:
                return d, p[d] * 1e12
        raise AssertionError("validated profiles always have bf16 or fp16")  # pragma: no cover

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for reports and ``simctl hw show``."""
        return {
            "name": self.name, "display_name": self.display_name, "aliases": list(self.aliases),
            "memory_gib": round(self.memory_bytes / GIB, 2), "memory_bytes": self.memory_bytes,
            "memory_bandwidth_tb_s": self.memory_bandwidth_bytes_per_s / 1e12,
            "peak_tflops_dense": dict(self.peak_tflops),
            "intra_node": self.interconnect.intra_node,
            "intra_node_bandwidth_gb_s": self.interconnect.intra_node_bandwidth_bytes_per_s / 1e9,
            "usd_per_gpu_hour": self.usd_per_gpu_hour,
            "calibration_status": self.calibration_status,
            "calibration": self.calibration_note(),
            "source": self.source,
        }

