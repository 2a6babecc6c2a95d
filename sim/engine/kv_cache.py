"""Paged KV-cache allocator with prefix caching and a host swap pool (vLLM's block manager, simplified).

The cache is ``num_blocks`` blocks of ``block_size`` tokens. A request owns an ordered list of block
ids covering its first ``len(blocks) * block_size`` token positions. Policies never touch block lists:
they ask :meth:`KVCacheManager.allocate_slots` and it says no by return value.

Invariants (asserted by :meth:`KVCacheManager.check_invariants` and the tests):

- every block is either *free* (``ref_cnt == 0``, in the free queue exactly once) or *used*
  (``ref_cnt > 0``, not in the free queue): ``num_free_blocks + num_used_blocks == num_blocks``;
- ``ref_cnt[b]`` equals the number of requests whose block list holds ``b``; no request holds a block
  twice, and a block with ``ref_cnt == 1`` belongs to exactly one request (only prefix-cache hits share);
- ``ref_cnt[b] >= 0`` always;
- the prefix-cache table maps each hash to the blocks whose ``block_hash`` is that hash, and every
  hashed block is in it;
- host (swap) blocks: ``num_free_cpu_blocks + Σ swapped requests' blocks == num_cpu_blocks``.

Prefix caching (vLLM ``kv_cache_manager.py`` / ``block_pool.py``, SEMANTICS.md §3):

- only *full* blocks are hashed, ``hash(parent_hash, content of the block)``, so a block's hash stands
  for everything before it too;
- there are no token ids: a block's content is the list of ``(content_key, start, end)`` pieces of the
  request's *segments* it covers. The segments are ``RequestSpec.prompt_segments`` (default: one
  segment unique to the request) followed by the output, keyed ``RequestSpec.output_key`` (default
  ``("out", request_id)``), so a later turn whose prompt contains this answer can hit its blocks;
- a block is hashed when it is allocated for tokens that fill it (as vLLM's ``cache_blocks``);
- freed blocks go to the *end* of the free queue, a request's blocks tail first, so its tail is evicted
  first; allocation takes from the *front* (LRU). (Without prefix caching nothing is cached, so the
  free blocks are kept in a plain stack instead: order does not matter then.) A freed block keeps its hash until it is reused, so a
  later request (or the same one recomputing after preemption) can take it back off the free queue;
- hits are ref-counted and shared; a hit never covers the request's last token (capped at
  ``num_tokens - 1``) because that token must be computed to sample the next one.

Private content is hashed lazily (:attr:`KVCacheManager.lazy_private`). A request with neither
``prompt_segments`` nor ``output_key`` holds content no other request can name, so no other request can
hit its blocks, and it cannot hit anything on its first admission. Its blocks are then not hashed while
it runs — only counted as registered — and are entered in the prefix cache only if it is freed before
its last token (a preemption: the recompute must find them, exactly as if they had been hashed when
filled). The blocks such a request frees at its end carry no cache entry, the one difference from
eager hashing, and one no lookup can observe. Not with KV tiers (every block is stored below).

Hashes are Python ``hash`` values of tuples (64-bit); a collision would give a false hit with
probability ~ n²/2⁶⁴ — negligible, and documented in docs/engine.md.

Cost: allocation and freeing are O(blocks touched); a decode step that does not cross a block boundary
is O(1). Nothing is ever O(tokens).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict

from sim.engine.request import Request
from sim.errors import ConfigError, InfeasibleConfigError

__all__ = ["KVCacheManager", "KVInvariantError"]


class KVInvariantError(AssertionError):
    """A KV-cache invariant does not hold (a bug in a policy or in the allocator)."""


class _ReqKV:
    """Per-request allocator state (private): blocks held on the GPU or on the host, segment index."""

    __slots__ = ("blocks", "num_registered", "num_cpu_blocks", "seg_starts", "seg_keys", "lazy")

    def __init__(self, lazy: bool = False) -> None:
        self.blocks: list[int] = []
        self.num_registered = 0  # leading blocks already hashed into the prefix cache (or hits)
        self.lazy = lazy  # private content not hashed yet: num_registered counts blocks to hash if exposed
        self.num_cpu_blocks = 0  # blocks held in the host pool while swapped out
        self.seg_starts: list[int] | None = None  # prefix-caching content index (lazily built)
        self.seg_keys: list | None = None


class KVCacheManager:
    """Block allocator for one replica (see the module docstring for the invariants).

    ``num_cpu_blocks`` sizes the host swap pool (vLLM ``swap_space``); ``block_bytes`` is the size of one
    block on the device, so swapping ``n`` blocks moves ``n * block_bytes`` bytes over PCIe.
    """

    #: hash private content only when a request is freed before it finishes (module docstring); False
    #: hashes every block when it fills (the same results: tests/test_kv_cache.py compares whole runs)
    lazy_private = True

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = False,
                 num_cpu_blocks: int = 0, block_bytes: int = 0) -> None:
        if num_blocks < 1:
            raise InfeasibleConfigError(
                f"no KV-cache blocks ({num_blocks}): the model leaves no GPU memory for the KV cache")
        if block_size < 1:
            raise ConfigError(f"engine.block_size must be ≥ 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.num_cpu_blocks = num_cpu_blocks
        self.block_bytes = block_bytes
        self.ref_cnt = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        # Free blocks. With prefix caching: an LRU queue in eviction order (front = next to reuse);
        # OrderedDict gives O(1) removal of a cached block from the middle when a hit takes it back.
        # Without: nothing is cached, so order is irrelevant and a plain list used as a stack is fastest.
        self._free: OrderedDict[int, None] | list[int] = (
            OrderedDict.fromkeys(range(num_blocks)) if enable_prefix_caching
            else list(range(num_blocks - 1, -1, -1)))
        # block hash -> {block id: None} (insertion-ordered): every full block carrying that content.
        # Like vLLM several blocks may hold the same content (two requests prefilling it at once);
        # a hit takes the first, and evicting one copy leaves the others findable.
        self._cached: dict[int, dict[int, None]] = {}
        self._reqs: dict[int, _ReqKV] = {}  # request_id -> state
        self.num_free_cpu_blocks = num_cpu_blocks
        # counters for reports
        self.num_prefix_queries_tokens = 0
        self.num_prefix_hit_tokens = 0
        # shared-prefix block hashes by segment-0 content key (_block_hashes); one list per prefix group
        self._prefix_memo: dict = {}
        # KV tiers below the GPU (sim.engine.kv_tiers.ReplicaTiers), told of every newly hashed block
        self.tier_hook = None
        self._exposed: set[int] = set()  # private requests freed unfinished: hashed eagerly from then on

    # ------------------------------------------------------------------ queries
    @property
    def num_free_blocks(self) -> int:
        """Blocks not held by any request (cached-but-free blocks count as free, as in vLLM)."""
        return len(self._free)

    @property
    def free_queue(self):
        """The container of free blocks, for callers that poll ``len`` of it in a loop (read only;
        the same object for the allocator's life)."""
        return self._free

    @property
    def num_used_blocks(self) -> int:
        """Blocks held by at least one request."""
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, in [0, 1] (vLLM's ``kv_cache_usage``)."""
        return 1.0 - len(self._free) / self.num_blocks

    def num_blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` token positions."""
        return -(-num_tokens // self.block_size)

    def can_fit(self, num_tokens: int) -> bool:
        """True if ``num_tokens`` positions fit in the *whole* cache (ignoring current use).

        Used to reject requests that could never run.
        """
        return self.num_blocks_for(num_tokens) <= self.num_blocks

    def num_blocks_to_allocate(self, req: Request, num_new_tokens: int) -> int:
        """New blocks :meth:`allocate_slots` would take for ``num_new_tokens`` more tokens of ``req``."""
        st = self._reqs.get(req.request_id)
        held = len(st.blocks) if st is not None else 0
        need = -(-(req.num_computed_tokens + num_new_tokens) // self.block_size) - held
        return need if need > 0 else 0

    def num_held_blocks(self, req: Request) -> int:
        """Blocks ``req`` holds on the device."""
        st = self._reqs.get(req.request_id)
        return len(st.blocks) if st is not None else 0

    def prefix_hit_rate(self) -> float:
        """Fraction of queried prompt tokens served from the prefix cache so far."""
        q = self.num_prefix_queries_tokens
        return self.num_prefix_hit_tokens / q if q else 0.0

    def _new_state(self, req: Request) -> _ReqKV:
        """Fresh allocator state for ``req``, lazily hashed when its content is private (module docstring)."""
        spec = req.spec
        lazy = (self.enable_prefix_caching and self.lazy_private and self.tier_hook is None
                and not spec.prompt_segments and spec.output_key is None
                and req.request_id not in self._exposed)
        st = self._reqs[req.request_id] = _ReqKV(lazy)
        return st

    # ------------------------------------------------------------------ allocation
    def allocate_slots(self, req: Request, num_new_tokens: int, num_lookahead_tokens: int = 0,
                       delay_cache_blocks: bool = False) -> bool:
        """Make ``req`` hold ``req.num_computed_tokens + num_new_tokens + num_lookahead_tokens`` positions.

        Returns False — allocating nothing — when there are not enough free blocks.
        With prefix caching, blocks that the ``num_new_tokens`` fill are hashed (registered in the
        cache); lookahead slots (speculative draft tokens, which may be rejected) are never hashed, as
        in vLLM's ``KVCacheManager.allocate_slots``. ``delay_cache_blocks`` (vLLM's flag for blocks an
        asynchronous KV load will fill) hashes nothing now: a later ``allocate_slots`` hashes them.
        """
        st = self._reqs.get(req.request_id)
        if st is None:
            st = self._new_state(req)
        blocks = st.blocks
        total = req.num_computed_tokens + num_new_tokens
        need = -(-(total + num_lookahead_tokens) // self.block_size) - len(blocks)
        if need > 0:
            free = self._free
            if need > len(free):
                return False
            ref_cnt = self.ref_cnt
            if self.enable_prefix_caching:
                block_hash, cached, popitem = self.block_hash, self._cached, free.popitem
                for _ in range(need):
                    b, _none = popitem(last=False)
                    h = block_hash[b]
                    if h is not None:  # evict the stale cache entry of a reused block (_evict, inlined)
                        copies = cached[h]
                        del copies[b]
                        if not copies:
                            del cached[h]
                        block_hash[b] = None
                    ref_cnt[b] = 1
                    blocks.append(b)
            else:
                for _ in range(need):
                    b = free.pop()
                    ref_cnt[b] = 1
                    blocks.append(b)
        if self.enable_prefix_caching and not delay_cache_blocks:
            num_full = total // self.block_size
            if num_full > st.num_registered:
                self._cache_full_blocks(req, st, num_full)
        return True

    def append_block_each(self, reqs: list[Request]) -> None:
        """Give each of ``reqs`` one more block (decode requests crossing a block boundary).

        The caller checked that ``len(reqs)`` blocks are free. Same result as
        ``allocate_slots(req, 1)`` on each, for requests holding exactly ``ceil(num_computed / block_size)``
        blocks with ``num_computed`` a multiple of the block size (their ``num_computed_tokens`` must
        be current when prefix caching is on, to register the block they just filled).
        """
        if self.enable_prefix_caching:
            for req in reqs:
                if not self.allocate_slots(req, 1):
                    raise KVInvariantError("append_block_each: not enough free blocks")
            return
        if len(reqs) > len(self._free):
            raise KVInvariantError("append_block_each: not enough free blocks")
        free, ref_cnt, states = self._free, self.ref_cnt, self._reqs
        for req in reqs:
            b = free.pop()
            ref_cnt[b] = 1
            states[req.request_id].blocks.append(b)

    def register_filled_each(self, reqs: list[Request]) -> None:
        """Register in the prefix cache the block each of ``reqs`` fills in the step being planned.

        Each is a decode request whose ``num_computed_tokens`` is one short of a block boundary (its
        last block becomes full with this step's token); same result as ``allocate_slots(req, 1)``
        on each, which allocates nothing for them. The usual case — one new block, lying inside
        the request's last content segment (its output), no KV tiers — hashes it here; any other
        goes through ``allocate_slots``."""
        bs, states = self.block_size, self._reqs
        for req in reqs:
            st = states.get(req.request_id)
            num_full = (req.num_computed_tokens + 1) // bs
            if st is not None and st.lazy and num_full == st.num_registered + 1 and len(st.blocks) >= num_full:
                st.num_registered = num_full  # private content: hashed only if the request is exposed
                continue
            if st is None or num_full != st.num_registered + 1 or len(st.blocks) < num_full \
                    or st.seg_starts is None or self.tier_hook is not None:
                self.allocate_slots(req, 1)
                continue
            hashes = req.block_hashes
            j = num_full - 1
            if hashes is None:
                self.allocate_slots(req, 1)
                continue
            if len(hashes) < num_full:
                lo = j * bs
                s_lo = st.seg_starts[-1]
                if len(hashes) != j or s_lo > lo or not j:
                    self.allocate_slots(req, 1)
                    continue
                # _block_hashes' single-piece block of the last segment, chained on the previous hash
                hashes.append(hash((hashes[-1], ((st.seg_keys[-1], lo - s_lo, lo + bs - s_lo),))))
            self._register_block(st.blocks[j], hashes[j])
            st.num_registered = num_full

    def get_computed_blocks(self, req: Request) -> int:
        """Prefix-cache hit for a request about to (re)start from zero: returns the hit in tokens.

        Only full blocks count, and the hit is capped at ``num_tokens - 1`` so the last token is always
        computed. The hit blocks are taken (ref-counted; taken off the free queue if free) and become
        the first blocks of ``req``; the caller sets ``num_computed_tokens`` to the returned value.
        If the caller then fails to allocate the rest, it must call :meth:`free` (the hit blocks go back
        to the free queue's end — a small LRU difference from vLLM, see docs/engine.md).
        """
        if not self.enable_prefix_caching:
            return 0
        st = self._reqs.get(req.request_id)
        if st is None:
            st = self._new_state(req)
        if st.blocks:
            raise KVInvariantError(f"get_computed_blocks on request {req.request_id} that holds blocks")
        num_tokens = req.num_prompt_tokens + req.num_output_tokens
        max_hit_blocks = (num_tokens - 1) // self.block_size
        self.num_prefix_queries_tokens += num_tokens
        if max_hit_blocks <= 0 or st.lazy:  # private content never hashed: nothing to find
            return 0
        hashes = self._block_hashes(req, st, max_hit_blocks)
        cached, free, ref_cnt, blocks = self._cached, self._free, self.ref_cnt, st.blocks
        for i in range(max_hit_blocks):
            copies = cached.get(hashes[i])
            if copies is None:
                break
            b = next(iter(copies))
            if ref_cnt[b] == 0:
                del free[b]
            ref_cnt[b] += 1
            blocks.append(b)
        st.num_registered = len(blocks)
        hit = len(blocks) * self.block_size
        if self.tier_hook is not None:
            # The rest of the prefix may sit in a lower tier: those tokens count as computed, their
            # blocks are allocated with the request's new ones by the next allocate_slots (all or
            # nothing, as vLLM's allocate_slots with external tokens) and hashed there.
            hit += self.tier_hook.extend_hit(req, hashes, len(blocks), max_hit_blocks) * self.block_size
        self.num_prefix_hit_tokens += hit
        return hit

    def peek_prefix_hit(self, req: Request) -> int:
        """Prefix-cache hit (tokens) :meth:`get_computed_blocks` would give ``req`` now, changing nothing:
        no block is taken, the free queue's LRU order and the hit-rate counters stay as they are
        (only ``req.block_hashes``, a cache of its content hashes, may grow)."""
        return len(self._prefix_hit_blocks(req)) * self.block_size

    def refresh_prefix(self, req: Request) -> None:
        """Move the free blocks of ``req``'s prefix hit to the most-recently-used end of the free queue
        (first block last, as a hit taken and freed again would leave them); nothing else changes.
        Models SGLang's ``match_prefix``, which refreshes the access time of the radix nodes it matches."""
        free, ref_cnt = self._free, self.ref_cnt
        for b in reversed(self._prefix_hit_blocks(req)):
            if ref_cnt[b] == 0:
                free.move_to_end(b)

    def _prefix_hit_blocks(self, req: Request) -> list[int]:
        """The cached blocks :meth:`get_computed_blocks` would take for ``req`` now (the first copy of
        each hashed content, capped at ``num_tokens - 1`` tokens); read-only."""
        if not self.enable_prefix_caching:
            return []
        max_hit_blocks = (req.num_prompt_tokens + req.num_output_tokens - 1) // self.block_size
        if max_hit_blocks <= 0:
            return []
        st = self._reqs.get(req.request_id)
        hashes = self._block_hashes(req, st if st is not None else _ReqKV(), max_hit_blocks)
        cached, out = self._cached, []
        for i in range(max_hit_blocks):
            copies = cached.get(hashes[i])
            if copies is None:
                break
            out.append(next(iter(copies)))
        return out

    def free(self, req: Request) -> None:
        """Release every device block ``req`` holds, tail first (its tail is evicted first)."""
        st = self._reqs.pop(req.request_id, None)
        if st is None:
            return
        if st.lazy and st.num_registered and req.num_output_tokens < req.max_output_tokens:
            # freed before its last token (preempted): its recompute must find the blocks it filled
            self._exposed.add(req.request_id)
            hashes = self._block_hashes(req, st, st.num_registered)
            for j in range(st.num_registered):
                self._register_block(st.blocks[j], hashes[j])
        if self.tier_hook is not None:
            self.tier_hook.on_free(req, st.blocks)  # a tier load not yet started is called off
        if st.num_cpu_blocks:
            self.num_free_cpu_blocks += st.num_cpu_blocks
            st.num_cpu_blocks = 0
        self._release(st.blocks)

    def _release(self, blocks: list[int]) -> None:
        """Drop one reference to each of ``blocks``, tail first; unreferenced ones become free."""
        ref_cnt, free = self.ref_cnt, self._free
        if not self.enable_prefix_caching:
            for b in reversed(blocks):
                c = ref_cnt[b] - 1
                ref_cnt[b] = c
                if c == 0:
                    free.append(b)
                elif c < 0:
                    raise KVInvariantError(f"block {b} freed more often than allocated")
            return
        # an unreferenced block is never already in the free queue, so each goes to its end, tail first
        # (item by item: OrderedDict.update goes through the generic mapping update, ~3x slower)
        for b in reversed(blocks):
            c = ref_cnt[b] - 1
            ref_cnt[b] = c
            if c == 0:
                free[b] = None
            elif c < 0:
                raise KVInvariantError(f"block {b} freed more often than allocated")

    # ------------------------------------------------------------------ swap
    def swap_out(self, req: Request) -> int | None:
        """Move ``req``'s device blocks to the host pool; returns the bytes moved, or None if the
        host pool lacks room (nothing changes then; the caller falls back to recompute)."""
        st = self._reqs.get(req.request_id)
        n = len(st.blocks) if st is not None else 0
        if n > self.num_free_cpu_blocks:
            return None
        if st is None:
            return 0
        blocks = st.blocks
        st.blocks = []
        self._release(blocks)
        st.num_cpu_blocks = n
        self.num_free_cpu_blocks -= n
        return n * self.block_bytes

    def swap_in(self, req: Request) -> int | None:
        """Bring a swapped-out request back onto the device; returns the bytes moved, or None if there
        are not enough free device blocks (nothing changes then)."""
        st = self._reqs.get(req.request_id)
        if st is None or st.num_cpu_blocks == 0:
            return 0
        n = st.num_cpu_blocks
        if n > len(self._free):
            return None
        free, ref_cnt, block_hash = self._free, self.ref_cnt, self.block_hash
        caching = self.enable_prefix_caching
        for _ in range(n):
            if not caching:
                b = free.pop()
            else:
                b, _none = free.popitem(last=False)
                if block_hash[b] is not None:
                    self._evict(b)
            ref_cnt[b] = 1
            st.blocks.append(b)
        st.num_cpu_blocks = 0
        st.num_registered = 0  # fresh blocks: register their hashes again on the next allocation
        self.num_free_cpu_blocks += n
        return n * self.block_bytes

    def num_swapped_blocks(self, req: Request) -> int:
        """Host blocks ``req`` holds while swapped out."""
        st = self._reqs.get(req.request_id)
        return st.num_cpu_blocks if st is not None else 0

    # ------------------------------------------------------------------ tiers (sim.engine.kv_tiers)
    def content_hashes(self, req: Request, num_blocks: int) -> list[int]:
        """Content hashes of ``req``'s first ``num_blocks`` full blocks (the prefix-cache keys)."""
        st = self._reqs.get(req.request_id)
        return self._block_hashes(req, st if st is not None else _ReqKV(), num_blocks)[:num_blocks]

    def num_cached_prefix_blocks(self, hashes: list[int]) -> int:
        """How many leading ``hashes`` the GPU prefix cache holds (the GPU part of a prefix hit)."""
        cached, n = self._cached, 0
        for h in hashes:
            if h not in cached:
                break
            n += 1
        return n

    def cached_hashes(self):
        """Hashes of the blocks in the GPU prefix cache (a read-only view; routers' cache index)."""
        return self._cached.keys()

    def unhash_blocks(self, blocks: list[int], num_hit_tokens: int) -> None:
        """Drop the cache entries of ``blocks`` (a tier load called off before it started: their
        content never arrived) and take ``num_hit_tokens`` back out of the hit counter."""
        for b in blocks:
            if self.block_hash[b] is not None:
                self._evict(b)
        self.num_prefix_hit_tokens -= num_hit_tokens

    # ------------------------------------------------------------------ prefix hashing
    def _evict(self, b: int) -> None:
        """Drop block ``b``'s prefix-cache entry (it is being reused for other content)."""
        h = self.block_hash[b]
        copies = self._cached[h]
        del copies[b]
        if not copies:
            del self._cached[h]
        self.block_hash[b] = None

    def _cache_full_blocks(self, req: Request, st: _ReqKV, num_full: int) -> None:
        """Register the hashes of ``req``'s blocks ``st.num_registered .. num_full - 1`` (now full).

        A block whose content is already cached under another block is registered as another copy
        (as vLLM's ``cache_full_blocks``).
        """
        first = st.num_registered
        if num_full <= first:
            return
        if st.lazy:  # private content: hashed only if the request is freed before it finishes
            st.num_registered = num_full
            return
        hashes = self._block_hashes(req, st, num_full)
        register, blocks = self._register_block, st.blocks
        for j in range(first, num_full):
            register(blocks[j], hashes[j])
        st.num_registered = num_full
        if self.tier_hook is not None:
            self.tier_hook.blocks_stored(req, hashes, first, num_full)

    def _register_block(self, b: int, h: int) -> None:
        """Enter block ``b`` in the prefix cache under content hash ``h`` (another copy if ``h`` is
        cached already); a block registered before keeps its entry."""
        if self.block_hash[b] is None:
            self.block_hash[b] = h
            copies = self._cached.get(h)
            if copies is None:
                self._cached[h] = {b: None}
            else:
                copies[b] = None

    def _block_hashes(self, req: Request, st: _ReqKV, num_blocks: int) -> list[int]:
        """Hashes of ``req``'s first ``num_blocks`` full blocks (computed incrementally, kept on req)."""
        hashes = req.block_hashes
        if hashes is None:
            hashes = req.block_hashes = []
        if len(hashes) >= num_blocks:
            return hashes
        if st.seg_starts is None:
            spec = req.spec
            segs = spec.prompt_segments or ((("req", req.request_id), req.num_prompt_tokens),)
            starts, keys, pos = [], [], 0
            num_prompt = req.num_prompt_tokens
            for key, n in segs:
                if n > 0 and pos < num_prompt:  # segments past the prompt length are ignored
                    starts.append(pos)
                    keys.append(key)
                    pos += n
            if pos < num_prompt:  # segments shorter than the prompt: the rest is unique
                starts.append(pos)
                keys.append(("req", req.request_id))
            # the output follows the prompt (ignore_eos: its length is known up front)
            starts.append(num_prompt)
            keys.append(spec.output_key if spec.output_key is not None else ("out", req.request_id))
            st.seg_starts, st.seg_keys = starts, keys
        starts, keys = st.seg_starts, st.seg_keys
        bs = self.block_size
        nseg = len(starts)
        parent = hashes[-1] if hashes else 0
        i = len(hashes)
        segs0 = req.spec.prompt_segments
        if (req.spec.prefix_group >= 0 and nseg > 1 and i * bs < starts[1] and segs0
                and keys[0] is segs0[0][0]):
            # blocks inside the shared prefix (segment 0) hash the same for every request of the group:
            # take them from the memo, and extend it, instead of hashing the system prompt again
            memo = self._prefix_memo.get(keys[0])
            if memo is None:
                memo = self._prefix_memo[keys[0]] = []
            n_in = min(num_blocks, starts[1] // bs)  # blocks wholly inside segment 0
            while len(memo) < n_in:
                j = len(memo)
                memo.append(hash((memo[-1] if memo else 0, ((keys[0], j * bs, (j + 1) * bs),))))
            if i < n_in:
                hashes.extend(memo[i:n_in])
                i = n_in
                parent = hashes[-1]
        seg = bisect_right(starts, i * bs) - 1
        while i < num_blocks:
            lo, hi = i * bs, (i + 1) * bs
            while seg + 1 < nseg and starts[seg + 1] <= lo:
                seg += 1
            s_lo = starts[seg]
            if seg + 1 >= nseg or starts[seg + 1] >= hi:
                # fast path (most blocks): the block lies inside one segment, a single piece
                parent = hash((parent, ((keys[seg], lo - s_lo, hi - s_lo),)))
                hashes.append(parent)
                i += 1
                continue
            pieces = []
            s = seg
            while True:
                s_lo = starts[s]
                s_hi = starts[s + 1] if s + 1 < nseg else hi
                a, z = max(lo, s_lo), min(hi, s_hi)
                pieces.append((keys[s], a - s_lo, z - s_lo))
                if z >= hi or s + 1 >= nseg:
                    break
                s += 1
            parent = hash((parent, tuple(pieces)))
            hashes.append(parent)
            i += 1
        return hashes

    # ------------------------------------------------------------------ checks
    def check_invariants(self) -> None:
        """Raise :class:`KVInvariantError` if any invariant of the module docstring is broken."""
        ref_cnt, free = self.ref_cnt, self._free
        if any(c < 0 for c in ref_cnt):
            raise KVInvariantError("negative reference count")
        holders = [0] * self.num_blocks
        cpu = 0
        for rid, st in self._reqs.items():
            if len(set(st.blocks)) != len(st.blocks):
                raise KVInvariantError(f"request {rid} holds a block twice")
            for b in st.blocks:
                holders[b] += 1
            cpu += st.num_cpu_blocks
        if holders != ref_cnt:
            bad = next(b for b in range(self.num_blocks) if holders[b] != ref_cnt[b])
            raise KVInvariantError(f"block {bad}: ref_cnt {ref_cnt[bad]} but held by {holders[bad]} requests")
        num_used = sum(1 for c in ref_cnt if c > 0)
        if len(free) + num_used != self.num_blocks:
            raise KVInvariantError(f"free {len(free)} + used {num_used} != total {self.num_blocks}")
        if any(ref_cnt[b] != 0 for b in free):
            raise KVInvariantError("a used block is in the free queue")
        if len(set(free)) != len(free):
            raise KVInvariantError("a block is in the free queue twice")
        num_cached = 0
        for h, copies in self._cached.items():
            if not copies:
                raise KVInvariantError(f"empty cache entry for hash {h}")
            for b in copies:
                if self.block_hash[b] != h:
                    raise KVInvariantError(f"cache entry for block {b} does not match its hash")
            num_cached += len(copies)
        if num_cached != sum(1 for h in self.block_hash if h is not None):
            raise KVInvariantError("a hashed block is missing from the prefix-cache table")
        if self.num_free_cpu_blocks + cpu != self.num_cpu_blocks:
            raise KVInvariantError("host swap pool accounting is off")
