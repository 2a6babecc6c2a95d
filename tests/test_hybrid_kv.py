"""Hybrid (linear-attention + full-attention) models: vLLM-style KV layout, memory-plan concurrency,
allocator state pages and the roofline's recurrent-state pricing — all checked against hand counts."""
from __future__ import annotations

import math

import pytest

from hwprofiles import load_profile
from sim.config import EngineConfig, ParallelConfig, PrecisionConfig
from sim.deploy.hybrid_kv import group_size, hybrid_layout
from sim.deploy.memory_plan import plan_memory
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel, uniform_batch_shape
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import Request, RequestSpec

H200 = load_profile("h200")
ENGINE = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=256, block_size=16, gpu_memory_utilization=0.9)
FP8 = PrecisionConfig(weights="fp8")  # 79.7B parameters do not fit 1×H200 in bf16

# Qwen3-Next-80B-A3B, by hand from its config.json:
#   12 full-attention layers (every 4th of 48), 2 KV heads × 256  -> 2·2·256·2 B = 2,048 B per token per layer
#   36 Gated DeltaNet layers: 32 value heads × 128 × 128 state + conv over 2·16·128 + 32·128 = 8,192 channels
#   with 3 past inputs -> (524,288 + 24,576) elements × 2 B = 1,097,728 B per sequence per layer
ATTN_TOKEN = 2 * 2 * 256 * 2
STATE_LAYER = (32 * 128 * 128 + (2 * 16 * 128 + 32 * 128) * 3) * 2
BLOCK_SIZE = 16 * math.ceil(STATE_LAYER / (16 * ATTN_TOKEN))  # vLLM: smallest 16-multiple page holding a state page
GROUP = 12  # min(12 attention, 36 linear) layers per group -> 1 attention group + 3 state groups


def test_layout_by_hand():
    lay = hybrid_layout(load_model("qwen3-next-80b-a3b"), 1, 1, "bf16", 16)
    assert (lay.attention_token_bytes, lay.state_bytes_per_layer) == (ATTN_TOKEN, STATE_LAYER) == (2048, 1_097_728)
    assert lay.block_size == BLOCK_SIZE == 544
    assert (lay.group_size, lay.attention_groups, lay.state_groups) == (GROUP, 1, 3)
    assert lay.page_bytes == 544 * 2048 >= STATE_LAYER
    assert lay.block_bytes == GROUP * 544 * 2048
    assert lay.blocks_per_sequence(32768) == math.ceil(32768 / 544) + 3 == 64
    # TP splits the KV heads and the linear-attention heads
    lay2 = hybrid_layout(load_model("qwen3-next-80b-a3b"), 2, 1, "bf16", 16)
    assert lay2.attention_token_bytes == 1024 and lay2.state_bytes_per_layer == STATE_LAYER // 2
    assert hybrid_layout(load_model("llama-3.1-8b"), 1, 1, "bf16", 16) is None


def test_group_size_rule():
    assert group_size([12, 36]) == 12
    assert group_size([10, 12]) == 12  # within 25 %: the larger count, one group each
    assert group_size([8, 8]) == 8


def test_qwen3_next_sequences_at_32k_on_one_h200_follow_from_the_group_sizes():
    m = load_model("qwen3-next-80b-a3b")
    plan = plan_memory(m, H200, ParallelConfig(), FP8, ENGINE, 32768)
    assert plan.block_size == 544 and plan.block_bytes == GROUP * 544 * ATTN_TOKEN
    # sequences = KV bytes // (bytes of one sequence: 61 token blocks of the attention group + 3 state pages,
    # each block id spanning one page in 12 layers)
    per_seq = (math.ceil(32768 / 544) + 3) * GROUP * 544 * ATTN_TOKEN
    hand = math.floor(plan.kv_cache_bytes / (GROUP * 544 * ATTN_TOKEN)) // 64
    assert plan.max_concurrent_seqs(32768) == hand
    assert hand == pytest.approx(plan.kv_cache_bytes / per_seq, abs=1)
    assert hand == 61


def test_hybrid_memory_grows_far_less_than_linearly_than_dense_gqa():
    hyb = load_model("qwen3-next-80b-a3b")
    dense = load_model("llama-3.3-70b")  # 80 GQA layers × 8 KV heads × 128: 327,680 B per token
    ph = plan_memory(hyb, H200, ParallelConfig(), FP8, ENGINE, 32768)
    pd = plan_memory(dense, H200, ParallelConfig(), FP8, ENGINE, 32768)
    # bytes one sequence holds, as a function of its context
    hyb_bytes = {t: ph.blocks_per_sequence(t) * ph.block_bytes for t in (4096, 32768)}
    dense_bytes = {t: pd.blocks_per_sequence(t) * pd.block_bytes for t in (4096, 32768)}
    assert dense_bytes[32768] / dense_bytes[4096] == 8  # linear in context
    assert hyb_bytes[32768] / hyb_bytes[4096] == pytest.approx(64 / 11)  # (61 + 3) / (8 + 3): fixed state dominates early
    # per extra token the hybrid adds 12 layers × 2 KiB; the dense model 80 × 4 KiB (13× more)
    slope_h = (hyb_bytes[32768] - hyb_bytes[4096]) / (32768 - 4096)
    slope_d = (dense_bytes[32768] - dense_bytes[4096]) / (32768 - 4096)
    assert slope_d / slope_h > 10
    assert ph.max_concurrent_seqs(32768) > 10 * pd.max_concurrent_seqs(32768)


def _req(rid: int, prompt: int) -> Request:
    return Request(rid, RequestSpec(0.0, prompt, 4), 0.0)


@pytest.mark.parametrize("caching", [False, True])
def test_allocator_holds_state_blocks_per_request(caching):
    kv = KVCacheManager(20, 16, caching, num_cpu_blocks=10, block_bytes=100, state_blocks_per_seq=3)
    a, b = _req(1, 40), _req(2, 40)
    assert kv.num_blocks_to_allocate(a, 40) == 3 + 3  # 3 token blocks + 3 state pages
    assert kv.allocate_slots(a, 40)
    assert kv.num_used_blocks == 6
    a.num_computed_tokens = 40
    assert kv.num_blocks_to_allocate(a, 10) == 1  # the state is already held
    assert kv.allocate_slots(a, 10) and kv.num_used_blocks == 7
    assert kv.allocate_slots(b, 40) and kv.num_used_blocks == 13
    kv.check_invariants()
    assert kv.swap_out(b) == 6 * 100  # the state travels with the KV
    assert kv.num_used_blocks == 7
    kv.check_invariants()
    assert kv.swap_in(b) == 600 and kv.num_used_blocks == 13
    kv.check_invariants()
    kv.free(a)
    kv.free(b)
    assert kv.num_used_blocks == 0
    kv.check_invariants()
    # a request whose state does not fit is refused without taking anything
    small = KVCacheManager(4, 16, caching, state_blocks_per_seq=3)
    assert not small.allocate_slots(_req(3, 40), 40) and small.num_used_blocks == 0
    assert not small.can_fit(40) and small.can_fit(16)


def test_roofline_prices_recurrent_state_and_only_full_attention_kv():
    m = load_model("qwen3-next-80b-a3b")
    cm = RooflineCostModel(m, H200, ParallelConfig(), FP8)
    seqs, ctx = 32, 8000
    shape = uniform_batch_shape(seqs, 1, ctx)
    _, flops, bytes_ = cm._attention(shape)
    kv_tokens = shape.sum_kv_tokens
    qo = 2 * 16 * 256 * 2  # q and o of one token, 16 heads × 256, bf16
    full = kv_tokens * ATTN_TOKEN + seqs * (qo + ATTN_TOKEN)
    # Gated DeltaNet: each sequence's state is read and written once per step
    linear = 2 * seqs * STATE_LAYER + seqs * qo
    assert bytes_ == pytest.approx(12 * full + 36 * linear)
    la_flops = 3 * 2 * 32 * 128 * 128 + 2 * 8192 * 4
    assert flops == pytest.approx(12 * shape.causal_pairs * cm.attn_flops_per_pair + 36 * seqs * la_flops)
    # the linear layers' cost does not grow with the context
    _, _, b_long = cm._attention(uniform_batch_shape(seqs, 1, 4 * ctx))
    assert b_long - bytes_ == pytest.approx(12 * (uniform_batch_shape(seqs, 1, 4 * ctx).sum_kv_tokens - kv_tokens)
                                            * ATTN_TOKEN)
