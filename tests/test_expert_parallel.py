"""Wide expert parallelism: all-to-all bytes, load imbalance, DP-attention lockstep, memory, validation.

Independent values: the all-to-all bytes are hand-computed from DeepSeek-V3's config (hidden 7168,
top-8 of 256 routed experts) at EP 32/72/144; the MoE layer under uniform routing equals a dense GEMM
of the same rows; the expected maximum of normals is checked against a Monte-Carlo estimate.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwprofiles import load_profile
from sim.config import ParallelConfig, PrecisionConfig, parse_experiment
from sim.deploy.expert_parallel import (
    COMBINE_BYTES,
    DISPATCH_BYTES,
    LL_RDMA_EFFICIENCY,
    NVLINK_EFFICIENCY,
    PHASE_LATENCY_S,
    ExpertParallelPlan,
    dispatch_bytes_per_token,
    expected_max_standard_normal,
)
from sim.deploy.memory_plan import check_parallelism, plan_memory, weights_bytes_per_gpu
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel, uniform_batch_shape
from sim.errors import InfeasibleConfigError
from sim.runs.runner import run

V3 = load_model("deepseek-v3")


def _par(dp: int, **moe) -> ParallelConfig:
    return ParallelConfig(tp=1, dp=dp, ep=dp, moe=moe)


@pytest.mark.parametrize("ep", [32, 72, 144])
def test_all_to_all_bytes_per_token_deepseek_v3(ep):
    # low-latency kernels: 8 copies of the 7168-wide hidden state, fp8 + one fp32 scale per 128 for
    # dispatch, bf16 for combine; the copies bound for the token's own GPU (1/ep of them) stay local
    per_copy = 7168 * (1 + 4 / 128) + 7168 * 2
    assert per_copy == 21728.0  # 7,392 dispatch + 14,336 combine
    assert dispatch_bytes_per_token(V3, ep) == pytest.approx(8 * (1 - 1 / ep) * per_copy, rel=1e-12)
    # EP32 → 168,392 bytes; EP72 → 171,410; EP144 → 172,617 (per token per MoE layer)
    expected = {32: 8 * 31 / 32 * per_copy, 72: 8 * 71 / 72 * per_copy, 144: 8 * 143 / 144 * per_copy}[ep]
    assert dispatch_bytes_per_token(V3, ep) == pytest.approx(expected)


def test_low_latency_phase_time_splits_nvlink_and_rdma():
    hw = load_profile("h800")
    plan = ExpertParallelPlan.build(V3, hw, _par(128))
    tokens = 128
    cost = plan.all_to_all(tokens, decode_only=True)
    # 120 of every 128 copies leave the 8-GPU node over the 50 GB/s NIC, 7 cross NVLink
    rdma_d = tokens * 8 * 120 / 128 * 7168 * DISPATCH_BYTES["fp8"]
    nvl_d = tokens * 8 * 7 / 128 * 7168 * DISPATCH_BYTES["fp8"]
    rdma_c = tokens * 8 * 120 / 128 * 7168 * COMBINE_BYTES
    expect = (2 * PHASE_LATENCY_S + rdma_d / (50e9 * LL_RDMA_EFFICIENCY) + rdma_c / (50e9 * LL_RDMA_EFFICIENCY))
    assert cost.time_s == pytest.approx(expect, rel=1e-12)
    assert nvl_d / (200e9 * NVLINK_EFFICIENCY) < rdma_d / (50e9 * LL_RDMA_EFFICIENCY)  # RDMA is the bottleneck
    # DeepEP's table at EP128, 128 tokens: dispatch 192 µs + combine 369 µs
    assert cost.time_s == pytest.approx(192e-6 + 369e-6, rel=0.15)


def test_all_to_all_stays_on_nvlink_inside_an_nvl72_domain():
    plan = ExpertParallelPlan.build(V3, load_profile("gb200"), _par(72))
    cost = plan.all_to_all(256, decode_only=True)
    assert cost.rdma_bytes == 0.0 and cost.nvlink_bytes > 0


def test_expected_max_of_normals_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for n in (8, 32, 128):
        mc = rng.standard_normal((20000, n)).max(axis=1).mean()
        assert expected_max_standard_normal(n) == pytest.approx(mc, abs=0.02)
    assert expected_max_standard_normal(1) == 0.0


def test_imbalance_never_speeds_up_and_vanishes_with_none():
    hw = load_profile("h200")
    shape = uniform_batch_shape(64, 1, 2048)
    uniform = RooflineCostModel(V3, hw, _par(16, imbalance="none"), PrecisionConfig(weights="fp8"))
    noisy = RooflineCostModel(V3, hw, _par(16), PrecisionConfig(weights="fp8"))
    skewed = RooflineCostModel(V3, hw, _par(16, expert_load_cv=0.5), PrecisionConfig(weights="fp8"))
    balanced = RooflineCostModel(V3, hw, _par(16, expert_load_cv=0.5, eplb=True), PrecisionConfig(weights="fp8"))
    t = [m.group_step([shape] * 16)[0] for m in (uniform, balanced, noisy, skewed)]
    assert t[0] <= t[1] <= t[3] and t[2] == t[1]  # eplb removes the popularity term only
    assert t[0] < t[3]
    plan = noisy.ep_plan
    for tokens in (1, 10, 1000, 10**6):
        f = plan.busiest_gpu_factor(tokens)
        assert 1.0 <= f <= plan.ep * min(plan.top_k, plan.experts_per_gpu) / plan.top_k
    assert plan.busiest_gpu_factor(10**9) == pytest.approx(1.0, abs=1e-3)  # law of large numbers


def test_moe_layer_equals_dense_equivalent_gemm_plus_all_to_all():
    """Uniform routing, no imbalance: each GPU's routed experts process N·k/ep rows; the layer takes
    the time of a dense GEMM over those rows (weights of the touched experts) plus the all-to-all.
    Checked with the row-ramp GEMM model (the profile without its SM count; the tile/wave model of
    sim/deploy/kernel_shapes.py has its own per-operator checks in tests/test_roofline_vidur.py)."""
    hw = load_profile("h200").model_copy(update={"compute_units": None})
    dp = 16
    cm = RooflineCostModel(V3, hw, _par(dp, imbalance="none"), PrecisionConfig(weights="fp8"))
    n_rank = 256
    shape = uniform_batch_shape(n_rank, 1, 1024)
    N = n_rank * dp
    bd = cm.step(shape, breakdown=True, group_tokens=N, send_tokens=n_rank).breakdown
    e = hw.efficiency
    E, k, h, I = 256, 8, 7168, 2048
    layers = 58
    e_gpu = E / dp
    touched = e_gpu * (1 - (1 - k / E) ** N)
    rows_gpu = N * k / dp
    peak = hw.peak_flops("fp8") * e.gemm_compute_efficiency.value
    n_half = cm.n_half
    rows_expert = N * k / (E * (1 - (1 - k / E) ** N))
    # gate_up: [h → 2I] per expert, fp8 weights
    flops = 2 * h * 2 * I * rows_gpu
    compute = flops / peak * (1 + n_half / rows_expert)
    memory = (touched * h * 2 * I * 1.0 + rows_gpu * (h + 2 * I) * 2) / (hw.memory_bandwidth_bytes_per_s * e.memory_efficiency.value)
    dense_equiv = layers * (max(compute, memory) + hw.overheads.gemm_kernel_s.value)
    assert bd["experts.gate_up_proj"] == pytest.approx(dense_equiv, rel=1e-9)
    a2a = cm.ep_plan.all_to_all(n_rank, decode_only=True).time_s * layers
    assert bd["all_to_all"] == pytest.approx(a2a, rel=1e-12)


def test_group_step_is_set_by_the_slowest_rank():
    cm = RooflineCostModel(V3, load_profile("h200"), _par(4), PrecisionConfig(weights="fp8"))
    small, big = uniform_batch_shape(8, 1, 512), uniform_batch_shape(64, 1, 4096)
    t, costs = cm.group_step([small, big, small, small])
    assert t == max(c.time_s for c in costs) == costs[1].time_s
    assert t > cm.group_step([small] * 4)[0]


def test_two_batch_overlap_hides_communication_but_not_compute():
    hw = load_profile("h800")
    shape = uniform_batch_shape(128, 1, 4352)
    plain = RooflineCostModel(V3, hw, _par(128, eplb=True), PrecisionConfig(weights="fp8"))
    tbo = RooflineCostModel(V3, hw, _par(128, eplb=True, two_batch_overlap=True), PrecisionConfig(weights="fp8"))
    t_plain, t_tbo = plain.group_step([shape] * 128)[0], tbo.group_step([shape] * 128)[0]
    compute_only = plain.step(shape, group_tokens=128 * 128, send_tokens=128, all_to_all=False).time_s
    assert compute_only < t_tbo < t_plain


def test_memory_plan_per_gpu_under_dp_and_ep():
    hw = load_profile("h200")
    prec = PrecisionConfig(weights="fp8")
    w16 = weights_bytes_per_gpu(V3, _par(16), "fp8")
    w32 = weights_bytes_per_gpu(V3, _par(32), "fp8")
    # experts split over EP, everything else (attention, dense layers, shared experts, embeddings)
    # replicated on every DP rank: w(ep) = replicated + experts/ep
    expert_params = sum(g.num_layers * op.params for g in V3.layer_groups() for op in g.linears if op.group == "experts")
    assert w16 - w32 == pytest.approx(expert_params * (1 / 16 - 1 / 32) * 1.0, rel=1e-6)
    red = weights_bytes_per_gpu(V3, _par(32, redundant_experts=32), "fp8")
    assert red - w32 == pytest.approx(expert_params / 256 * 32 / 32, rel=1e-6)  # one extra expert per GPU
    from sim.config import EngineConfig
    eng = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=256)
    p16 = plan_memory(V3, hw, _par(16), prec, eng, 8192)
    p32 = plan_memory(V3, hw, _par(32), prec, eng, 8192)
    assert p32.num_kv_blocks > p16.num_kv_blocks  # less expert weight per GPU leaves more KV per rank
    assert p32.block_bytes == p16.block_bytes  # the MLA latent cache is per rank, not split


@pytest.mark.parametrize("parallel, message", [
    (dict(tp=1, dp=8, ep=4), "valid values: 1 or 8"),
    (dict(tp=1, dp=8, ep=1), "set parallel.ep: 8"),
    (dict(tp=1, dp=3, ep=3), "do not divide over 3"),
    (dict(tp=1, dp=12, ep=12, moe={"redundant_experts": 4}), "valid EP degrees"),
])
def test_invalid_expert_layouts_are_refused(parallel, message):
    with pytest.raises(InfeasibleConfigError, match=message):
        check_parallelism(V3, ParallelConfig(**parallel))


def test_dp_on_a_dense_model_is_refused():
    with pytest.raises(InfeasibleConfigError, match="dense model"):
        check_parallelism(load_model("llama-3.1-8b"), ParallelConfig(dp=2))


def _experiment(**parallel) -> dict:
    return {
        "name": "dsv3-dp", "model": "deepseek-v3", "hardware": "h200",
        "parallel": parallel, "precision": {"weights": "fp8"},
        "engine": {"max_num_seqs": 64, "max_model_len": 4096, "max_num_batched_tokens": 4096},
        "workload": {"num_requests": 120, "arrival": {"process": "poisson", "rate": 30.0},
                     "input_tokens": {"dist": "fixed", "value": 600}, "output_tokens": {"dist": "fixed", "value": 40}},
    }


def test_dp_attention_run_keeps_ranks_in_lockstep():
    res = run(parse_experiment(_experiment(tp=1, dp=8, ep=8, moe={"eplb": True})))
    assert res.summary["completed"] == 120
    it = res.iterations
    assert it["replica"].nunique() == 8  # every rank is an engine core
    # lockstep: ranks that step together start and end at the same instants
    ends = it.groupby("end_s")["start_s"].nunique()
    assert (ends == 1).all()
    starts_by_end = it.groupby("end_s")["replica"].nunique()
    assert starts_by_end.max() > 1
    assert res.meta["gpus_total"] == 8
    # same seed, same result
    again = run(parse_experiment(_experiment(tp=1, dp=8, ep=8, moe={"eplb": True})))
    assert again.summary == res.summary


def test_wide_ep_example_runs_end_to_end(tmp_path):
    from sim.cli import main
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "wide"
    try:
        main(["run", str(root / "experiments" / "deepseek_v3_wide_ep.yaml"), "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    s = json.loads((out / "summary.json").read_text())
    assert s["completed"] == 360 and s["slo"]["passed"] is True
    it = pd.read_parquet(out / "iterations.parquet")
    assert it["replica"].nunique() == 16
    assert (it.groupby("end_s")["start_s"].nunique() == 1).all()  # lockstep
    meta = json.loads((out / "meta.json").read_text())
    assert meta["gpus_total"] == 16


def _validation_module():
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "validate_wide_ep.py"
    spec = importlib.util.spec_from_file_location("validate_wide_ep", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_deepseek_profile_lies_between_no_overlap_and_perfect_overlap():
    """DS-PROFILE-DATA (H800, balanced routing, two micro-batches): the measured per-GPU throughput
    must lie between the model without overlap and the model with perfect two-batch overlap."""
    val = _validation_module()
    for case in (c for c in val.CASES if c.id == "DS-PROFILE-DATA"):
        perfect = val.simulate_case(case)["simulated"]
        serial_case = dataclasses.replace(case, moe={**case.moe, "two_batch_overlap": False})
        serial = val.simulate_case(serial_case)["simulated"]
        assert serial < case.measured_tok_s_per_gpu < perfect, case.what


def test_validation_table_covers_five_published_measurements():
    val = _validation_module()
    assert len({(c.id, c.what) for c in val.CASES}) >= 5
    assert val.table().count("\n") == len(val.CASES) + 1


def test_expert_precision_applies_to_routed_experts_only():
    """NVIDIA's FP4 DeepSeek checkpoints: NVFP4 routed experts, the other linears FP8."""
    par = _par(8)
    fp8 = weights_bytes_per_gpu(V3, par, "fp8")
    mixed = weights_bytes_per_gpu(V3, par, "fp8", "nvfp4")
    expert_params = sum(g.num_layers * op.params for g in V3.layer_groups() for op in g.linears if op.group == "experts") / 8
    assert fp8 - mixed == pytest.approx(expert_params * (1.0 - (0.5 + 1 / 16)), rel=1e-9)
    assert weights_bytes_per_gpu(V3, par, "fp8", "fp8") == fp8
    hw = load_profile("b200")
    shape = uniform_batch_shape(2, 2048, 0)
    a = RooflineCostModel(V3, hw, par, PrecisionConfig(weights="fp8")).step(shape, breakdown=True).breakdown
    b = RooflineCostModel(V3, hw, par, PrecisionConfig(weights="fp8", experts="nvfp4")).step(shape, breakdown=True).breakdown
    assert b["experts.gate_up_proj"] < a["experts.gate_up_proj"]  # FP4 peak for the experts
    assert b["o_proj"] == a["o_proj"] and b["attention"] == a["attention"]  # the rest unchanged
