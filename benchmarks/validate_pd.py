"""Disaggregated serving against published measurements (../shared/data/published/measurements.json).

    python benchmarks/validate_pd.py            # prints the table of docs/validation.md#disaggregated-serving

Anchors, each set up as published (nothing fitted):

- MOONCAKE-STORE-VLLM-A10-V1: vLLM V1 + MooncakeStore (RDMA), Qwen2.5-7B-Instruct GPTQ-Int4 on A10s,
  200 requests of 1024 in / 6 out at 2 req/s, XpYd at tp 1 or 2 (experiments/pd_validation_mooncake_a10.yaml).
  The benchmark's TTFT is measured through the PD proxy, i.e. up to the first token streamed by the
  decode instance: compared with the summary's ``disaggregation.ttft_decode_side``.
- LMCACHE-PD-KVXFER: the KV of a 7500-token Llama-3.1-8B prompt over NVLink (vLLM v1 + LMCache + NIXL),
  one request on an idle 1P1D pair: compared with ``disaggregation.kv_transfer.transfer_time``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.config import load_experiment, parse_experiment, with_overrides  # noqa: E402
from sim.runs.runner import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# (anchor, label, overrides of the Mooncake example, metric, measured ms)
MOONCAKE = [
    ("2P2D tp=2 mean TTFT", {}, "mean_ms", 271.25),
    ("2P2D tp=2 P99 TTFT", {}, "p99_ms", 532.0),
    ("4P2D tp=2 mean TTFT", {"disaggregation.prefill.replicas": 4}, "mean_ms", 259.87),
    ("2P4D tp=2 mean TTFT", {"disaggregation.decode.replicas": 4}, "mean_ms", 275.13),
    ("2P2D tp=1 mean TTFT", {"parallel.tp": 1}, "mean_ms", 763.58),
]

LMCACHE = [("7500-token KV over NVLink, page 16", 16, 20.0), ("7500-token KV over NVLink, page 128", 128, 8.0)]


def mooncake_rows() -> list[tuple[str, str, float, float]]:
    """(anchor, metric, simulated ms, measured ms) for the Mooncake A10 configurations."""
    base = load_experiment(ROOT / "experiments" / "pd_validation_mooncake_a10.yaml")
    rows = []
    for label, over, key, measured in MOONCAKE:
        s = run(with_overrides(base, over) if over else base).summary
        rows.append(("MOONCAKE-STORE-VLLM-A10-V1", label, s["disaggregation"]["ttft_decode_side"][key], measured))
    return rows


def lmcache_rows() -> list[tuple[str, str, float, float]]:
    """(anchor, metric, simulated ms, measured ms) for the LMCache NVLink transfer probe."""
    rows = []
    for label, block_size, measured in LMCACHE:
        cfg = parse_experiment({
            "name": "lmcache-kvxfer", "model": "llama-3.1-8b", "hardware": "h100-sxm", "parallel": {"tp": 1},
            "engine": {"policy": "vllm", "block_size": block_size, "max_model_len": 8192, "enable_prefix_caching": False},
            "disaggregation": {"prefill": {"replicas": 1}, "decode": {"replicas": 1}, "kv_transfer": {"link": "nvlink"}},
            "workload": {"num_requests": 1, "arrival": {"process": "offline"},
                         "input_tokens": {"dist": "fixed", "value": 7500}, "output_tokens": {"dist": "fixed", "value": 4}},
        }, "validate_pd.py")
        s = run(cfg).summary
        rows.append(("LMCACHE-PD-KVXFER", label, s["disaggregation"]["kv_transfer"]["transfer_time"]["mean_ms"], measured))
    return rows


def main() -> None:
    rows = mooncake_rows() + lmcache_rows()
    print("| anchor | metric | simulated (ms) | measured (ms) | error |")
    print("|:---|:---|---:|---:|---:|")
    for anchor, label, sim_ms, meas in rows:
        print(f"| {anchor} | {label} | {sim_ms:.1f} | {meas:.2f} | {100 * (sim_ms - meas) / meas:+.0f}% |")


if __name__ == "__main__":
    main()
