"""Wide expert parallelism against published measurements (shared/data/published/measurements.json).

Each case recreates a published setup — model, GPU, DP/EP layout, precision, per-rank batch and
context — and prices one synchronous step of the whole DP group with the roofline cost model
(:meth:`RooflineCostModel.group_step`), the steady state the published per-GPU throughputs describe
(saturated decode or prefill instances of a disaggregated deployment). Throughput per GPU =
tokens a rank processes per step / step time.

    python benchmarks/validate_wide_ep.py            # the table (Markdown) for docs/validation.md

Where a setup leaves the per-rank batch open, the case fills the KV cache (the published runs say
their decode instances were saturated) and says so in its note.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwprofiles import load_profile  # noqa: E402
from sim.config import EngineConfig, ParallelConfig, PrecisionConfig  # noqa: E402
from sim.deploy.memory_plan import plan_memory  # noqa: E402
from sim.deploy.models import load_model  # noqa: E402
from sim.deploy.roofline import RooflineCostModel, uniform_batch_shape  # noqa: E402


@dataclass(frozen=True)
class Case:
    """One published measurement and the setup that recreates it."""

    id: str
    what: str
    model: str
    hardware: str
    dp: int
    phase: str  # "decode" or "prefill"
    measured_tok_s_per_gpu: float
    context: int  # decode: tokens in each request's KV; prefill: prompt length
    batch: int | None  # decode: requests per rank; prefill: prompts per rank; None = fill the KV cache
    precision: dict[str, Any] = field(default_factory=dict)
    moe: dict[str, Any] = field(default_factory=dict)
    fully_specified: bool = True
    note: str = ""
    framework: str = "vllm"  # "sglang": DeepEP buffers as SGLang sizes them for a low-latency decode instance


CASES: tuple[Case, ...] = (
    Case("DS-PROFILE-DATA", "DeepSeek decode profile, EP128", "deepseek-v3", "h800", 128, "decode", 18598 / 8,
         context=4096, batch=128, precision={"weights": "fp8"},
         moe={"imbalance": "none", "two_batch_overlap": True},
         note="128 requests/GPU at 4K, two micro-batches, balanced routing"),
    Case("DS-PROFILE-DATA", "DeepSeek prefill profile, EP32", "deepseek-v3", "h800", 32, "prefill", 62713 / 8,
         context=4096, batch=4, precision={"weights": "fp8"},
         moe={"imbalance": "none", "two_batch_overlap": True},
         note="16K tokens/GPU of 4K prompts, two micro-batches, balanced routing"),
    Case("VLLM-GB300-DS", "R1 NVFP4 EP2 prefill-only, GB300", "deepseek-r1", "gb300", 2, "prefill", 22476,
         context=2048, batch=16, precision={"weights": "fp8", "experts": "nvfp4", "kv_cache": "fp8"}, moe={"eplb": False},
         note="max_num_batched_tokens 32768 per rank = 16 prompts of 2K"),
    Case("SGL-GB200-PART2", "decode, FP8 attention + NVFP4 MoE", "deepseek-v3", "gb200", 48, "decode", 13386,
         context=2050, batch=1408, precision={"weights": "fp8", "experts": "nvfp4", "kv_cache": "fp8", "attention": "fp8"},
         moe={"eplb": True, "redundant_experts": 32, "dispatch_dtype": "nvfp4", "two_batch_overlap": True},
         note="batch 1408 per rank (the blog: KV cache roughly full at 2K)", framework="sglang"),
    Case("SGL-GB200-PART2", "decode, BF16 attention + FP8 MoE", "deepseek-v3", "gb200", 48, "decode", 9087,
         context=2050, batch=1408, precision={"weights": "fp8"},
         moe={"eplb": True, "redundant_experts": 32, "two_batch_overlap": True}, note="as above, high-precision recipe",
         framework="sglang"),
    Case("SGL-GB200-PART1", "decode, FP8, no TBO", "deepseek-v3", "gb200", 48, "decode", 7583,
         context=2050, batch=None, precision={"weights": "fp8"}, moe={"eplb": True, "redundant_experts": 32},
         fully_specified=False, note="batch not stated: KV cache filled", framework="sglang"),
    Case("VLLM-GB200-WIDEEP", "decode, NVFP4, DP8/EP8", "deepseek-r1", "gb200", 8, "decode", 10100,
         context=3072, batch=None, precision={"weights": "fp8", "experts": "nvfp4", "kv_cache": "fp8"},
         moe={"eplb": True, "dispatch_dtype": "nvfp4"}, fully_specified=False,
         note="2K in / 2K out (mean context 3K); concurrency not stated: KV cache filled"),
)


def kv_full_batch(case: Case, parallel: ParallelConfig, precision: PrecisionConfig) -> int:
    """Requests of ``case.context`` tokens that fit in one rank's KV cache."""
    model, hw = load_model(case.model), load_profile(case.hardware)
    eng = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=4096, max_model_len=8192)
    return plan_memory(model, hw, parallel, precision, eng, 8192).max_concurrent_seqs(case.context)


def sglang_decode_moe(case: Case, batch: int) -> dict[str, Any]:
    """DeepEP sizing of an SGLang low-latency decode instance running ``batch`` requests per rank: no
    NVLink buffer (SGLang sets num_nvl_bytes only for normal kernels) and an RDMA buffer for the tokens of
    one dispatch, which DeepEP asserts is at least the dispatched batch (half of it per micro-batch under
    two-batch overlap; SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK)."""
    per_dispatch = -(-batch // (2 if case.moe.get("two_batch_overlap") else 1))
    return {**case.moe, "all_to_all": "low_latency", "deepep_buffer_mib": 0, "dispatch_tokens_per_rank": per_dispatch}


def _layout(case: Case, batch: int) -> ParallelConfig:
    moe = sglang_decode_moe(case, batch) if case.framework == "sglang" and case.phase == "decode" else case.moe
    return ParallelConfig(tp=1, dp=case.dp, ep=case.dp, moe=moe)


def filled_batch(case: Case, precision: PrecisionConfig) -> int:
    """The largest per-rank batch whose KV (and, for SGLang, the DeepEP buffer it needs) fits: the
    buffer grows with the batch, so the fill is the largest ``b`` with ``b ≤ fits(b)`` (bisection)."""
    if case.framework != "sglang" or case.phase != "decode":
        return kv_full_batch(case, _layout(case, 1), precision)
    lo, hi = 1, kv_full_batch(case, _layout(case, 1), precision)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid <= kv_full_batch(case, _layout(case, mid), precision):
            lo = mid
        else:
            hi = mid - 1
    return lo


def simulate_case(case: Case) -> dict[str, Any]:
    """Simulated per-GPU throughput of ``case`` (and the step time), with and without overlap."""
    model, hw = load_model(case.model), load_profile(case.hardware)
    precision = PrecisionConfig(**case.precision)
    batch = case.batch or filled_batch(case, precision)
    parallel = _layout(case, batch)
    cm = RooflineCostModel(model, hw, parallel, precision)
    if case.phase == "decode":
        shape = uniform_batch_shape(batch, 1, case.context)
        tokens = batch
    else:
        shape = uniform_batch_shape(batch, case.context, 0)
        tokens = batch * case.context
    t, _ = cm.group_step([shape] * case.dp)
    sim = tokens / t
    return {"case": case, "batch": batch, "step_ms": t * 1e3, "simulated": sim,
            "error": sim / case.measured_tok_s_per_gpu - 1.0}


def table() -> str:
    """The Markdown table of every case."""
    rows = ["| id | setup | measured tok/s/GPU | simulated | error | step (ms) | batch/rank | note |",
            "|---|---|---:|---:|---:|---:|---:|---|"]
    for case in CASES:
        r = simulate_case(case)
        rows.append(f"| {case.id} | {case.what} ({case.hardware}, DP{case.dp}/EP{case.dp}) | "
                    f"{case.measured_tok_s_per_gpu:,.0f} | {r['simulated']:,.0f} | {r['error']:+.0%} | "
                    f"{r['step_ms']:.1f} | {r['batch']} | {case.note}{'' if case.fully_specified else ' (setup partly unstated)'} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
