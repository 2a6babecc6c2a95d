"""Service-level objectives: the ``slo:`` section and its evaluation against a run's summary.

```yaml
slo:
  preset: mlperf-server            # or mlperf-interactive, metron-default (a list combines them)
  ttft_ms: {p99: 2000, mean: 500}  # any of ttft_ms, tpot_ms, itl_ms, e2el_ms at mean | median | pNN
  tpot_ms: 100                     # a bare number means p99
  fluidity: {decode_deadline_ms: 30, prefill_slack_ms: 300, target: 0.9, percentile: 99}
  goodput: {ttft_ms: 500, tpot_ms: 50, min_fraction: 0.95}   # vllm bench --goodput thresholds
  max_unfinished_fraction: 0.0     # requests still queued at the horizon count against the run
```

Every criterion is a bound on one summary key (``docs/metrics.md``): latency bounds on
``{stat}_{metric}_ms``; fluidity on ``p{percentile}_fluidity_miss_rate ≤ 1 − target`` (at least
``percentile`` % of requests keep fluidity ≥ target, Metron's capacity SLO); ``goodput.min_fraction``
on ``slo_attainment`` (share of the measured requests that completed within every goodput threshold);
``max_unfinished_fraction`` / ``max_rejected_fraction`` on the share of measured requests not completed.
Explicit keys override a preset's bound on the same statistic.
"""
from __future__ import annotations

import math
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from sim.config import Frozen, format_validation_error
from sim.errors import ConfigError, suggest
from workloads.scenarios import MLPERF_LIMITS_MS, mlperf_model_key

__all__ = ["FluiditySLO", "GoodputSLO", "SLOConfig", "PRESETS", "as_slo_config", "resolve_slo", "evaluate_slo"]

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
PRESETS = ("mlperf-server", "mlperf-interactive", "metron-default")
_STAT_RE = re.compile(r"^(mean|median|p(\d+(?:\.\d+)?))$")
# relative slack when comparing a value with its limit (float noise only: 1 − 0.9 ≠ 0.1 in binary)
_REL_EPS = 1e-9


class _Frozen(Frozen):
    """The shared config base (sim.config.Frozen)."""


class FluiditySLO(_Frozen):
    """Metron fluidity criterion: at least ``percentile`` % of requests keep fluidity-index ≥ ``target``.

    The prefill deadline is fixed (``prefill_deadline_ms``, default 100 ms) or, with
    ``prefill_slack_ms``, the cost model's predicted prefill time of each prompt plus that slack
    (etalon's capacity-search deadlines).
    """

    decode_deadline_ms: float = Field(50.0, gt=0, description="D_d: deadline between tokens")
    prefill_deadline_ms: float | None = Field(None, ge=0, description="D_p: fixed deadline of the first token")
    prefill_slack_ms: float | None = Field(None, ge=0, description="D_p = predicted prefill time + this slack")
    target: float = Field(0.9, gt=0, le=1, description="fluidity-index a request must keep")
    percentile: float = Field(99.0, gt=0, le=100, description="share of requests (%) that must keep it")

    @model_validator(mode="after")
    def _one_prefill_rule(self) -> "FluiditySLO":
        if self.prefill_deadline_ms is not None and self.prefill_slack_ms is not None:
            raise ValueError("give either prefill_deadline_ms or prefill_slack_ms, not both")
        return self


class GoodputSLO(_Frozen):
    """Per-request thresholds of ``vllm bench serve --goodput`` (a request is good iff it completed
    and each given metric is ≤ its threshold), plus an optional bound on the good share."""

    ttft_ms: float | None = Field(None, gt=0)
    tpot_ms: float | None = Field(None, gt=0)
    e2el_ms: float | None = Field(None, gt=0)
    min_fraction: float | None = Field(None, gt=0, le=1, description="criterion: slo_attainment ≥ this")

    @model_validator(mode="after")
    def _some_threshold(self) -> "GoodputSLO":
        if self.ttft_ms is None and self.tpot_ms is None and self.e2el_ms is None:
            raise ValueError("goodput needs at least one of ttft_ms, tpot_ms, e2el_ms")
        return self


def _parse_bound(value: Any) -> Any:
    """``2000`` → ``{"p99": 2000}``; validate statistic names (mean, median, pNN)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected a number of ms or a mapping like {p99: 2000}")
    if isinstance(value, (int, float)):
        return {"p99": float(value)}
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a number of ms or a mapping like {p99: 2000, mean: 500}")
    out = {}
    for stat, limit in value.items():
        stat = str(stat).strip().lower()
        if stat == "p50":
            stat = "median"
        m = _STAT_RE.match(stat)
        if not m or (m.group(2) is not None and not 0 <= float(m.group(2)) <= 100):
            raise ValueError(f"unknown statistic '{stat}' (use mean, median or pNN such as p99, p99.9)")
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
            raise ValueError(f"{stat}: the limit must be a positive number of ms, got {limit!r}")
        out[_canonical_stat(stat)] = float(limit)
    return out


def _canonical_stat(stat: str) -> str:
    if stat.startswith("p"):
        p = float(stat[1:])
        return f"p{int(p)}" if p.is_integer() else f"p{p:g}"
    return stat


class SLOConfig(_Frozen):
    """The ``slo:`` section (module docstring)."""

    preset: str | list[str] | None = Field(None, description="mlperf-server | mlperf-interactive | metron-default")
    ttft_ms: dict[str, float] | None = None
    tpot_ms: dict[str, float] | None = None
    itl_ms: dict[str, float] | None = None
    e2el_ms: dict[str, float] | None = None
    fluidity: FluiditySLO | None = None
    goodput: GoodputSLO | None = None
    max_unfinished_fraction: float = Field(0.0, ge=0, le=1, description="requests not ended at the horizon")
    max_rejected_fraction: float | None = Field(None, ge=0, le=1, description="rejected requests (off by default)")

    @field_validator("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms", mode="before")
    @classmethod
    def _parse_bounds(cls, v: Any) -> Any:
        return _parse_bound(v)

    @field_validator("preset", mode="before")
    @classmethod
    def _check_preset(cls, v: Any) -> Any:
        if v is None:
            return None
        names = [v] if isinstance(v, str) else list(v)
        for name in names:
            if name not in PRESETS:
                raise ValueError(f"unknown preset '{name}'{suggest(str(name), PRESETS)}; known: {', '.join(PRESETS)}")
        return v

    @property
    def presets(self) -> list[str]:
        """The preset names as a list."""
        if self.preset is None:
            return []
        return [self.preset] if isinstance(self.preset, str) else list(self.preset)

    def latency_bounds(self) -> dict[str, dict[str, float]]:
        """``{metric: {stat: limit_ms}}`` of the explicit latency bounds."""
        return {m: dict(getattr(self, f"{m}_ms")) for m in LATENCY_METRICS if getattr(self, f"{m}_ms")}

    def required_percentiles(self) -> list[float]:
        """Percentiles the latency bounds need in the summary (e.g. 99.9 for ``p99.9``)."""
        out = set()
        for bounds in self.latency_bounds().values():
            for stat in bounds:
                if stat.startswith("p"):
                    out.add(float(stat[1:]))
        return sorted(out)

    def goodput_thresholds_ms(self) -> dict[str, float]:
        """``{metric: ms}`` of the goodput thresholds (empty without ``goodput:``)."""
        if self.goodput is None:
            return {}
        return {m: getattr(self.goodput, f"{m}_ms") for m in ("ttft", "tpot", "e2el")
                if getattr(self.goodput, f"{m}_ms") is not None}


def as_slo_config(slo: SLOConfig | dict | None) -> SLOConfig | None:
    """Validate a plain mapping into :class:`SLOConfig`; errors name the ``slo.`` key path."""
    if slo is None or isinstance(slo, SLOConfig):
        return slo
    from pydantic import ValidationError

    try:
        return SLOConfig.model_validate(slo)
    except ValidationError as exc:
        raise format_validation_error(exc, SLOConfig, "<slo>", ("slo",)) from None


def _preset_bounds(name: str, model_name: str) -> dict[str, Any]:
    """The sections a preset contributes (before explicit keys override them)."""
    if name == "metron-default":
        # etalon's capacity-search "deadline" mode: D_p = predicted prefill + 300 ms, D_d = 30 ms (TBT SLO),
        # P99 of the per-request deadline-miss rate ≤ 0.1 (SEMANTICS.md §2)
        return {"fluidity": {"decode_deadline_ms": 30.0, "prefill_slack_ms": 300.0, "target": 0.9,
                             "percentile": 99.0}}

    variant = name.removeprefix("mlperf-")
    key = mlperf_model_key(model_name)
    limits = MLPERF_LIMITS_MS.get((key, variant)) if key is not None else None
    if limits is None:
        known = sorted({k for k, v in MLPERF_LIMITS_MS if v == variant})
        raise ConfigError(f"slo.preset: {name}: MLPerf has no {variant} latency limits for model "
                          f"'{model_name or '?'}' (MLPerf models with {variant} limits: {', '.join(known)})")
    return {"ttft_ms": {"p99": float(limits["ttft_ms"])}, "tpot_ms": {"p99": float(limits["tpot_ms"])}}


def resolve_slo(slo: SLOConfig | dict | None, model_name: str = "") -> SLOConfig | None:
    """Expand presets into explicit bounds (explicit keys win per statistic); returns a preset-free config."""
    slo = as_slo_config(slo)
    if slo is None or not slo.presets:
        return slo
    merged: dict[str, Any] = {}

    def merge(part: dict[str, Any]) -> None:
        for key, val in part.items():
            if isinstance(val, dict):  # latency bounds per statistic, fluidity/goodput per field
                merged.setdefault(key, {}).update(val)
            else:
                merged[key] = val

    for name in slo.presets:
        merge(_preset_bounds(name, model_name))
    # exclude_none: a config that went through a dict round-trip (sweeps, capacity probes) carries
    # every key explicitly, and an explicit None must not erase the preset's bound
    merge(slo.model_dump(exclude_unset=True, exclude_none=True, exclude={"preset"}))
    return SLOConfig.model_validate(merged)


def _criterion(name: str, value: Any, limit: float, op: str, source: str) -> dict[str, Any]:
    v = None if value is None else float(value)
    if v is None or not math.isfinite(v):
        passed, ratio = False, math.inf
    elif op == "<=":
        passed = v <= limit + _REL_EPS * max(abs(limit), 1.0)
        ratio = v / limit if limit > 0 else (0.0 if v <= 0 else math.inf)
    else:  # ">="
        passed = v >= limit - _REL_EPS * max(abs(limit), 1.0)
        ratio = limit / v if v > 0 else math.inf
    return {"name": name, "value": v, "op": op, "limit": limit, "passed": bool(passed),
            "ratio": ratio, "source": source}


def evaluate_slo(summary: dict[str, Any], slo: SLOConfig | dict, model_name: str = "") -> dict[str, Any]:
    """Check each criterion against ``summary``.

    Returns ``{"passed", "criteria": [{name, value, op, limit, passed, ratio, source}], "binding",
    "failed"}``. ``ratio`` is value/limit for upper bounds (limit/value for lower bounds), so > 1
    means violated; ``binding`` names the criterion with the largest ratio — the most violated one,
    or when all pass the one closest to its limit. A missing or non-finite value fails.
    """
    slo = resolve_slo(slo, model_name)
    crit: list[dict[str, Any]] = []
    for metric, bounds in slo.latency_bounds().items():
        for stat, limit in bounds.items():
            key = f"{stat}_{metric}_ms"
            crit.append(_criterion(key, summary.get(key), limit, "<=", "slo"))
    if slo.fluidity is not None:
        p = slo.fluidity.percentile
        key = (f"p{int(p)}" if float(p).is_integer() else f"p{p:g}") + "_fluidity_miss_rate"
        crit.append(_criterion(key, summary.get(key), 1.0 - slo.fluidity.target, "<=", "slo.fluidity"))
    if slo.goodput is not None and slo.goodput.min_fraction is not None:
        crit.append(_criterion("slo_attainment", summary.get("slo_attainment"), slo.goodput.min_fraction,
                               ">=", "slo.goodput"))
    n = summary.get("num_requests") or 0
    unfinished = (summary.get("unfinished") or 0) / n if n else 0.0
    crit.append(_criterion("unfinished_fraction", unfinished, slo.max_unfinished_fraction, "<=",
                           "slo.max_unfinished_fraction"))
    if slo.max_rejected_fraction is not None:
        rejected = (summary.get("rejected") or 0) / n if n else 0.0
        crit.append(_criterion("rejected_fraction", rejected, slo.max_rejected_fraction, "<=",
                               "slo.max_rejected_fraction"))
    if not summary.get("completed"):
        crit.append(_criterion("completed", summary.get("completed") or 0, 1, ">=", "no request completed"))
    failed = [c["name"] for c in crit if not c["passed"]]
    binding = max(crit, key=lambda c: c["ratio"])["name"] if crit else None
    return {"passed": not failed, "criteria": crit, "binding": binding, "failed": failed}
