"""Error bars (sim/runs/uncertainty.py, sim/plan/capacity_range.py): draws, interval arithmetic, summary keys."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hwprofiles import load_profile
from sim.config import load_experiment, with_overrides
from sim.runs.uncertainty import PRIOR_REL_SIGMA, UncertaintyConfig, interval, parameter_draws

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "error_bars.yaml"


def test_draws_follow_the_fit_covariance():
    """The H100's fitted parameters are drawn jointly: their spread and correlation are the fit's."""
    hw = load_profile("h100-sxm")
    cov = hw.calibration_covariance
    draws = parameter_draws(hw, 4000, np.random.default_rng(1))
    x = np.array([[d[p] for p in cov.parameters] for d in draws])
    i, j = cov.parameters.index("per_iteration_s"), cov.parameters.index("per_request_s")
    assert np.std(x[:, i]) == pytest.approx(cov.stderr[i], rel=0.08)
    assert np.corrcoef(x[:, i], x[:, j])[0, 1] == pytest.approx(cov.correlation[i][j], abs=0.05)
    assert (x[:, cov.parameters.index("memory_efficiency")] <= 1.0).all()  # efficiencies stay physical


def test_prior_of_assumed_parameters():
    """An uncalibrated GPU: each assumed efficiency is log-normal with the documented relative spread."""
    hw = load_profile("a10g")
    draws = parameter_draws(hw, 4000, np.random.default_rng(2))
    v = hw.parameter("attention_compute_efficiency").value
    logs = np.log([d["attention_compute_efficiency"] / v for d in draws])
    assert np.std(logs) == pytest.approx(PRIOR_REL_SIGMA[("assumed", "efficiency")], rel=0.1)
    assert "gemm_overlap_exponent" not in draws[0]  # shape exponents are not drawn


def test_interval_is_lognormal_around_the_point():
    samples = [90.0, 100.0, 110.0, 120.0]
    sd = float(np.std(np.log(samples), ddof=1))
    lo, hi = interval(100.0, samples, 0.8)
    assert lo == pytest.approx(100 * math.exp(-1.2815515655 * sd)) and hi == pytest.approx(100 * math.exp(1.2815515655 * sd))
    assert interval(None, samples, 0.8) is None and interval(1.0, [1.0], 0.8) is None


def test_run_summary_carries_intervals():
    from sim.api import run

    cfg = with_overrides(load_experiment(EXAMPLE), {"workload.num_requests": 60, "uncertainty.samples": 3})
    iv = run(cfg).summary["intervals"]
    assert iv["level"] == 0.8 and iv["samples"] == 3
    for m in ("median_ttft_ms", "p99_ttft_ms", "median_e2el_ms", "p99_e2el_ms"):
        assert 0 < iv[m]["low"] <= iv[m]["high"]


def test_capacity_reports_a_range():
    from sim.api import capacity

    cfg = with_overrides(load_experiment(EXAMPLE), {"search.num_requests": 60, "search.max_probes": 5,
                                                     "search.tolerance": 0.3})
    res = capacity(cfg)
    d = res.to_dict()
    assert d["interval_level"] == 0.8
    assert d["max_request_rate_low"] is not None and d["max_request_rate_high"] is not None
    assert d["max_request_rate_low"] <= d["max_request_rate_high"]


def test_bad_uncertainty_section_is_a_clear_error():
    from sim.errors import ConfigError

    with pytest.raises(ConfigError, match="uncertainty.level"):
        with_overrides(load_experiment(EXAMPLE), {"uncertainty.level": 1.5})
    assert UncertaintyConfig().samples == 8


@pytest.mark.slow
def test_coverage_check_on_a_bundled_run():
    """The coverage machinery end to end on 10 s of one real run (benchmarks/interval_coverage.py runs all stages)."""
    from sim.fidelity.coverage import CHECKED_METRICS, coverage_check
    from sim.fidelity.validate import load_runs

    rep = coverage_check(load_profile("h100-sxm"), load_runs(select=["roleplay"]), samples=2, window_s=10.0)
    df = rep.frame()
    assert set(df.metric) == set(CHECKED_METRICS) and len(df) == 4
    assert ((df.low <= df.point) & (df.point <= df.high)).all()
    assert (df.sd_sampling > 0).all() and 0.0 <= rep.coverage <= 1.0


def test_capacity_range_is_the_same_with_parallel_probes():
    """The range's two extra searches (slow / fast profile) also run their probes in workers."""
    from sim.api import capacity

    cfg = with_overrides(load_experiment(EXAMPLE), {"search.num_requests": 60, "search.max_probes": 5,
                                                     "search.tolerance": 0.3})
    assert capacity(cfg, jobs=2).to_dict() == capacity(cfg, jobs=1).to_dict()
