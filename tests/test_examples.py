"""Every example in experiments/ runs end to end in CI.

The workload examples are exercised in test_workload_examples.py, the sweep example in
test_sweep_example.py and the calibration replay in test_validation.py; this file covers the README's
quickstart (through the real CLI) and the capacity-search examples, and checks that no example is left
untested. Assertions use tolerances and orderings, not pinned digits.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"


def _cli(args: list[str]) -> None:
    """Run the real CLI entry point; it must succeed (exit status 0 or no exit)."""
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None)


def _simctl_run(tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    _cli(["run", str(EXPERIMENTS / "quickstart.yaml"), "--out", str(out)])
    return out


def test_quickstart_cli_writes_results_and_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples must run from any directory
    a = _simctl_run(tmp_path, "a")
    b = _simctl_run(tmp_path, "b")
    for f in ("summary.json", "requests.parquet", "iterations.parquet", "config.yaml", "meta.json",
              "report.html", "report.md"):
        assert (a / f).is_file(), f
    # same seed ⇒ identical summary.json, byte for byte
    assert (a / "summary.json").read_text() == (b / "summary.json").read_text()
    s = json.loads((a / "summary.json").read_text())
    req = pd.read_parquet(a / "requests.parquet")
    # every request ends exactly once
    assert len(req) == 2000 and req["request_id"].is_unique
    assert (req["status"] == "completed").all() and s["completed"] == 2000
    # offered load 8 req/s is far below one H100's capacity for an 8B model: throughput follows load
    assert s["request_throughput"] == pytest.approx(8.0, rel=0.1)
    assert s["output_throughput"] == pytest.approx(8.0 * 128, rel=0.1)
    # light load: the TTFT is a prefill (tens of ms), and decoding a batch of ~10 on an H100 is
    # memory bound: 16 GB of bf16 weights / 3.35 TB/s ≈ 4.8 ms is a hard floor for TPOT
    assert 4.8 < s["median_tpot_ms"] < 20.0
    assert 5.0 < s["median_ttft_ms"] < 200.0
    assert s["slo"]["passed"] is True
    # Little's law on the run: mean number in system = throughput × mean E2E latency
    it = pd.read_parquet(a / "iterations.parquet")
    busy = (it["time_s"] * (it["num_running"])).sum() / (it["end_s"].max() - it["start_s"].min())
    assert busy == pytest.approx(s["request_throughput"] * s["mean_e2el_ms"] / 1e3, rel=0.1)


CAPACITY_EXAMPLES = {"server": "capacity_llama31_8b_mlperf_server.yaml",
                     "interactive": "capacity_llama31_8b_mlperf_interactive.yaml"}


@pytest.mark.parametrize("variant", ["server", "interactive"])
def test_capacity_examples(tmp_path, variant, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _cli(["capacity", str(EXPERIMENTS / CAPACITY_EXAMPLES[variant]), "--out", str(tmp_path)])
    cap = json.loads((tmp_path / "capacity.json").read_text())
    rate = cap["max_request_rate"]
    assert cap["converged"] and rate is not None
    probes = {p["request_rate"]: p for p in cap["probes"]}
    assert probes[rate]["passed"]  # the reported rate passed its own probe
    failing = [r for r, p in probes.items() if not p["passed"]]
    nxt = min(r for r in failing if r > rate)
    assert (nxt - rate) <= 0.025 * rate + 1e-9  # within tolerance of the first failing probe
    assert cap["binding_constraint"] in ("p99_ttft_ms", "p99_tpot_ms")
    pytest.capacity_rates = getattr(pytest, "capacity_rates", {})
    pytest.capacity_rates[variant] = rate
    if len(pytest.capacity_rates) == 2:
        # the interactive limits (500/30 ms) are strictly tighter than server (2000/100 ms)
        assert pytest.capacity_rates["interactive"] < pytest.capacity_rates["server"]


def test_every_example_is_exercised_by_a_test():
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    missing = [p.name for p in sorted(EXPERIMENTS.glob("*.yaml"))
               if p.name not in tests_text and p.stem not in tests_text]
    assert not missing, f"examples with no end-to-end test: {missing}"


def test_every_example_validates():
    from sim.config import load_experiment
    for p in sorted(EXPERIMENTS.glob("*.yaml")):
        cfg = load_experiment(p)
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+", cfg.name), p


@pytest.mark.parametrize("example", ["qwen3_next_hybrid.yaml", "glm45_air_moe.yaml"])
def test_new_family_examples_run(tmp_path, monkeypatch, example):
    """Issue #12: a hybrid (Qwen3-Next) and a new MoE family (GLM-4.5-Air) run end to end."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    _cli(["run", str(EXPERIMENTS / example), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert summary["completed"] + summary["rejected"] + summary["unfinished"] == summary["num_requests"]
    assert summary["completed"] == summary["num_requests"]
    plan = meta["memory_plan"]
    if example.startswith("qwen3_next"):
        # 36 linear-attention layers hold a fixed state; 12 full-attention layers the per-token KV
        assert plan["state_bytes_per_seq"] == 36 * (32 * 128 * 128 + 8192 * 3) * 2
        assert plan["block_bytes"] == 16 * 12 * 2 * 256 * 2 * 2
    else:
        assert plan.get("state_bytes_per_seq", 0) == 0  # no linear-attention layers


#: the Mamba-2 hybrids of issue #12's follow-up: (attention layers, KV heads, Mamba layers, heads, head_dim,
#: d_state, groups, bytes per SSM-state element); block = 16 tokens x attention layers x K+V x kv heads x 128
#: x 2 B, state by hand as vLLM keeps it: the conv window in bf16, the SSM state in bf16 or, for Nemotron
#: (vLLM's NemotronH hook, its config's mamba_ssm_cache_dtype), float32
MAMBA_EXAMPLES = {
    "nemotron3_nano_hybrid.yaml": (6, 2, 23, 64, 64, 128, 8, 4),
    "granite4_h_small_moe_hybrid.yaml": (4, 8, 36, 128, 64, 128, 1, 2),
    "falcon_h1_parallel_hybrid.yaml": (44, 2, 44, 24, 128, 256, 1, 2),
}


@pytest.mark.parametrize("example", sorted(MAMBA_EXAMPLES))
def test_mamba_hybrid_examples_run(tmp_path, monkeypatch, example):
    """Nemotron-3-Nano (Mamba-2 + attention + MoE), Granite 4.0-H (Mamba-2 + attention, MoE + shared MLP) and
    Falcon-H1 (attention and Mamba-2 in the same layer) run end to end; the memory plan holds both groups."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    _cli(["run", str(EXPERIMENTS / example), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    plan = json.loads((out / "meta.json").read_text())["memory_plan"]
    assert summary["completed"] == summary["num_requests"] == 300
    attn, kv, mamba, heads, hd, n, g, ssm_bytes = MAMBA_EXAMPLES[example]
    assert plan["block_bytes"] == 16 * attn * 2 * kv * 128 * 2
    conv_dim = heads * hd + 2 * g * n
    assert plan["state_bytes_per_seq"] == mamba * (heads * hd * n * ssm_bytes + conv_dim * 3 * 2)
    max_num_seqs = 256 if example.startswith("nemotron") else 128  # the examples' engine.max_num_seqs
    assert plan["state_reserve_bytes"] == max_num_seqs * plan["state_bytes_per_seq"]  # one state page each
    assert summary["slo"]["passed"] is True


def test_qwen3_vl_images_example_runs(tmp_path, monkeypatch):
    """Issue #12 (multimodal wrappers): image requests run end to end and the vision tower's weights
    are in the memory plan."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    _cli(["run", str(EXPERIMENTS / "qwen3_vl_images.yaml"), "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert summary["completed"] == summary["num_requests"] == 300
    # 8,190,735,360 LM + 576,388,336 vision-tower parameters, all bf16
    assert meta["memory_plan"]["weights_bytes"] == 2 * 8_767_123_696

