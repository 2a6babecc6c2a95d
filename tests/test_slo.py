"""SLO section: validation, presets (MLPerf table from workloads.scenarios), evaluation."""
from __future__ import annotations

import pytest

from sim.config import parse_experiment
from sim.errors import ConfigError
from sim.measure.slo import SLOConfig, evaluate_slo, resolve_slo
from workloads.scenarios import MLPERF_LIMITS_MS


def test_bounds_parse_any_statistic_and_bare_numbers():
    slo = SLOConfig.model_validate({"ttft_ms": {"p99": 2000, "mean": 500, "P99.9": 3000, "p50": 300},
                                    "tpot_ms": 80})
    assert slo.ttft_ms == {"p99": 2000.0, "mean": 500.0, "p99.9": 3000.0, "median": 300.0}
    assert slo.tpot_ms == {"p99": 80.0}
    assert slo.required_percentiles() == [99.0, 99.9]


@pytest.mark.parametrize("section, needle", [
    ({"ttft_ms": {"q99": 1}}, "slo.ttft_ms: Value error, unknown statistic 'q99'"),
    ({"ttft_ms": {"p99": -1}}, "must be a positive number"),
    ({"itl_ms": {"p101": 5}}, "unknown statistic"),
    ({"preset": "mlperf"}, "unknown preset 'mlperf'"),
    ({"tpot": {"p99": 1}}, "slo.tpot: unknown key (did you mean: tpot_ms?)"),
    ({"fluidity": {"prefill_deadline_ms": 100, "prefill_slack_ms": 300}}, "either prefill_deadline_ms"),
    ({"fluidity": {"target": 1.5}}, "slo.fluidity.target"),
    ({"goodput": {"min_fraction": 0.9}}, "at least one of ttft_ms"),
])
def test_bad_sections_name_the_key(section, needle):
    with pytest.raises(ConfigError) as exc:
        parse_experiment({"model": "m", "hardware": "h", "slo": section}, "x.yaml")
    assert needle in str(exc.value)
    assert str(exc.value).startswith("x.yaml: slo")


def test_mlperf_presets_come_from_the_scenarios_table():
    for variant in ("server", "interactive"):
        limits = MLPERF_LIMITS_MS[("llama3.1-8b", variant)]
        slo = resolve_slo({"preset": f"mlperf-{variant}"}, "meta-llama/Llama-3.1-8B-Instruct")
        assert slo.ttft_ms == {"p99": limits["ttft_ms"]}
        assert slo.tpot_ms == {"p99": limits["tpot_ms"]}
    # an explicit key overrides the preset's bound on the same statistic, others are added
    slo = resolve_slo({"preset": "mlperf-server", "tpot_ms": {"p99": 50, "mean": 20}}, "llama-2-70b")
    assert slo.tpot_ms == {"p99": 50.0, "mean": 20.0}
    assert slo.ttft_ms == {"p99": MLPERF_LIMITS_MS[("llama2-70b", "server")]["ttft_ms"]}


def test_mlperf_preset_for_a_model_without_limits_is_a_clear_error():
    with pytest.raises(ConfigError, match="MLPerf has no interactive latency limits for model 'mixtral-8x7b'"):
        resolve_slo({"preset": "mlperf-interactive"}, "mixtral-8x7b")


def test_metron_preset_is_etalons_deadline_mode():
    slo = resolve_slo({"preset": "metron-default", "fluidity": {"target": 0.95}})
    fl = slo.fluidity
    assert (fl.decode_deadline_ms, fl.prefill_slack_ms, fl.percentile, fl.target) == (30.0, 300.0, 99.0, 0.95)


def _summary(**kw):
    base = {"completed": 100, "num_requests": 100, "unfinished": 0, "rejected": 0,
            "p99_ttft_ms": 1500.0, "mean_ttft_ms": 400.0, "p99_tpot_ms": 120.0,
            "p99_fluidity_miss_rate": 0.1, "slo_attainment": 0.97}
    base.update(kw)
    return base


def test_evaluate_reports_each_criterion_and_the_binding_one():
    slo = {"ttft_ms": {"p99": 2000, "mean": 500}, "tpot_ms": {"p99": 100},
           "fluidity": {"decode_deadline_ms": 30}, "goodput": {"ttft_ms": 500, "min_fraction": 0.95}}
    out = evaluate_slo(_summary(), slo)
    by_name = {c["name"]: c for c in out["criteria"]}
    assert by_name["p99_tpot_ms"]["passed"] is False and by_name["p99_tpot_ms"]["ratio"] == pytest.approx(1.2)
    assert by_name["p99_ttft_ms"]["passed"] is True
    # P99 miss rate exactly 0.1 against 1 − 0.9 (= 0.09999999999999998 in binary): equality passes
    assert by_name["p99_fluidity_miss_rate"]["passed"] is True
    assert by_name["slo_attainment"]["passed"] is True and by_name["slo_attainment"]["op"] == ">="
    assert out["passed"] is False and out["failed"] == ["p99_tpot_ms"]
    assert out["binding"] == "p99_tpot_ms"


def test_binding_when_everything_passes_is_the_tightest():
    out = evaluate_slo(_summary(p99_tpot_ms=90.0), {"ttft_ms": {"p99": 2000}, "tpot_ms": {"p99": 100}})
    assert out["passed"] is True and out["binding"] == "p99_tpot_ms"


def test_missing_values_and_backlog_fail():
    out = evaluate_slo(_summary(p99_ttft_ms=None, unfinished=3), {"ttft_ms": {"p99": 2000}})
    assert set(out["failed"]) == {"p99_ttft_ms", "unfinished_fraction"}
    out = evaluate_slo(_summary(unfinished=3), {"ttft_ms": {"p99": 2000}, "max_unfinished_fraction": 0.05})
    assert out["passed"] is True
    out = evaluate_slo(_summary(completed=0), {"ttft_ms": {"p99": 2000}})
    assert "completed" in out["failed"]


def test_preset_survives_config_round_trip():
    """A config rebuilt from its dict (sweeps, capacity probes) keeps the preset's bounds."""
    from sim.config import parse_experiment, with_overrides

    cfg = parse_experiment({"model": "llama-3.1-8b", "hardware": "h100-sxm",
                            "workload": {"num_requests": 10, "arrival": {"process": "poisson", "rate": 1.0},
                                         "input_tokens": {"dist": "fixed", "value": 10},
                                         "output_tokens": {"dist": "fixed", "value": 10}},
                            "slo": {"preset": "mlperf-interactive"}})
    again = with_overrides(cfg, {"workload.num_requests": 20})
    bounds = resolve_slo(again.slo, "llama-3.1-8b").latency_bounds()
    assert bounds == {"ttft": {"p99": 500.0}, "tpot": {"p99": 30.0}}
