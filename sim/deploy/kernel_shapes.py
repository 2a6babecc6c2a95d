"""Shape-dependent kernel efficiency: how far a GEMM, an attention call or an element-wise kernel of a
given shape stays from the roofline (docs/cost-model.md, "Kernel shapes").

**GEMM** (per GPU: M rows = tokens, N output columns, K reduction). A GEMM kernel cuts the output into
``TILE_M × TILE_N`` tiles and runs one tile per SM at a time; when there are fewer tiles than SMs it splits
K (split-K / stream-K) into at most ``K / SPLIT_K_MIN`` slices so the idle SMs share the reduction. The
compute time is the number of **waves** times the time of one tile-slice::

    tiles = ⌈M/TILE_M⌉ · ⌈N/TILE_N⌉          split = clamp(⌊SMs / tiles⌋, 1, ⌊K / SPLIT_K_MIN⌋)
    waves = ⌈tiles · split / SMs⌉            t_c   = waves · 2·TILE_M·TILE_N·(K/split) / (peak/SMs · e)

so a GEMM pays for padded rows (M = 65 costs two row tiles), for the last partial wave (wave
quantisation), and a narrow per-GPU N (high TP) fills few SMs. The memory side is the weight-streaming
floor ``t_m = bytes / (bandwidth · e_mem)``. The two overlap imperfectly in an isolated kernel:
``t = (t_c^p + t_m^p)^(1/p)`` with ``p = gemm_overlap_exponent`` (0 = perfect overlap, ``max``), plus the
per-kernel floor ``gemm_kernel_s``.

``TILE_M × TILE_N`` = 64 × 128 (Hopper's wgmma works on 64-row slices, Ampere's CUTLASS default CTA tile
is 128 × 128 split in two 64-row warp tiles) and ``SPLIT_K_MIN`` = 256 were chosen on the Vidur H100/A100
GEMM timings among 64/128 × 64/128/256 (benchmarks/fit_vidur_profiles.py; tests/test_roofline_vidur.py).

**Attention (prefill)**: FlashAttention's efficiency rises with the sequence length: the causal forward
pass of FlashAttention-3 on H100 (head dim 128, 16k tokens per batch; Shah et al. 2024, arXiv:2407.08608,
fig. 5) runs at 292, 423, 521, 579, 602, 616 TFLOPS for 0.5k…16k tokens = ``e·L/(L + L_half)`` with
``L_half`` ≈ 630 tokens; FlashAttention-2's bars in the same figure (191…335 TFLOPS) give ≈ 440. ``L`` of a
batch is twice the mean keys per prefill query (a causal self-attention of length L has L/2). A chunk also
needs enough query tiles to fill the GPU: ``heads/tp × Σ⌈q_i/128⌉`` CTAs on ``SMs`` (FlashAttention's
128-row query tile, padded), split along the keys when they are too few (``num_splits``): short chunks on
long contexts pay for padded query tiles, short contexts with few heads for idle SMs.

**Element-wise kernels** (norms, rotary, activation): ``bytes / (bandwidth · e_ew) + t_kernel`` plus a
floor that grows with the row width: at few tokens one thread block handles one row, so the row streams at
one SM's share of the bandwidth, ``row_bytes · SMs / bandwidth``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

TILE_M = 64
TILE_N = 128
SPLIT_K_MIN = 256
#: FlashAttention query tile (rows of Q per thread block)
ATTENTION_Q_TILE = 128


@dataclass(frozen=True, slots=True)
class GemmShape:
    """Batch-independent part of one GEMM's tile model on one GPU."""

    tiles_n: int  # ⌈N / TILE_N⌉ × batched instances
    split_max: int  # ⌊K / SPLIT_K_MIN⌋ (≥ 1)
    tile_s: float  # seconds of one full-K tile on one SM: 2·TILE_M·TILE_N·K / (peak/SMs · e)
    sms: int

    def compute_s(self, m: float, groups: float = 1.0) -> float:
        """Compute time of the GEMM with ``m`` rows (waves × time of one tile slice); ``groups``: copies run
        as one grouped GEMM (the touched experts of an MoE layer, each with ``m`` rows)."""
        if m <= 0:
            return 0.0
        tiles = int(-(-m // TILE_M)) * self.tiles_n  # ⌈m / TILE_M⌉ without a function call (hot path)
        if groups > 1.0:
            tiles *= int(-(-groups // 1))
        sms = self.sms
        if tiles >= sms:
            return -(-tiles // sms) * self.tile_s
        split = sms // tiles
        if split > self.split_max:
            split = self.split_max
        return -(-(tiles * split) // sms) * self.tile_s / split


def gemm_shape(n_out: float, k_in: float, instances: float, peak_flops: float, efficiency: float,
               sms: int) -> GemmShape:
    """The tile model of a GEMM with ``n_out`` × ``k_in`` weights per GPU (``instances`` batched copies)."""
    tiles_n = max(1, math.ceil(n_out / TILE_N)) * max(1, int(round(instances)))
    split_max = max(1, int(k_in // SPLIT_K_MIN))
    tile_s = 2.0 * TILE_M * TILE_N * k_in / (peak_flops / sms * efficiency)
    return GemmShape(tiles_n, split_max, tile_s, sms)


def overlap(tc: float, tm: float, p: float) -> float:
    """Combined time of compute ``tc`` and memory ``tm``: ``max`` for ``p = 0``, else the p-norm."""
    if p <= 0:
        return tc if tc > tm else tm
    return (tc ** p + tm ** p) ** (1.0 / p)


def attention_prefill_work(pairs: float, num_rows: float, q_tiles: float, tile_keys2: float, max_keys2: float,
                           other_rows: float, heads_per_gpu: float, sms: int,
                           half_length: float) -> tuple[float, float]:
    """FlashAttention's work on a batch's prefill chunks, in (query, key) pairs at
    ``attention_compute_efficiency`` of the whole GPU: ``(spread, longest)``. The kernel takes
    ``max(spread + the decodes' own pairs, longest)``; ``pairs`` and ``num_rows`` are the chunks' (query,
    key) pairs and query rows, the tile sums :class:`BatchShape`'s, ``other_rows`` the step's one-row
    requests (decodes, one-token prompts) that share the varlen kernel.

    * Queries run in tiles of ``ATTENTION_Q_TILE`` rows: a chunk of q tokens pays for ⌈q/128⌉·128 rows
      (a 64-token chunk wastes half its MMA work on padding). A tile's rows are charged the mean keys of
      their request's rows, so the padded work is W = Σ_i ⌈q_i/128⌉·128·(ctx_i + (q_i + 1)/2).
    * Each thread block — a head × a query tile, or a head × a one-row request — walks its keys in
      ``splits`` pieces (FlashAttention-3's ``num_splits``, which vLLM's V1 backend sets, chosen from the
      longest request's keys): up to keys/128 pieces while the blocks do not fill the SMs, none once they do.
    * Each piece pays a prologue/epilogue worth ``half_length``/2 keys (the length ramp
      ``L/(L + half_length)`` of a causal self-attention of length L = twice its mean keys).
    * ``spread`` is all pieces' work over all SMs; ``longest`` is the longest request's piece on one SM
      (times the SM count), so a small extra chunk beside long ones adds work but cannot shorten the
      kernel, and the split keeps the product non-decreasing in the context.

    Without an SM count (``sms`` = 0) only the length ramp applies (``longest`` = 0). For a batch of equal
    chunks, ``max(spread, longest)/pairs`` is ``1 / (padding · occupancy · ramp)`` of one chunk.
    """
    if pairs <= 0 or num_rows <= 0:
        return 0.0, 0.0
    if not sms:
        return pairs + half_length * num_rows / 2.0, 0.0
    rows = ATTENTION_Q_TILE
    longest_keys = max_keys2 / 2.0
    splits = min(longest_keys / rows, sms / ((q_tiles + other_rows) * heads_per_gpu))
    if splits < 1.0:
        splits = 1.0
    spread = rows / 2.0 * (tile_keys2 + half_length * q_tiles * splits)
    longest = sms * rows * (longest_keys / splits + half_length / 2.0) / heads_per_gpu
    return spread, longest


def elementwise_row_floor_s(row_bytes: float, bandwidth: float, sms: int) -> float:
    """Time for one SM to stream one row of ``row_bytes`` at its share of the memory bandwidth."""
    return row_bytes * sms / bandwidth
