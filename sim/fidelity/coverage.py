"""Do the error bars mean what they say? The coverage of simctl's intervals on the bundled real runs.

For every load stage of every bundled run (``sim.fidelity.validate``) and each checked statistic (mean and
p99 of TTFT and E2E), the interval is built as ``sim.runs.uncertainty`` builds it: the stage is replayed
with ``samples`` parameter draws of the profile (fit covariance + prior), and the spread of ``ln`` of the
simulated statistic is combined with its finite-sample noise — the bootstrap spread of the statistic over
the stage's own requests (what a different seed, i.e. a different draw of the same number of requests, would
change) — into ``point · exp(± z·sd)``. Coverage is the fraction of (stage, statistic) cases whose measured
value lies inside; an honest 80% interval covers about 80%.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from sim.fidelity.validate import VALIDATION_METRICS, CalibrationRun, load_runs, replay_cases, validate
from sim.runs.uncertainty import UncertaintyConfig, drawn_profiles

CHECKED_METRICS = ("mean_ttft_ms", "p99_ttft_ms", "mean_e2el_ms", "p99_e2el_ms")
BOOTSTRAP_RESAMPLES = 200


@dataclass
class CoverageReport:
    """One row per (run, stage, metric): point, low, high, measured, inside."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    level: float = 0.8
    samples: int = 0

    def frame(self) -> pd.DataFrame:
        """The rows as a table."""
        return pd.DataFrame(self.rows)

    @property
    def coverage(self) -> float:
        """Fraction of cases whose measured value lies in the interval."""
        return float(np.mean([r["inside"] for r in self.rows])) if self.rows else float("nan")

    def by_metric(self) -> dict[str, float]:
        """Coverage per checked statistic."""
        df = self.frame()
        return {m: float(g["inside"].mean()) for m, g in df.groupby("metric")} if len(df) else {}


def _bootstrap_log_sd(values: np.ndarray, metric: str, rng: np.random.Generator) -> float:
    """Standard deviation of ln(statistic) over bootstrap resamples of one stage's requests."""
    fn = VALIDATION_METRICS[metric]
    col = "ttft_s" if "ttft" in metric else "e2el_s"
    n = len(values)
    stats = [fn(pd.DataFrame({col: values[rng.integers(0, n, n)]})) for _ in range(BOOTSTRAP_RESAMPLES)]
    stats = [s for s in stats if s > 0]
    return float(np.std(np.log(stats), ddof=1)) if len(stats) > 2 else 0.0


def stage_sampling_noise(runs: Sequence[CalibrationRun], window_s: float | None, lead_s: float = 20.0,
                         seed: int = 0) -> dict[tuple[str, str, str], float]:
    """``{(run, stage, metric): sd of ln(statistic)}`` from bootstrapping each stage's measured requests."""
    rng = np.random.default_rng(seed)
    out: dict[tuple[str, str, str], float] = {}
    for run in runs:
        parts = []
        for case in replay_cases(run, "h100-sxm", window_s=window_s, lead_s=lead_s):
            m = case.measured
            parts.append(m[m["scored"].to_numpy(dtype=bool)])
        meas = pd.concat(parts)
        stages = [("all", meas)] + ([(str(s.index), meas[meas["stage"] == s.index]) for s in run.stages]
                                    if len(run.stages) > 1 else [])
        for stage, m in stages:
            for metric in CHECKED_METRICS:
                col = "ttft_s" if "ttft" in metric else "e2el_s"
                out[(run.short_name, stage, metric)] = _bootstrap_log_sd(m[col].to_numpy(dtype=float), metric, rng)
    return out


def coverage_check(profile: Any, runs: Sequence[CalibrationRun] | None = None, *, samples: int = 8,
                   level: float = 0.8, window_s: float | None = 60.0, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> CoverageReport:
    """Replay the bundled runs with ``samples`` parameter draws and report the intervals' coverage."""
    runs = list(runs) if runs is not None else load_runs()
    ucfg = UncertaintyConfig(samples=samples, level=level, seed=seed)
    point = validate(runs, profile=profile, window_s=window_s).frame()
    draws = []
    for k, prof in enumerate(drawn_profiles(profile, ucfg)):
        if progress:
            progress(f"draw {k + 1}/{samples}")
        draws.append(validate(runs, profile=prof, window_s=window_s).frame())
    noise = stage_sampling_noise(runs, window_s, seed=seed)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    report = CoverageReport(level=level, samples=samples)
    for _, r in point[point["metric"].isin(CHECKED_METRICS)].iterrows():
        if r["stage"] == "all" and any(x["run"] == r["run"] and x["stage"] != "all" for _, x in point.iterrows()):
            continue  # a multi-stage run's whole-run row mixes its stages: the stages are checked
        key = (r["run"], r["stage"], r["metric"])
        sims = [float(d[(d["run"] == r["run"]) & (d["stage"] == r["stage"]) & (d["metric"] == r["metric"])]
                      ["simulated"].iloc[0]) for d in draws]
        sd_param = float(np.std(np.log(sims), ddof=1))
        sd = math.hypot(sd_param, noise.get(key, 0.0))
        low, high = r["simulated"] * math.exp(-z * sd), r["simulated"] * math.exp(z * sd)
        report.rows.append({"run": r["run"], "stage": r["stage"], "metric": r["metric"], "point": r["simulated"],
                            "low": low, "high": high, "measured": r["measured"], "sd_parameters": sd_param,
                            "sd_sampling": noise.get(key, 0.0), "inside": bool(low <= r["measured"] <= high)})
    return report
