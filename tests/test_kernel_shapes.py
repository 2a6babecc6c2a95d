"""Kernel shape models (sim/deploy/kernel_shapes.py, sim/deploy/collectives.py) against hand counts and the
published curves and thresholds they encode."""
from __future__ import annotations

import math

import pytest

from hwprofiles import load_profile
from sim.deploy.collectives import AllReduce
from sim.deploy.kernel_shapes import (TILE_M, TILE_N, attention_prefill_efficiency, elementwise_row_floor_s,
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


def test_attention_reproduces_the_flashattention3_curve():
    """Full occupancy (FA3's benchmark: 16k tokens per batch, 16 heads): e·L/(L + 570) against the measured
    causal forward TFLOPS on H100 (Shah et al. 2024, fig. 5), within 6%."""
    e = load_profile("h100-sxm").efficiency.attention_compute_efficiency.value
    for length, tflops in [(512, 292), (1024, 423), (2048, 521), (4096, 579), (8192, 602), (16384, 616)]:
        seqs = 16384 / length
        f = attention_prefill_efficiency(16384, seqs, length / 2, 16, SMS, 570.0)
        assert e * f * PEAK / 1e12 == pytest.approx(tflops, rel=0.06), length


def test_short_chunks_on_long_contexts_are_far_below_peak():
    """64 new tokens on an 8k context: half of each 128-row query tile is padding (KV splits fill the SMs)."""
    f = attention_prefill_efficiency(64, 1, 8192, 32, SMS, 570.0)
    length = 2 * 8192 / (132 / 32)  # 32 blocks split 4.125 ways: each walks 1/4.125 of the keys
    assert f == pytest.approx(0.5 * length / (length + 570))
    assert f < 0.5 * attention_prefill_efficiency(4096, 1, 2048, 32, SMS, 570.0)
    # without an SM count nothing but the length ramp
    assert attention_prefill_efficiency(64, 1, 8192, 32, 0, 570.0) == pytest.approx(16384 / (16384 + 570))


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
