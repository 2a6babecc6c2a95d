"""KV-cache tiers (sim/engine/kv_tiers.py): link and load-time oracles, the analytic LRU hit rate of a
cyclic reuse pattern per tier, the tier-read invariant, per-mode load semantics and config errors."""
from __future__ import annotations

import math

import pytest

from sim.config import parse_experiment
from sim.engine.kv_cache import KVCacheManager
from sim.engine.kv_tiers import ClusterTiers, Link, TierInvariantError, TierSpec, TierStore
from sim.engine.request import Request, RequestSpec
from sim.errors import ConfigError
from sim.runs.runner import run

GIB = 1024 ** 3


# ---------------------------------------------------------------- links
def test_link_idle_transfer_is_bytes_over_bandwidth_plus_latency():
    link = Link("pcie", 50e9, 10e-6)
    assert link.transfer(1.0, 2 * 10 ** 9) == pytest.approx(1.0 + 2e9 / 50e9 + 10e-6)


def test_link_serves_first_come_first_served():
    link = Link("pcie", 1e9, 0.0)
    a = link.transfer(0.0, 10 ** 9)  # 1 s
    b = link.transfer(0.5, 10 ** 9)  # waits for a: 1.0 .. 2.0
    c = link.transfer(3.0, 10 ** 9)  # idle again
    assert (a, b, c) == (pytest.approx(1.0), pytest.approx(2.0), pytest.approx(4.0))
    assert link.bytes_moved == 3 * 10 ** 9 and link.busy_s == pytest.approx(3.0)


# ---------------------------------------------------------------- tier store
def test_tier_store_lru_cyclic_pattern_oracle():
    """Cyclic reuse of K distinct blocks over R rounds in an LRU of capacity C: every access misses
    if K > C; all but the first round hit if K ≤ C (the textbook LRU result)."""
    for k, cap in ((100, 99), (100, 100), (100, 250)):
        t = TierStore("cpu", cap)
        rounds, hits = 5, 0
        for _ in range(rounds):
            for h in range(k):
                if t.holds(h, 0.0):
                    hits += 1
                    t.touch(h)
                else:
                    t.insert(h, 0.0)
                assert 0 <= len(t) <= cap
        expect = 0 if k > cap else (rounds - 1) * k
        assert hits == expect


def test_tier_read_invariant_absent_and_in_flight():
    t = TierStore("cpu", 4)
    with pytest.raises(TierInvariantError, match="absent"):
        t.read(7, 0.0)
    t.insert(7, ready_s=2.0)  # its write completes at t = 2 s
    assert not t.holds(7, 1.0)
    with pytest.raises(TierInvariantError, match="in flight"):
        t.read(7, 1.0)
    t.read(7, 2.0)
    assert t.num_reads_checked == 3


# ---------------------------------------------------------------- replica tiers on a real allocator
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _spec(mode: str, cpu_blocks: int = 1000, pcie: float = 25e9, lat: float = 10e-6) -> TierSpec:
    return TierSpec(mode=mode, block_size=16, block_bytes=1 << 20, cpu_blocks=cpu_blocks, disk_blocks=0,
                    pcie_bytes_per_s=pcie, cpu_latency_s=lat, disk_bytes_per_s=1.0, disk_latency_s=0.0)


def _req(rid: int, doc: int, n: int) -> Request:
    spec = RequestSpec(0.0, n, 4, prompt_segments=((("doc", doc), n),))
    return Request(rid, spec, 0.0)


def _compute(kv: KVCacheManager, req: Request) -> None:
    """Prefill ``req`` fully and free it (its blocks stay cached on the GPU, then write through)."""
    assert kv.allocate_slots(req, req.num_prompt_tokens)
    req.num_computed_tokens = req.num_prompt_tokens
    kv.free(req)


def _setup(mode: str, **kw):
    clock = _Clock()
    kv = KVCacheManager(64, 16, enable_prefix_caching=True, block_bytes=1 << 20)
    tiers = ClusterTiers(_spec(mode, **kw), clock).attach(kv)
    _compute(kv, _req(0, doc=1, n=40 * 16))
    tiers.after_step(0.0)  # write-through of the 40 blocks
    clock.now = 1.0
    _compute(kv, _req(1, doc=2, n=64 * 16))  # evicts doc 1 from the 64-block GPU cache
    tiers.after_step(1.0)
    clock.now = 2.0
    return clock, kv, tiers


@pytest.mark.parametrize("mode", ["vllm-native", "lmcache", "hicache"])
def test_load_time_oracle_idle_system(mode):
    """A prefix evicted from the GPU is loaded back from the CPU tier when the scheduler admits the
    request; on idle links the load takes bytes / bandwidth + latency and the step pays it per mode."""
    clock, kv, tiers = _setup(mode)
    assert len(tiers.cpu) == 40 + 64
    b = _req(2, doc=1, n=40 * 16 + 8)  # same 40 blocks + a tail
    assert kv.peek_prefix_hit(b) == 0  # nothing on the GPU
    assert kv.get_computed_blocks(b) == 40 * 16  # the scheduler takes the tier blocks as a hit
    b.num_computed_tokens = 40 * 16
    assert kv.num_blocks_to_allocate(b, 8) == 41  # loaded + new blocks, allocated together
    assert kv.allocate_slots(b, 8)
    nbytes = 40 * (1 << 20)
    expect = nbytes / 25e9 + 10e-6
    dt = tiers.step_time(2.0, 0.005)
    assert dt == pytest.approx(0.005 + expect if mode == "lmcache" else max(0.005, expect))
    assert tiers.load_s_total == pytest.approx(expect)
    assert tiers.cpu.hit_tokens == 40 * 16 and tiers.cpu.bytes_read == nbytes
    kv.free(b)
    kv.check_invariants()
    assert kv.peek_prefix_hit(b) == 40 * 16  # loaded blocks stay cached on the GPU


def test_load_called_off_when_admission_is_undone():
    """The scheduler admits, then gives the request back in the same step (not enough blocks for the
    rest): the load never starts and its blocks lose the content."""
    clock, kv, tiers = _setup("vllm-native")
    b = _req(2, doc=1, n=40 * 16 + 8)
    assert kv.get_computed_blocks(b) == 40 * 16
    kv.free(b)  # undo_prefix
    assert kv.peek_prefix_hit(b) == 0
    assert tiers.step_time(2.0, 0.005) == 0.005
    assert tiers.cpu.hit_tokens == 0 and tiers.num_called_off == 1
    assert kv.num_prefix_hit_tokens == 0
    kv.check_invariants()


def test_write_in_flight_is_not_read():
    """A block whose device→host write has not completed cannot serve a load."""
    clock, kv, tiers = _setup("vllm-native", pcie=1e6)  # 1 MB/s: 40 MiB ready only after ~42 s
    assert kv.get_computed_blocks(_req(2, doc=1, n=40 * 16 + 8)) == 0
    assert tiers.cpu.num_reads_checked == 0


def test_lmcache_mode_stores_prompt_blocks_only():
    clock = _Clock()
    kv = KVCacheManager(64, 16, enable_prefix_caching=True, block_bytes=1 << 20)
    tiers = ClusterTiers(_spec("lmcache"), clock).attach(kv)
    r = _req(0, doc=1, n=10 * 16)
    assert kv.allocate_slots(r, r.num_prompt_tokens)
    r.num_computed_tokens = r.num_prompt_tokens
    r.num_output_tokens = 16  # a decoded block fills
    assert kv.allocate_slots(r, 16)
    tiers.after_step(0.0)
    assert len(tiers.cpu) == 10  # the decoded block is not stored (save_decode_cache off)
    kv.free(r)


# ---------------------------------------------------------------- engine runs
def _cyclic_cfg(**engine_extra):
    """One client sends prompts of N = 12 documents in turn (block-aligned 256 tokens + 1 unique
    token, 1 output token), so each request's only full blocks are its document's 16 blocks."""
    data = {
        "name": "cyclic", "model": "llama-3.1-8b", "hardware": "h100-sxm",
        "engine": {"policy": "vllm", "num_kv_blocks": 64, "max_model_len": 4096, **engine_extra},
        "workload": {"num_requests": 60, "arrival": {"process": "closed", "clients": 1},
                     "prefix": {"num_groups": 12, "prefix_tokens": 256, "assignment": "round-robin"},
                     "input_tokens": 1, "output_tokens": 1},
    }
    return data


def _tiers_summary(data, **top):
    data = {**data, **top}
    return run(parse_experiment(data, "<test>")).summary["kv_tiers"]


BLOCK_BYTES = 16 * 131072  # llama-3.1-8b: 32 layers × 8 KV heads × 128 × 2 (K, V) × 2 bytes per token


@pytest.mark.parametrize("cpu_blocks, hit", [(12 * 16 - 16, False), (12 * 16 * 2, True)])
def test_engine_cpu_tier_hit_rate_matches_cyclic_lru(cpu_blocks, hit):
    """K = 192 document blocks cycle through a 64-block GPU cache (always misses) and a CPU tier of
    176 (< K: LRU misses everything) or 384 blocks (≥ K: every round after the first hits)."""
    s = _tiers_summary(_cyclic_cfg(kv_offload={"cpu_gib": cpu_blocks * BLOCK_BYTES / GIB}))
    q = 60 * 257
    assert s["num_query_tokens"] == q
    assert s["gpu_hit_tokens"] == 0
    expect = (60 - 12) * 256 / q if hit else 0.0
    assert s["tiers"]["cpu"]["hit_rate"] == pytest.approx(expect)
    assert s["tiers"]["cpu"]["bytes_read"] == (48 * 16 * BLOCK_BYTES if hit else 0)


def test_engine_disk_and_store_tiers_hit_rate_matches_cyclic_lru():
    """CPU tier smaller than the cycle, disk (or the shared store) larger: the lower tier serves every
    repeat, the CPU tier none."""
    small = 100 * BLOCK_BYTES / GIB
    big = 400 * BLOCK_BYTES / GIB
    q = 60 * 257
    s = _tiers_summary(_cyclic_cfg(kv_offload={"cpu_gib": small, "disk_gib": big}))
    assert s["tiers"]["cpu"]["hit_rate"] == 0.0
    assert s["tiers"]["disk"]["hit_rate"] == pytest.approx(48 * 256 / q)
    # the shared store alone (no CPU tier): it serves every repeat; smaller than the cycle, none
    s = _tiers_summary(_cyclic_cfg(), kv_store={"capacity_gib": big, "bandwidth_gbps": 25.0})
    assert "cpu" not in s["tiers"]
    assert s["tiers"]["store"]["hit_rate"] == pytest.approx(48 * 256 / q)
    s = _tiers_summary(_cyclic_cfg(), kv_store={"capacity_gib": small, "bandwidth_gbps": 25.0})
    assert s["tiers"]["store"]["hit_rate"] == 0.0


def test_engine_load_time_matches_oracle():
    """Each load of one 16-block document from the CPU tier on an otherwise idle PCIe link (one
    client, writes long finished) takes exactly bytes / bandwidth + latency."""
    cfg = _cyclic_cfg(kv_offload={"cpu_gib": 400 * BLOCK_BYTES / GIB, "cpu_bandwidth_gbps": 10.0,
                                  "cpu_latency_us": 50.0})
    res = run(parse_experiment(cfg, "<test>"))
    s = res.summary["kv_tiers"]
    assert s["num_loads"] == 48
    assert s["mean_load_s"] == pytest.approx(16 * BLOCK_BYTES / 10e9 + 50e-6, rel=1e-9)
    assert s["tiers"]["cpu"]["capacity_blocks"] == 400 and s["tiers"]["cpu"]["peak_blocks_per_replica"] <= 400


def test_offload_cuts_ttft_of_repeats():
    base = run(parse_experiment(_cyclic_cfg(), "<t>")).summary
    off = run(parse_experiment(_cyclic_cfg(kv_offload={"cpu_gib": 1.0}), "<t>")).summary
    assert off["mean_ttft_ms"] < base["mean_ttft_ms"]


def test_same_seed_identical():
    cfg = _cyclic_cfg(kv_offload={"cpu_gib": 0.5, "mode": "lmcache"})
    a = run(parse_experiment(cfg, "<t>"))
    b = run(parse_experiment(cfg, "<t>"))
    assert a.requests.equals(b.requests)


# ---------------------------------------------------------------- config errors
@pytest.mark.parametrize("patch, needle", [
    ({"engine": {"kv_offload": {"cpu_gib": 1, "mode": "lmcash"}}}, "engine.kv_offload.mode"),
    ({"engine": {"kv_offload": {"cpu_gib": 0}}}, "engine.kv_offload.cpu_gib"),
    ({"engine": {"kv_offload": {"cpu_gib": 1, "cpu_gb": 1}}}, "engine.kv_offload.cpu_gb: unknown key"),
    ({"kv_store": {"capacity_gib": 1}}, "kv_store.bandwidth_gbps: required key is missing"),
    ({"kv_store": {"capacity_gib": 1, "bandwidth_gbps": 1, "kind": "redis"}}, "kv_store.kind"),
])
def test_config_errors_name_key_and_file(patch, needle):
    data = {"name": "x", "model": "llama-3.1-8b", "hardware": "h100-sxm", **patch}
    with pytest.raises(ConfigError) as exc:
        parse_experiment(data, "exp.yaml")
    msg = str(exc.value)
    assert "exp.yaml" in msg and needle in msg and "\n" not in msg


def test_config_errors_at_build():
    cfg = _cyclic_cfg(kv_offload={"cpu_gib": 1e-6})
    with pytest.raises(ConfigError, match="engine.kv_offload.cpu_gib"):
        run(parse_experiment(cfg, "<t>"))
    cfg = _cyclic_cfg(kv_offload={"cpu_gib": 1}, enable_prefix_caching=False)
    with pytest.raises(ConfigError, match="enable_prefix_caching"):
        run(parse_experiment(cfg, "<t>"))


def test_no_tier_keys_no_tier_block():
    s = run(parse_experiment(_cyclic_cfg(), "<t>")).summary
    assert "kv_tiers" not in s
    assert math.isfinite(s["mean_ttft_ms"])


# ---------------------------------------------------------------- vllm-native: asynchronous loads
def _async_setup():
    """``_setup`` for vllm-native with an admission that found 40 blocks in the CPU tier, allocated
    as vLLM's scheduler does for ``load_kv_async`` (the loaded tokens' blocks only, not hashed)."""
    clock, kv, tiers = _setup("vllm-native")
    b = _req(2, doc=1, n=40 * 16 + 8)
    b.num_computed_tokens = kv.get_computed_blocks(b)
    assert b.num_computed_tokens == 40 * 16 and tiers.has_pending_load(b)
    assert kv.allocate_slots(b, 0, delay_cache_blocks=True)
    assert kv.num_held_blocks(b) == 40
    return clock, kv, tiers, b


def test_async_load_lands_after_bytes_over_bandwidth_and_is_cached_then():
    """The load starts at admission and ends bytes / bandwidth + latency later; its blocks are not a
    prefix hit for anyone before it landed and the request cached them; steps run meanwhile are
    not slowed (no stall)."""
    clock, kv, tiers, b = _async_setup()
    end = tiers.start_async_load(b, 2.0)
    assert end == pytest.approx(2.0 + 40 * (1 << 20) / 25e9 + 10e-6)
    probe = _req(3, doc=1, n=40 * 16 + 8)
    assert kv.peek_prefix_hit(probe) == 0  # delayed caching: the blocks hold no content yet
    assert tiers.step_time(2.0, 0.0005) == 0.0005  # another request's step: not held up by the load
    tiers.after_step(2.0005)
    assert tiers.stall_s == 0.0
    assert not tiers.load_landed(b, 2.0005, async_scheduling=False)
    # busy engine: a step ending after the load reports it; under async scheduling one plan later
    assert tiers.step_time(2.0005, 0.003) == 0.003
    tiers.after_step(2.0035)
    assert tiers.load_landed(b, 2.0035, async_scheduling=False)
    assert not tiers.load_landed(b, 2.0035, async_scheduling=True)
    assert tiers.step_time(2.0035, 0.003) == 0.003
    tiers.after_step(2.0065)
    assert tiers.load_landed(b, 2.0065, async_scheduling=True)
    tiers.finish_async_load(b, 2.0065)
    assert kv.allocate_slots(b, 0)  # the scheduler caches the loaded blocks
    assert kv.peek_prefix_hit(probe) == 40 * 16
    assert kv.allocate_slots(b, 8)
    assert tiers.async_wait_s == pytest.approx(2.0065 - end)
    kv.free(b)
    tiers.check()
    kv.check_invariants()


def test_async_load_idle_engine_sees_it_as_it_lands():
    """An engine with nothing else to run polls the connector: it plans again when the load lands."""
    clock, kv, tiers, b = _async_setup()
    end = tiers.start_async_load(b, 2.0)
    assert tiers.next_load_end_s(2.0) == end
    assert tiers.load_landed(b, end, async_scheduling=True)
    kv.free(b)


def test_async_load_called_off_when_request_freed_while_loading():
    """A request aborted in WAITING_FOR_REMOTE_KVS (the horizon's drain) gives its blocks back,
    unhashed; the load counts as called off and nothing is left pending."""
    clock, kv, tiers, b = _async_setup()
    tiers.start_async_load(b, 2.0)
    free_before = kv.num_free_blocks
    kv.free(b)
    assert kv.num_free_blocks == free_before + 40
    assert tiers.num_called_off == 1 and not tiers.is_loading(b)
    assert kv.peek_prefix_hit(b) == 0
    tiers.check()
    kv.check_invariants()


def test_engine_async_load_ttft_is_load_plus_prefill_of_rest():
    """Idle system (one client): a repeat whose 16-block document comes from the CPU tier waits out
    its load, then prefills its last token. Its TTFT exceeds that of the same request hitting on the
    GPU (same step shape: 1 new token on 256 cached) by exactly the load time, bytes / bandwidth +
    latency; no step is stretched by a load."""
    bw, lat = 10.0, 50.0
    off = run(parse_experiment(_cyclic_cfg(kv_offload={"cpu_gib": 400 * BLOCK_BYTES / GIB,
                                                       "cpu_bandwidth_gbps": bw, "cpu_latency_us": lat}), "<t>"))
    gpu = _cyclic_cfg()
    gpu["engine"] = {**gpu["engine"], "num_kv_blocks": 400}
    hit = run(parse_experiment(gpu, "<t>"))
    load = 16 * BLOCK_BYTES / (bw * 1e9) + lat * 1e-6
    r_off, r_hit = off.requests.iloc[12:], hit.requests.iloc[12:]
    assert (r_off["num_cached_tokens"] == 256).all() and (r_hit["num_cached_tokens"] == 256).all()
    diff = r_off["ttft_s"].to_numpy() - r_hit["ttft_s"].to_numpy()
    assert diff == pytest.approx([load] * len(diff), rel=1e-6)
    s = off.summary["kv_tiers"]
    assert s["engine_stall_s"] == 0.0 and s["num_loads"] == 48
    # no step carries the load: the steps are those of the all-GPU run, priced by the cost model alone
    assert off.iterations["time_s"].to_numpy() == pytest.approx(hit.iterations["time_s"].to_numpy(), rel=1e-12)


def test_engine_async_load_does_not_slow_other_requests():
    """Two clients on a slow host link (1 GB/s: a 16-block load takes ~34 ms, longer than a step):
    with vllm-native the other request's steps go on while a load is in flight (no stall, no step
    as long as a load); the layer-wise fallback (hicache) stretches steps to the load."""
    extra = {"cpu_gib": 400 * BLOCK_BYTES / GIB, "cpu_bandwidth_gbps": 1.0}
    cfg = _cyclic_cfg(kv_offload=extra)
    cfg["workload"] = {**cfg["workload"], "arrival": {"process": "closed", "clients": 2}, "output_tokens": 64}
    nat = run(parse_experiment(cfg, "<t>"))
    load = 16 * BLOCK_BYTES / 1e9
    assert nat.summary["kv_tiers"]["num_loads"] > 0
    assert nat.summary["kv_tiers"]["engine_stall_s"] == 0.0
    assert nat.iterations["time_s"].max() < load
    cfg["engine"] = {**cfg["engine"], "kv_offload": {**extra, "mode": "hicache"}}
    hic = run(parse_experiment(cfg, "<t>"))
    assert hic.summary["kv_tiers"]["engine_stall_s"] > 0.0
    assert hic.iterations["time_s"].max() >= load


# ---------------------------------------------------------------- lmcache: chunks and host staging
def _lmcache(cpu_blocks=1000, store_blocks=0, chunk_blocks=4):
    clock = _Clock()
    kv = KVCacheManager(64, 16, enable_prefix_caching=True, block_bytes=1 << 20)
    spec = TierSpec(mode="lmcache", block_size=16, block_bytes=1 << 20, cpu_blocks=cpu_blocks, disk_blocks=0,
                    pcie_bytes_per_s=25e9, cpu_latency_s=10e-6, disk_bytes_per_s=1.0, disk_latency_s=0.0,
                    store_blocks=store_blocks, nic_bytes_per_s=5e9, store_latency_s=20e-6,
                    chunk_blocks=chunk_blocks)
    cluster = ClusterTiers(spec, clock)
    return clock, kv, cluster.attach(kv)


def test_lmcache_stores_whole_chunks_only_and_hits_whole_chunks():
    """Chunks of 4 blocks (64 tokens): a 10-block + 8-token prompt stores 2 chunks (8 blocks), its
    partial last chunk not at all; a request with 2 blocks on the GPU and the same document takes
    the tier's blocks only up to the last whole chunk of the prompt's start."""
    clock, kv, tiers = _lmcache()
    a = _req(0, doc=1, n=10 * 16 + 8)
    _compute(kv, a)
    tiers.after_step(0.0)
    assert len(tiers.cpu) == 8
    clock.now = 1.0
    # GPU hit of 2 blocks (evict the rest from the GPU by hand), tier holds blocks 0..7: hit = 8
    b = _req(1, doc=1, n=10 * 16 + 8)
    hashes = kv.content_hashes(b, 10)
    n = tiers.extend_hit(b, hashes, 2, 10)
    assert n == 6  # blocks 2..7: the tier run 2..7 ends on the chunk boundary 8
    tiers._pending_loads.clear()
    tiers._admitted.clear()  # (the lookup alone, without an allocator state: nothing to give back)
    # the GPU hit of 2 blocks + a tier run of 5 blocks (chunk 1 partly missing) → hit rounds down to 4
    c = _req(2, doc=1, n=10 * 16 + 8)
    tiers.cpu._lru.pop(hashes[7])
    assert tiers.extend_hit(c, hashes, 2, 10) == 2


def test_lmcache_store_load_stages_through_host():
    """A store load in lmcache mode goes NIC → host buffer → PCIe, one after the other: on idle
    links it takes bytes / NIC + NIC latency + bytes / PCIe + PCIe latency."""
    clock, kv, tiers = _lmcache(cpu_blocks=0, store_blocks=1000, chunk_blocks=1)
    assert tiers.cpu is None
    end = tiers._book_load(0.0, 0, 0, 40)
    nbytes = 40 * (1 << 20)
    assert end == pytest.approx(nbytes / 5e9 + 20e-6 + nbytes / 25e9 + 10e-6)
    assert tiers.h2d.bytes_moved == nbytes and tiers.nic_in.bytes_moved == nbytes


def test_lmcache_chunk_size_config():
    cfg = _cyclic_cfg(kv_offload={"cpu_gib": 1, "mode": "lmcache", "chunk_size": 100})
    with pytest.raises(ConfigError, match="engine.kv_offload.chunk_size"):
        run(parse_experiment(cfg, "<t>"))
    cfg = _cyclic_cfg(kv_offload={"cpu_gib": 1, "chunk_size": 256})
    with pytest.raises(ConfigError, match="only LMCache"):
        run(parse_experiment(cfg, "<t>"))
    # default 256 tokens: the 257-token prompts of the cyclic pattern store (and hit) one whole chunk
    s = _tiers_summary(_cyclic_cfg(kv_offload={"cpu_gib": 400 * BLOCK_BYTES / GIB, "mode": "lmcache"}))
    assert s["tiers"]["cpu"]["hit_tokens"] == 48 * 256
    s = _tiers_summary(_cyclic_cfg(kv_offload={"cpu_gib": 400 * BLOCK_BYTES / GIB, "mode": "lmcache",
                                               "chunk_size": 512}))
    assert s["tiers"]["cpu"]["hit_tokens"] == 0  # no prompt holds a whole 512-token chunk
