"""Speculative decoding against published measurements (sim/fidelity/speculative_validation.py; the
table and the explanation of every miss are in docs/validation.md#speculative-decoding)."""
from __future__ import annotations

import pytest

from sim.fidelity.speculative_validation import TOLERANCE, all_points, mtp_sweep, p_eagle_vs_eagle3, sgl_mtp_large, sgl_mtp_small


def test_trtllm_mtp_depth_sweep_within_tolerance():
    """DeepSeek-R1 MTP 1–5 on 8×B200 at batch 1: every speedup within 15 %, and the simulated run
    reproduces the published acceptance lengths it was given."""
    pts = mtp_sweep()
    for p, al in zip(pts, (1.92, 2.58, 2.82, 2.99, 3.01)):
        assert abs(p.error) <= TOLERANCE, p
        assert p.acceptance_length == pytest.approx(al, abs=0.08)
    # diminishing returns: depth 5 gains less than depth 3-4, as measured
    assert pts[4].simulated < max(p.simulated for p in pts[2:4])


def test_p_eagle_over_eagle3_by_concurrency_mt_bench():
    """MT-Bench P/E ratios at concurrency 2–64 within 15 % (c = 1 misses: per-pass drafter latency,
    docs/validation.md)."""
    pts = p_eagle_vs_eagle3("MT-Bench", concurrency=(2, 8, 32, 64), output_tokens=512)
    for p in pts:
        assert abs(p.error) <= TOLERANCE, p
    # P-EAGLE's advantage shrinks with load, as measured
    assert pts[0].simulated > pts[-1].simulated


@pytest.mark.slow
def test_sglang_mtp_long_context_decode_with_dp_attention():
    """DeepSeek-V3, DP attention 16 × EP 16 on H200, 2 requests per rank at 64k: a documented miss —
    the simulated gain is below the measured one for both windows (verification attention at 64k is
    compute bound and priced at the profile's assumed attention efficiency, docs/validation.md), by
    16–20 %; the extra draft gains less than the first, as measured."""
    pts = sgl_mtp_small()
    assert all(p.simulated < p.measured and abs(p.error) <= 0.2 for p in pts), pts
    assert pts[1].simulated <= pts[0].simulated * 1.01


def test_sglang_mtp_wide_ep_high_batch():
    """128 requests per rank on the blog's 96 decode ranks, one draft: the gain over no MTP is small
    (+14.2 % measured) and within 15 % over DeepSeek's published 85–90 % acceptance range. A documented
    miss (docs/validation.md): the simulated gain is 11–13 % low, because the simulated step is almost all
    token-proportional (all-to-all and attention double with the verified token); the gain still grows
    with the acceptance."""
    pts = sgl_mtp_large((0.85, 0.875, 0.90))
    for p in pts:
        assert abs(p.error) <= TOLERANCE and p.simulated < p.measured, p
    assert pts[0].simulated < pts[1].simulated < pts[2].simulated
    # the closed form of one draft: 1 + α tokens per step
    assert [p.acceptance_length for p in pts] == pytest.approx([1.85, 1.875, 1.90])


@pytest.mark.slow
def test_all_published_points():
    pts = all_points()
    assert sum(abs(p.error) <= TOLERANCE for p in pts) >= 25
