"""Kernel shape models (sim/deploy/kernel_shapes.py, sim/deploy/collectives.py) against hand counts and the
published curves and thresholds they encode."""
from __future__ import annotations

import math

import pytest

from hwprofiles import load_profile
from sim.deploy.collectives import AllReduce
from sim.deploy.kernel_shapes import (TILE_M, TILE_N, ATTENTION_Q_TILE, attention_prefill_work, elementwise_row_floor_s,
                                      gemm_shape, overlap)

PEAK, SMS = 989.4e12, 132


def test_gemm_waves_by_hand():
    """N = 1536, K = 4096 (Llama-2-7B qkv at TP8): 12 column tiles. 128 rows → 24 tiles → split-K 5
    (⌊132/24⌋) → 120 slices in one wave, each K/5 long."""
    g = gemm_shape(1536, 4096, 1.0, PEAK, 1.0, SMS)
    tile_s = 2 * TILE_M * TILE_N * 4096 / (PEAK / SMS)
    assert g.tiles_n == 12 and g.split_max == 16
    assert g.compute_s(128) == pytest.approx(tile_s / 5)
    assert g.compute_s(65) == g.compute_s(128)  # 65 rows pay for two row tiles
    # 4096 rows: 64 × 12 = 768 tiles, no split, ⌈768/132⌉ = 6 waves (the last one 82% full)
    assert g.compute_s(4096) == pytest.approx(6 * tile_s)
    assert g.compute_s(0) == 0.0


def test_gemm_large_shapes_approach_the_roofline():
    """A big square GEMM runs at its efficiency × peak up to wave quantisation (< 1 wave of slack)."""
    m = n = k = 8192
    g = gemm_shape(n, k, 1.0, PEAK, 0.8, SMS)
    ideal = 2 * m * n * k / (PEAK * 0.8)
    assert ideal <= g.compute_s(m) <= ideal * (1 + SMS / (m / TILE_M * n / TILE_N))


def test_overlap_exponent():
    assert overlap(3.0, 4.0, 0.0) == 4.0
    assert overlap(3.0, 4.0, 2.0) == pytest.approx(5.0)
    assert overlap(3.0, 4.0, 50.0) == pytest.approx(4.0, rel=1e-5)


def _attention_efficiency(num_seqs: int, new: int, ctx: int, heads: int, sms: int, half: float) -> float:
    """pairs / FlashAttention's work for ``num_seqs`` equal prefill chunks alone in a step."""
    pairs = num_seqs * (ctx * new + new * (new + 1) // 2)
    tiles = -(-new // ATTENTION_Q_TILE)
    spread, longest = attention_prefill_work(pairs, num_seqs * new, num_seqs * tiles,
                                             num_seqs * tiles * (2 * ctx + new + 1), 2 * ctx + new + 1, 0,
                                             heads, sms, half)
    return pairs / max(spread, longest)


def test_attention_reproduces_the_flashattention3_curve():
    """Full occupancy (FA3's benchmark: 16k tokens per batch, 16 heads): e·L/(L + 570) against the measured
    causal forward TFLOPS on H100 (Shah et al. 2024, fig. 5), within 6%."""
    e = load_profile("h100-sxm").efficiency.attention_compute_efficiency.value
    for length, tflops in [(512, 292), (1024, 423), (2048, 521), (4096, 579), (8192, 602), (16384, 616)]:
        f = _attention_efficiency(16384 // length, length, 0, 16, SMS, 570.0)
        assert e * f * PEAK / 1e12 == pytest.approx(tflops, rel=0.06), length


def test_short_chunks_on_long_contexts_are_far_below_peak():
    """64 new tokens on an 8k context: half of each 128-row query tile is padding (KV splits fill the SMs)."""
    f = _attention_efficiency(1, 64, 8192, 32, SMS, 570.0)
    keys = 8192 + 65 / 2  # the chunk's rows see the context and half the chunk on average
    length = 2 * keys / (132 / 32)  # 32 blocks split 4.125 ways: each walks 1/4.125 of the keys
    assert f == pytest.approx(0.5 * length / (length + 570))
    assert f < 0.5 * _attention_efficiency(1, 4096, 2048, 32, SMS, 570.0)
    # without an SM count nothing but the length ramp
    assert _attention_efficiency(1, 64, 8192, 32, 0, 570.0) == pytest.approx(2 * keys / (2 * keys + 570))


def test_a_short_chunk_beside_a_long_one_costs_its_padded_work():
    """Unequal chunks: the kernel is bound by all pieces over the SMs or by the longest one, whichever is
    longer. Hand-computed for H100 (132 SMs, 32 heads, L_half = 570): chunks of 460 and 2 tokens, one
    decode row."""
    h, heads = 570.0, 32
    pairs = 460 * 461 // 2 + (2 * 1 + 3)  # (460, ctx 0) and (2, ctx 1)
    tiles, keys2 = 4 + 1, 4 * 461 + 1 * (2 + 2 + 1)
    spread, longest = attention_prefill_work(pairs, 462, tiles, keys2, 461, 1, heads, SMS, h)
    splits = max(1.0, min(461 / 2 / 128, 132 / ((tiles + 1) * heads)))  # 1.8 keys/128 vs 132/192 SMs per block → 1
    assert splits == 1.0
    assert spread == pytest.approx(64 * (keys2 + h * tiles))
    assert longest == pytest.approx(132 * 128 * (461 / 2 + h / 2) / heads)
    # the 2-token chunk adds its padded tile to the spread and leaves the longest piece alone
    alone, alone_longest = attention_prefill_work(460 * 461 // 2, 460, 4, 4 * 461, 461, 2, heads, SMS, h)
    assert spread - alone == pytest.approx(64 * (5 + h))
    assert alone_longest == longest


def test_elementwise_row_floor():
    """One SM streams one row at its 1/132 share of 3.35 TB/s: a 66 KB activation row takes ~2.6 µs."""
    assert elementwise_row_floor_s(66_048, 3.35e12, SMS) == pytest.approx(66_048 * 132 / 3.35e12)


@pytest.mark.parametrize("tp,nbytes,algo", [(2, 4 * 2**20, "one-shot"), (4, 400 * 1024, "one-shot"),
                                            (4, 600 * 1024, "two-shot"), (8, 200 * 1024, "one-shot"),
                                            (8, 300 * 1024, "two-shot"), (8, 9 * 2**20, "nccl"), (3, 1024, "nccl")])
def test_custom_allreduce_thresholds(tp, nbytes, algo):
    """vllm custom_all_reduce.cuh: one-shot at world size 2, or ≤ 4 GPUs below 512 KiB, or ≤ 8 below 256 KiB;
    two-shot up to custom_all_reduce.py's max_size 8 MiB; NCCL beyond (and for world sizes it does not
    support)."""
    ar = AllReduce(tp, 10e-6, 350e9, custom_eligible=True)
    assert ar.algorithm(nbytes) == algo
    n = tp
    expected = {"one-shot": 10e-6 + (n - 1) * nbytes / 350e9,
                "two-shot": 10e-6 + 2 * (n - 1) / n * nbytes / 350e9,
                "nccl": 10e-6 + 2 * (n - 1) / n * nbytes / 350e9}[algo]
    assert ar.time_s(nbytes) == pytest.approx(expected)


def test_nccl_curve_is_used_above_the_custom_limit():
    ar = AllReduce(8, 10e-6, 350e9, custom_eligible=True, curve_name="h100_dgx_all_reduce")
    # the packaged medians: ~0.11 ms at 14.5 MB on 8 H100s (Vidur DGX-H100)
    assert ar.time_s(14_532_608) == pytest.approx(0.000110, rel=0.02)
    assert ar.time_s(64 * 2**20) > ar.time_s(32 * 2**20) > ar.time_s(16 * 2**20)
    assert math.isclose(AllReduce(1, 10e-6, 350e9, custom_eligible=True).time_s(1e6), 0.0)
