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


def test_autoscale_diurnal_example_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        main(["run", str(EXPERIMENTS / "autoscale_diurnal.yaml"), "--out", str(tmp_path / "r")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = tmp_path / "r"
    s = json.loads((out / "summary.json").read_text())
    a = s["autoscaling"]
    req = pd.read_parquet(out / "requests.parquet")
    iv = pd.read_parquet(out / "fleet_intervals.parquet")
    units = pd.read_parquet(out / "fleet_replicas.parquet")
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
