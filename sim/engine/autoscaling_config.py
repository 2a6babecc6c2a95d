"""The ``autoscaling:`` section: a controller that changes a pool's replica count while the run goes.

```yaml
replicas: 2                    # replicas ready at t = 0 (within [min_replicas, max_replicas])
autoscaling:
  policy: hpa                  # hpa (KEDA/HPA on vLLM's Prometheus metrics) or planner (Dynamo-style)
  interval_s: 15               # the controller samples and decides every interval_s (HPA sync period)
  min_replicas: 1
  max_replicas: 16
  metrics_delay_s: 0           # staleness of what the controller sees (scrape + query), whole intervals
  metrics_window_s: 60         # window of rate and latency signals (Prometheus rate()/histogram window)
  policy_options:              # hpa: targets per replica; the highest ratio wins (HPA with several metrics)
    metrics: {num_requests_waiting: 5, kv_cache_usage: 0.8}
    tolerance: 0.1
  scale_up:   {stabilization_s: 0,   max_step: 4,  cooldown_s: 0}
  scale_down: {stabilization_s: 300, max_step: 1,  cooldown_s: 0}
  provisioning:                # what a new replica waits for before it takes traffic
    node_s: 75                 # a GPU node from the cloud (0: nodes already in the cluster)
    image_s: 270               # container image pull
    weights_gb_per_s: 0.5      # storage → GPU bandwidth; the weights' bytes come from the memory plan
    engine_init_s: 30          # process start, torch.compile, CUDA graph capture
    # cold_start_s: 600        # or one number / a distribution ({dist: lognormal, ...}) instead of the parts
    warm_pool: 0               # replicas kept asleep (vLLM sleep mode) that wake in wake_s
    wake_s: 2.6
  reserved: {gpu_hour_usd: 1.80}   # optional: reserved baseline + on-demand above it (gpus: cheapest R)
```

Every key is documented in docs/autoscaling.md with where its default comes from.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sim.config import Frozen
from sim.engine.autoscaling_policies import get_autoscaling_policy
from sim.errors import ConfigError
from sim.limits import MAX_REPLICAS
from workloads.lengths import LengthDistribution, parse_duration_dist
from workloads.registry import invalid

__all__ = ["AutoscalingConfig", "ProvisioningConfig", "ReservedPricing", "ScalingRules"]

GB = 1e9


class _Frozen(Frozen):
    """The shared config base (sim.config.Frozen: unknown keys, booleans for numbers, non-finite floats refused)."""


class ScalingRules(_Frozen):
    """How fast one direction may move (HPA ``behavior.scaleUp`` / ``behavior.scaleDown``)."""

    stabilization_s: float = Field(0.0, ge=0, description="act on the most conservative recommendation of this window")
    max_step: int | None = Field(None, ge=1, description="at most this many replicas per decision (none: unlimited)")
    max_percent: float | None = Field(None, gt=0, description="at most this % of the current replicas per decision")
    cooldown_s: float = Field(0.0, ge=0, description="no change in this direction for this long after one")
    select_policy: Literal["max", "min"] = Field("max", description="with both limits: the one allowing the larger (HPA's default) or smaller change")


class ProvisioningConfig(_Frozen):
    """Delay between the controller asking for a replica and that replica taking traffic."""

    cold_start_s: Any = Field(None, description="seconds or a distribution; replaces the sum of the parts below")
    node_s: float = Field(0.0, ge=0, description="node provisioning (cluster autoscaler adds a GPU node)")
    image_s: float = Field(0.0, ge=0, description="container image pull")
    weights_gb_per_s: float | None = Field(None, gt=0, description="weight-loading bandwidth (GB/s, 1e9 B); none: 0 s")
    engine_init_s: float = Field(0.0, ge=0, description="engine start-up: process, compile, CUDA graphs")
    warm_pool: int = Field(0, ge=0, description="sleeping replicas (held, billed) that wake in wake_s; refilled by cold starts")
    wake_s: float = Field(0.0, ge=0, description="wake-up of a sleeping replica (vLLM sleep mode)")

    @field_validator("cold_start_s", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> LengthDistribution | None:
        return None if v is None else parse_duration_dist(v)

    def fixed_parts_s(self, weight_bytes: float) -> float:
        """Cold start from the parts: node + image + weights / bandwidth + engine init."""
        load = weight_bytes / (self.weights_gb_per_s * GB) if self.weights_gb_per_s else 0.0
        return self.node_s + self.image_s + load + self.engine_init_s

    def describe(self, weight_bytes: float) -> dict[str, Any]:
        """The provisioning model with the cold start it implies."""
        out = self.model_dump(mode="json", exclude={"cold_start_s"})
        if self.cold_start_s is not None:
            out["cold_start_s"] = self.cold_start_s.describe()
        else:
            out["weight_bytes"] = float(weight_bytes)
            out["weight_load_s"] = self.fixed_parts_s(weight_bytes) - self.node_s - self.image_s - self.engine_init_s
            out["mean_cold_start_s"] = self.fixed_parts_s(weight_bytes)
        return out


class ReservedPricing(_Frozen):
    """Reserved-for-baseline + on-demand-for-peak pricing of an autoscaled fleet."""

    gpu_hour_usd: float = Field(..., gt=0, description="$ per reserved (committed) GPU-hour")
    gpus: int | None = Field(None, ge=0, description="GPUs reserved for the whole span (default: the cheapest count)")


class AutoscalingConfig(_Frozen):
    """The ``autoscaling:`` section (module docstring; docs/autoscaling.md)."""

    policy: str = Field("hpa", description="scaling policy (sim.engine.autoscaling_policies)")
    interval_s: float = Field(15.0, gt=0, description="sampling and decision period (HPA default sync period 15 s)")
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(..., ge=1, le=MAX_REPLICAS)
    metrics_delay_s: float = Field(0.0, ge=0, description="the controller acts on signals this old (rounded up to intervals)")
    metrics_window_s: float | None = Field(None, gt=0, description="window of rate/latency signals; default interval_s")
    policy_options: dict[str, Any] = Field(default_factory=dict, description="policy parameters, validated by the policy")
    scale_up: ScalingRules = ScalingRules()
    scale_down: ScalingRules = ScalingRules(stabilization_s=300.0)
    provisioning: ProvisioningConfig = ProvisioningConfig()
    reserved: ReservedPricing | None = Field(None, description="price a reserved baseline plus on-demand peaks")
    drain: Literal["finish"] = Field("finish", description="a removed replica takes no new requests and stops when its last one ends")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        try:  # the policy validates its own options: fail when the file is read, not mid-run
            get_autoscaling_policy(self.policy, self.policy_options)
        except ConfigError as exc:
            raise invalid(str(exc).removeprefix("autoscaling.")) from None
        return self

    @property
    def window_s(self) -> float:
        """Window of rate and latency signals."""
        return self.metrics_window_s if self.metrics_window_s is not None else self.interval_s
