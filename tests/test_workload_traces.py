"""Trace replay: the Azure traces replay with their real counts and durations; speedup, windows and
caps; length-only traces take arrivals from a process; malformed traces name file, row and column."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from sim.errors import TraceError
from tests.test_workload_helpers import DATA, make, run
from workloads import WorkloadConfig
from workloads.traces import load_trace


def _trace(path, **extra):
    return make({"trace": {"path": str(path), **extra}})


def test_azure_conv_full_replay():
    w = _trace(DATA / "AzureLLMInferenceTrace_conv.csv")
    specs = w.specs
    assert len(specs) == 19_366
    assert specs[0].arrival_s == 0.0
    span = specs[-1].arrival_s
    assert span == pytest.approx(3501.72, abs=0.01)  # ~58 min
    assert 57 * 60 < span < 59 * 60
    assert (specs[0].num_prompt_tokens, specs[0].max_output_tokens) == (374, 44)
    d = w.describe()
    assert d["kind"] == "trace" and d["trace"]["rows"] == 19_366 and d["num_requests"] == 19_366


def test_azure_code_full_replay():
    specs = _trace(DATA / "AzureLLMInferenceTrace_code.csv").specs
    assert len(specs) == 8_819
    assert 56 * 60 < specs[-1].arrival_s < 58 * 60
    assert np.all(np.diff([s.arrival_s for s in specs]) >= 0)


def test_speedup_window_and_caps():
    path = DATA / "AzureLLMInferenceTrace_conv.csv"
    full = _trace(path).specs
    double = _trace(path, speedup=2.0).specs
    assert len(double) == len(full)
    assert all(b.arrival_s == pytest.approx(a.arrival_s / 2) for a, b in zip(full[:100], double[:100]))
    window = _trace(path, duration_s=120).specs
    assert window[-1].arrival_s < 120 and len(window) == sum(1 for s in full if s.arrival_s < 120)
    late = _trace(path, start_s=600, duration_s=60).specs
    expect = [s for s in full if 600 <= s.arrival_s < 660]
    assert len(late) == len(expect) and late[0].arrival_s == pytest.approx(expect[0].arrival_s - 600)
    assert len(_trace(path, max_requests=10).specs) == 10
    cfg = WorkloadConfig.model_validate({"trace": {"path": str(path), "duration_s": 120}})
    assert cfg.scale_rate(2.0).trace.speedup == 2.0
    assert make(cfg.with_speedup(2.0).model_dump()).specs[-1].arrival_s < 60


def test_relative_path_resolves_against_base_dir(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_time_s,input_tokens,output_tokens\n0.5,10,5\n1.5,20,6\n")
    w = make({"trace": {"path": "t.csv"}}, base_dir=tmp_path)
    assert [(s.arrival_s, s.num_prompt_tokens, s.max_output_tokens) for s in w.specs] == [(0.5, 10, 5), (1.5, 20, 6)]
    assert len(run(w).sent) == 2


def test_lengths_only_trace_with_poisson_arrivals(tmp_path):
    p = tmp_path / "vidur.csv"
    p.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n100,10,110,10\n200,20,220,10\n300,30,330,10\n")
    w = make({"trace": {"path": str(p)}, "arrival": {"process": "poisson", "rate": 4}, "num_requests": 7})
    assert [s.num_prompt_tokens for s in w.specs] == [100, 200, 300, 100, 200, 300, 100]  # rows in order, wrapping
    with pytest.raises(TraceError, match="no arrival-time column"):
        make({"trace": {"path": str(p)}})


def test_jsonl_gzip_and_column_mapping(tmp_path):
    p = tmp_path / "t.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        for i in range(5):
            fh.write(json.dumps({"t_ms": 1000 * i, "p": 10 + i, "o": 3}) + "\n")
    w = make({"trace": {"path": str(p), "time_unit": "ms", "columns": {"arrival": "t_ms", "input_tokens": "p", "output_tokens": "o"}}})
    assert [s.arrival_s for s in w.specs] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("content, needles", [
    ("arrival_time_s,input_tokens\n0,5\n", ["missing column for output_tokens"]),
    ("arrival_time_s,input_tokens,output_tokens\n0,5,5\n-1,5,5\n", ["row 2 (line 3)", "arrival_time_s", "negative"]),
    ("arrival_time_s,input_tokens,output_tokens\n0,5,5\n3,5,5\n2,5,5\n", ["row 3 (line 4)", "before the previous"]),
    ("arrival_time_s,input_tokens,output_tokens\n0,5,5\n1,5.5,5\n", ["row 2 (line 3)", "input_tokens", "whole number"]),
    ("arrival_time_s,input_tokens,output_tokens\n0,5,abc\n", ["row 1 (line 2)", "output_tokens", "not a number"]),
    ("arrival_time_s,input_tokens,output_tokens\n0,5,0\n", ["row 1 (line 2)", "output_tokens", "≥ 1"]),
    ("arrival_time_s,input_tokens,output_tokens\n0,5,5\nxyz,5,5\n", ["row 2 (line 3)", "arrival_time_s"]),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,5,5\nnot a date,5,5\n", ["row 2 (line 3)", "TIMESTAMP"]),
    ("", ["empty"]),
    ("arrival_time_s,input_tokens,output_tokens\n", ["no rows"]),
])
def test_bad_traces_name_file_row_and_column(tmp_path, content, needles):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(TraceError) as exc:
        load_trace(p)
    msg = str(exc.value)
    assert str(p) in msg
    for needle in needles:
        assert needle in msg, msg


def test_bad_jsonl_line_and_missing_file(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"arrival_time_s": 0, "input_tokens": 1, "output_tokens": 1}\n{oops\n')
    with pytest.raises(TraceError, match=r"bad.jsonl: line 2"):
        load_trace(p)
    with pytest.raises(TraceError, match="no such trace file"):
        load_trace(tmp_path / "missing.csv")


def test_trace_config_conflicts():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="trace and classes"):
        WorkloadConfig.model_validate({"trace": {"path": "x.csv"}, "classes": [{"name": "a", "input_tokens": 1, "output_tokens": 1}]})
    with pytest.raises(ValidationError, match="open-loop"):
        WorkloadConfig.model_validate({"trace": {"path": "x.csv"}, "arrival": {"process": "closed", "clients": 2}, "num_requests": 3})
