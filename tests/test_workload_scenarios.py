"""MLPerf scenarios: presets, the limits table, LoadGen's early-stopping bound and run validity."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sim.engine.request import RECORD_COLUMNS
from tests.test_workload_helpers import make
from workloads import WorkloadConfig
from workloads.scenarios import (
    MLPERF_LIMITS_MS,
    early_stopping_estimate,
    early_stopping_min_queries,
    mlperf_limits,
    mlperf_model_key,
    mlperf_percentile,
    mlperf_validity,
)


def test_early_stopping_reproduces_459():
    assert early_stopping_min_queries(0) == 459


@pytest.mark.parametrize("t", [0, 1, 2, 5, 10, 37])
def test_early_stopping_is_the_binomial_bound(t):
    """h + t is the smallest n with P(Binomial(n, 0.01) ≤ t) < 0.01 (LoadGen, d = 0, c = 0.99)."""
    n = early_stopping_min_queries(t)
    assert stats.binom.cdf(t, n, 0.01) < 0.01 <= stats.binom.cdf(t, n - 1, 0.01)


def test_early_stopping_grows_with_overlatency():
    values = [early_stopping_min_queries(t) for t in range(0, 60, 5)]
    assert values == sorted(values) and values[-1] > 100 * 50


def test_limits_table_and_model_keys():
    assert MLPERF_LIMITS_MS[("llama2-70b", "server")] == {"ttft_ms": 2000.0, "tpot_ms": 200.0}
    assert MLPERF_LIMITS_MS[("llama3.1-8b", "interactive")] == {"ttft_ms": 500.0, "tpot_ms": 30.0}
    assert mlperf_model_key("llama-2-70b") == "llama2-70b"
    assert mlperf_model_key("meta-llama/Llama-2-70b-chat-hf") == "llama2-70b"
    assert mlperf_model_key("llama-3.1-8b") == "llama3.1-8b"
    assert mlperf_model_key("Llama-3.1-405B-Instruct") == "llama3.1-405b"
    assert mlperf_model_key("mixtral-8x7b") == "mixtral-8x7b"
    assert mlperf_model_key("llama-2-7b") is None
    assert mlperf_limits("llama-3.1-405b", "interactive") == {"ttft_ms": 4500.0, "tpot_ms": 80.0}
    assert mlperf_limits("mixtral-8x7b", "interactive") is None


def test_percentile_is_loadgen_style():
    assert mlperf_percentile(np.arange(100), 0.99) == 99
    assert mlperf_percentile(np.arange(10), 0.9) == 9


def _df(n, ttft=0.5, tpot=0.05, span_s=700.0, status="completed", out_tokens=100):
    arrival = np.linspace(0, span_s, n)
    e2el = ttft + tpot * (out_tokens - 1)
    rows = {c: np.nan for c in RECORD_COLUMNS}
    rows.update({"request_id": np.arange(n), "status": status, "arrival_s": arrival, "ttft_s": ttft, "tpot_s": tpot,
                 "e2el_s": e2el, "finish_s": arrival + e2el, "num_output_tokens": out_tokens})
    return pd.DataFrame(rows)


def test_server_validity_rules():
    ok = mlperf_validity("mlperf-server", "llama-2-70b", _df(1000))
    assert ok["valid"] and ok["failed_rules"] == [] and ok["early_stopping_min_queries"] == 459
    short = mlperf_validity("mlperf-server", "llama-2-70b", _df(1000, span_s=300))
    assert not short["valid"] and "600" in short["reason"]
    few = mlperf_validity("mlperf-server", "llama-2-70b", _df(400))
    assert not few["valid"] and any("early stopping" in r for r in few["failed_rules"])
    slow = _df(1000)
    slow.loc[:30, "ttft_s"] = 3.0
    bad = mlperf_validity("server", "llama-2-70b", slow)
    assert not bad["valid"] and "P99 TTFT" in bad["reason"] and bad["overlatency_ttft"] == 31
    inter = mlperf_validity("mlperf-server-interactive", "llama-2-70b", _df(1000, ttft=0.3, tpot=0.05))
    assert not inter["valid"] and "TPOT" in inter["reason"]  # 50 ms > 40 ms interactive limit
    unknown = mlperf_validity("mlperf-server", "llama-2-7b", _df(1000))
    assert not unknown["valid"] and "no MLPerf" in unknown["reason"]


def test_unfinished_requests_count_as_over_limit():
    df = _df(1000)
    df.loc[:20, "status"] = "unfinished"
    res = mlperf_validity("mlperf-server", "llama-2-70b", df)
    assert res["overlatency_ttft"] == 21 and not res["valid"]


def test_offline_and_singlestream_metrics():
    off = mlperf_validity("mlperf-offline", "llama-2-70b", _df(100, span_s=0.0, out_tokens=50))
    assert off["valid"] and off["tokens_per_s"] == pytest.approx(100 * 50 / (0.5 + 0.05 * 49))
    ss = _df(1000, span_s=700)
    ss["e2el_s"] = np.arange(1000) / 100.0
    res = mlperf_validity("mlperf-singlestream", "llama-3.1-8b", ss)
    assert res["p90_latency_ms"] == pytest.approx(9000.0)
    est, need = early_stopping_estimate(ss["e2el_s"].to_numpy(), 0.90)
    assert est >= 9.0 and res["early_stopping_p90_latency_ms"] == pytest.approx(est * 1e3) and need < 1000
    assert res["valid"]


def test_scenario_presets():
    server = WorkloadConfig.model_validate({"scenario": "mlperf-server", "arrival": {"rate": 2.5}, "input_tokens": 100, "output_tokens": 100})
    assert server.arrival.process == "poisson" and server.duration_s == 600
    offline = WorkloadConfig.model_validate({"scenario": "mlperf-offline", "num_requests": 50, "input_tokens": 100, "output_tokens": 10})
    assert offline.arrival.process == "offline"
    assert all(s.arrival_s == 0 for s in make(offline.model_dump()).specs)
    single = WorkloadConfig.model_validate({"scenario": "mlperf-singlestream", "num_requests": 10, "input_tokens": 100, "output_tokens": 10})
    assert single.arrival.process == "single-stream" and single.arrival.clients == 1
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="uses arrival process 'poisson'"):
        WorkloadConfig.model_validate({"scenario": "mlperf-server", "arrival": {"process": "gamma", "rate": 1}, "input_tokens": 1, "output_tokens": 1})
