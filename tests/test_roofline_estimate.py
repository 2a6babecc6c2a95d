"""``simctl estimate``: latency, memory plan and MFU/MBU of one batch."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sim.cli import cli
from sim.commands.estimate import estimate


def test_estimate_json_contents():
    r = CliRunner().invoke(cli, ["estimate", "--model", "llama-2-7b", "--hardware", "H100", "--batch", "16",
                                 "--prompt", "600", "--output", "200", "--max-num-batched-tokens", "2048",
                                 "--max-num-seqs", "128", "--max-model-len", "4096", "--json"])
    assert r.exit_code == 0, r.output
    e = json.loads(r.output)
    plan = e["memory_plan"]
    assert abs(plan["num_kv_blocks"] / 7462 - 1) < 0.03  # the vLLM run's setting
    assert e["max_concurrent_seqs_at_context"] == plan["num_kv_blocks"] // 50
    assert e["prefill"]["iterations"] == 5  # 16 × 600 tokens in chunks of ≤ 2048
    assert e["decode"]["steps"] == 199
    assert e["e2e_latency_s"] == pytest.approx(e["prefill"]["latency_s"] + 199 * e["decode"]["time_per_token_s"])
    assert 0 < e["decode"]["mfu"] < e["prefill"]["mfu"] < 1
    assert 0 < e["prefill"]["mbu"] < e["decode"]["mbu"] < 1
    assert e["calibration_status"] == "partial" and not e["warnings"]


def test_estimate_text_and_uncalibrated_warning():
    r = CliRunner().invoke(cli, ["estimate", "--model", "llama-3.1-8b", "--hardware", "l40s", "--batch", "4",
                                 "--prompt", "512", "--output", "64"])
    assert r.exit_code == 0, r.output
    assert "decode per token" in r.output and "KV cache" in r.output
    assert "assumed efficiencies — uncalibrated" in r.output


def test_estimate_tp_speeds_up_decode_and_fp8_halves_weights():
    one = estimate("llama-3.1-8b", "h100", batch=8, prompt=512, output=32, max_model_len=4096)
    two = estimate("llama-3.1-8b", "h100", tp=2, batch=8, prompt=512, output=32, max_model_len=4096)
    assert two["decode"]["time_per_token_s"] < one["decode"]["time_per_token_s"]
    fp8 = estimate("llama-3.1-8b", "h100", batch=8, prompt=512, output=32, max_model_len=4096, weights_dtype="fp8")
    assert fp8["memory_plan"]["weights_gib"] < 0.6 * one["memory_plan"]["weights_gib"]
    assert fp8["memory_plan"]["num_kv_blocks"] > one["memory_plan"]["num_kv_blocks"]


def test_estimate_batch_beyond_kv_warns():
    e = estimate("llama-2-7b", "a10g", batch=64, prompt=1000, output=100, max_model_len=2048)
    assert any("queue or preempt" in w for w in e["warnings"])


def test_estimate_infeasible_is_one_line_error():
    from sim.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["estimate", "--model", "llama-2-70b", "--hardware", "h100"])
    assert exc.value.code == 2


def test_estimate_rejects_requests_longer_than_max_model_len():
    from sim.errors import ConfigError
    with pytest.raises(ConfigError, match="exceed --max-model-len"):
        estimate("llama-2-7b", "h100", prompt=1000, output=100, max_model_len=512)
