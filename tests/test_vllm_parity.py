"""summary.json and detailed.json carry every key ``vllm bench serve`` writes, with its meaning.

The key list is vLLM's own (``vllm/benchmarks/serve.py``, ``main_async``'s ``result_json`` and
``benchmark``'s ``result``, default --percentile-metrics ttft,tpot,itl plus e2el, --metric-percentiles
99): a result loader written against vLLM's output reads ours unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sim
from sim.config import load_experiment, with_overrides
from sim.measure.metrics import request_token_times
from sim.measure.vllm_compat import DETAILED_KEYS, peak_rates

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

VLLM_SETUP_KEYS = {"backend": str, "model_id": str, "num_prompts": int, "request_rate": (float, str),
                   "burstiness": (float, str), "max_concurrency": (int, type(None))}
VLLM_RESULT_KEYS = {"duration": float, "completed": int, "failed": int, "total_input_tokens": int,
                    "total_output_tokens": int, "request_throughput": float, "output_throughput": float,
                    "total_token_throughput": float, "max_output_tokens_per_s": float,
                    "max_concurrent_requests": int, "request_goodput": (float, type(None))}
VLLM_METRIC_KEYS = [f"{s}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el") for s in ("mean", "median", "std", "p99")]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("q")
    cfg = with_overrides(load_experiment(EXPERIMENTS / "quickstart.yaml"), {"workload.num_requests": 120})
    res = sim.run(cfg, out_dir=out, save_detailed=True, percentiles=[50, 90, 99, 99.9])
    return res, out


def test_summary_has_vllm_keys_with_vllm_types(quick) -> None:
    res, out = quick
    summary = json.loads((out / "summary.json").read_text())
    for key, typ in {**VLLM_SETUP_KEYS, **VLLM_RESULT_KEYS}.items():
        assert key in summary, key
        assert isinstance(summary[key], typ), (key, summary[key])
    for key in VLLM_METRIC_KEYS + ["p99.9_ttft_ms", "p90_e2el_ms"]:
        assert isinstance(summary[key], float), key
    assert summary["backend"] == "simctl" and summary["model_id"] == "llama-3.1-8b"
    assert summary["request_rate"] == 8.0 and summary["burstiness"] == 1.0 and summary["num_prompts"] == 120
    assert summary["failed"] == summary["rejected"] == 0
    assert "date" not in summary and "date" in json.loads((out / "meta.json").read_text())


def test_detailed_file_has_vllm_per_request_lists(quick) -> None:
    res, out = quick
    detailed = json.loads((out / "detailed.json").read_text())
    n = len(res.requests)
    for key in DETAILED_KEYS:
        assert len(detailed[key]) == n, key
    row = 3
    times = request_token_times(res.timeline, row)
    assert detailed["itls"][row] == pytest.approx(np.diff(times).tolist())
    assert detailed["ttfts"][row] == pytest.approx(res.requests["ttft_s"].iloc[row])
    assert detailed["start_times"][row] == pytest.approx(res.requests["arrival_s"].iloc[row])
    assert detailed["output_lens"][row] == res.requests["num_output_tokens"].iloc[row]
    # vLLM's ITL statistics recomputed from the lists equal the summary's
    gaps = np.concatenate([np.asarray(g) for g in detailed["itls"] if g]) * 1e3
    assert float(np.mean(gaps)) == pytest.approx(res.summary["mean_itl_ms"], rel=1e-9)
    assert float(np.percentile(gaps, 99)) == pytest.approx(res.summary["p99_itl_ms"], rel=1e-9)


def _vllm_reference_peaks(starts, latencies, token_times):
    """vLLM's calculate_metrics loop, transcribed (per token and per second, as vLLM does it)."""
    t0 = min(starts)
    n = int(np.ceil(max(s + lat for s, lat in zip(starts, latencies)) - t0)) + 1
    tokens, conc = np.zeros(n), np.zeros(n)
    for s, lat, times in zip(starts, latencies, token_times):
        for t in times:
            b = int(t - t0)
            if 0 <= b < n:
                tokens[b] += 1
        for sec in range(int(s - t0), int(s + lat - t0) + 1):
            conc[sec] += 1
    return float(tokens.max()), int(conc.max())


def test_peak_rates_match_vllms_loop(quick) -> None:
    res, _ = quick
    req = res.requests
    rows = np.flatnonzero(req["status"].to_numpy() == "completed")
    want = _vllm_reference_peaks(req["arrival_s"].to_numpy()[rows], req["e2el_s"].to_numpy()[rows],
                                 [request_token_times(res.timeline, int(r)) for r in rows])
    got = peak_rates(req, res.timeline, rows)
    assert (got["max_output_tokens_per_s"], got["max_concurrent_requests"]) == want
    assert res.summary["max_output_tokens_per_s"] == want[0]


def test_closed_loop_and_constant_setup_keys() -> None:
    cfg = load_experiment(EXPERIMENTS / "closed_loop_sweep.yaml")
    s = sim.run(with_overrides(cfg, {"workload.num_requests": 20, "sweep": None})).summary
    assert s["request_rate"] == "inf" and s["max_concurrency"] == 4  # vLLM: --request-rate inf --max-concurrency 4
    q = with_overrides(load_experiment(EXPERIMENTS / "quickstart.yaml"),
                       {"workload.num_requests": 10, "workload.arrival": {"process": "constant", "rate": 4}})
    assert sim.run(q).summary["burstiness"] == "inf"


def test_mlperf_validity_reported_invalid_for_a_short_server_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sim.cli import cli

    cfg = EXPERIMENTS / "mlperf_server_llama2_70b.yaml"
    r = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "m"), "--no-report",
                                 "--set", "workload.duration_s=15"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert summary["mlperf"]["valid"] is False
    assert any("600 s minimum" in rule for rule in summary["mlperf"]["failed_rules"])
    assert "INVALID" in r.output and "SLO: PASS" not in r.output


def test_progress_callable_and_bar() -> None:
    cfg = with_overrides(load_experiment(EXPERIMENTS / "quickstart.yaml"), {"workload.num_requests": 30})
    seen: list[dict] = []
    sim.run(cfg, progress=seen.append)
    assert seen and seen[-1]["num_ended"] == 30
    from sim.runs.progress import RunProgress

    bar = RunProgress(30, delay_s=0.0)
    bar({"now_s": 1.0, "num_ended": 10})
    bar({"now_s": 2.0, "num_ended": 30})
    assert bar._bar is not None
    bar.close()
