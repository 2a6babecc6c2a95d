"""Time-varying arrivals: exact time change of one unit-rate stream, counts against Λ, closed-form
means, rate scaling keeps the request sequence, CSV curves, class weights over the day."""
from __future__ import annotations

import numpy as np
import pytest

from sim.errors import ConfigError
from workloads import WorkloadConfig, build_workload
from workloads.arrivals import _CHUNK, parse_arrival
from workloads.rate_curves import PiecewiseFunction

DIURNAL = {"process": "diurnal", "peak_rate": 20, "trough_rate": 4, "period_s": 3600, "peak_at_s": 900}
CURVE = {"process": "rate-curve", "points": [[0, 2], [300, 10], [600, 0], [900, 6]], "repeat": 2,
         "weekend_factor": 0.5, "day_s": 400, "start_weekday": 4, "bursts": [{"start_s": 100, "duration_s": 50, "factor": 4}]}


def _unit_stream(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chunks = [np.cumsum(rng.standard_exponential(_CHUNK))]
    while len(chunks) * _CHUNK < n:
        chunks.append(chunks[-1][-1] + np.cumsum(rng.standard_exponential(_CHUNK)))
    return np.concatenate(chunks)[:n]


@pytest.mark.parametrize("spec", [DIURNAL, CURVE], ids=["diurnal", "rate-curve"])
def test_arrivals_are_the_exact_time_change_of_one_unit_stream(spec):
    proc = parse_arrival(spec)
    t = proc.arrival_times(np.random.default_rng(3), None, 1800)
    s = _unit_stream(3, len(t))
    np.testing.assert_allclose(proc.cumulative(t), s, rtol=1e-12, atol=1e-9)
    assert np.all(np.diff(t) >= 0) and t[-1] <= 1800
    # scaling every rate keeps the stream: Λ_f(t_k(f)) = f·Λ(t_k(f)) = S_k
    t2 = proc.scaled(2.5).arrival_times(np.random.default_rng(3), 500, None)
    np.testing.assert_allclose(2.5 * proc.cumulative(t2), s[:500] if len(s) >= 500 else _unit_stream(3, 500), rtol=1e-12)


def test_counts_per_window_are_poisson_with_mean_from_the_cumulative_rate():
    proc = parse_arrival(DIURNAL)
    t = proc.arrival_times(np.random.default_rng(0), None, 7200)
    edges = np.arange(0, 7201, 300.0)
    counts, _ = np.histogram(t, edges)
    expected = np.diff(proc.cumulative(edges))
    z = (counts - expected) / np.sqrt(expected)
    assert np.abs(z).max() < 4.5 and abs(z.mean()) < 1.0
    assert np.diff(proc.cumulative(np.array([0.0, 3600.0])))[0] == pytest.approx(12 * 3600)  # mean (20+4)/2


def test_rate_and_cumulative_agree_and_modifiers_apply():
    proc = parse_arrival(CURVE)
    grid = np.linspace(0, 1800, 360_001)
    lam = proc.rate(grid)
    num = np.concatenate([[0.0], np.cumsum(0.5 * (lam[1:] + lam[:-1]) * np.diff(grid))])
    np.testing.assert_allclose(proc.cumulative(grid), num, rtol=2e-4, atol=0.05)
    assert proc.rate(np.array([120.0]))[0] == pytest.approx(4 * (2 + 8 * 120 / 300))  # burst ×4 on a Friday
    # day 0 is a Friday (factor 1), day 1 (400–800 s) a Saturday: half the rate
    assert proc.rate(np.array([450.0]))[0] == pytest.approx(0.5 * PiecewiseFunction([0, 300, 600, 900], [2, 10, 0, 6])(450.0))
    assert proc.end_s == 1800
    assert proc.mean_rate == pytest.approx((0.5 * (2 + 10) * 300 + 0.5 * 10 * 300 + 0.5 * 6 * 300) / 900 * (5 + 2 * 0.5) / 7)


def test_weekend_factor_mean():
    proc = parse_arrival({**DIURNAL, "weekend_factor": 0.4})
    assert proc.mean_rate == pytest.approx(12 * (5 + 0.8) / 7)


def test_piecewise_function_step_and_period():
    f = PiecewiseFunction([0, 10, 20], [1, 3, 5], "step", period_s=20)
    assert f(np.array([5.0, 15.0, 25.0, 35.0])).tolist() == [1, 3, 1, 3]
    assert float(f.integral(np.array([45.0]))[0]) == pytest.approx(2 * 40 + 5)


def test_rate_curve_from_csv_relative_to_the_experiment(tmp_path):
    (tmp_path / "day.csv").write_text("time_s,rate\n0,1\n60,5\n120,1\n")
    cfg = WorkloadConfig.model_validate({"arrival": {"process": "rate-curve", "csv": "day.csv", "repeat": 3},
                                         "input_tokens": 16, "output_tokens": 4})
    wl = build_workload(cfg, np.random.SeedSequence(0), tmp_path)
    arr = np.array([s.arrival_s for s in wl.specs])
    assert arr.max() <= 360 and len(arr) == pytest.approx(3 * 360, rel=0.25)
    assert wl.describe()["arrival"]["csv"] == "day.csv"


@pytest.mark.parametrize("text, match", [
    ("t_s,r\n0,1\n1,2\n", "needs columns time_s and rate"),
    ("time_s,rate\n0,1\n0,2\n", "strictly increasing"),
    ("time_s,rate\n5,1\n9,2\n", "must start at time 0"),
    ("time_s,rate\n0,1\n1,x\n", "line 3"),
])
def test_bad_rate_csv_names_the_file(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    cfg = WorkloadConfig.model_validate({"arrival": {"process": "rate-curve", "csv": "bad.csv"},
                                         "input_tokens": 16, "output_tokens": 4})
    with pytest.raises(ConfigError, match=match):
        build_workload(cfg, np.random.SeedSequence(0), tmp_path)


def test_bad_inline_curves_are_rejected():
    with pytest.raises(Exception, match="trough_rate"):
        parse_arrival({"process": "diurnal", "peak_rate": 1, "trough_rate": 2})
    with pytest.raises(Exception, match="exactly one of points or csv"):
        parse_arrival({"process": "rate-curve"})
    with pytest.raises(Exception, match="zero everywhere"):
        parse_arrival({"process": "rate-curve", "points": [[0, 0], [10, 0]]})


def test_class_weights_follow_the_time_of_day():
    cfg = WorkloadConfig.model_validate({
        "duration_s": 2000, "arrival": {"process": "poisson", "rate": 20},
        "input_tokens": 16, "output_tokens": 4,
        "classes": [{"name": "chat", "weight_over_time": {"points": [[0, 1], [1000, 0]], "interpolation": "step", "period_s": 2000}},
                    {"name": "batch", "weight_over_time": {"points": [[0, 0], [1000, 1]], "interpolation": "step", "period_s": 2000}},
                    {"name": "api", "weight": 1.0}]})
    wl = build_workload(cfg, np.random.SeedSequence(0), ".")
    t = np.array([s.arrival_s for s in wl.specs])
    cls = np.array([s.class_name for s in wl.specs])
    first, second = cls[t < 1000], cls[t >= 1000]
    assert "batch" not in first and "chat" not in second
    assert (first == "chat").mean() == pytest.approx(0.5, abs=0.03)
    assert (second == "batch").mean() == pytest.approx(0.5, abs=0.03)


def test_weight_curve_on_a_class_with_its_own_arrival_is_rejected():
    with pytest.raises(Exception, match="weight_over_time applies to classes sharing"):
        WorkloadConfig.model_validate({"input_tokens": 16, "output_tokens": 4, "duration_s": 10, "classes": [
            {"name": "a", "arrival": {"process": "poisson", "rate": 1}, "weight_over_time": {"points": [[0, 1]]}}]})
