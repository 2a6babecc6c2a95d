"""Disaggregated serving against published measurements (../shared/data/published/measurements.json).

    python benchmarks/validate_pd.py            # prints the table of docs/validation.md#disaggregated-serving

Anchors, each set up as published (nothing fitted):

- MOONCAKE-STORE-VLLM-A10-V1: vLLM V1 + MooncakeStore (RDMA), Qwen2.5-7B-Instruct GPTQ-Int4 on A10s,
  200 requests of 1024 in / 6 out at 2 req/s, XpYd at tp 1 or 2 (experiments/pd_validation_mooncake_a10.yaml).
  The benchmark's TTFT is measured through the PD proxy, i.e. up to the first token streamed by the
  decode instance: compared with the summary's ``disaggregation.ttft_decode_side``.
  The same five configurations again with the hand-off through the store as the benchmark does it
  (experiments/pd_validation_mooncake_a10_store.yaml: ``via: store`` with host staging, round-robin proxy),
  first with the connector's host copies free and the put asynchronous (the store path before
  ``host_copy``/``sync_put``), then as the example sets it: ``host_copy: connector`` at one host
  thread's cited memcpy bandwidth, ``sync_put: true`` and ``sync_get: true``.
- LMCACHE-PD-KVXFER: the KV of a 7500-token Llama-3.1-8B prompt over NVLink as Dynamo sends it (one NIXL
  descriptor per page, layer and K/V plane; the post quotes Dynamo's numbers to motivate LMCache's
  buffer), one request on an idle 1P1D pair: compared with ``disaggregation.kv_transfer.transfer_time``,
  without and with the per-copy cost (``copy_overhead_us`` = UCX's 4 µs ``cuda_ipc`` overhead; not fitted).
- SGL-KIMI-K2-128H200: Kimi-K2 1P1D on 128 H200s (SGLang, DeepEP, EPLB): a prefill instance DP32/EP32 on
  4 nodes, a decode instance DP96/EP96 on 12 nodes with 96 redundant experts, 2000 in / 100 out, decode
  batch 480 per rank. The pools are resolved as a ``disaggregation:`` experiment (each pool's layout,
  memory plan and cost model); the published per-node throughputs are of saturated instances, so each
  pool is priced at one synchronous step of its whole DP group (as benchmarks/validate_wide_ep.py does).
- SGL-MTP-LARGE: DeepSeek-V3 4P12D on 128 H200s (SGLang, DeepEP, EPLB with 288 expert slots), 128
  requests per decode rank, 2000 in / 100 out: the decode instance's output throughput with one MTP
  draft over without (sim/fidelity/speculative_validation.py ``sgl_mtp_large``; the acceptance from
  DeepSeek-V3's report, the blog gives none).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.config import load_experiment, parse_experiment, with_overrides  # noqa: E402
from sim.fidelity.speculative_validation import SGL_MTP_LARGE, sgl_mtp_large  # noqa: E402
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
# UCX's cost model of one cuda_ipc (NVLink) operation: 4.0 µs of CPU overhead (openucx/ucx PR #8760,
# uct_cuda_ipc_estimate_perf); the per-copy posting cost of a NIXL descriptor over NVLink
CUDA_IPC_OVERHEAD_US = 4.0


# the store path with the connector's host work priced at zero (the example's keys switched off)
HOST_FREE = {"disaggregation.kv_transfer.host_copy": "none", "disaggregation.kv_transfer.host_memcpy_gbps": None,
             "disaggregation.kv_transfer.sync_put": False, "disaggregation.kv_transfer.sync_get": False}


def mooncake_rows(store: bool = False, host_free: bool = False) -> list[tuple[str, str, float, float]]:
    """(anchor, metric, simulated ms, measured ms) for the Mooncake A10 configurations, with a direct
    transfer or (``store``) the hand-off through MooncakeStore, its host copies and synchronous put as
    the example sets them or (``host_free``) free and asynchronous."""
    name = "pd_validation_mooncake_a10_store.yaml" if store else "pd_validation_mooncake_a10.yaml"
    base = load_experiment(ROOT / "experiments" / name)
    rows = []
    for label, over, key, measured in MOONCAKE:
        over = {**over, **HOST_FREE} if host_free else over
        s = run(with_overrides(base, over) if over else base).summary
        tag = (", via store, host copies free" if host_free else ", via store, connector host copies + sync put/get") \
            if store else ", direct"
        rows.append(("MOONCAKE-STORE-VLLM-A10-V1", label + tag, s["disaggregation"]["ttft_decode_side"][key], measured))
    return rows


def lmcache_experiment(block_size: int, copy_overhead_us: float = 0.0) -> dict:
    """One 7500-token Llama-3.1-8B request on an idle H100 1P1D pair over NVLink, KV pages of ``block_size``."""
    return {
        "name": "lmcache-kvxfer", "model": "llama-3.1-8b", "hardware": "h100-sxm", "parallel": {"tp": 1},
        "engine": {"policy": "vllm", "block_size": block_size, "max_model_len": 8192, "enable_prefix_caching": False},
        "disaggregation": {"prefill": {"replicas": 1}, "decode": {"replicas": 1},
                           "kv_transfer": {"link": "nvlink", "copy_overhead_us": copy_overhead_us}},
        "workload": {"num_requests": 1, "arrival": {"process": "offline"},
                     "input_tokens": {"dist": "fixed", "value": 7500}, "output_tokens": {"dist": "fixed", "value": 4}},
    }


def lmcache_rows() -> list[tuple[str, str, float, float]]:
    """(anchor, metric, simulated ms, measured ms) for the NVLink transfer probe, without and with the
    per-copy cost."""
    rows = []
    for overhead, tag in ((0.0, ""), (CUDA_IPC_OVERHEAD_US, f", {CUDA_IPC_OVERHEAD_US:g} µs per copy")):
        for label, block_size, measured in LMCACHE:
            s = run(parse_experiment(lmcache_experiment(block_size, overhead), "validate_pd.py")).summary
            rows.append(("LMCACHE-PD-KVXFER", label + tag,
                         s["disaggregation"]["kv_transfer"]["transfer_time"]["mean_ms"], measured))
    return rows


# Kimi-K2 on 128 H200 (measurements.json SGL-KIMI-K2-128H200): tokens/s per node, measured
KIMI_PREFILL_PER_NODE, KIMI_DECODE_PER_NODE = 56000.0, 24000.0
KIMI_DECODE_BATCH = 480  # per decode rank (the published decode batch size)
KIMI_PREFILL_TOKENS = 16384  # per prefill rank and step: not published; SGLang's large-EP prefill budget


def kimi_experiment(two_batch_overlap: bool = False) -> dict:
    """The 1P1D Kimi-K2 deployment as a ``disaggregation:`` experiment (module docstring)."""
    moe = {"eplb": True, "two_batch_overlap": two_batch_overlap}
    # SGLang's low-latency-only DeepEP buffer: no NVLink buffer (num_nvl_bytes = 0 unless normal kernels are
    # enabled) and an RDMA buffer sized for the tokens of one dispatch, which DeepEP requires to be at least
    # the rank's batch (half of it per micro-batch under two-batch overlap)
    kimi_decode_deepep = {"deepep_buffer_mib": 0,
                          "dispatch_tokens_per_rank": KIMI_DECODE_BATCH // (2 if two_batch_overlap else 1)}
    return {
        "name": "kimi-k2-128h200", "model": "kimi-k2", "hardware": "h200",
        "parallel": {"tp": 1}, "precision": {"weights": "fp8"},  # the released checkpoint is block-FP8
        "engine": {"policy": "sglang", "max_model_len": 4096, "enable_prefix_caching": False},
        "disaggregation": {
            "prefill": {"replicas": 1, "parallel": {"dp": 32, "ep": 32, "moe": {**moe, "all_to_all": "normal"}},
                        "engine": {"max_num_batched_tokens": KIMI_PREFILL_TOKENS}},
            "decode": {"replicas": 1, "engine": {"max_num_seqs": KIMI_DECODE_BATCH},
                       "parallel": {"dp": 96, "ep": 96,
                                    "moe": {**moe, "redundant_experts": 96, "all_to_all": "low_latency",
                                            **kimi_decode_deepep}}},
            "kv_transfer": {"link": "rdma"},
        },
        "workload": {"num_requests": 1, "arrival": {"process": "offline"},
                     "input_tokens": {"dist": "fixed", "value": 2000}, "output_tokens": {"dist": "fixed", "value": 100}},
    }


def kimi_rows(two_batch_overlap: bool = False) -> list[tuple[str, str, float, float]]:
    """(anchor, metric, simulated tok/s/node, measured tok/s/node) for both pools of the Kimi-K2 deployment."""
    from sim.deploy.roofline import uniform_batch_shape
    from sim.runs.disagg import pd_setup
    from sim.runs.runner import replica_setup

    pd = pd_setup(parse_experiment(kimi_experiment(two_batch_overlap), "validate_pd.py"), replica_setup)
    gpn = 8  # GPUs per H200 node
    pre, dec = pd.deployments["prefill"], pd.deployments["decode"]
    context = 2000 + 100 // 2  # mean KV length of a request over its decode
    fits = dec.memory_plan.max_concurrent_seqs(2100)
    if fits < KIMI_DECODE_BATCH:
        raise SystemExit(f"Kimi-K2 decode: {KIMI_DECODE_BATCH} requests per rank do not fit ({fits})")
    t_dec, _ = dec.cost_model.group_step([uniform_batch_shape(KIMI_DECODE_BATCH, 1, context)] * dec.dp)
    per_rank = KIMI_PREFILL_TOKENS // 2000
    t_pre, _ = pre.cost_model.group_step([uniform_batch_shape(per_rank, 2000, 0)] * pre.dp)
    tag = ", two-batch overlap" if two_batch_overlap else ""
    return [("SGL-KIMI-K2-128H200", f"prefill DP32/EP32 tok/s per node{tag}", per_rank * 2000 / t_pre * gpn,
             KIMI_PREFILL_PER_NODE),
            ("SGL-KIMI-K2-128H200", f"decode DP96/EP96 tok/s per node{tag}", KIMI_DECODE_BATCH / t_dec * gpn,
             KIMI_DECODE_PER_NODE)]


def main() -> None:
    rows = mooncake_rows() + mooncake_rows(store=True, host_free=True) + mooncake_rows(store=True) + lmcache_rows()
    print("| anchor | metric | simulated (ms) | measured (ms) | error |")
    print("|:---|:---|---:|---:|---:|")
    for anchor, label, sim_ms, meas in rows:
        print(f"| {anchor} | {label} | {sim_ms:.1f} | {meas:.2f} | {100 * (sim_ms - meas) / meas:+.0f}% |")
    print()
    print("| anchor | metric | simulated | measured | error |")
    print("|:---|:---|---:|---:|---:|")
    for anchor, label, sim, meas in kimi_rows(False) + kimi_rows(True):
        print(f"| {anchor} | {label} | {sim:,.0f} | {meas:,.0f} | {100 * (sim - meas) / meas:+.0f}% |")
    for p in sgl_mtp_large(SGL_MTP_LARGE["acceptance_rates"]):
        print(f"| {p.case} | decode DP96/EP96: output tok/s with one MTP draft over none, {p.point} | "
              f"{p.simulated:.3f} | {p.measured:.3f} | {100 * p.error:+.1f}% |")


if __name__ == "__main__":
    main()
