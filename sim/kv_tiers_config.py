"""``engine.kv_offload`` and ``kv_store``: KV-cache tiers below the GPU (docs/kv-tiers.md).

``engine.kv_offload`` gives each replica a host-memory (CPU) tier and optionally a local-disk tier,
as vLLM's native ``OffloadingConnector``, LMCache (``local_cpu`` / ``local_disk``) and SGLang HiCache
(L2 host pool) do. ``kv_store`` is one remote store shared by every replica of the run (Mooncake
Store; LMCache's remote backend and HiCache's L3 talk to the same kind of service).

Bandwidths are **gigabytes per second** (10⁹ bytes/s), one direction of one link:

- ``cpu_bandwidth_gbps``: host↔device bandwidth of *one GPU's* PCIe link; a replica's GPUs (TP/PP
  ranks) each move their own shard of a block over their own link at the same time. Default: the
  hardware profile's ``pcie_bandwidth_bytes_per_s`` (cited there; PCIe Gen5 x16 = 64 GB/s per
  direction on H100/H200, Gen4 x16 = 32 GB/s on A100/A10).
- ``disk_bandwidth_gbps``: the replica's local NVMe read/write bandwidth (one shared device).
- ``kv_store.bandwidth_gbps``: the replica's NIC bandwidth to the store (all its GPUs' NICs
  together: 8 × 400 Gb/s ConnectX-7 = 400 GB/s on an 8-GPU node).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.config_base import Frozen

__all__ = ["KVOffloadConfig", "KVStoreConfig", "OFFLOAD_MODES", "DEFAULT_DISK_BANDWIDTH_GBPS",
           "DEFAULT_DISK_LATENCY_US", "DEFAULT_CPU_LATENCY_US", "DEFAULT_LMCACHE_CHUNK_SIZE"]

#: how each connector's loads meet the request's prefill (docs/kv-tiers.md, "Modes")
OFFLOAD_MODES = ("vllm-native", "lmcache", "hicache")

# Samsung PM1743 (PCIe Gen5 NVMe data-centre SSD) datasheet: 13,000 MB/s sequential read, 6,600 MB/s
# sequential write; KV chunks are large sequential I/O, so the read figure applies to loads. A Gen4
# drive (Samsung PM9A3: 6,900 MB/s read) halves it. One drive per replica is the default.
DEFAULT_DISK_BANDWIDTH_GBPS = 13.0
# NVMe read latency: ~100 µs for a 4 KiB random read on data-centre TLC NAND (PM1743 datasheet lists
# 2,500 K random-read IOPS at QD-high; single-I/O latency is ~70-100 µs on TLC NAND).
DEFAULT_DISK_LATENCY_US = 100.0
# LMCache's default chunk_size (LMCache docs, "Configuring LMCache": "The size of the chunk as an
# integer (set to 256 by default)"): KV is stored, looked up and retrieved in chunks of this many tokens.
DEFAULT_LMCACHE_CHUNK_SIZE = 256
# One cudaMemcpyAsync host↔device: ~10 µs launch + DMA set-up (CUDA best-practices guide: small
# transfers are dominated by a fixed overhead of the order of 10 µs).
DEFAULT_CPU_LATENCY_US = 10.0


class KVOffloadConfig(Frozen):
    """``engine.kv_offload``: per-replica CPU (and optional disk) KV tiers, LRU, write-through."""

    cpu_gib: float = Field(..., gt=0.0, description="host memory per replica for offloaded KV blocks, GiB (all the "
                           "replica's GPUs' shards together; vLLM num_cpu_blocks × block bytes, LMCache max_local_cpu_size, "
                           "SGLang --hicache-size)")
    disk_gib: float = Field(0.0, ge=0.0, description="local disk per replica for KV blocks, GiB (LMCache local_disk); 0 = no disk tier")
    cpu_bandwidth_gbps: float | None = Field(None, gt=0.0, description="PCIe bandwidth of one GPU's host link, GB/s (10⁹ B/s) "
                                             "per direction; default: the hardware profile's pcie_bandwidth_bytes_per_s")
    disk_bandwidth_gbps: float = Field(DEFAULT_DISK_BANDWIDTH_GBPS, gt=0.0, description="local NVMe bandwidth, GB/s "
                                       "(default 13: a PCIe Gen5 data-centre SSD, Samsung PM1743 datasheet)")
    cpu_latency_us: float = Field(DEFAULT_CPU_LATENCY_US, ge=0.0, description="fixed cost of one host↔device transfer, µs")
    disk_latency_us: float = Field(DEFAULT_DISK_LATENCY_US, ge=0.0, description="fixed cost of one disk transfer, µs")
    policy: Literal["lru"] = Field("lru", description="eviction policy of every tier (all three connectors use LRU)")
    chunk_size: int | None = Field(None, ge=1, description="mode lmcache only: LMCache's chunk_size, tokens per stored "
                                   "chunk (a multiple of engine.block_size); default 256, LMCache's default")
    mode: Literal["vllm-native", "lmcache", "hicache"] = Field(
        "vllm-native", description="how a load meets the prefill: vllm-native = asynchronous (the request waits, the "
        "engine keeps stepping others); lmcache = synchronous before the step that schedules the request; hicache = "
        "layer-wise, overlapping the step's compute")


class KVStoreConfig(Frozen):
    """``kv_store``: one remote KV store shared by every replica (write-through, LRU)."""

    kind: Literal["mooncake"] = Field("mooncake", description="store implementation (Mooncake Store: RDMA transfer engine)")
    capacity_gib: float = Field(..., gt=0.0, description="store capacity, GiB (the DRAM the store's nodes contribute)")
    bandwidth_gbps: float = Field(..., gt=0.0, description="one replica's NIC bandwidth to the store, GB/s (10⁹ B/s), "
                                  "per direction")
    mode: Literal["vllm-native", "lmcache", "hicache"] = Field(
        "vllm-native", description="how a load meets the prefill when there is no engine.kv_offload (whose mode "
        "rules otherwise); see engine.kv_offload.mode")
    latency_us: float = Field(20.0, ge=0.0, description="fixed cost of one store transfer, µs (an RDMA round trip "
                              "plus the store's metadata lookup)")
    chunk_size: int | None = Field(None, ge=1, description="mode lmcache only: LMCache's chunk_size, tokens per stored "
                                   "chunk (a multiple of engine.block_size); default 256, LMCache's default")
