"""Tensor-parallel all-reduce time by message size: vLLM's custom all-reduce for small messages, NCCL
(measured curve where the profile has one) above its limit.

vLLM reduces the TP activations with its own kernel whenever it can
(``vllm/distributed/device_communicators/custom_all_reduce.py``: ``CustomAllreduce`` for world sizes 2, 4,
6, 8 on fully connected NVLink — or two GPUs over PCIe — up to ``max_size = 8192 * 1024`` bytes) and falls
back to NCCL above. The kernel (``csrc/custom_all_reduce.cuh``, ``allreduce``) picks

* **one-shot** (every rank reads all peers' buffers and reduces; ``(n−1)·S`` bytes in per GPU) when
  ``world_size == 2``, or ``world_size <= 4 and bytes < 512 KiB``, or ``world_size <= 8 and bytes < 256 KiB``;
* **two-shot** otherwise (reduce-scatter + all-gather, ``2(n−1)/n·S`` per GPU).

Both cost ``allreduce_latency_s`` (the profile's custom all-reduce latency) plus bytes over the link at
``communication_efficiency``. NCCL: the profile's measured curve (``interconnect.allreduce_measurements``,
median times by size and GPU count; interpolated log-linearly in size, extended at the last segment's
bandwidth) or, without one, the ring formula ``latency + 2(n−1)/n·S/(link·e)``.
"""
from __future__ import annotations

import bisect
import csv
import math
from functools import lru_cache
from pathlib import Path

#: ``CustomAllreduce._SUPPORTED_WORLD_SIZES`` and ``max_size``
CUSTOM_AR_WORLD_SIZES = (2, 4, 6, 8)
CUSTOM_AR_MAX_BYTES = 8192 * 1024
#: ``custom_all_reduce.cuh``: one-shot below these sizes (world size ≤ 4 / ≤ 8; always at 2)
ONE_SHOT_MAX_BYTES = {4: 512 * 1024, 8: 256 * 1024}

NETWORK_DATA = Path(__file__).resolve().parents[1] / "data" / "network"


@lru_cache(maxsize=None)
def measured_curve(name: str) -> dict[int, tuple[tuple[float, ...], tuple[float, ...]]]:
    """``{num_gpus: (sizes, seconds)}`` of a measured all-reduce curve in ``sim/data/network/<name>.csv``."""
    path = NETWORK_DATA / f"{name}.csv"
    rows: dict[int, list[tuple[float, float]]] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            rows.setdefault(int(r["num_gpus"]), []).append((float(r["size_bytes"]), float(r["seconds"])))
    return {n: (tuple(s for s, _ in sorted(v)), tuple(t for _, t in sorted(v))) for n, v in rows.items()}


def interpolate_curve(sizes: tuple[float, ...], seconds: tuple[float, ...], nbytes: float) -> float:
    """Time of ``nbytes`` on a measured curve: log-linear inside, the end segments' slope outside."""
    if nbytes <= sizes[0]:
        return seconds[0]
    i = bisect.bisect_left(sizes, nbytes)
    if i >= len(sizes):  # beyond the last point: at the bandwidth of the last segment
        s0, s1, t0, t1 = sizes[-2], sizes[-1], seconds[-2], seconds[-1]
        return t1 + (nbytes - s1) * (t1 - t0) / (s1 - s0)
    s0, s1, t0, t1 = sizes[i - 1], sizes[i], seconds[i - 1], seconds[i]
    w = (math.log(nbytes) - math.log(s0)) / (math.log(s1) - math.log(s0))
    return t0 + w * (t1 - t0)


class AllReduce:
    """Time of one all-reduce of ``nbytes`` among the ``tp`` GPUs of a replica."""

    __slots__ = ("tp", "latency_s", "link", "custom", "curve")

    def __init__(self, tp: int, latency_s: float, link_bytes_per_s: float, *, custom_eligible: bool,
                 curve_name: str | None = None) -> None:
        self.tp, self.latency_s, self.link = tp, latency_s, link_bytes_per_s
        self.custom = custom_eligible and tp in CUSTOM_AR_WORLD_SIZES
        curve = measured_curve(curve_name) if curve_name else {}
        self.curve = curve.get(tp)

    def algorithm(self, nbytes: float) -> str:
        """``one-shot``, ``two-shot`` (vLLM custom all-reduce), ``nccl`` or ``none`` (TP 1)."""
        if self.tp <= 1:
            return "none"
        if self.custom and nbytes <= CUSTOM_AR_MAX_BYTES:
            if self.tp == 2 or nbytes < ONE_SHOT_MAX_BYTES[4 if self.tp <= 4 else 8]:
                return "one-shot"
            return "two-shot"
        return "nccl"

    def time_s(self, nbytes: float) -> float:
        """Seconds for one all-reduce of ``nbytes`` (per GPU buffer size)."""
        n = self.tp
        if n <= 1 or nbytes <= 0:
            return 0.0
        algo = self.algorithm(nbytes)
        if algo == "one-shot":
            return self.latency_s + (n - 1) * nbytes / self.link
        if algo == "two-shot":
            return self.latency_s + 2.0 * (n - 1) / n * nbytes / self.link
        if self.curve is not None:
            return interpolate_curve(self.curve[0], self.curve[1], nbytes)
        return self.latency_s + 2.0 * (n - 1) / n * nbytes / self.link
