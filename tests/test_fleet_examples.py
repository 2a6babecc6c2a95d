"""The fleet examples end to end: experiments/autoscale_diurnal.yaml (simctl run + report) and
experiments/plan_two_gpus.yaml (simctl plan on two GPU types, reduced size)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.cli import main

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _run_fleet_example(tmp_path, monkeypatch, example: str):
    """``simctl run`` of an autoscaling example (with its report): the output directory, the summary,
    and the requests, per-interval and per-unit tables."""
    monkeypatch.chdir(tmp_path)
    try:
        main(["run", str(EXPERIMENTS / example), "--out", str(tmp_path / "r")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = tmp_path / "r"
    s = json.loads((out / "summary.json").read_text())
    return (out, s, pd.read_parquet(out / "requests.parquet"), pd.read_parquet(out / "fleet_intervals.parquet"),
            pd.read_parquet(out / "fleet_replicas.parquet"))


def test_autoscale_diurnal_example_cli(tmp_path, monkeypatch):
    out, s, req, iv, units = _run_fleet_example(tmp_path, monkeypatch, "autoscale_diurnal.yaml")
    a = s["autoscaling"]
    assert (req.status == "completed").all()  # drains lose nothing
    assert iv.arrivals.sum() == len(req)
    # the fleet follows the day: more replicas at the peaks than at the trough
    assert a["peak_replicas_ready"] >= 2 and a["num_scale_ups"] >= 2 and a["num_drains"] >= 1
    assert a["gpu_hours"] == pytest.approx(a["mean_gpus"] * a["span_s"] / 3600)
    assert a["usd_on_demand"] == pytest.approx(a["gpu_hours"] * 2.69)  # the H100 profile's price
    assert a["reserved_plus_on_demand"]["usd"] <= a["usd_on_demand"]  # reserving ≥ 0 GPUs at a lower price
    # cold start = engine init + 141 GB of weights at 5 GB/s
    weights = units.loc[units.kind == "cold", "cold_start_s"]
    assert np.allclose(weights, 20 + a["provisioning"]["weight_bytes"] / 5e9)
    assert a["cold_start_requests"] > 0
    assert s["num_gpus"] == 4 * a["peak_replicas_billed"]  # top-level cost keys price the peak fleet
    html = (out / "report.html").read_text()
    assert "Fleet over time" in html
    assert (out / "report_files" / "fleet_load_replicas.png").is_file()
    assert (out / "report_files" / "fleet_latency.png").is_file()


def test_plan_two_gpu_types_reduced(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        main(["plan", str(EXPERIMENTS / "plan_two_gpus.yaml"), "--jobs", "2", "--out", str(tmp_path)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "cheapest meeting the SLO" in capsys.readouterr().out
    res = json.loads((tmp_path / "plan.json").read_text())
    md = (tmp_path / "plan.md").read_text()
    assert "| hardware=a100-sxm-80gb |" in md and "lower bound" in md
    rows = {r["name"]: r for r in res["candidates"]}
    assert set(rows) == {"hardware=h100-sxm", "hardware=a100-sxm-80gb"}
    for r in rows.values():
        assert r["status"] == "ok", r.get("reason")
        o, f, a = r["oracle"], r["fixed"], r["autoscaled"]
        assert o["gpu_hours"] <= f["gpu_hours"] + 1e-9 and o["gpu_hours"] <= a["gpu_hours"] + 1e-9  # a lower bound
        assert f["slo_passed"]  # sized for the peak at a capacity that met the SLO
        assert f["replicas"] == int(np.ceil(o["peak_rate"] / r["replica_capacity_rps"] - 1e-9))
    # an H100 replica holds more of this traffic than an A100 one
    assert rows["hardware=h100-sxm"]["replica_capacity_rps"] > rows["hardware=a100-sxm-80gb"]["replica_capacity_rps"]
    assert res["recommended"] in rows and res["recommended_fleet"] in ("fixed", "autoscaled")


def test_autoscale_dp_moe_example_cli(tmp_path, monkeypatch):
    """experiments/autoscale_dp_moe.yaml: the scale unit is a DP instance of two lockstep ranks (EP2).
    Both ranks of an instance take traffic only between its ready and drain times, GPUs are counted per
    rank, and the cold start loads both ranks' weights: each rank holds the non-expert weights and half
    of the experts (Qwen3-30B-A3B: 48 layers × 128 experts × 3 × 2048 × 768 expert parameters of
    30,532,122,624 in all), so the instance loads total + non-expert parameters, in bf16."""
    out, s, req, iv, units = _run_fleet_example(tmp_path, monkeypatch, "autoscale_dp_moe.yaml")
    a = s["autoscaling"]
    assert (req.status == "completed").all() and iv.arrivals.sum() == len(req)
    assert a["gpus_per_replica"] == 2
    assert a["peak_replicas_ready"] >= 3 and a["num_scale_ups"] >= 2 and a["num_drains"] >= 1
    assert a["peak_gpus"] == 2 * a["peak_replicas_billed"] and s["num_gpus"] == a["peak_gpus"]
    assert a["gpu_hours"] == pytest.approx(a["mean_gpus"] * a["span_s"] / 3600)
    total, experts = 30_532_122_624, 48 * 128 * 3 * 2048 * 768
    weight_bytes = 2 * (total + (total - experts))
    assert a["provisioning"]["weight_bytes"] == weight_bytes
    assert np.allclose(units.loc[units.kind == "cold", "cold_start_s"], 20 + weight_bytes / 5e9)
    for u in units.itertuples():  # an instance's two ranks are replicas u.replica and u.replica + 1
        on = req[req.replica.isin([u.replica, u.replica + 1])]
        assert set(on.replica) == {u.replica, u.replica + 1}  # both ranks served
        assert (on.arrival_s >= u.ready_s).all()
        if np.isfinite(u.drain_s):
            assert (on.arrival_s < u.drain_s).all()
    assert a["min_interval_slo_attainment"] >= 0.9
    assert "Fleet over time" in (out / "report.html").read_text()
