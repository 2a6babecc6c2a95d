"""simctl compare reads the exports users already have: SGLang bench_serving JSONL, AIPerf per-request
profile_export.jsonl, vLLM rate=inf results; and says when the two sides are not comparable."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.config import load_experiment, with_overrides
from sim.errors import SimctlError
from sim.fidelity.compare import (
    chunked_streaming,
    compare,
    compare_paths,
    load_benchmark,
)

EXPORTS = Path(__file__).parent / "data" / "exports"
SGLANG = EXPORTS / "sglang_llama33_70b_h200_online.jsonl"
AIPERF = EXPORTS / "aiperf_run1_profile_export_head.jsonl"
QUICKSTART = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quick")
    sim.run(with_overrides(load_experiment(QUICKSTART), {"workload.num_requests": 60}), out_dir=out)
    return out


def test_sglang_runs_are_read_with_vllm_key_names() -> None:
    res = load_benchmark(SGLANG)
    assert res.format == "sglang-bench"
    # the last run of the file (the most recent append): ShareGPT at 8 req/s, values as written
    assert res.summary["mean_e2el_ms"] == pytest.approx(5302.550664339797)
    assert res.summary["median_e2el_ms"] == pytest.approx(3291.7507080128416)
    assert res.summary["median_ttft_ms"] == pytest.approx(83.16566958092153)
    assert res.summary["completed"] == 2400
    assert res.setup["request_rate"] == 8.0
    assert any("7 SGLang runs" in n for n in res.notes)


def test_aiperf_records_become_requests(tmp_path: Path) -> None:
    res = load_benchmark(AIPERF)
    assert res.format == "aiperf-records"
    assert len(res.requests) == 2  # two cancelled records are left out
    assert res.summary["failed"] == 2
    r = res.requests.iloc[0]
    assert r["ttft_s"] == pytest.approx(1.680543782)
    assert r["e2el_s"] == pytest.approx(7.936968269)
    assert r["input_tokens"] == 550 and r["output_tokens"] == 193
    assert res.itls_s is not None and len(res.itls_s) == 2 * 192
    # TTFT + Σ gaps = request latency, so the pooled ITL mean is the records' own
    assert res.summary["mean_itl_ms"] == pytest.approx(1e3 * float(np.mean(res.itls_s)))


def test_compare_reads_both_real_exports(sim_dir: Path) -> None:
    for path in (SGLANG, AIPERF):
        comp = compare_paths(sim_dir, path)
        assert comp.rows
        # the quickstart run drives 60 requests, the exports thousands / two: said, not hidden
        assert any(n.startswith("warning: completed requests differ") for n in comp.notes)


def _vllm_detailed(n: int, gaps: list[float], **extra) -> dict:
    return {"ttfts": [0.05] * n, "itls": [list(gaps) for _ in range(n)], "input_lens": [100] * n,
            "output_lens": [len(gaps) + 1] * n, "errors": [""] * n, "mean_ttft_ms": 50.0, **extra}


def test_vllm_rate_inf_result_without_start_times(tmp_path: Path) -> None:
    """--request-rate inf: every request sent at t = 0, so the duration is the slowest request."""
    p = tmp_path / "vllm.json"
    p.write_text(json.dumps(_vllm_detailed(4, [0.01] * 9, request_rate="inf", duration=123.0)))
    res = load_benchmark(p)
    assert (res.requests["arrival_s"] == 0).all()
    assert res.summary["duration"] == 123.0  # vLLM's own measured duration is kept


def test_chunked_streaming_is_named_and_kept_out_of_the_headline(tmp_path: Path, sim_dir: Path) -> None:
    gaps = [0.0, 0.0, 0.0, 0.04] * 5  # three of four tokens arrive in the same chunk
    assert chunked_streaming(np.array(gaps))
    assert not chunked_streaming(np.array([0.007] * 20))
    p = tmp_path / "chunked.json"
    p.write_text(json.dumps(_vllm_detailed(6, gaps)))
    comp = compare_paths(sim_dir, p)
    itl = [r for r in comp.rows if r["metric"].endswith("_itl_ms")]
    assert itl and all(r.get("excluded") for r in itl)
    d = comp.to_dict()
    kept = [abs(r["rel_error"]) for r in comp.rows if r["rel_error"] is not None and not r.get("excluded")]
    assert d["median_abs_rel_error"] == pytest.approx(float(np.median(kept)))
    assert any("not comparable" in n for n in comp.notes)


def test_setup_mismatch_warnings(sim_dir: Path, tmp_path: Path) -> None:
    p = tmp_path / "other.json"
    p.write_text(json.dumps({**_vllm_detailed(60, [0.007] * 127), "model_id": "meta-llama/Llama-2-70b-hf",
                             "request_rate": 2.0, "max_concurrency": 8}))
    notes = compare_paths(sim_dir, p).notes
    assert any("different models" in n for n in notes)
    assert any("request rate differs" in n for n in notes)
    assert any("max concurrency differs" in n for n in notes)
    same = tmp_path / "same.json"
    same.write_text(json.dumps({**_vllm_detailed(60, [0.007] * 127), "model_id": "meta-llama/Llama-3.1-8B",
                                "request_rate": 8.0}))
    assert not [n for n in compare_paths(sim_dir, same).notes if "different models" in n or "rate differs" in n]


@pytest.mark.parametrize("text,needle", [('{"a": 1}\n{not json\n', "line 2"), ('[1]\n', "line 1"),
                                         ('{"a": 1}\n', "unrecognised JSON Lines"), ("\n\n", "no JSON objects")])
def test_bad_jsonl_is_refused_with_the_line(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    with pytest.raises(SimctlError, match=needle):
        load_benchmark(p)


def test_compare_object_excludes_nothing_by_default(sim_dir: Path) -> None:
    comp = compare(load_benchmark(AIPERF), load_benchmark(AIPERF))
    assert all(r["rel_error"] == 0 for r in comp.rows if r["rel_error"] is not None)
