"""Autoscaling policies: from what the controller sees (:class:`FleetSignals`) to a replica count.

A policy only *recommends*; :mod:`sim.engine.autoscaler` applies min/max, stabilization windows,
step limits and cooldowns (the HPA ``behavior`` rules), the same for every policy.

- ``hpa`` — the Kubernetes HPA algorithm (KEDA feeds it the same way) on vLLM's Prometheus metrics.
  For a per-replica gauge with target ``v`` (``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
  ``vllm:kv_cache_usage_perc``, or the gateway's outstanding requests): the usage ratio is
  ``mean over ready replicas / v``; inside ``1 ± tolerance`` nothing changes, else the recommendation is
  ``⌈Σ over ready replicas / v⌉`` — replicas still starting count as 0, as HPA does for unready pods on
  scale-up. ``arrival_rate`` (req/s at the router) recommends ``⌈rate / v⌉``. Latency signals
  (``p90_ttft_s``, ``p99_ttft_s``, ``mean_ttft_s``, ``mean_tpot_s``, ``p99_tpot_s``, ``p99_e2el_s``; an
  object metric of the whole service) recommend ``⌈current · value / v⌉``. With several metrics the
  largest recommendation wins (HPA). A metric without data in the window (no request finished) is
  skipped.
- ``planner`` — Dynamo's throughput planner: predict the next interval's request rate from the last
  ``history_intervals`` windows (``last``, ``mean`` or a least-squares ``trend``) and recommend
  ``⌈predicted · (1 + headroom) / replica_capacity_rps⌉``, the per-replica capacity coming from a
  profile — here :func:`sim.plan.capacity.capacity_search` of one replica (``simctl plan`` fills it in).

Register a new one with ``@register_autoscaling_policy("name")`` on a subclass of
:class:`AutoscalingPolicy`.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import ConfigError, suggest

__all__ = [
    "AUTOSCALING_POLICIES",
    "GAUGE_METRICS",
    "LATENCY_METRICS",
    "AutoscalingPolicy",
    "FleetSignals",
    "get_autoscaling_policy",
    "register_autoscaling_policy",
]

# per-replica gauges (summed over ready replicas) and service-wide latency signals
GAUGE_METRICS = ("num_requests_waiting", "num_requests_running", "kv_cache_usage", "outstanding")
LATENCY_METRICS = ("p90_ttft_s", "p99_ttft_s", "mean_ttft_s", "mean_tpot_s", "p99_tpot_s", "p99_e2el_s")
RATE_METRICS = ("arrival_rate",)


@dataclass(frozen=True)
class FleetSignals:
    """What an autoscaler sees at one sampling instant.

    Gauges are per *ready* replica (draining and starting replicas excluded), as Prometheus scrapes
    them from each engine; window signals cover the last ``window_s`` seconds."""

    time_s: float
    num_ready: int
    num_starting: int  # asked for, not yet taking traffic (cold start or wake-up)
    num_draining: int
    num_requests_waiting: tuple[int, ...]
    num_requests_running: tuple[int, ...]
    kv_cache_usage: tuple[float, ...]
    outstanding: tuple[int, ...]
    window_s: float
    arrival_rate: float  # requests per second arriving at the router over the window
    latency: dict[str, float]  # LATENCY_METRICS over requests finished in the window (absent: none finished)

    def total(self, metric: str) -> float:
        """Σ over ready replicas of a gauge."""
        return float(sum(getattr(self, metric)))


class AutoscalingPolicy:
    """Base class: ``recommend(signals, current) -> replicas`` (before the behaviour rules)."""

    name = "base"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = dict(options)

    def recommend(self, sig: FleetSignals, current: int) -> int:
        """The replica count this policy wants now (``current`` = ready + starting)."""
        raise NotImplementedError

    def check_runnable(self) -> None:
        """Raise ConfigError if an option a run needs is still missing (a file may leave one for
        ``simctl plan`` to fill in)."""

    def describe(self) -> dict[str, Any]:
        """The policy and its options."""
        return {"policy": self.name, **self.options}


AUTOSCALING_POLICIES: dict[str, type[AutoscalingPolicy]] = {}


def register_autoscaling_policy(name: str) -> Callable[[type[AutoscalingPolicy]], type[AutoscalingPolicy]]:
    """Class decorator registering an autoscaling policy under ``name``."""
    def deco(cls: type[AutoscalingPolicy]) -> type[AutoscalingPolicy]:
        cls.name = name
        AUTOSCALING_POLICIES[name] = cls
        return cls
    return deco


def get_autoscaling_policy(name: str, options: dict[str, Any]) -> AutoscalingPolicy:
    """An instance of the policy ``name`` (ConfigError naming ``autoscaling.policy`` if unknown)."""
    if name not in AUTOSCALING_POLICIES:
        raise ConfigError(f"autoscaling.policy: unknown autoscaling policy '{name}'"
                          f"{suggest(name, list(AUTOSCALING_POLICIES))}; known: {', '.join(sorted(AUTOSCALING_POLICIES))}")
    return AUTOSCALING_POLICIES[name](options)


def _check_keys(options: dict[str, Any], allowed: tuple[str, ...], policy: str) -> None:
    for key in options:
        if key not in allowed:
            raise ConfigError(f"autoscaling.policy_options.{key}: unknown option for policy {policy}"
                              f"{suggest(key, list(allowed))}; its options: {', '.join(allowed)}")


def _positive(options: dict[str, Any], key: str, where: str) -> float:
    v = options[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
        raise ConfigError(f"{where}: must be a number > 0, got {v!r}")
    return float(v)


@register_autoscaling_policy("hpa")
class HPAPolicy(AutoscalingPolicy):
    """Kubernetes HPA on engine metrics (module docstring)."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        _check_keys(options, ("metrics", "tolerance"), "hpa")
        metrics = options.get("metrics") or {"num_requests_waiting": 5}
        if not isinstance(metrics, dict) or not metrics:
            raise ConfigError("autoscaling.policy_options.metrics: a mapping {metric: target per replica}")
        known = GAUGE_METRICS + RATE_METRICS + LATENCY_METRICS
        self.targets: dict[str, float] = {}
        for name in metrics:
            if name not in known:
                raise ConfigError(f"autoscaling.policy_options.metrics.{name}: unknown metric{suggest(str(name), list(known))}; "
                                  f"known: {', '.join(known)}")
            self.targets[name] = _positive(metrics, name, f"autoscaling.policy_options.metrics.{name}")
        tol = options.get("tolerance", 0.1)  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
            raise ConfigError(f"autoscaling.policy_options.tolerance: must be in [0, 1), got {tol!r}")
        self.tolerance = float(tol)
        self.options = {"metrics": dict(self.targets), "tolerance": self.tolerance}

    def recommend(self, sig: FleetSignals, current: int) -> int:
        best: int | None = None
        for name, target in self.targets.items():
            rec = self._one(sig, current, name, target)
            if rec is not None:
                best = rec if best is None else max(best, rec)
        return current if best is None else best

    def _one(self, sig: FleetSignals, current: int, name: str, target: float) -> int | None:
        if name in GAUGE_METRICS:
            if sig.num_ready == 0:
                return None
            total = sig.total(name)
            ratio = total / sig.num_ready / target
            if abs(ratio - 1.0) <= self.tolerance:
                return current
            return math.ceil(total / target - 1e-9)
        if name == "arrival_rate":
            ratio = sig.arrival_rate / (target * max(current, 1))
            if abs(ratio - 1.0) <= self.tolerance:
                return current
            return math.ceil(sig.arrival_rate / target - 1e-9)
        value = sig.latency.get(name)
        if value is None:
            return None
        ratio = value / target
        if abs(ratio - 1.0) <= self.tolerance:
            return current
        return math.ceil(current * ratio - 1e-9)


@register_autoscaling_policy("planner")
class PlannerPolicy(AutoscalingPolicy):
    """Dynamo-style throughput planner (module docstring)."""

    PREDICTORS = ("last", "mean", "trend")

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        _check_keys(options, ("replica_capacity_rps", "predictor", "history_intervals", "headroom"), "planner")
        self.capacity = (_positive(options, "replica_capacity_rps", "autoscaling.policy_options.replica_capacity_rps")
                         if "replica_capacity_rps" in options else None)
        self.predictor = str(options.get("predictor", "last"))
        if self.predictor not in self.PREDICTORS:
            raise ConfigError(f"autoscaling.policy_options.predictor: one of {', '.join(self.PREDICTORS)}, got {self.predictor!r}")
        n = options.get("history_intervals", 4)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"autoscaling.policy_options.history_intervals: an integer ≥ 1, got {n!r}")
        headroom = options.get("headroom", 0.0)
        if isinstance(headroom, bool) or not isinstance(headroom, (int, float)) or headroom < 0:
            raise ConfigError(f"autoscaling.policy_options.headroom: a number ≥ 0, got {headroom!r}")
        self.headroom = float(headroom)
        self.history: deque[float] = deque(maxlen=n)
        self.options = {"replica_capacity_rps": self.capacity, "predictor": self.predictor,
                        "history_intervals": n, "headroom": self.headroom}

    def check_runnable(self) -> None:
        if self.capacity is None:
            raise ConfigError("autoscaling.policy_options.replica_capacity_rps: required for policy planner "
                              "(the request rate one replica serves within the SLO; `simctl plan` finds it)")

    def predict(self) -> float:
        """Predicted request rate of the next interval from the history of window rates."""
        h = np.array(self.history, dtype=np.float64)
        if self.predictor == "last" or len(h) == 1:
            return float(h[-1])
        if self.predictor == "mean":
            return float(h.mean())
        x = np.arange(len(h), dtype=np.float64)
        slope, intercept = np.polyfit(x, h, 1)
        return max(0.0, float(intercept + slope * len(h)))  # one step ahead

    def recommend(self, sig: FleetSignals, current: int) -> int:
        self.history.append(sig.arrival_rate)
        return math.ceil(self.predict() * (1.0 + self.headroom) / self.capacity - 1e-9)
