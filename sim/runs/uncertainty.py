"""Error bars: how uncertain a prediction is, from what the hardware profile does not pin down and from the
finite sample a run simulates (docs/metrics.md, "Intervals").

An experiment with an ``uncertainty:`` section is simulated ``samples`` more times. Each extra run draws

* the **timing parameters** of the hardware profile: the fitted ones jointly from the fit's covariance
  (``calibration_covariance``: standard errors and correlations of ``simctl calibrate``), every other
  parameter from a documented **prior**, log-normal around its value with relative spread
  :data:`PRIOR_REL_SIGMA` by status (``assumed`` efficiencies 15%, assumed fixed times 60%; calibrated
  values without a covariance 5%). The prior is the size of the shift the H100 parameters made from their
  first, transferred values to the replay-calibrated ones (memory efficiency 0.858 → 0.973: 13%; per-step
  host time 0.5 → 1.35 ms: ×2.7; docs/validation.md);
* a new **seed** (``seed + 1 + k``), so the workload's sampling noise enters too.

For each reported latency statistic the interval is ``point · exp(± z · sd)`` with ``sd`` the standard
deviation of ``ln`` of the statistic across the extra runs and ``z`` the normal quantile of the level
(0.8 → ±1.28): a log-normal interval around the point prediction. ``summary["intervals"]`` holds them.
Capacity search (``sim.plan.capacity``) runs the search again with the draws whose step time is at the
two ends of the level and reports ``max_request_rate_low`` / ``_high``; plan with the low end.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.deploy.hardware import TIMING_PARAMETERS, HardwareProfile

#: relative (log) standard deviation of a parameter without a fitted covariance, by status and kind
PRIOR_REL_SIGMA = {("assumed", "efficiency"): 0.15, ("assumed", "overheads"): 0.60,
                   ("calibrated", "efficiency"): 0.05, ("calibrated", "overheads"): 0.05}
#: latency statistics that get an interval (vllm-bench keys, ms)
INTERVAL_METRICS = ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_e2el_ms", "median_e2el_ms",
                    "p99_e2el_ms", "median_tpot_ms", "p99_tpot_ms", "median_itl_ms", "p99_itl_ms")
#: parameters that are not physical rates/times and are left as they are
_FIXED = ("gemm_half_tokens", "gemm_overlap_exponent", "attention_half_length")


class UncertaintyConfig(BaseModel):
    """``uncertainty:`` — error bars from extra runs with perturbed parameters and seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(8, ge=2, le=256, description="extra runs (each a parameter draw and a new seed)")
    level: float = Field(0.8, gt=0.0, lt=1.0, description="coverage of the reported intervals")
    parameters: bool = Field(True, description="draw the hardware profile's timing parameters")
    seeds: bool = Field(True, description="give every extra run a new seed (the workload's sampling noise)")
    seed: int = Field(0, description="seed of the parameter draws")


def _kind(name: str) -> str:
    return "efficiency" if name.endswith(("efficiency",)) else "overheads"


def parameter_draws(profile: HardwareProfile, n: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """``n`` draws of the profile's timing parameters (module docstring); values stay physical (efficiencies
    in (0, 1], times ≥ 0)."""
    values = profile.tunable_parameters("timing")
    cov = profile.calibration_covariance
    joint = [p for p in (cov.parameters if cov else ()) if p in values]
    draws = [dict() for _ in range(n)]
    if joint:
        idx = [cov.parameters.index(p) for p in joint]
        sd = np.array([cov.stderr[i] for i in idx])
        corr = np.array([[cov.correlation[i][j] for j in idx] for i in idx])
        covm = np.outer(sd, sd) * corr
        w, v = np.linalg.eigh((covm + covm.T) / 2)  # tolerate a slightly non-positive-definite matrix
        root = v @ np.diag(np.sqrt(np.clip(w, 0.0, None)))
        z = rng.standard_normal((n, len(joint)))
        x = np.array([values[p] for p in joint]) + z @ root.T
        for k in range(n):
            for j, p in enumerate(joint):
                draws[k][p] = float(x[k, j])
    for p in TIMING_PARAMETERS:
        if p in joint or p in _FIXED or values[p] <= 0:
            continue
        sigma = PRIOR_REL_SIGMA[(profile.parameter(p).status, _kind(p))]
        factors = np.exp(sigma * rng.standard_normal(n))
        for k in range(n):
            draws[k][p] = values[p] * float(factors[k])
    for d in draws:
        for p, v in d.items():
            d[p] = min(max(v, 0.02), 1.0) if _kind(p) == "efficiency" else max(v, 0.0)
    return draws


def drawn_profiles(profile: HardwareProfile, cfg: UncertaintyConfig) -> list[HardwareProfile]:
    """The profiles of the extra runs (the unchanged profile when ``cfg.parameters`` is off)."""
    if not cfg.parameters:
        return [profile] * cfg.samples
    draws = parameter_draws(profile, cfg.samples, np.random.default_rng(cfg.seed))
    return [profile.with_parameters(**d) for d in draws]


def interval(point: float | None, samples: list[float | None], level: float) -> tuple[float, float] | None:
    """``(low, high)`` = ``point · exp(∓ z·sd(ln samples))`` (None without a point or two positive samples)."""
    vals = [float(s) for s in samples if s is not None and s > 0 and math.isfinite(s)]
    if point is None or not point > 0 or len(vals) < 2:
        return None
    sd = float(np.std(np.log(vals), ddof=1))
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return point * math.exp(-z * sd), point * math.exp(z * sd)


def summary_intervals(point: dict[str, Any], sample_summaries: list[dict[str, Any]], cfg: UncertaintyConfig,
                      sources: list[str]) -> dict[str, Any]:
    """The ``intervals`` block of a summary: ``{metric: {"low", "high"}}`` plus how they were made."""
    out: dict[str, Any] = {"level": cfg.level, "samples": len(sample_summaries), "sources": sources}
    for m in INTERVAL_METRICS:
        iv = interval(point.get(m), [s.get(m) for s in sample_summaries], cfg.level)
        if iv is not None:
            out[m] = {"low": iv[0], "high": iv[1]}
    return out


def sources(profile: HardwareProfile, cfg: UncertaintyConfig) -> list[str]:
    """What the intervals include, in words (for reports)."""
    out = []
    if cfg.parameters:
        cov = profile.calibration_covariance
        out.append("fit covariance of " + ", ".join(cov.parameters) if cov else "no fit covariance")
        out.append("prior on the other timing parameters (sim/runs/uncertainty.py PRIOR_REL_SIGMA)")
    if cfg.seeds:
        out.append("seed (workload sampling noise)")
    return out
