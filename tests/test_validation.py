"""The validation suite's plumbing: bundled runs, stage windows, prefix model, error tables.

The replays here use a stand-in simulator (measured latencies × a factor), so the arithmetic of the
error table is checked exactly and fast; the real replay runs from benchmarks/validate.py.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest

from sim.errors import ConfigError
from sim.fidelity import validate as val


def scaled_replay(factor: float):
    def replay(profile, case):
        m = case.measured
        return pd.DataFrame({"arrival_s": m["arrival_s"], "input_tokens": m["input_tokens"],
                             "output_tokens": m["output_tokens"], "ttft_s": m["ttft_s"] * factor,
                             "e2el_s": m["e2el_s"] * factor})
    return replay


def test_bundled_runs_and_stages():
    runs = val.load_runs()
    assert len(runs) == 4
    by = {r.short_name: r for r in runs}
    code = by["llama-2-7b-tp1-codegen"]
    assert code.tp == 1 and code.measured_kv_blocks == 7462 and code.max_num_batched_tokens == 2048
    assert [(s.rate_rps, s.first, s.count) for s in code.stages] == [(5.0, 0, 3000), (10.0, 3000, 6000)]
    assert by["codellama-34b-tp2-general"].tp == 2
    trace = code.trace()
    assert len(trace) == 9000 and set(trace["stage"]) == {0, 1}
    cfg = code.experiment()
    assert cfg.engine.enable_prefix_caching and cfg.engine.max_num_seqs == 128 and cfg.engine.max_model_len == 4096
    assert val.load_runs(select=["roleplay"])[0].short_name == "llama-2-7b-tp1-roleplay"
    with pytest.raises(ConfigError, match="no calibration run matches"):
        val.load_runs(select=["nope"])


def test_stage_statistics_match_measured_summary():
    """Recomputing a stage's statistics from its rows reproduces measured_summary.csv."""
    summary = pd.read_csv(val.DATA_DIR / "measured_summary.csv")
    for run in val.load_runs():
        trace = run.trace()
        for st in run.stages:
            row = summary[(summary["experiment"] == run.run_id) & (summary["stage"] == st.index)].iloc[0]
            m = val._metrics(trace[trace["stage"] == st.index])
            assert m["mean_e2el_ms"] == pytest.approx(row["e2e_mean_ms"], rel=2e-3)
            assert m["mean_ttft_ms"] == pytest.approx(row["ttft_mean_ms"], rel=2e-3)
            assert m["mean_itl_ms"] == pytest.approx(row["itl_s2r_mean_ms"], rel=2e-3)


def test_prefix_pool_matches_the_traces_period():
    run = val.load_runs(select=["roleplay"])[0]
    t = val.add_prefix_model(run.trace(), run, "pool")
    assert t["prompt_id"].max() == 99 and t["prefix_group"].max() == 9
    # the same prompt id has the same length in nearly every row (the generator cycles 100 prompts)
    same = t.groupby("prompt_id")["input_tokens"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert same.mean() > 0.95
    assert "prompt_id" not in val.add_prefix_model(run.trace(), run, "none")


def test_window_cases_score_only_the_window():
    run = val.load_runs(select=["codegen"])[0]
    cases = val.replay_cases(run, window_s=30, lead_s=10)
    assert len(cases) == 2
    c1 = cases[1]
    m = c1.measured
    assert m["arrival_s"].iloc[0] == 0.0
    assert (~m["scored"]).sum() > 0  # lead-in rows from stage 0
    assert set(m.loc[m["scored"], "stage"]) == {1}
    assert set(m.loc[~m["scored"], "stage"]) == {0}
    scored = m[m["scored"]]
    assert scored["arrival_s"].max() - scored["arrival_s"].min() <= 30


def test_validate_error_table_with_stand_in():
    runs = val.load_runs(select=["codegen", "roleplay"])
    rep = val.validate(runs, profile=object(), window_s=20, replay=scaled_replay(1.05))
    table = rep.run_table()
    assert set(table.index) == {"llama-2-7b-tp1-codegen", "llama-2-7b-tp1-roleplay"}
    for metric in ("mean_ttft_ms", "p99_e2el_ms", "mean_e2el_ms", "mean_itl_ms"):
        assert table[metric].to_numpy() == pytest.approx(0.05)
    assert set(rep.frame()["stage"]) == {"all", "0", "1"}
    checks = rep.target_check()
    assert checks["mean_e2el_ms"]["met"] and checks["mean_ttft_ms"]["met"]
    md = rep.to_markdown()
    assert "| llama-2-7b-tp1-codegen |" in md and "median" in md
    d = rep.to_dict()
    assert math.isclose(d["median_ape"]["mean_ttft_ms"], 0.05)


def test_ape():
    assert val.ape(105, 100) == pytest.approx(0.05)
    assert math.isnan(val.ape(1, 0))


def test_output_count_repair():
    run = val.load_runs(select=["codegen"])[0]
    t = val.repair_output_lengths(run.trace(), run)
    low = t["recorded_output_tokens"] < 0.9 * run.requested_output_tokens
    assert low.mean() > 0.2  # a third of the 7B rows lost their count
    assert (t.loc[low, "output_tokens"] == 248).all()  # the run's typical count (requested 247)
    assert (t.loc[~low, "output_tokens"] == t.loc[~low, "recorded_output_tokens"]).all()
    # the evidence: decode time does not depend on the recorded count
    dec = t["e2el_s"] - t["ttft_s"]
    assert dec[low].mean() == pytest.approx(dec[~low].mean(), rel=0.05)
    assert "recorded_output_tokens" not in val.repair_output_lengths(run.trace(), run, "recorded")


def test_calibration_replay_example_runs_and_compares(tmp_path):
    """experiments/calibration-replay-llama2-7b.yaml: simulate, then compare with the measured requests."""
    from sim.api import run
    from sim.fidelity.compare import compare_paths
    root = val.DATA_DIR.parents[2]
    res = run(root / "experiments" / "calibration-replay-llama2-7b.yaml", out_dir=tmp_path / "sim")
    assert res.summary["completed"] == 509
    comp = compare_paths(tmp_path / "sim", root / "experiments" / "data" / "llama2-7b-h100-roleplay-90s.csv")
    rows = {r["metric"]: r["rel_error"] for r in comp.rows}
    # tolerances, not pins: the bundled profile is within these of the real run (docs/validation.md)
    assert abs(rows["mean_e2el_ms"]) < 0.25
    assert abs(rows["mean_itl_derived_ms"]) < 0.25
    assert abs(rows["request_throughput"]) < 0.02
    assert -0.7 < rows["mean_ttft_ms"] < 0.5


def test_fitted_h100_profile_meets_the_latency_targets_on_short_windows():
    """Fidelity regression: the bundled fit (sim/data/calibration/h100_fit.yaml) replayed on the first
    30 s of every load stage of the four real runs. TTFT is left out: docs/validation.md explains the
    engine-side gap (about 1.4 iterations + 3 ms) that no hardware parameter can close."""
    from hwprofiles import load_profile
    rep = val.validate(profile=load_profile(str(val.DATA_DIR / "h100_fit.yaml")), window_s=30)
    checks = rep.target_check()
    for metric in ("mean_e2el_ms", "mean_itl_ms", "p99_e2el_ms", "kv_blocks"):
        assert checks[metric]["met"], (metric, checks[metric])


def test_cli_validate_writes_the_report(tmp_path, capsys):
    import json

    from sim.cli import main
    out = tmp_path / "v.json"
    main(["validate", "--runs", "roleplay", "--window-s", "10", "--hardware",
          str(val.DATA_DIR / "h100_fit.yaml"), "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["settings"]["window_s"] == 10 and set(data["targets"]) == set(val.TARGETS)
    assert out.with_suffix(".md").read_text().startswith("| run |")
    assert "absolute percentage error" in capsys.readouterr().out
