"""The workload examples in experiments/ run end to end (from another working directory) and show
what they are meant to show. Assertions are about the workload and robust orderings, not pinned
latencies, so cost-model calibration changes do not break them."""
from __future__ import annotations

from pathlib import Path

import pytest

from sim import api
from workloads.scenarios import mlperf_validity

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_poisson_chat_runs():
    r = api.run(EXPERIMENTS / "poisson_chat.yaml")
    s = r.summary
    assert s["completed"] == 1000
    assert s["request_throughput"] == pytest.approx(6.0, rel=0.15)
    assert r.meta["workload"]["classes"][0]["joint_dataset_pairs"] is True


def test_azure_replay_1x_and_2x():
    one = api.run(EXPERIMENTS / "azure_conv_replay.yaml")
    two = api.run(EXPERIMENTS / "azure_conv_replay_2x.yaml")
    n = len(one.requests)
    assert n == len(two.requests) and 400 < n < 520
    assert (one.requests["status"] == "completed").all() and (two.requests["status"] == "completed").all()
    assert one.requests["arrival_s"].max() == pytest.approx(2 * two.requests["arrival_s"].max(), rel=1e-9)
    assert two.summary["request_throughput"] > 1.7 * one.summary["request_throughput"]


def test_mlperf_server_example_is_invalid_only_for_its_length():
    r = api.run(EXPERIMENTS / "mlperf_server_llama2_70b.yaml")
    v = mlperf_validity("mlperf-server", "llama-2-70b", r.requests)
    assert v["early_stopping_min_queries"] >= 459
    assert v["failed_rules"] and all("600 s" in rule for rule in v["failed_rules"]), v


def test_closed_loop_sweep_throughput_grows_with_clients(tmp_path):
    df = api.sweep(EXPERIMENTS / "closed_loop_sweep.yaml", tmp_path / "out").sort_values("workload.arrival.clients")
    assert list(df["workload.arrival.clients"]) == [1, 4, 16, 64] and (df["status"] == "ok").all()
    tput = df["request_throughput"].to_numpy()
    assert all(b > a for a, b in zip(tput, tput[1:]))


def test_shared_prefix_caching_cuts_ttft(tmp_path):
    df = api.sweep(EXPERIMENTS / "shared_prefix.yaml", tmp_path / "out").set_index("engine.enable_prefix_caching")
    assert (df["status"] == "ok").all()
    assert df.loc[True, "prefix_cache_hit_rate"] > 0.5 > df.loc[False, "prefix_cache_hit_rate"]
    assert df.loc[True, "mean_ttft_ms"] < 0.5 * df.loc[False, "mean_ttft_ms"]
