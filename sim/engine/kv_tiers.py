"""KV-cache tiers below the GPU: per-replica CPU and disk tiers, a remote store shared by all replicas,
and the links the blocks move over (docs/kv-tiers.md).

**What is stored.** Every tier is an LRU set of block *hashes* (the GPU prefix cache's content hashes,
:mod:`sim.engine.kv_cache`), so a block stored by one request is found by any later request whose
prefix has the same content — on any replica for the shared store. Writes are *write-through*, as
all three connectors do by default (vLLM's ``OffloadingConnector`` stores every block once it is
full; LMCache stores a request's prompt chunks after its prefill; SGLang HiCache's default
``--hicache-write-policy write_through``): when a step fills blocks, they are copied device→host
after the step, host→disk after that, and device→store over the NIC. A block evicted from the GPU is
therefore already in the CPU tier unless the CPU tier's own LRU dropped it. ``lmcache`` mode stores
only prompt blocks (LMCache's ``save_decode_cache`` is off by default); the others store every full
block, generated ones included.

**Links.** Each transfer occupies a :class:`Link` (one direction of PCIe, the NVMe drive, one
direction of the NIC) first come first served: it starts when the link is free, takes
``bytes / bandwidth``, and completes ``latency`` later. Transfers of a replica's writes and loads on
the same link therefore contend (a write-back storm delays a load). A block copy is *ready* in its
tier only when its transfer completes; until then no read may use it.

**Loads.** When the scheduler admits a request (``get_computed_blocks``), the blocks of its prefix
beyond the GPU hit are looked up tier by tier (CPU, then disk, then the remote store) and the longest
contiguous run held somewhere counts as computed; its GPU blocks are allocated with the request's
new blocks by the next ``allocate_slots``, all or nothing, as vLLM allocates external tokens — a
request whose loaded and new blocks do not fit waits, and its copies stay safe below. The load
starts when the step that runs the request is priced: CPU blocks over PCIe host→device; disk
blocks over the drive and then PCIe (pipelined chunk by chunk, so the slower link sets the pace);
store blocks over the NIC straight into GPU memory (GPUDirect RDMA, as Mooncake's transfer engine
does) — except in ``lmcache`` mode, whose chunks pass through host memory (NIC → host, then PCIe;
device → host, then NIC for writes), and which stores and hits whole ``chunk_size`` chunks only. How the load time meets the step depends on ``mode``:

- ``lmcache``: synchronous (LMCache's ``start_load_kv`` before the forward pass): ``dt + load``;
- ``hicache``: layer-wise (SGLang's ``load_back`` overlapping layer by layer): ``max(dt, load)``;
- ``vllm-native``: asynchronous, as vLLM V1's scheduler does with a connector whose
  ``get_num_new_matched_tokens`` returns ``load_kv_async=True`` (the ``OffloadingConnector``): at
  admission only the loaded tokens' blocks are allocated (``allocate_slots(..., delay_cache_blocks=
  True)``: not yet hashed), the load starts (:meth:`ReplicaTiers.start_async_load`) and the request
  sits out in ``WAITING_FOR_REMOTE_KVS`` — in the waiting queue, not in the running batch, using
  neither token budget nor a ``max_num_seqs`` slot — until the plan that sees the load finished
  (:meth:`ReplicaTiers.load_landed`); its blocks are cached then and it prefills the rest like any
  waiting request with computed tokens. Other requests' steps do not wait for the load. A scheduler
  that does not drive async loads (every policy but ``vllm``) falls back to ``max(dt, load)``.

Invariants (checked on every read and at the end of every run): a read takes a block only from a
tier that holds it and whose copy is ready; no tier ever holds more blocks than its capacity (or a
negative count); every load that started either completed or belongs to a request reported
called off (an async load is called off when its request is freed before it lands: aborted at the
horizon); links' byte counters only grow.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim.errors import ConfigError
from sim.kv_tiers_config import DEFAULT_LMCACHE_CHUNK_SIZE

__all__ = ["Link", "TierStore", "TierSpec", "ReplicaTiers", "ClusterTiers", "TierInvariantError",
           "tier_spec"]

GIB = 1024 ** 3


class TierInvariantError(AssertionError):
    """A KV-tier invariant failed (a bug in simctl, never a user error)."""


class Link:
    """One direction of one transfer channel, served first come first served.

    ``transfer(start_s, nbytes)`` books ``nbytes / bandwidth`` seconds starting at
    ``max(start_s, free_at_s)`` and returns the completion time (plus the fixed ``latency_s``, which
    does not occupy the link: it is set-up and flight time, overlapping the next transfer's data).
    On an idle link a transfer therefore takes exactly ``nbytes / bandwidth + latency``.
    """

    __slots__ = ("name", "bandwidth_bytes_per_s", "latency_s", "free_at_s", "bytes_moved", "busy_s",
                 "num_transfers")

    def __init__(self, name: str, bandwidth_bytes_per_s: float, latency_s: float) -> None:
        if not bandwidth_bytes_per_s > 0:
            raise TierInvariantError(f"link {name}: bandwidth must be > 0, got {bandwidth_bytes_per_s}")
        self.name = name
        self.bandwidth_bytes_per_s = float(bandwidth_bytes_per_s)
        self.latency_s = float(latency_s)
        self.free_at_s = 0.0
        self.bytes_moved = 0
        self.busy_s = 0.0
        self.num_transfers = 0

    def transfer(self, start_s: float, nbytes: int) -> float:
        """Book a transfer of ``nbytes`` that may start at ``start_s``; return its completion time."""
        begin = start_s if start_s > self.free_at_s else self.free_at_s
        dur = nbytes / self.bandwidth_bytes_per_s
        self.free_at_s = begin + dur
        self.bytes_moved += nbytes
        self.busy_s += dur
        self.num_transfers += 1
        return begin + dur + self.latency_s

    def report(self, span_s: float) -> dict[str, Any]:
        """Bytes moved, transfers and the fraction of ``span_s`` the link was busy."""
        return {"bytes_moved": int(self.bytes_moved), "num_transfers": int(self.num_transfers),
                "busy_s": self.busy_s, "utilization": self.busy_s / span_s if span_s > 0 else 0.0,
                "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s, "latency_s": self.latency_s}


class TierStore:
    """An LRU set of block hashes with a capacity in blocks; each entry carries the time its copy is
    ready (its write completed). Evicting takes the least recently inserted or touched entry."""

    __slots__ = ("name", "capacity_blocks", "_lru", "hit_tokens", "num_hit_blocks", "bytes_read",
                 "bytes_written", "num_evicted", "peak_blocks", "num_reads_checked")

    def __init__(self, name: str, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise TierInvariantError(f"tier {name}: capacity must be ≥ 1 block, got {capacity_blocks}")
        self.name = name
        self.capacity_blocks = int(capacity_blocks)
        self._lru: OrderedDict[int, float] = OrderedDict()  # hash -> ready_s, LRU first
        self.hit_tokens = 0
        self.num_hit_blocks = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.num_evicted = 0
        self.peak_blocks = 0
        self.num_reads_checked = 0

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, h: int) -> bool:
        return h in self._lru

    def holds(self, h: int, now_s: float) -> bool:
        """True if a ready copy of block ``h`` is here at ``now_s``."""
        ready = self._lru.get(h)
        return ready is not None and ready <= now_s

    def hashes(self):
        """The hashes held (ready or in flight); a read-only view."""
        return self._lru.keys()

    def insert(self, h: int, ready_s: float) -> None:
        """Add block ``h`` (ready at ``ready_s``) as most recently used, evicting the LRU entry if full.
        A block already here is only touched (its ready time stays the earlier one)."""
        lru = self._lru
        if h in lru:
            lru.move_to_end(h)
            return
        if len(lru) >= self.capacity_blocks:
            lru.popitem(last=False)
            self.num_evicted += 1
        lru[h] = ready_s
        if len(lru) > self.peak_blocks:
            self.peak_blocks = len(lru)

    def touch(self, h: int) -> None:
        """Mark ``h`` most recently used (no-op if absent)."""
        if h in self._lru:
            self._lru.move_to_end(h)

    def read(self, h: int, now_s: float) -> None:
        """Check that a ready copy of ``h`` is here (the tier-read invariant) and touch it."""
        self.num_reads_checked += 1
        if not self.holds(h, now_s):
            state = "in flight" if h in self._lru else "absent"
            raise TierInvariantError(f"tier {self.name}: read of block {h} at t={now_s:.6f}s but it is {state}")
        self._lru.move_to_end(h)

    def check(self) -> None:
        """Raise :class:`TierInvariantError` if the capacity invariant is broken."""
        if not 0 <= len(self._lru) <= self.capacity_blocks:
            raise TierInvariantError(f"tier {self.name}: holds {len(self._lru)} blocks, capacity {self.capacity_blocks}")
        if min(self.hit_tokens, self.bytes_read, self.bytes_written, self.num_evicted) < 0:
            raise TierInvariantError(f"tier {self.name}: a counter went negative")

    def report(self, block_bytes: int, num_query_tokens: int) -> dict[str, Any]:
        """Counters of this tier for the summary."""
        return {"capacity_blocks": self.capacity_blocks, "capacity_bytes": self.capacity_blocks * block_bytes,
                "blocks_held_end": len(self._lru), "peak_blocks": self.peak_blocks,
                "hit_tokens": int(self.hit_tokens),
                "hit_rate": self.hit_tokens / num_query_tokens if num_query_tokens else 0.0,
                "bytes_read": int(self.bytes_read), "bytes_written": int(self.bytes_written),
                "num_evicted": int(self.num_evicted)}


@dataclass(frozen=True)
class TierSpec:
    """Resolved tier settings of one run (built by the runner from the config and the deployment)."""

    mode: str  # "vllm-native" | "lmcache" | "hicache"
    block_size: int  # tokens per block
    block_bytes: int  # bytes of one block, all of a replica's GPUs' shards together
    cpu_blocks: int  # CPU tier capacity per replica (0: no CPU tier; only with a store)
    disk_blocks: int  # disk tier capacity per replica (0 = none)
    pcie_bytes_per_s: float  # the replica's host<->device bandwidth per direction (all its GPUs)
    cpu_latency_s: float
    disk_bytes_per_s: float
    disk_latency_s: float
    store_blocks: int = 0  # shared remote store capacity (0 = no store)
    nic_bytes_per_s: float = 0.0  # one replica's NIC bandwidth to the store, per direction
    store_latency_s: float = 0.0
    chunk_blocks: int = 0  # lmcache: blocks per LMCache chunk (stored and hit in whole chunks); 0 = per block


def tier_spec(offload: Any, store: Any, *, enable_prefix_caching: bool, block_size: int, block_bytes_per_gpu: int,
              num_kv_gpus: int, pcie_bytes_per_s_per_gpu: float) -> TierSpec | None:
    """The :class:`TierSpec` for ``engine.kv_offload`` (``offload``) and ``kv_store`` (``store``), or
    None when neither is set. Capacities are whole blocks of ``block_bytes_per_gpu × num_kv_gpus``;
    a tier too small for one block is a :class:`~sim.errors.ConfigError` naming its key."""
    if offload is None and store is None:
        return None
    key = "engine.kv_offload" if offload is not None else "kv_store"
    if not enable_prefix_caching:
        raise ConfigError(f"{key}: KV tiers hold prefix-cache blocks; set engine.enable_prefix_caching: true "
                          "(the policy's default is off)")
    block_bytes = int(block_bytes_per_gpu) * int(num_kv_gpus)
    if block_bytes <= 0:
        raise TierInvariantError("KV tiers need the KV block size in bytes")
    cpu_blocks = disk_blocks = 0
    pcie = float(pcie_bytes_per_s_per_gpu) * num_kv_gpus
    cpu_lat = disk_lat = 0.0
    disk_bw = 1.0
    mode = store.mode if offload is None else offload.mode
    if offload is not None:
        cpu_blocks = int(offload.cpu_gib * GIB // block_bytes)
        disk_blocks = int(offload.disk_gib * GIB // block_bytes)
        if offload.cpu_bandwidth_gbps is not None:
            pcie = offload.cpu_bandwidth_gbps * 1e9 * num_kv_gpus
        cpu_lat = offload.cpu_latency_us * 1e-6
        disk_bw = offload.disk_bandwidth_gbps * 1e9
        disk_lat = offload.disk_latency_us * 1e-6
        if cpu_blocks < 1:
            raise ConfigError(f"engine.kv_offload.cpu_gib: {offload.cpu_gib} GiB holds no KV block of {block_bytes} bytes")
        if offload.disk_gib > 0 and disk_blocks < 1:
            raise ConfigError(f"engine.kv_offload.disk_gib: {offload.disk_gib} GiB holds no KV block of {block_bytes} bytes")
    store_blocks, nic, store_lat = 0, 0.0, 0.0
    if store is not None:
        store_blocks = int(store.capacity_gib * GIB // block_bytes)
        if store_blocks < 1:
            raise ConfigError(f"kv_store.capacity_gib: {store.capacity_gib} GiB holds no KV block of {block_bytes} bytes")
        nic = store.bandwidth_gbps * 1e9
        store_lat = store.latency_us * 1e-6
    chunk_blocks = 0
    if offload is not None and store is not None and store.chunk_size is not None:
        raise ConfigError("kv_store.chunk_size: with engine.kv_offload set, its mode and chunk_size rule both tiers; "
                          "set engine.kv_offload.chunk_size")
    chunk_key = key if offload is not None else "kv_store"
    chunk = (offload if offload is not None else store).chunk_size
    if mode == "lmcache":
        chunk = DEFAULT_LMCACHE_CHUNK_SIZE if chunk is None else chunk
        if chunk % block_size:
            raise ConfigError(f"{chunk_key}.chunk_size: {chunk} tokens is not a multiple of engine.block_size "
                              f"({block_size}): LMCache chunks are whole KV blocks here")
        chunk_blocks = chunk // block_size
    elif chunk is not None:
        raise ConfigError(f"{chunk_key}.chunk_size: only LMCache stores in chunks (mode: lmcache), mode is {mode}")
    return TierSpec(mode, block_size, block_bytes, cpu_blocks, disk_blocks, pcie, cpu_lat, disk_bw, disk_lat,
                    store_blocks, nic, store_lat, chunk_blocks)


class ReplicaTiers:
    """The tiers and links of one replica, hooked to its KV allocator (``kv.tier_hook``).

    The allocator calls :meth:`extend_hit` when a request's GPU prefix hit stops short and
    :meth:`on_free` when it releases a request; the replica calls :meth:`step_time` before each step
    (the loads of the requests it admitted start then) and :meth:`after_step` after it (write-through
    of the blocks the step filled). Counters feed :meth:`ClusterTiers.report`.
    """

    def __init__(self, spec: TierSpec, kv: Any, store: TierStore | None, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.kv = kv
        self.clock = clock
        self.cpu = TierStore("cpu", spec.cpu_blocks) if spec.cpu_blocks > 0 else None
        self.disk = TierStore("disk", spec.disk_blocks) if spec.disk_blocks > 0 else None
        self.store = store
        self.h2d = Link("pcie_h2d", spec.pcie_bytes_per_s, spec.cpu_latency_s)
        self.d2h = Link("pcie_d2h", spec.pcie_bytes_per_s, spec.cpu_latency_s)
        # one NVMe drive: reads and writes share it
        self.disk_link = Link("disk", spec.disk_bytes_per_s, spec.disk_latency_s) if self.disk is not None else None
        self.nic_in = Link("nic_in", spec.nic_bytes_per_s, spec.store_latency_s) if store is not None else None
        self.nic_out = Link("nic_out", spec.nic_bytes_per_s, spec.store_latency_s) if store is not None else None
        self.prompt_only = spec.mode == "lmcache"
        # LMCache moves remote chunks through pinned host memory (its remote connectors read into
        # MemoryObjs of the LocalCPUBackend allocator, then copy them to the GPU): NIC → host → PCIe
        self.staged = spec.mode == "lmcache"
        self._pending_writes: list[int] = []  # hashes filled by the step now running
        # request id -> (first loaded block index, [(hash, tier)]): admitted this step, not started
        self._pending_loads: dict[int, tuple[int, list[tuple[int, TierStore]]]] = {}
        self.stall_s = 0.0  # engine time the loads added to steps
        self.num_loads = 0
        self.load_s_total = 0.0
        self.num_called_off = 0  # loads called off: the scheduler gave the request back before its step
        self._admitted: dict[int, tuple[int, int]] = {}  # request id -> (query tokens, GPU hit tokens)
        # vllm-native async loads in flight: request id -> completion time (WAITING_FOR_REMOTE_KVS)
        self._loading: dict[int, float] = {}
        self._reserved: dict[int, int] = {}  # request id -> new tokens whose blocks it holds while loading
        self.loads_async = spec.mode == "vllm-native"
        # ends of the last two steps: under async scheduling a plan sees the connector's "finished
        # receiving" report of step k only from the plan after step k+1's (the output of step k is
        # processed while step k+1 runs)
        self._last_end_s = self._prev_end_s = -1.0
        self._engine_idle = True  # no step ran since the engine last found nothing to run
        self.async_wait_s = 0.0  # time requests spent in WAITING_FOR_REMOTE_KVS (load → plan that admits it)
        self.num_query_tokens = 0  # tokens looked up by admissions that ran
        self.gpu_hit_tokens = 0
        kv.tier_hook = self

    # ---------------------------------------------------------------- writes
    def blocks_stored(self, req: Any, hashes: list[int], first: int, num_full: int) -> None:
        """The KV allocator registered ``req``'s blocks ``first..num_full-1`` (full, hashed): queue
        them for write-through after the step that computes them."""
        if self.prompt_only:  # LMCache stores the prompt's whole chunks only (a partial last chunk is not stored)
            cb = self.spec.chunk_blocks or 1
            num_full = min(num_full, req.num_prompt_tokens // (self.spec.block_size * cb) * cb)
        if num_full > first:
            self._pending_writes.extend(hashes[first:num_full])

    def after_step(self, end_s: float) -> None:
        """The step ended at ``end_s``: write the blocks it filled to every tier that lacks them."""
        self._prev_end_s, self._last_end_s = self._last_end_s, end_s
        pending = self._pending_writes
        if not pending:
            return
        self._pending_writes = []
        bb = self.spec.block_bytes
        cpu, disk, store = self.cpu, self.disk, self.store
        new_cpu = [h for h in pending if h not in cpu] if cpu is not None else []
        host_ready = end_s  # when the step's blocks are in host memory (lmcache's staging buffer)
        if new_cpu:
            ready = host_ready = self._write(cpu, self.d2h, end_s, new_cpu, bb)
            if disk is not None:
                new_disk = [h for h in new_cpu if h not in disk]
                if new_disk:
                    self._write(disk, self.disk_link, ready, new_disk, bb)
        if store is not None:
            new_store = [h for h in pending if h not in store]
            if new_store:
                start = end_s
                if self.staged:  # LMCache: device → host buffer first (once, shared with the CPU tier), then the NIC
                    start = host_ready if cpu is not None else self.d2h.transfer(end_s, len(new_store) * bb)
                self._write(store, self.nic_out, start, new_store, bb)

    @staticmethod
    def _write(tier, link, start_s: float, hashes: list, block_bytes: float) -> float:
        """Copy ``hashes`` into ``tier`` over ``link`` from ``start_s``; each copy is readable from the
        returned time (the end of the transfer)."""
        ready = link.transfer(start_s, len(hashes) * block_bytes)
        tier.bytes_written += len(hashes) * block_bytes
        for h in hashes:
            tier.insert(h, ready)
        return ready

    # ---------------------------------------------------------------- loads
    def extend_hit(self, req: Any, hashes: list[int], num_gpu_blocks: int, max_blocks: int) -> int:
        """Called by the KV allocator inside ``get_computed_blocks`` (the scheduler admitting ``req``)
        once its GPU prefix hit is known (``num_gpu_blocks``). Finds the longest run of the following
        blocks held (ready) in the CPU tier, then disk, then the store — pinned from here on, as
        vLLM's offloading manager does in ``prepare_load`` — and returns how many: they count as
        computed tokens, and the request's next ``allocate_slots`` allocates them together with its
        new blocks, or says no for all of it (vLLM allocates external tokens the same way). The load
        and the counters are *pending* until the step that runs the request is priced
        (:meth:`step_time`); if the scheduler gives the request back first (:meth:`on_free`), they
        are called off."""
        bs = self.spec.block_size
        self._admitted[req.request_id] = (req.num_prompt_tokens + req.num_output_tokens, num_gpu_blocks * bs)
        if num_gpu_blocks >= max_blocks:
            return 0
        now = self.clock()
        cpu, disk, store = self.cpu, self.disk, self.store
        if cpu is not None:  # follow use in the CPU LRU (vLLM's offloading manager touches on lookup)
            for h in hashes[:num_gpu_blocks]:
                cpu.touch(h)
        plan: list[tuple[int, TierStore]] = []
        for i in range(num_gpu_blocks, max_blocks):
            h = hashes[i]
            if cpu is not None and cpu.holds(h, now):
                plan.append((h, cpu))
            elif disk is not None and disk.holds(h, now):
                plan.append((h, disk))
            elif store is not None and store.holds(h, now):
                plan.append((h, store))
            else:
                break
        cb = self.spec.chunk_blocks
        if cb > 1 and plan:
            # LMCache's lookup hits whole chunks from the prompt's start; vLLM takes what lies beyond its
            # own GPU hit (get_num_new_matched_tokens = LMCache hit − vLLM computed tokens)
            aligned = (num_gpu_blocks + len(plan)) // cb * cb
            plan = plan[:max(0, aligned - num_gpu_blocks)]
        if not plan:
            return 0
        for h, tier in plan:
            tier.read(h, now)  # the tier-read invariant: raises if the copy is absent or in flight
        self._pending_loads[req.request_id] = (num_gpu_blocks, plan)
        return len(plan)

    def on_free(self, req: Any, blocks: list[int]) -> None:
        """``req`` releases its blocks: an admission not yet run is called off, with its pending load
        (nothing was moved; the blocks, if the allocation happened, were hashed as any computed block
        would be — the step that would have filled them never ran, so drop their hashes)."""
        self._admitted.pop(req.request_id, None)
        self._reserved.pop(req.request_id, None)
        if self._loading.pop(req.request_id, None) is not None:
            # freed while WAITING_FOR_REMOTE_KVS (aborted at the horizon): the copy already on the
            # link cannot be recalled, the request gives up its blocks, which were never hashed
            self.num_called_off += 1
            return
        pending = self._pending_loads.pop(req.request_id, None)
        if pending is None:
            return
        first, plan = pending
        self.num_called_off += 1
        self.kv.unhash_blocks(blocks[first:first + len(plan)], len(plan) * self.spec.block_size)

    def _book_load(self, start_s: float, n_cpu: int, n_disk: int, n_store: int) -> float:
        """Book the links of one load starting at ``start_s``; its completion time. Each tier's part is
        one transfer; parts on different links proceed in parallel, on one link in turn; a disk part
        is pipelined through PCIe (the slower of the two sets its end); a store part arrives over the
        NIC straight into GPU memory (GPUDirect RDMA)."""
        bb = self.spec.block_bytes
        end = start_s
        if n_cpu or n_disk:
            end = max(end, self.h2d.transfer(start_s, (n_cpu + n_disk) * bb))
        if n_disk:
            end = max(end, self.disk_link.transfer(start_s, n_disk * bb))
        if n_store:
            got = self.nic_in.transfer(start_s, n_store * bb)
            if self.staged:  # LMCache: the chunks land in a host buffer, then go up over PCIe
                got = self.h2d.transfer(got, n_store * bb)
            end = max(end, got)
        return end

    def step_time(self, now_s: float, dt: float) -> float:
        """Start the pending loads of the requests this step admitted and return the step's time:
        ``lmcache`` loads before the forward pass (``dt + load``); ``vllm-native`` and ``hicache``
        overlap it (``max(dt, load)``: the step cannot end before its requests' KV has arrived)."""
        if self._admitted:  # the admissions this step runs: count their queries and GPU hits
            for q, g in self._admitted.values():
                self.num_query_tokens += q
                self.gpu_hit_tokens += g
            self._admitted = {}
        self._engine_idle = False
        pending = self._pending_loads
        if not pending:
            return dt
        self._pending_loads = {}
        end = now_s
        for _first, plan in pending.values():
            end = max(end, self._start_load(plan, now_s))
        load = end - now_s
        new_dt = dt + load if self.spec.mode == "lmcache" else max(dt, load)
        self.stall_s += new_dt - dt
        return new_dt

    def _start_load(self, plan: list[tuple[int, TierStore]], now_s: float) -> float:
        """Count one request's load (``plan``: its blocks and their tiers) and book it on the links
        from ``now_s``; its completion time."""
        bs, bb = self.spec.block_size, self.spec.block_bytes
        cpu, disk = self.cpu, self.disk
        counts = {"cpu": 0, "disk": 0, "store": 0}
        for h, tier in plan:
            tier.hit_tokens += bs
            tier.num_hit_blocks += 1
            tier.bytes_read += bb
            counts[tier.name] += 1
            if tier is disk and cpu is not None:  # disk loads pass through host memory
                cpu.insert(h, now_s)
        e = self._book_load(now_s, counts["cpu"], counts["disk"], counts["store"])
        self.num_loads += 1
        self.load_s_total += e - now_s
        return e

    # ---------------------------------------------------------------- async loads (vllm-native)
    def has_pending_load(self, req: Any) -> bool:
        """True if the admission of ``req`` now under way found blocks to load from a tier."""
        return req.request_id in self._pending_loads

    def start_async_load(self, req: Any, now_s: float, reserved_tokens: int = 0) -> float:
        """The scheduler allocated ``req``'s loaded blocks (``delay_cache_blocks``; and those of
        ``reserved_tokens`` new tokens) and parks it in ``WAITING_FOR_REMOTE_KVS``: start its load
        now (vLLM sends the load with this step's connector metadata; the worker starts it with the
        step) and return its completion time."""
        rid = req.request_id
        self._reserved[rid] = reserved_tokens
        _first, plan = self._pending_loads.pop(rid)
        q, g = self._admitted.pop(rid)
        self.num_query_tokens += q
        self.gpu_hit_tokens += g
        end = self._start_load(plan, now_s)
        self._loading[rid] = end
        return end

    @property
    def num_loading(self) -> int:
        """Requests in ``WAITING_FOR_REMOTE_KVS``."""
        return len(self._loading)

    def is_loading(self, req: Any) -> bool:
        """True while ``req`` is in ``WAITING_FOR_REMOTE_KVS``."""
        return req.request_id in self._loading

    def load_landed(self, req: Any, now_s: float, async_scheduling: bool) -> bool:
        """Whether the plan at ``now_s`` sees ``req``'s load finished. vLLM's worker reports finished
        loads in the output of the step during which they ended (``get_finished``); an engine with
        nothing else to run polls its connector with empty steps, so it sees a load as it lands.
        Under async scheduling a step's output is processed after the next plan, one plan later."""
        end = self._loading[req.request_id]
        if end > now_s:
            return False
        if self._engine_idle:
            return True
        return end <= (self._prev_end_s if async_scheduling else self._last_end_s)

    def finish_async_load(self, req: Any, now_s: float) -> int:
        """``req`` leaves ``WAITING_FOR_REMOTE_KVS``; the caller then caches its loaded blocks.
        Returns the new tokens whose blocks were reserved with the load."""
        end = self._loading.pop(req.request_id)
        self.async_wait_s += now_s - end
        return self._reserved.pop(req.request_id)

    def next_load_end_s(self, now_s: float) -> float | None:
        """The engine has nothing to run at ``now_s``: when it should plan again for an async load —
        the earliest one in flight, or ``now_s`` if one landed that the last plan could not see yet —
        or None if no load will change anything. From now until a step runs, finished loads are seen
        as they land (the engine polls its connector with empty steps)."""
        ends = self._loading.values()
        if self._engine_idle:  # the last plan saw every landed load: wait only for loads in flight
            ends = [e for e in ends if e > now_s]
        self._engine_idle = True
        return min(ends) if ends else None

    # ---------------------------------------------------------------- checks / report
    def check(self) -> None:
        """Tier capacities and counters (see the module docstring)."""
        for tier in (self.cpu, self.disk):
            if tier is not None:
                tier.check()
        if self._pending_loads or self._admitted or self._loading:
            raise TierInvariantError(f"{len(self._pending_loads) + len(self._loading)} tier loads neither "
                                     "completed nor called off")
        links = [self.h2d, self.d2h, self.disk_link, self.nic_in, self.nic_out]
        if any(lk is not None and (lk.bytes_moved < 0 or lk.busy_s < 0) for lk in links):
            raise TierInvariantError("a link counter went negative")

    def links(self) -> list[Link]:
        """The links this replica has."""
        return [lk for lk in (self.h2d, self.d2h, self.disk_link, self.nic_in, self.nic_out) if lk is not None]


class ClusterTiers:
    """The tiers of a whole run: the shared remote store and one :class:`ReplicaTiers` per replica."""

    def __init__(self, spec: TierSpec, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.clock = clock
        self.store = TierStore("store", spec.store_blocks) if spec.store_blocks > 0 else None
        self.replicas: list[ReplicaTiers] = []

    def attach(self, kv: Any) -> ReplicaTiers:
        """Tiers for a new replica whose KV allocator is ``kv``."""
        rt = ReplicaTiers(self.spec, kv, self.store, self.clock)
        self.replicas.append(rt)
        return rt

    def check_invariants(self) -> tuple[str, ...]:
        """End-of-run checks; raise :class:`TierInvariantError` on the first that fails."""
        for rt in self.replicas:
            rt.check()
        if self.store is not None:
            self.store.check()
        return ("tier reads only from tiers holding a ready copy", "tier capacities respected",
                "tier loads all started or called off")

    def report(self, span_s: float) -> dict[str, Any]:
        """The ``kv_tiers`` block of the summary (docs/metrics.md)."""
        spec, reps = self.spec, self.replicas
        bb = spec.block_bytes
        q = sum(rt.num_query_tokens for rt in reps)
        out: dict[str, Any] = {"mode": spec.mode, "block_bytes": bb, "num_query_tokens": int(q)}
        tiers: dict[str, Any] = {}
        for name in ("cpu", "disk"):
            stores = [getattr(rt, name) for rt in reps if getattr(rt, name) is not None]
            if not stores:
                continue
            tot = {k: sum(s.report(bb, q)[k] for s in stores)
                   for k in ("capacity_blocks", "capacity_bytes", "blocks_held_end", "hit_tokens", "bytes_read",
                             "bytes_written", "num_evicted")}
            tot["peak_blocks_per_replica"] = max(s.peak_blocks for s in stores)
            tot["hit_rate"] = tot["hit_tokens"] / q if q else 0.0
            tiers[name] = tot
        if self.store is not None:
            tiers["store"] = self.store.report(bb, q)
        out["tiers"] = tiers
        out["gpu_hit_tokens"] = int(sum(rt.gpu_hit_tokens for rt in reps))
        out["gpu_hit_rate"] = out["gpu_hit_tokens"] / q if q else 0.0
        served = out["gpu_hit_tokens"] + sum(t["hit_tokens"] for t in tiers.values())
        out["total_hit_rate"] = served / q if q else 0.0
        num_loads = sum(rt.num_loads for rt in reps)
        out["num_loads"] = int(num_loads)
        out["mean_load_s"] = sum(rt.load_s_total for rt in reps) / num_loads if num_loads else 0.0
        out["engine_stall_s"] = sum(rt.stall_s for rt in reps)
        if spec.mode == "vllm-native":
            out["async_wait_after_load_s"] = sum(rt.async_wait_s for rt in reps)
        out["num_loads_called_off"] = int(sum(rt.num_called_off for rt in reps))
        links: dict[str, Any] = {}
        for rt in reps:
            for lk in rt.links():
                agg = links.setdefault(lk.name, {"bytes_moved": 0, "num_transfers": 0, "busy_s": 0.0,
                                                 "max_utilization": 0.0})
                r = lk.report(span_s)
                agg["bytes_moved"] += r["bytes_moved"]
                agg["num_transfers"] += r["num_transfers"]
                agg["busy_s"] += r["busy_s"]
                agg["max_utilization"] = max(agg["max_utilization"], r["utilization"])
        out["links"] = links
        return out
