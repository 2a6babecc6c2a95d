"""Arrival processes (``workload.arrival.process``).

Open-loop processes produce a sorted array of arrival times up front; closed-loop ones (``closed``,
``single-stream``) only describe clients — the workload's SimPy process sends each client's next
request when the previous one ends (plus a think time).

Renewal processes draw *unit-rate* gaps and divide them by ``rate`` (Poisson: ``standard_exponential()
/ rate``; gamma: ``standard_gamma(k) / (rate·k)``). The random stream is therefore the same for every
rate: changing only ``rate`` scales every arrival time by old_rate/new_rate and leaves the request
sequence unchanged — capacity search relies on this. Gaps are never truncated.

Register a new process with ``@ARRIVAL_PROCESSES.register("name")`` on a subclass of
:class:`ArrivalProcess`.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from sim.config import Frozen
from sim.limits import MAX_CLIENTS
from workloads.lengths import LengthDistribution, parse_duration_dist
from workloads.registry import Registry

ARRIVAL_PROCESSES: Registry = Registry("arrival process", "process")

# Gaps are drawn in fixed-size chunks so the k-th gap never depends on how many were requested.
_CHUNK = 4096


class ArrivalProcess(Frozen):
    """Base class: a frozen parameter model that also generates arrival times."""

    process: str
    closed_loop: ClassVar[bool] = False
    # True when the process ends by itself (stages) so neither num_requests nor duration_s is needed.
    self_limiting: ClassVar[bool] = False

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        """Sorted arrival times (s) of at most ``num_requests`` requests with ``t ≤ duration_s``."""
        raise NotImplementedError

    @property
    def mean_rate(self) -> float | None:
        """Long-run request rate (req/s), or None when not defined (closed loop, offline)."""
        return None

    def scaled(self, factor: float) -> "ArrivalProcess":
        """The same process with every rate multiplied by ``factor`` (ValueError if it has no rate)."""
        raise ValueError(f"arrival process '{self.process}' has no rate to scale")

    def describe(self) -> dict[str, Any]:
        """Parameters plus the mean rate."""
        out = self.model_dump(mode="json", exclude_none=True)
        if self.mean_rate is not None:
            out["mean_rate"] = self.mean_rate
        return out


class _Renewal(ArrivalProcess):
    """i.i.d. gaps with mean 1/rate; the first request arrives after one gap."""

    rate: float = Field(..., gt=0, description="mean requests per second")

    def _unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` gaps of a rate-1 process (mean 1)."""
        raise NotImplementedError

    @property
    def mean_rate(self) -> float | None:
        return self.rate

    def scaled(self, factor: float) -> "ArrivalProcess":
        return self.model_copy(update={"rate": self.rate * factor})

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        if num_requests is None and duration_s is None:
            raise ValueError("an open-loop arrival process needs num_requests or duration_s")
        chunks: list[np.ndarray] = []
        total, last = 0, 0.0
        while True:
            if num_requests is not None and total >= num_requests:
                break
            if duration_s is not None and last * 1.0 > duration_s * self.rate:
                break
            g = self._unit_gaps(rng, _CHUNK)
            c = last + np.cumsum(g)
            chunks.append(c)
            total += len(c)
            last = float(c[-1])
        unit_times = np.concatenate(chunks) if chunks else np.empty(0)
        if num_requests is not None:
            unit_times = unit_times[:num_requests]
        times = unit_times / self.rate
        if duration_s is not None:
            times = times[times <= duration_s]
        return times


@ARRIVAL_PROCESSES.register("poisson")
class PoissonArrival(_Renewal):
    """Poisson process: exponential gaps with mean 1/rate (no truncation)."""

    process: Literal["poisson"] = "poisson"

    def _unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_exponential(n)


@ARRIVAL_PROCESSES.register("gamma")
class GammaArrival(_Renewal):
    """Gamma-renewal process as ``vllm bench serve --burstiness``: gap ~ Gamma(shape = burstiness,
    scale = 1/(rate·burstiness)); mean gap 1/rate, squared coefficient of variation 1/burstiness
    (burstiness 1 = Poisson, < 1 burstier, > 1 smoother)."""

    process: Literal["gamma"] = "gamma"
    burstiness: float = Field(1.0, gt=0)

    def _unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_gamma(self.burstiness, n) / self.burstiness


@ARRIVAL_PROCESSES.register("vllm-bench")
class VllmBenchArrival(_Renewal):
    """Exactly what ``vllm bench serve --request-rate R --burstiness B`` sends (``vllm/benchmarks/serve.py``
    ``get_request``): N gamma gaps (shape B, mean 1/R) summed, then **rescaled so the last request is sent
    at N/R** ("target_total_delay_s = total_requests / request_rate"; the sum would otherwise miss it by
    1-2%). The first request goes out after the first (rescaled) gap. The offered load of a run is then
    exactly N/R seconds long whatever the seed. Needs ``num_requests``."""

    process: Literal["vllm-bench"] = "vllm-bench"
    burstiness: float = Field(1.0, gt=0, description="--burstiness (gamma shape; 1 = Poisson)")

    def _unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_gamma(self.burstiness, n) / self.burstiness

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        if num_requests is None:
            raise ValueError("the vllm-bench arrival process needs num_requests (vllm bench --num-prompts)")
        if num_requests == 0:
            return np.empty(0)
        unit = np.cumsum(self._unit_gaps(rng, num_requests))
        times = unit * (num_requests / unit[-1]) / self.rate  # unit[-1] > 0 almost surely
        if duration_s is not None:
            times = times[times <= duration_s]
        return times


@ARRIVAL_PROCESSES.register("constant", "uniform", "deterministic")
class ConstantArrival(_Renewal):
    """One request every 1/rate seconds (the k-th at k/rate)."""

    process: Literal["constant"] = "constant"

    def _unit_gaps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.ones(n)

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        if num_requests is None and duration_s is None:
            raise ValueError("an open-loop arrival process needs num_requests or duration_s")
        n = num_requests if num_requests is not None else int(math.floor(duration_s * self.rate + 1e-9))  # type: ignore[operator]
        times = np.arange(1, n + 1, dtype=float) / self.rate
        if duration_s is not None:
            times = times[times <= duration_s * (1 + 1e-12)]
        return times


@ARRIVAL_PROCESSES.register("offline", "batch")
class OfflineArrival(ArrivalProcess):
    """Every request at t = 0 (MLPerf Offline; ``vllm bench serve --request-rate inf``)."""

    process: Literal["offline"] = "offline"

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        if num_requests is None:
            raise ValueError("the offline arrival process needs num_requests")
        return np.zeros(num_requests)


class Stage(Frozen):
    """One piece of a piecewise-constant rate profile."""

    rate: float = Field(..., ge=0, description="Poisson rate during the stage (req/s)")
    duration_s: float = Field(..., gt=0)


@ARRIVAL_PROCESSES.register("stages", "piecewise")
class StagesArrival(ArrivalProcess):
    """Piecewise-constant-rate Poisson process: ``stages: [{rate, duration_s}, ...]`` run back to back.

    Built by a time change of one unit-rate Poisson stream (arrival k at Λ⁻¹(E₁+…+E_k), Λ the
    cumulative rate), so it is exactly Poisson within each stage. Ends after the last stage."""

    process: Literal["stages"] = "stages"
    stages: tuple[Stage, ...] = Field(..., min_length=1)
    self_limiting: ClassVar[bool] = True

    @property
    def total_duration_s(self) -> float:
        """Sum of the stage durations."""
        return float(sum(s.duration_s for s in self.stages))

    @property
    def mean_rate(self) -> float | None:
        return float(sum(s.rate * s.duration_s for s in self.stages)) / self.total_duration_s

    def scaled(self, factor: float) -> "ArrivalProcess":
        return self.model_copy(update={"stages": tuple(s.model_copy(update={"rate": s.rate * factor}) for s in self.stages)})

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        rates = np.array([s.rate for s in self.stages])
        ends = np.cumsum([s.duration_s for s in self.stages])
        starts = ends - np.array([s.duration_s for s in self.stages])
        cum = np.concatenate([[0.0], np.cumsum(rates * (ends - starts))])  # Λ at stage boundaries
        horizon = cum[-1]
        chunks: list[np.ndarray] = []
        last, total = 0.0, 0
        while last <= horizon and (num_requests is None or total < num_requests):
            c = last + np.cumsum(rng.standard_exponential(_CHUNK))
            chunks.append(c)
            last = float(c[-1])
            total += len(c)
        s = np.concatenate(chunks) if chunks else np.empty(0)
        s = s[s <= horizon]
        # Invert Λ: stage j holds Λ in (cum[j], cum[j+1]]; zero-rate stages hold no arrivals.
        j = np.clip(np.searchsorted(cum, s, side="left") - 1, 0, len(rates) - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = starts[j] + (s - cum[j]) / rates[j]
        t = t[np.isfinite(t)]
        if num_requests is not None:
            t = t[:num_requests]
        if duration_s is not None:
            t = t[t <= duration_s]
        return t


@ARRIVAL_PROCESSES.register("closed", "closed-loop", "concurrency")
class ClosedArrival(ArrivalProcess):
    """``clients`` concurrent users; each sends its next request when its previous one ends, after an
    optional think time (``think_time_s``: seconds or a distribution). All clients start at t = 0."""

    process: Literal["closed"] = "closed"
    clients: int = Field(..., ge=1, le=MAX_CLIENTS)
    think_time_s: Any = Field(0.0, validate_default=True, description="seconds, or a distribution mapping (sampled per request)")
    closed_loop: ClassVar[bool] = True

    @field_validator("think_time_s", mode="before")
    @classmethod
    def _parse_think(cls, v: Any) -> LengthDistribution:
        return parse_duration_dist(v)

    @property
    def think_time(self) -> LengthDistribution:
        """The think-time distribution (seconds)."""
        return self.think_time_s

    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        raise TypeError("closed-loop processes have no precomputed arrival times")

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["think_time_s"] = self.think_time.model_dump(mode="json", exclude_none=True)
        return out


@ARRIVAL_PROCESSES.register("single-stream", "singlestream")
class SingleStreamArrival(ClosedArrival):
    """One client (MLPerf SingleStream): the next request is sent when the previous one completes."""

    process: Literal["single-stream"] = "single-stream"  # type: ignore[assignment]
    clients: int = Field(1, ge=1, le=1)


def parse_arrival(value: Any) -> ArrivalProcess:
    """Validate an ``arrival`` mapping (``process`` defaults to poisson)."""
    return ARRIVAL_PROCESSES.validate(value, default="poisson")  # type: ignore[return-value]
