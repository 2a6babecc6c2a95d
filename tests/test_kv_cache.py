"""KV-cache allocator: invariants under random use, prefix-cache semantics, swap accounting."""
from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.kv_cache import KVCacheManager, KVInvariantError, _ReqKV
from sim.engine.request import Request, RequestSpec


def make_req(rid: int, prompt: int, out: int = 4, segments=(), output_key=None) -> Request:
    return Request(rid, RequestSpec(0.0, prompt, out, prompt_segments=segments, output_key=output_key), 0.0)


def test_allocate_grows_by_blocks_and_frees_everything():
    kv = KVCacheManager(10, 4)
    r = make_req(0, 10)
    assert kv.allocate_slots(r, 10)
    assert kv.num_held_blocks(r) == 3 and kv.num_free_blocks == 7
    r.num_computed_tokens = 10
    assert kv.allocate_slots(r, 2)  # 12 tokens still fit in 3 blocks
    assert kv.num_free_blocks == 7
    r.num_computed_tokens = 12
    assert kv.allocate_slots(r, 1)
    assert kv.num_free_blocks == 6
    assert kv.usage == pytest.approx(0.4)
    kv.check_invariants()
    kv.free(r)
    assert kv.num_free_blocks == 10 and kv.usage == 0.0
    kv.check_invariants()


def test_failed_allocation_allocates_nothing():
    kv = KVCacheManager(4, 4)
    a, b = make_req(0, 12), make_req(1, 8)
    assert kv.allocate_slots(a, 12)
    assert not kv.allocate_slots(b, 8)
    assert kv.num_free_blocks == 1 and kv.num_held_blocks(b) == 0
    kv.check_invariants()


def test_can_fit_and_blocks_to_allocate():
    kv = KVCacheManager(4, 16)
    assert kv.can_fit(64) and not kv.can_fit(65)
    r = make_req(0, 20)
    assert kv.num_blocks_to_allocate(r, 20) == 2
    kv.allocate_slots(r, 20)
    r.num_computed_tokens = 20
    assert kv.num_blocks_to_allocate(r, 12) == 0 and kv.num_blocks_to_allocate(r, 13) == 1


def test_invariant_check_catches_corruption():
    kv = KVCacheManager(4, 4)
    r = make_req(0, 4)
    kv.allocate_slots(r, 4)
    kv.ref_cnt[0] += 1  # simulate a bug
    with pytest.raises(KVInvariantError):
        kv.check_invariants()


# ----------------------------------------------------------------------------- prefix caching
def test_prefix_hit_counts_only_full_shared_blocks():
    kv = KVCacheManager(20, 4, enable_prefix_caching=True)
    a = make_req(0, 10, segments=(("sys", 6), ("a", 4)))
    assert kv.get_computed_blocks(a) == 0
    assert kv.allocate_slots(a, 10)
    b = make_req(1, 10, segments=(("sys", 6), ("b", 4)))
    # blocks: [0,4) all "sys" -> shared; [4,8) mixes sys and a/b -> differs
    assert kv.get_computed_blocks(b) == 4
    assert kv.ref_cnt[kv._reqs[0].blocks[0]] == 2  # shared, ref-counted
    kv.check_invariants()


def test_prefix_hit_is_capped_below_num_tokens():
    kv = KVCacheManager(20, 4, enable_prefix_caching=True)
    a = make_req(0, 8, segments=(("doc", 8),))
    kv.allocate_slots(a, 8)
    b = make_req(1, 8, segments=(("doc", 8),))
    # both blocks are cached, but the last token must be computed: only 1 block (4 tokens) is a hit
    assert kv.get_computed_blocks(b) == 4


def test_no_hits_without_prefix_caching_or_with_unique_prompts():
    kv = KVCacheManager(20, 4, enable_prefix_caching=False)
    a = make_req(0, 9, segments=(("doc", 9),))
    kv.allocate_slots(a, 9)
    assert kv.get_computed_blocks(make_req(1, 9, segments=(("doc", 9),))) == 0
    kv2 = KVCacheManager(20, 4, enable_prefix_caching=True)
    kv2.allocate_slots(make_req(0, 9), 9)
    assert kv2.get_computed_blocks(make_req(1, 9)) == 0  # default segment is unique per request


def test_freed_blocks_stay_cached_until_reused_and_tail_is_evicted_first():
    kv = KVCacheManager(4, 4, enable_prefix_caching=True)
    a = make_req(0, 13, segments=(("doc", 13),))
    kv.allocate_slots(a, 13)  # 4 blocks, the first 3 full (hashed)
    kv.free(a)  # free queue, front first: partial block, then [8,12), [4,8), [0,4)
    assert kv.num_free_blocks == 4
    b = make_req(1, 13, segments=(("doc", 13),))
    assert kv.get_computed_blocks(b) == 12  # freed blocks are still cached
    kv.free(b)
    c = make_req(2, 8)
    assert kv.allocate_slots(c, 8)  # reuses 2 blocks from the front: the partial one and [8,12)
    d = make_req(3, 13, segments=(("doc", 13),))
    assert kv.get_computed_blocks(d) == 8  # the head of the prefix survived
    kv.check_invariants()


def test_preempted_request_hits_its_own_blocks_on_recompute():
    kv = KVCacheManager(20, 4, enable_prefix_caching=True)
    r = make_req(0, 10, out=10)
    kv.allocate_slots(r, 10)
    r.num_computed_tokens = 10
    r.num_output_tokens = 3  # generated 3 tokens, 12 computed positions after two more steps
    kv.allocate_slots(r, 2)
    r.num_computed_tokens = 12
    kv.free(r)  # recompute preemption
    r.num_computed_tokens = 0
    # num_tokens = 13: hit capped at 12 -> all 3 full blocks (prompt and output content)
    assert kv.get_computed_blocks(r) == 12


def test_output_key_lets_next_turn_hit_previous_answer():
    kv = KVCacheManager(20, 4, enable_prefix_caching=True)
    t1 = make_req(0, 8, out=8, segments=(("u1", 8),), output_key="a1")
    kv.allocate_slots(t1, 8)
    t1.num_computed_tokens = 8
    t1.num_output_tokens = 8
    kv.allocate_slots(t1, 7)  # the last sampled token is never computed
    t1.num_computed_tokens = 15
    kv.free(t1)
    t2 = make_req(1, 20, segments=(("u1", 8), ("a1", 8), ("u2", 4)))
    assert kv.get_computed_blocks(t2) == 12  # u1 (2 blocks) + first block of the answer; [12,16) not computed


def test_prefix_hit_takes_blocks_off_the_free_queue():
    kv = KVCacheManager(3, 4, enable_prefix_caching=True)
    a = make_req(0, 9, segments=(("doc", 9),))
    kv.allocate_slots(a, 9)
    kv.free(a)
    b = make_req(1, 9, segments=(("doc", 9),))
    assert kv.get_computed_blocks(b) == 8
    assert kv.num_free_blocks == 1
    b.num_computed_tokens = 8
    assert kv.allocate_slots(b, 1)
    assert kv.num_free_blocks == 0
    kv.check_invariants()

def _cached_doc_and_holder(kv: KVCacheManager) -> list[int]:
    """A freed 13-token document (its 3 full blocks cached, on the free queue) whose first block a running
    request took back as a hit; returns the document's 3 full blocks."""
    doc = make_req(0, 13, segments=(("doc", 13),))
    kv.allocate_slots(doc, 13)
    blocks = list(kv._reqs[0].blocks[:3])
    kv.free(doc)
    holder = make_req(1, 5, segments=(("doc", 5),))
    assert kv.get_computed_blocks(holder) == 4  # takes the cached [0,4) block off the free queue
    holder.num_computed_tokens = 4
    kv.allocate_slots(holder, 1)
    return blocks


def test_peek_prefix_hit_changes_nothing():
    kv = KVCacheManager(6, 4, enable_prefix_caching=True)
    _cached_doc_and_holder(kv)
    free_order, refs, owners = list(kv._free), list(kv.ref_cnt), set(kv._reqs)
    counters = (kv.num_prefix_queries_tokens, kv.num_prefix_hit_tokens)
    r = make_req(2, 20, segments=(("doc", 13), ("q", 7)))
    assert kv.peek_prefix_hit(r) == 12  # the three full document blocks (one in use, two free)
    capped = make_req(3, 12, segments=(("doc", 12),))
    assert kv.peek_prefix_hit(capped) == 8  # capped below num_tokens: the last token is computed
    assert kv.peek_prefix_hit(make_req(4, 20)) == 0  # a unique prompt
    assert list(kv._free) == free_order and kv.ref_cnt == refs and set(kv._reqs) == owners
    assert (kv.num_prefix_queries_tokens, kv.num_prefix_hit_tokens) == counters
    assert r.num_computed_tokens == 0
    kv.check_invariants()
    assert kv.get_computed_blocks(r) == 12  # the peek agreed with the real hit
    assert KVCacheManager(6, 4).peek_prefix_hit(make_req(0, 20, segments=(("doc", 20),))) == 0


def test_refresh_prefix_moves_free_hit_blocks_to_the_mru_end():
    kv = KVCacheManager(6, 4, enable_prefix_caching=True)
    blocks = _cached_doc_and_holder(kv)
    free_before = list(kv._free)
    assert blocks[0] not in free_before and blocks[1] in free_before and blocks[2] in free_before
    counters = (kv.num_prefix_queries_tokens, kv.num_prefix_hit_tokens)
    kv.refresh_prefix(make_req(2, 20, segments=(("doc", 13), ("q", 7))))
    # the held blocks[0] stays put; blocks[2] then blocks[1] go to the end, so the prefix's head is
    # evicted last — the order a hit taken and freed again would leave
    rest = [b for b in free_before if b not in blocks]
    assert list(kv._free) == rest + [blocks[2], blocks[1]]
    assert (kv.num_prefix_queries_tokens, kv.num_prefix_hit_tokens) == counters
    kv.check_invariants()



# ----------------------------------------------------------------------------- swap
def test_swap_out_and_in_move_bytes_and_keep_accounting():
    kv = KVCacheManager(8, 4, num_cpu_blocks=3, block_bytes=1000)
    r = make_req(0, 10)
    kv.allocate_slots(r, 10)
    r.num_computed_tokens = 10
    assert kv.swap_out(r) == 3000
    assert kv.num_free_blocks == 8 and kv.num_free_cpu_blocks == 0
    kv.check_invariants()
    big = make_req(1, 4)
    kv.allocate_slots(big, 4)
    assert kv.swap_out(big) is None  # host pool full: nothing changes
    assert kv.swap_in(r) == 3000
    assert kv.num_held_blocks(r) == 3 and kv.num_free_cpu_blocks == 3
    kv.check_invariants()
    kv.free(r)
    kv.free(big)
    assert kv.num_free_blocks == 8


# ----------------------------------------------------------------------------- random sequences
ops = st.lists(st.tuples(st.sampled_from(["alloc", "free", "hit", "swap_out", "swap_in", "grow"]),
                         st.integers(0, 7), st.integers(1, 40)), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops=ops, prefix=st.booleans(), block_size=st.sampled_from([1, 4, 16]))
def test_invariants_hold_under_random_operations(ops, prefix, block_size):
    kv = KVCacheManager(12, block_size, enable_prefix_caching=prefix, num_cpu_blocks=6, block_bytes=10)
    reqs = {i: make_req(i, 5 + 3 * i, segments=((("shared", i % 2), 3 + 3 * i),)) for i in range(8)}
    swapped = set()
    for op, i, n in ops:
        r = reqs[i]
        free_before = kv.num_free_blocks
        if op == "alloc" and i not in swapped:
            need = kv.num_blocks_to_allocate(r, n)
            ok = kv.allocate_slots(r, n)
            assert ok == (need <= free_before)
            if ok:
                r.num_computed_tokens += n
            else:
                assert kv.num_free_blocks == free_before
        elif op == "grow" and i not in swapped and kv.num_held_blocks(r):
            if kv.allocate_slots(r, 1):
                r.num_computed_tokens += 1
        elif op == "free":
            kv.free(r)
            swapped.discard(i)
            r.num_computed_tokens = 0
        elif op == "hit" and kv.num_held_blocks(r) == 0 and i not in swapped:
            kv.free(r)
            hit = kv.get_computed_blocks(r)
            assert hit % block_size == 0 and hit <= r.num_tokens - 1
            r.num_computed_tokens = hit
        elif op == "swap_out" and i not in swapped:
            if kv.swap_out(r) is not None:
                swapped.add(i)
        elif op == "swap_in" and i in swapped:
            if kv.swap_in(r) is not None:
                swapped.discard(i)
        kv.check_invariants()
        assert 0.0 <= kv.usage <= 1.0
    for r in reqs.values():
        kv.free(r)
    kv.check_invariants()
    assert kv.num_free_blocks == kv.num_blocks and kv.num_free_cpu_blocks == kv.num_cpu_blocks


def test_duplicate_content_is_cached_in_every_copy():
    # Two requests compute the same document at once (neither could hit the other): both copies are
    # registered, so evicting one still leaves the content findable (vLLM's cache_full_blocks).
    kv = KVCacheManager(8, 4, enable_prefix_caching=True)
    a = make_req(0, 9, segments=(("doc", 9),))
    b = make_req(1, 9, segments=(("doc", 9),))
    assert kv.get_computed_blocks(a) == 0 and kv.get_computed_blocks(b) == 0
    kv.allocate_slots(a, 9)
    kv.allocate_slots(b, 9)
    kv.check_invariants()
    kv.free(a)
    kv.free(b)
    # free queue now (front first): 2 empty, a's partial, a's [4,8), a's [0,4), b's partial, b's two
    filler = make_req(2, 20)
    assert kv.allocate_slots(filler, 20)  # reuses 5 blocks: a's copies of the document are gone
    c = make_req(3, 9, segments=(("doc", 9),))
    assert kv.get_computed_blocks(c) == 8  # b's copies still serve the hit
    kv.check_invariants()


def _reference_block_hashes(req: Request, block_size: int, num_blocks: int) -> list[int]:
    """Content hash chain of a request's first ``num_blocks`` blocks, block by block and piece by piece
    (the definition the memoised and fast paths of ``_block_hashes`` must reproduce)."""
    spec = req.spec
    segs = spec.prompt_segments or ((("req", req.request_id), req.num_prompt_tokens),)
    starts, keys, pos = [], [], 0
    for key, n in segs:
        if n > 0 and pos < req.num_prompt_tokens:
            starts.append(pos)
            keys.append(key)
            pos += n
    if pos < req.num_prompt_tokens:
        starts.append(pos)
        keys.append(("req", req.request_id))
    starts.append(req.num_prompt_tokens)
    keys.append(spec.output_key if spec.output_key is not None else ("out", req.request_id))
    out, parent = [], 0
    for i in range(num_blocks):
        lo, hi = i * block_size, (i + 1) * block_size
        pieces = []
        for s, (s_lo, key) in enumerate(zip(starts, keys)):
            s_hi = starts[s + 1] if s + 1 < len(starts) else hi
            a, z = max(lo, s_lo), min(hi, s_hi)
            if a < z:
                pieces.append((key, a - s_lo, z - s_lo))
        parent = hash((parent, tuple(pieces)))
        out.append(parent)
    return out


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 70), st.integers(1, 60)), min_size=1, max_size=12),
       st.sampled_from([1, 4, 16]))
@settings(max_examples=60, deadline=None)
def test_block_hashes_memo_and_fast_path_match_the_definition(reqs, block_size):
    """Shared-prefix requests (memoised segment-0 hashes) and plain ones hash as the piecewise definition."""
    kv = KVCacheManager(10_000, block_size, enable_prefix_caching=True)
    for rid, (group, prefix, own) in enumerate(reqs):
        segs = ((("prefix", group), prefix), (("req", rid), own))
        spec = RequestSpec(0.0, prefix + own, 7, prompt_segments=segs, prefix_group=group, output_key=("out", rid))
        req = Request(rid, spec, 0.0)
        n = (prefix + own + 7) // block_size
        st_ = kv._reqs[rid] = _ReqKV()
        half = kv._block_hashes(req, st_, n // 2)[:]  # incremental: part now, the rest later
        full = kv._block_hashes(req, st_, n)
        assert full[: len(half)] == half
        assert full == _reference_block_hashes(req, block_size, n)


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("shared", [False, True])
def test_leap_kv_fast_paths_are_allocate_slots_of_one(block_size, shared):
    """The leap's KV calls — ``append_block_each`` for decode requests at a block boundary and
    ``register_filled_each`` for those filling a block — give exactly the allocator state that
    ``allocate_slots(req, 1)`` gives on each (blocks held, free-queue order, hashes, copies, registered
    counts): prompts with and without a shared segment, outputs that share content (the same output
    key), a request holding lookahead blocks (not the boundary shape: the general path), every step."""
    def run(fast: bool):
        kv = KVCacheManager(400, block_size, enable_prefix_caching=True)
        seg = ((("sys", 7), 9),) if shared else ()
        reqs = [make_req(i, 13 + 5 * i, 60, segments=seg, output_key=("o", i % 2)) for i in range(4)]
        for i, r in enumerate(reqs):
            assert kv.allocate_slots(r, r.num_prompt_tokens, num_lookahead_tokens=2 * block_size if i == 3 else 0)
            r.num_computed_tokens = r.num_prompt_tokens
        for _ in range(50):
            filling = [r for r in reqs if (r.num_computed_tokens + 1) % block_size == 0]
            crossing = [r for r in reqs if r.num_computed_tokens % block_size == 0]
            if fast:  # the decode step: a new block at a boundary, then registration of a filled one
                kv.append_block_each(crossing)
                kv.register_filled_each(filling)
            else:
                for r in crossing + filling:
                    assert kv.allocate_slots(r, 1)
            for r in reqs:
                r.num_computed_tokens += 1
        kv.check_invariants()
        return (list(kv.block_hash), {h: dict(c) for h, c in kv._cached.items()}, list(kv._free),
                [list(r.block_hashes or ()) for r in reqs], [kv._reqs[r.request_id].num_registered for r in reqs],
                [list(kv._reqs[r.request_id].blocks) for r in reqs])

    assert run(True) == run(False)


def test_append_block_each_says_no_when_blocks_are_short():
    kv = KVCacheManager(3, 4, enable_prefix_caching=True)
    a, b = make_req(0, 4), make_req(1, 4)
    for r in (a, b):
        assert kv.allocate_slots(r, 4)
        r.num_computed_tokens = 4
    assert kv.num_free_blocks == 1
    with pytest.raises(KVInvariantError):
        kv.append_block_each([a, b])


# ----------------------------------------------------------------------------- lazy hashing of private content
@pytest.mark.parametrize("policy", ["vllm", "vllm-v0", "sarathi", "sglang"])
def test_lazy_private_hashing_gives_the_eager_run(policy, monkeypatch):
    """Requests without prompt segments or an output key are hashed only if freed before they finish
    (kv_cache module docstring): whole runs — request records and iteration logs — equal the runs that
    hash every block when it fills, with recompute preemptions (tight KV) and shared-prefix requests
    interleaved with private ones."""
    from tests.policy_helpers import random_specs, run_policy

    shared, private = random_specs(3, n=160, prefix=True), random_specs(4, n=160)
    specs = sorted(shared[::2] + private[1::2], key=lambda s: s.arrival_s)
    runs, hashed, calls = [], [], []
    register = KVCacheManager._register_block
    monkeypatch.setattr(KVCacheManager, "_register_block", lambda self, b, h: (calls.append(b), register(self, b, h)))
    for lazy in (True, False):
        monkeypatch.setattr(KVCacheManager, "lazy_private", lazy)
        calls.clear()
        runs.append(run_policy(policy, specs, num_kv_blocks=40, enable_prefix_caching=True))
        hashed.append(len(calls))
    lazy_run, eager_run = runs
    assert lazy_run.iterations["num_preempted"].sum() > 0  # recomputes that must find their own blocks
    pd.testing.assert_frame_equal(lazy_run.requests, eager_run.requests)
    pd.testing.assert_frame_equal(lazy_run.iterations, eager_run.iterations)
    assert lazy_run.stats["prefix_cache_hit_rate"] == eager_run.stats["prefix_cache_hit_rate"]
    assert eager_run.stats["prefix_cache_hit_rate"][0] > 0  # the shared prefixes hit
    assert hashed[0] < hashed[1]  # the private requests that finished unpreempted were never hashed


def test_lazy_private_request_is_hashed_when_preempted_not_when_finished():
    kv = KVCacheManager(20, 4, enable_prefix_caching=True)
    done, pre = make_req(0, 10, out=4), make_req(1, 10, out=4)
    for r in (done, pre):
        kv.allocate_slots(r, 10)
        r.num_computed_tokens = 10
    done.num_output_tokens = 4  # its last token: finished
    kv.free(done)
    assert sum(h is not None for h in kv.block_hash) == 0  # finished private content: never hashed
    kv.free(pre)  # preempted before its last token: its two full blocks enter the cache
    assert sum(h is not None for h in kv.block_hash) == 2
    pre.num_computed_tokens = 0
    assert kv.get_computed_blocks(pre) == 8
    kv.check_invariants()
