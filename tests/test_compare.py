"""simctl compare: format detection, per-request statistics, relative errors, outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.errors import ConfigError, TraceError
from sim.fidelity.compare import (
    compare,
    compare_paths,
    derived_itl_ms,
    load_benchmark,
    load_simulated,
    summarize_requests,
    write_comparison,
)

DATA = Path(__file__).parent / "data" / "calibration"
TRACE = DATA / "roleplay_first300.csv"


def _sim_dir(tmp_path: Path, measured: pd.DataFrame, scale: float = 1.1) -> Path:
    """A fake simctl result directory whose latencies are ``scale`` × the measured ones."""
    d = tmp_path / "sim"
    d.mkdir()
    n = len(measured)
    records = pd.DataFrame({
        "request_id": np.arange(n), "status": "completed", "arrival_s": measured["arrival_s"],
        "num_prompt_tokens": measured["input_tokens"], "num_output_tokens": measured["output_tokens"],
        "ttft_s": measured["ttft_s"] * scale, "e2el_s": measured["e2el_s"] * scale,
    })
    records.to_parquet(d / "requests.parquet", index=False)
    summary = summarize_requests(load_simulated_frame(records))
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def load_simulated_frame(records: pd.DataFrame) -> pd.DataFrame:
    from sim.fidelity.compare import simulated_requests
    return simulated_requests(records)


def test_csv_statistics_match_numpy():
    res = load_benchmark(TRACE)
    assert res.format == "csv"
    raw = pd.read_csv(TRACE)
    assert res.summary["completed"] == len(raw)
    assert res.summary["mean_ttft_ms"] == pytest.approx(1e3 * raw["ttft_s"].mean())
    assert res.summary["p99_e2el_ms"] == pytest.approx(1e3 * np.percentile(raw["e2e_s"], 99))
    assert res.summary["p90_ttft_ms"] == pytest.approx(1e3 * np.percentile(raw["ttft_s"], 90))
    itl = (raw["e2e_s"].mean() - raw["ttft_s"].mean()) / (raw["output_tokens"].mean() - 1)
    assert res.summary["mean_itl_derived_ms"] == pytest.approx(1e3 * itl)
    tpot = (raw["e2e_s"] - raw["ttft_s"]) / (raw["output_tokens"] - 1)
    assert res.summary["mean_tpot_ms"] == pytest.approx(1e3 * tpot.mean())
    duration = (raw["arrival_time_s"] + raw["e2e_s"]).max() - raw["arrival_time_s"].min()
    assert res.summary["request_throughput"] == pytest.approx(len(raw) / duration)


def test_csv_errors_are_dropped_and_bad_cells_named(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("arrival_time_s,input_tokens,output_tokens,has_error,ttft_s,e2e_s\n"
                 "0,10,5,0,0.1,0.5\n0.1,10,5,1,0,0\n")
    assert load_benchmark(p).summary["completed"] == 1
    p.write_text("arrival_time_s,input_tokens,output_tokens,ttft_s,e2e_s\n0,10,5,0.1,oops\n")
    with pytest.raises(TraceError, match="row 2, column e2el_s"):
        load_benchmark(p)
    p.write_text("arrival_time_s,input_tokens,ttft_s\n0,10,0.1\n")
    with pytest.raises(TraceError, match="missing column"):
        load_benchmark(p)


def test_vllm_detailed_json(tmp_path):
    data = {
        "duration": 10.0, "completed": 2, "request_throughput": 0.2, "output_throughput": 0.6,
        "mean_ttft_ms": 150.0, "median_ttft_ms": 150.0, "p99_ttft_ms": 199.0,
        "ttfts": [0.1, 0.2, 0.0], "itls": [[0.01, 0.02], [0.03, 0.01], []],
        "input_lens": [10, 20, 30], "output_lens": [3, 3, 0], "errors": ["", "", "timeout"],
        "start_times": [100.0, 101.0, 102.0],
    }
    p = tmp_path / "vllm.json"
    p.write_text(json.dumps(data))
    res = load_benchmark(p)
    assert res.format == "vllm-bench-detailed"
    assert len(res.requests) == 2  # the failed request is dropped
    assert res.requests["e2el_s"].tolist() == pytest.approx([0.13, 0.24])
    assert res.requests["arrival_s"].tolist() == pytest.approx([0.0, 1.0])
    assert res.summary["mean_itl_ms"] == pytest.approx(1e3 * np.mean([0.01, 0.02, 0.03, 0.01]))
    assert res.summary["mean_e2el_ms"] == pytest.approx(185.0)
    assert res.summary["p90_ttft_ms"] == pytest.approx(1e3 * np.percentile([0.1, 0.2], 90))


def test_vllm_summary_only_json(tmp_path):
    p = tmp_path / "vllm.json"
    p.write_text(json.dumps({"mean_ttft_ms": 30.0, "p99_ttft_ms": 60.0, "mean_e2el_ms": 2000.0,
                             "request_throughput": 5.0, "date": "x"}))
    res = load_benchmark(p)
    assert res.format == "vllm-bench" and res.requests is None
    assert res.summary["p99_ttft_ms"] == 60.0


def test_genai_perf_json_units(tmp_path):
    data = {
        "time_to_first_token": {"unit": "ns", "avg": 30e6, "p50": 28e6, "p90": 40e6, "p99": 55e6},
        "inter_token_latency": {"unit": "ms", "avg": 10.0, "p50": 9.5, "p99": 20.0},
        "request_latency": {"unit": "ms", "avg": 2000.0, "p50": 1900.0, "p90": 2500.0, "p99": 3000.0},
        "request_throughput": {"unit": "requests/sec", "avg": 5.0},
        "output_token_throughput": {"unit": "tokens/sec", "avg": 1000.0},
    }
    p = tmp_path / "profile_export_genai_perf.json"
    p.write_text(json.dumps(data))
    res = load_benchmark(p)
    assert res.format == "genai-perf"
    assert res.summary["mean_ttft_ms"] == pytest.approx(30.0)
    assert res.summary["p99_ttft_ms"] == pytest.approx(55.0)
    assert res.summary["median_tpot_ms"] == pytest.approx(9.5)  # GenAI-Perf ITL = vLLM TPOT
    assert "mean_itl_ms" not in res.summary
    assert res.summary["output_throughput"] == 1000.0
    # AIPerf nests the same objects under llm_metrics
    p2 = tmp_path / "aiperf.json"
    p2.write_text(json.dumps({"llm_metrics": data}))
    assert load_benchmark(p2).summary["mean_e2el_ms"] == pytest.approx(2000.0)


def test_unknown_format_is_a_clear_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ConfigError, match="unrecognised benchmark format"):
        load_benchmark(p)
    with pytest.raises(ConfigError, match="no such file"):
        load_benchmark(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not a simctl result directory"):
        load_simulated(tmp_path)


def test_compare_relative_errors_and_outputs(tmp_path):
    measured = load_benchmark(TRACE)
    sim_dir = _sim_dir(tmp_path, measured.requests, scale=1.1)
    comp = compare_paths(sim_dir, TRACE)
    rows = {r["metric"]: r for r in comp.rows}
    for key in ("mean_ttft_ms", "p99_ttft_ms", "median_e2el_ms", "p90_e2el_ms", "mean_tpot_ms",
                "mean_itl_derived_ms"):
        assert rows[key]["rel_error"] == pytest.approx(0.1, abs=1e-9), key
    assert "request_throughput" in rows
    js, md = write_comparison(comp, tmp_path / "out" / "compare.json")
    saved = json.loads(js.read_text())
    assert saved["measured"]["format"] == "csv"
    assert saved["median_abs_rel_error"] == pytest.approx(0.1, abs=0.02)
    assert "| mean_ttft_ms |" in md.read_text()


def test_compare_against_summary_only(tmp_path):
    measured = load_benchmark(TRACE)
    sim_dir = _sim_dir(tmp_path, measured.requests, scale=1.0)
    p = tmp_path / "vllm.json"
    p.write_text(json.dumps({"mean_ttft_ms": measured.summary["mean_ttft_ms"] / 2}))
    comp = compare(load_simulated(sim_dir), load_benchmark(p))
    assert [r["metric"] for r in comp.rows] == ["mean_ttft_ms"]
    assert comp.rows[0]["rel_error"] == pytest.approx(1.0)


def test_derived_itl():
    df = pd.DataFrame({"ttft_s": [0.1, 0.3], "e2el_s": [1.1, 2.3], "output_tokens": [11, 21]})
    assert derived_itl_ms(df) == pytest.approx(1e3 * (1.7 - 0.2) / 15)


def test_cli_compare(tmp_path, capsys):
    from sim.cli import main
    measured = load_benchmark(TRACE)
    sim_dir = _sim_dir(tmp_path, measured.requests, scale=0.9)
    out = tmp_path / "c.json"
    main(["compare", str(sim_dir), str(TRACE), "--out", str(out)])
    assert out.is_file() and out.with_suffix(".md").is_file()
    assert "mean_ttft_ms" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(tmp_path / "nope"), str(TRACE)])
    assert exc.value.code == 2
