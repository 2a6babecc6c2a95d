"""The ``workload:`` section of an experiment: a frozen, validated pydantic model.

Registered in ``sim.config.SECTION_MODELS`` as ``workloads.config:WorkloadConfig``; validation errors
are reported with the YAML key path and the file. Every key is documented in ``docs/workloads.md``.

Changing the load: ``cfg.with_rate(r)`` sets the total mean rate, ``cfg.scale_rate(f)`` multiplies every
rate (Poisson/gamma/constant ``rate``, every stage's rate, each class's rate, or a timed trace's
``speedup``). Overriding ``workload.arrival.rate`` through ``sim.config.with_overrides`` does the same
for a single-stream workload. Either way only arrival times change, never the request sequence.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sim.config import Frozen
from sim.limits import MAX_PREFIX_GROUPS, MAX_REQUESTS
from workloads.agentic import apply_agentic_preset
from workloads.arrivals import ArrivalProcess, OfflineArrival, parse_arrival
from workloads.lengths import LengthDistribution, parse_duration_dist, parse_length
from workloads.registry import invalid
from workloads.scenarios import SCENARIOS, canonical_scenario


class _Frozen(Frozen):
    """The shared config base (sim.config.Frozen: unknown keys and booleans/non-finite numbers refused)."""


class TraceConfig(_Frozen):
    """Replay a request trace (CSV or JSONL, optionally gzipped)."""

    path: str = Field(..., description="trace file, relative to the experiment file")
    format: Literal["auto", "csv", "jsonl"] = "auto"
    columns: dict[Literal["arrival", "input_tokens", "output_tokens"], str] = Field(
        default_factory=dict, description="header names for each role; unspecified roles are auto-detected")
    time_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of a numeric arrival column")
    speedup: float = Field(1.0, gt=0, description="replay speed: simulated time = trace time / speedup")
    start_s: float = Field(0.0, ge=0, description="skip the first start_s seconds of the trace (trace time)")
    duration_s: float | None = Field(None, gt=0, description="replay only this many seconds of the trace (trace time)")
    max_requests: int | None = Field(None, ge=1, description="replay at most this many rows")


class PrefixConfig(_Frozen):
    """Shared prompt prefixes (system prompts, few-shot templates): each request in group g starts with
    the same ``prefix_tokens``-long segment, so a prefix cache can reuse its KV blocks."""

    num_groups: int = Field(..., ge=1, le=MAX_PREFIX_GROUPS)
    prefix_tokens: Any = Field(..., description="prefix length per group: tokens, or a distribution drawn once per group")
    assignment: Literal["uniform", "round-robin", "zipf"] = Field("uniform", description="how requests pick a group")
    zipf_s: float = Field(1.0, ge=0, description="zipf assignment: P(group g) ∝ 1/(g+1)^zipf_s")
    fraction: float = Field(1.0, ge=0, le=1, description="share of requests that carry a shared prefix")

    @field_validator("prefix_tokens", mode="before")
    @classmethod
    def _parse_len(cls, v: Any) -> LengthDistribution:
        return parse_length(v)


class ConversationConfig(_Frozen):
    """Multi-turn sessions: turn t's prompt = the whole previous prompt + the previous answer + a new
    user message (``input_tokens``), sent ``think_time_s`` after the previous answer ends."""

    turns: Any = Field(..., description="turns per session: a count or a distribution")
    think_time_s: Any = Field(0.0, validate_default=True, description="seconds between an answer and the next user message")
    max_context_tokens: int | None = Field(None, ge=1, description="end a session before a prompt would exceed this")
    first_input_tokens: Any = Field(None, description="agentic: turn 0's new message (the task); default input_tokens (workloads/agentic.py)")
    parallel_calls: Any = Field(None, description="agentic: parallel tool calls per turn, each a branch request sharing the history; default 1")

    @field_validator("turns", mode="before")
    @classmethod
    def _parse_turns(cls, v: Any) -> LengthDistribution:
        return parse_length(v)

    @field_validator("first_input_tokens", "parallel_calls", mode="before")
    @classmethod
    def _parse_agentic(cls, v: Any) -> LengthDistribution | None:
        return None if v is None else parse_length(v)

    @field_validator("think_time_s", mode="before")
    @classmethod
    def _parse_think(cls, v: Any) -> LengthDistribution:
        return parse_duration_dist(v)


class _RequestStream(_Frozen):
    """Fields a request stream shares (the whole workload and each class of a mixture): the arrival
    process and the two length distributions, parsed from their YAML forms by their registries."""

    arrival: Any = None
    input_tokens: Any = None
    output_tokens: Any = None
    images_per_request: Any = Field(None, description="images per request (multimodal models): a count or a distribution; needs image_tokens")
    image_tokens: int | None = Field(None, ge=1, le=1_000_000, description="LM placeholder tokens per image (added to the prompt)")

    @field_validator("images_per_request", mode="before")
    @classmethod
    def _parse_images(cls, v: Any) -> LengthDistribution | None:
        return None if v is None else parse_length(v)

    @field_validator("arrival", mode="before")
    @classmethod
    def _parse_arrival(cls, v: Any) -> ArrivalProcess | None:
        return None if v is None else parse_arrival(v)

    @field_validator("input_tokens", mode="before")
    @classmethod
    def _parse_in(cls, v: Any) -> LengthDistribution | None:
        return None if v is None else parse_length(v, "input")

    @field_validator("output_tokens", mode="before")
    @classmethod
    def _parse_out(cls, v: Any) -> LengthDistribution | None:
        return None if v is None else parse_length(v, "output")


class WeightCurveConfig(_Frozen):
    """A class weight that changes over the day: knots ``[[time_s, weight], ...]`` (linear or step in
    between, constant outside), repeating every ``period_s`` when given."""

    points: tuple[tuple[float, float], ...] = Field(..., min_length=1, description="[[time_s, weight], ...], times ascending")
    interpolation: Literal["linear", "step"] = "linear"
    period_s: float | None = Field(None, gt=0, description="repeat the curve with this period (e.g. 86400)")

    @field_validator("points")
    @classmethod
    def _check(cls, v: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        times = [p[0] for p in v]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise invalid("weight_over_time.points: times must be strictly increasing")
        if any(p[1] < 0 for p in v) or not any(p[1] > 0 for p in v):
            raise invalid("weight_over_time.points: weights must be ≥ 0 and not all zero")
        return v


class ClassConfig(_RequestStream):
    """One request class of a mixture. With its own ``arrival`` it is an independent stream; without,
    it shares the top-level arrival process and is picked per request with probability ∝ ``weight``.
    Unset ``input_tokens``/``output_tokens``/``prefix``/``conversation`` inherit the top level."""

    name: str = Field(..., min_length=1)
    weight: float = Field(1.0, gt=0)
    num_requests: int | None = Field(None, ge=1, le=MAX_REQUESTS, description="cap on this class's own stream")
    weight_over_time: WeightCurveConfig | None = Field(None, description="time-varying weight (replaces weight) for a class sharing the top-level arrival")
    prefix: PrefixConfig | None = None
    conversation: ConversationConfig | None = None

    @model_validator(mode="after")
    def _curve_needs_shared_stream(self) -> "ClassConfig":
        if self.weight_over_time is not None and self.arrival is not None:
            raise invalid(f"classes.{self.name}: weight_over_time applies to classes sharing the top-level arrival; "
                          "a class with its own arrival varies through its arrival process (e.g. diurnal)")
        return self


class WorkloadConfig(_RequestStream):
    """The ``workload:`` section. See docs/workloads.md for every key."""

    scenario: str | None = Field(None, description="preset: mlperf-server, mlperf-server-interactive, mlperf-offline, mlperf-singlestream")
    num_requests: int | None = Field(None, ge=1, le=MAX_REQUESTS, description="stop after this many requests")
    duration_s: float | None = Field(None, gt=0, description="no request is sent after this time")
    max_concurrency: int | None = Field(None, ge=1, description="open loop: at most this many requests in flight (vllm bench --max-concurrency)")
    classes: tuple[ClassConfig, ...] = ()
    trace: TraceConfig | None = None
    prefix: PrefixConfig | None = None
    conversation: ConversationConfig | None = None
    agentic_preset: str | None = Field(None, description="fill unset keys from an agentic preset: codex-agent, coding-agent (workloads/agentic.py)")

    # ---- parsing ------------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _apply_agentic_preset(cls, data: Any) -> Any:
        return apply_agentic_preset(data)

    @model_validator(mode="before")
    @classmethod
    def _apply_scenario(cls, data: Any) -> Any:
        """MLPerf presets fill in the arrival process (and the 600 s Server duration)."""
        if not isinstance(data, dict) or data.get("scenario") is None:
            return data
        data = dict(data)
        try:
            name = canonical_scenario(str(data["scenario"]))
        except ValueError as exc:
            raise invalid(str(exc)) from None
        data["scenario"] = name
        preset = SCENARIOS[name]
        arrival = data.get("arrival")
        want = preset["process"]
        if arrival is None:
            arrival = {"process": want}
        elif isinstance(arrival, dict):
            arrival = dict(arrival)
            arrival.setdefault("process", want)
        proc = arrival.get("process") if isinstance(arrival, dict) else getattr(arrival, "process", None)
        if proc != want and not (want == "single-stream" and proc in ("singlestream",)):
            raise invalid(f"scenario {name} uses arrival process '{want}', but arrival.process is '{proc}'")
        data["arrival"] = arrival
        if preset.get("default_duration_s") and data.get("num_requests") is None and data.get("duration_s") is None:
            data["duration_s"] = preset["default_duration_s"]
        return data

    @model_validator(mode="after")
    def _check(self) -> "WorkloadConfig":
        self._check_size()
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise invalid(f"classes: duplicate class name(s) {', '.join(dupes)}")
        self._check_images()
        if self.trace is not None:
            if self.classes:
                raise invalid("trace and classes cannot be combined")
            if self.conversation is not None:
                raise invalid("trace and conversation cannot be combined")
            if self.arrival is not None and self.arrival.closed_loop:
                raise invalid("a trace replays open-loop; use an open-loop arrival process (or none, to use the trace's times)")
            return self
        # Every request needs lengths: top level, or on every class.
        streams = self.classes or ()
        for side in ("input_tokens", "output_tokens"):
            if getattr(self, side) is None and (not streams or any(getattr(c, side) is None for c in streams)):
                where = "workload" if not streams else "workload (or every class)"
                raise invalid(f"{side} is required in {where} unless a trace is given")
        shared = [c for c in self.classes if c.arrival is None]
        if self.arrival is None and (not self.classes or shared):
            raise invalid("arrival is required (e.g. {process: poisson, rate: 10}) unless every class has its own")
        processes = ([self.arrival] if self.arrival is not None and (not self.classes or shared) else []) + [c.arrival for c in self.classes if c.arrival is not None]
        for proc in processes:
            if isinstance(proc, OfflineArrival) and self.num_requests is None and not any(c.num_requests for c in self.classes):
                raise invalid("arrival.process offline needs num_requests")
            if not proc.self_limiting and self.num_requests is None and self.duration_s is None and not isinstance(proc, OfflineArrival):
                if not (self.classes and all(c.num_requests for c in self.classes if c.arrival is proc)):
                    raise invalid("give num_requests or duration_s (the workload would never end)")
        return self

    def _check_images(self) -> None:
        """``images_per_request`` and ``image_tokens`` come together (a class inherits either from the
        top level); images ride on single requests, not on traces or multi-turn sessions."""
        streams = [("workload", self.images_per_request, self.image_tokens, self.conversation)]
        streams += [(f"classes.{c.name}", c.images_per_request if c.images_per_request is not None else self.images_per_request,
                     c.image_tokens if c.image_tokens is not None else self.image_tokens,
                     c.conversation or self.conversation) for c in self.classes]
        for where, images, tokens, conv in streams:
            if (images is None) != (tokens is None):
                missing = "image_tokens" if tokens is None else "images_per_request"
                raise invalid(f"{where}: images_per_request and image_tokens go together; set {missing}")
            if images is not None and conv is not None:
                raise invalid(f"{where}: images_per_request is not supported with conversation (multi-turn prompts)")
        if self.trace is not None and self.images_per_request is not None:
            raise invalid("trace and images_per_request cannot be combined")

    @property
    def has_images(self) -> bool:
        """True when some requests carry images."""
        return self.images_per_request is not None or any(c.images_per_request is not None for c in self.classes)

    def _check_size(self) -> None:
        """Refuse workloads that would generate more than MAX_REQUESTS requests before any runs."""
        if self.num_requests is not None:
            return
        rate = self.mean_rate
        horizon = self.duration_s
        stages = [p for p in [self.arrival, *(c.arrival for c in self.classes)] if p is not None and p.self_limiting]
        if horizon is None and stages:
            horizon = max(p.total_duration_s for p in stages)  # type: ignore[attr-defined]
        if rate is not None and horizon is not None and rate * horizon > MAX_REQUESTS:
            raise invalid(f"rate × duration = {rate:g} req/s × {horizon:g} s ≈ {rate * horizon:.3g} requests, above "
                          f"the limit of {MAX_REQUESTS:,} per run (docs/experiment.md, Limits); set num_requests")

    # ---- load changes -------------------------------------------------------------------------
    @property
    def mean_rate(self) -> float | None:
        """Nominal total request rate (req/s) of the open-loop streams; None when undefined (closed
        loop, offline, or a trace whose rate is only known after reading it)."""
        if self.trace is not None:
            return self.arrival.mean_rate if self.arrival is not None else None
        total = 0.0
        shared = not self.classes or any(c.arrival is None for c in self.classes)
        procs = ([self.arrival] if shared else []) + [c.arrival for c in self.classes if c.arrival is not None]
        for p in procs:
            if p is None or p.mean_rate is None:
                return None
            total += p.mean_rate
        return total

    def scale_rate(self, factor: float) -> "WorkloadConfig":
        """Multiply every arrival rate by ``factor`` (a timed trace: ``speedup`` × factor).

        Raises ValueError for closed-loop or offline workloads, which have no rate."""
        if not factor > 0:
            raise ValueError(f"rate factor must be > 0, got {factor}")
        update: dict[str, Any] = {}
        if self.trace is not None and self.arrival is None:
            update["trace"] = self.trace.model_copy(update={"speedup": self.trace.speedup * factor})
            return self.model_copy(update=update)
        if self.arrival is not None:
            update["arrival"] = self.arrival.scaled(factor)
        if self.classes:
            update["classes"] = tuple(c.model_copy(update={"arrival": c.arrival.scaled(factor)}) if c.arrival is not None else c
                                      for c in self.classes)
        return self.model_copy(update=update)

    def with_rate(self, rate: float) -> "WorkloadConfig":
        """The same workload at total mean rate ``rate`` req/s (every stream scaled proportionally).
        Equivalent to overriding ``workload.arrival.rate`` when there is a single rate."""
        current = self.mean_rate
        if current is None or current <= 0:
            if self.trace is not None and self.arrival is None:
                raise ValueError("a timed trace has no nominal rate; use scale_rate(factor) (speedup) instead")
            raise ValueError("this workload has no arrival rate to set (closed-loop or offline)")
        return self.scale_rate(rate / current)

    def with_speedup(self, speedup: float) -> "WorkloadConfig":
        """A timed trace replayed at ``speedup``× (2 = twice the request rate)."""
        if self.trace is None:
            raise ValueError("with_speedup applies to trace replay only")
        return self.model_copy(update={"trace": self.trace.model_copy(update={"speedup": speedup})})


__all__ = ["WorkloadConfig", "ClassConfig", "WeightCurveConfig", "TraceConfig", "PrefixConfig", "ConversationConfig"]
