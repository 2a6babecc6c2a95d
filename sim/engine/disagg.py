"""Disaggregated prefill/decode inside the SimPy cluster: prefill pool → KV-transfer links → decode pool.

A request's life (vLLM/SGLang PD semantics; docs/disaggregation.md):

1. **Prefill.** The prefill router picks a prefill instance. The instance's own scheduler runs the
   request as a copy with ``max_output_tokens = 1`` (vLLM's PD proxy sends ``max_tokens=1`` to the
   prefill server): its first token is produced there, so TTFT ends at the end of the prefill step.
2. **KV ready.** When the prefill finishes the prompt's KV stays on the prefill instance: its blocks
   are re-held at the same instant they were freed (no other request can take them in between), and
   released only when the transfer ends (vLLM NIXL's delayed free, SGLang's sender). With
   ``layerwise`` the KV is ready to stream at the *start* of the request's last prefill step (each
   layer's KV is sent while the next layers compute).
3. **Decode admission.** The decode router picks a decode instance. The instance must admit the
   request, in FIFO order: its worst-case KV (prompt + max output) must fit next to the worst cases of
   the requests already admitted there, and a sequence slot must be free (requests running, waiting
   and in transfer stay within ``max_num_seqs``); then blocks for its prompt plus the first generated
   token are allocated. A request waits (``kv_wait``) until both hold: KV capacity is a real
   constraint. The worst-case reservation (SGLang's decode pre-allocation reserves decode tokens per
   request for the same reason) means a decode instance never preempts; without it, transferred
   requests holding blocks in the waiting queue can block a preempted request at its head for good.
4. **Transfer.** ``kv_cache_bytes_for_tokens(prompt)`` bytes move over the link of the
   (prefill instance, decode instance) pair. A link is a processor-sharing server: its ``n``
   concurrent transfers each get ``bandwidth / n`` (the fair share of one NIC pair), so the link
   never moves more than its bandwidth. A transfer ends ``latency`` after its last byte is sent; with
   ``layerwise`` it cannot end before the prefill ends plus the last layer's bytes at full bandwidth.
5. **Decode.** At the transfer's end the prefill instance frees its blocks and the decode instance's
   scheduler receives the request with ``num_computed_tokens = prompt`` and one token emitted: it
   decodes the rest there (a preemption there recomputes locally, as vLLM's decode instance does).

Token times: the first token's time is the prefill instance's iteration end; the engine's compact
timeline keeps one replica per request, so the decode instance's timeline array gets one extra entry
per such request (after its real iteration ends) holding that time, and the request's runs start with it.

**Data-parallel attention pools** (``parallel.dp > 1`` in a pool): each instance of the pool is a DP
group of ``dp`` lockstep ranks (:mod:`sim.engine.dp_group`), and every rank is an engine core of its
own behind the pool's router, exactly as in the aggregated DP path: the prefill router and the decode
router each pick a *rank*. A KV transfer goes from the prefill rank that holds the KV to the decode
rank that will hold it, over that rank pair's link (one NIC per GPU, as on 8-GPU HGX nodes).

**Other hand-off paths** (:mod:`sim.engine.kv_handoff`): ``sharing: nic`` replaces the per-pair links
by each instance's NIC, shared max-min fairly by all its transfers to or from any peer; ``via: store``
moves the KV through the shared ``kv_store`` (a put by the prefill instance, released at its end; a
get by the decode instance once admitted, and the request decodes when the get ends). A per-copy
cost (``copy_overhead_us``) adds the serial posting of the transfer's copies (pages × layers × K/V
planes) to a direct transfer, before its ``latency``; layer-wise, only the last layer's postings
follow the prefill.

Invariants checked at the end of every PD run (:meth:`PDCoordinator.check_invariants`): every link is
idle, it never carried more bytes than bandwidth × busy time, and no transfer beat ``bytes / bandwidth``;
no KV is held on either pool; no request is left in transit.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.engine.dp_group import DPGroup
from sim.engine.kv_handoff import BlockingHandoffCostModel, NICFabric, StoreHandoff, num_kv_copies
from sim.engine.request import Request, RequestStatus

__all__ = ["PDSpec", "KVLink", "PDCoordinator", "PD_REQUEST_COLUMNS"]

# A flow with at most this many bytes left is complete (floating-point remainder of the fair shares).
_BYTES_EPS = 1e-3

PD_REQUEST_COLUMNS = ("request_id", "prefill_replica", "decode_replica", "kv_bytes", "prefill_done_s",
                      "kv_ready_s", "transfer_start_s", "transfer_end_s", "kv_wait_s", "transfer_s")


@dataclass(frozen=True)
class PDSpec:
    """What the engine needs for a disaggregated run (built by ``sim.runs.disagg``)."""

    prefill: Any  # sim.engine.simulator.ReplicaSetup of one prefill instance (of one DP rank when dp > 1)
    decode: Any  # ReplicaSetup of one decode instance (of one DP rank when dp > 1)
    num_prefill: int  # instances; each is ``prefill.dp`` DP ranks
    num_decode: int  # instances; each is ``decode.dp`` DP ranks
    prefill_router: str
    decode_router: str
    kv_bytes_fn: Callable[[int], float]  # prompt tokens -> KV bytes moved (all layers, whole model)
    bandwidth_bytes_per_s: float  # per (prefill, decode) instance pair
    latency_s: float
    layerwise: bool = False
    num_layers: int = 1  # for the layer-wise tail (the last layer's bytes after the prefill ends)
    sharing: str = "pair"  # "pair": a KVLink per (prefill, decode) pair; "nic": kv_handoff.NICFabric
    copy_overhead_s: float = 0.0  # host time to post one copy of a direct transfer
    block_size: int = 16  # tokens per KV page on the prefill instance (copies per transfer)
    copies_per_page: int = 1  # copies per page: layers × K/V planes
    store: Any = None  # sim.engine.kv_handoff.StoreHandoffSpec: hand-offs through the shared store


class KVLink:
    """A processor-sharing link: ``n`` active flows each progress at ``bandwidth / n`` bytes/s."""

    def __init__(self, env: Any, bandwidth_bytes_per_s: float, name: str) -> None:
        self.env = env
        self.bandwidth = float(bandwidth_bytes_per_s)
        self.name = name
        self.flows: dict[int, list] = {}  # flow id -> [remaining bytes, on_sent callback]
        self._last_s = 0.0
        self._generation = 0  # stale completion timers carry an older generation
        self.busy_s = 0.0  # time with at least one flow
        self.bytes_carried = 0.0  # Σ bytes sent (= bandwidth × busy_s by construction)
        # Σ one ulp of the clock per completion timer: a timer lands up to half an ulp off the exact
        # last-byte time, so the bytes checks allow bandwidth × this much time on top
        self.clock_rounding_s = 0.0
        self.bytes_requested = 0.0  # Σ bytes of the flows started
        self.num_flows = 0
        self.max_concurrent = 0

    def start(self, flow_id: int, num_bytes: float, on_sent: Callable[[], None]) -> None:
        """Start sending ``num_bytes``; ``on_sent()`` is called when the last byte left."""
        self._advance()
        self.flows[flow_id] = [float(num_bytes), on_sent]
        self.bytes_requested += float(num_bytes)
        self.num_flows += 1
        self.max_concurrent = max(self.max_concurrent, len(self.flows))
        self._reschedule()

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last_s
        flows = self.flows
        if flows and dt > 0.0:
            share = self.bandwidth * dt / len(flows)
            for f in flows.values():
                f[0] -= share
            self.busy_s += dt
            self.bytes_carried += self.bandwidth * dt
        self._last_s = now

    def _reschedule(self) -> None:
        self._generation += 1
        if not self.flows:
            return
        smallest = min(f[0] for f in self.flows.values())
        dt = max(smallest, 0.0) * len(self.flows) / self.bandwidth
        gen = self._generation
        self.env.timeout(dt).callbacks.append(lambda _ev: self._on_timer(gen))

    def _on_timer(self, generation: int) -> None:
        if generation != self._generation or not self.flows:
            return  # the flow set changed since this timer was set
        self._advance()
        self.clock_rounding_s += math.ulp(self.env.now)
        # This timer was set for the smallest flow's last byte, so that flow is done whatever is left
        # of it: the remainder is the clock's rounding (at t ≈ 500 s one ulp of the clock is 1e-13 s,
        # 0.1 B at 1 TB/s). Testing only ``≤ _BYTES_EPS`` livelocked there: a remainder above it whose
        # send time is under half an ulp re-armed the timer for the same instant, forever.
        smallest = min(f[0] for f in self.flows.values())
        done = [fid for fid, f in self.flows.items() if f[0] <= max(smallest, _BYTES_EPS)]
        callbacks = [self.flows.pop(fid)[1] for fid in done]
        self._reschedule()
        for cb in callbacks:
            cb()


class _PDState:
    """One request's progress through the PD pipeline."""

    __slots__ = ("main", "pre", "prefill_rep", "decode_rep", "kv_bytes", "holder", "kv_ready_s",
                 "prefill_done_s", "admit_s", "sent_s", "end_s", "queued", "delivered", "last_step_start_s",
                 "put_start_s", "put_end_s", "store_bytes", "put_booked")

    def __init__(self, main: Request, pre: Request, prefill_rep: int, kv_bytes: float) -> None:
        self.main, self.pre, self.prefill_rep, self.kv_bytes = main, pre, prefill_rep, kv_bytes
        self.decode_rep = -1
        self.holder: Request | None = None  # holds the prompt's blocks on the prefill instance
        self.kv_ready_s = -1.0
        self.prefill_done_s = -1.0
        self.admit_s = -1.0  # decode blocks allocated, transfer started
        self.sent_s = -1.0  # last byte sent
        self.end_s = -1.0  # transfer complete (KV usable on the decode instance)
        self.queued = False  # waiting for decode admission
        self.delivered = False
        self.last_step_start_s = -1.0
        self.put_start_s = -1.0  # via: store: the put's start (room reserved) and end
        self.put_end_s = -1.0
        self.store_bytes = kv_bytes  # via: store: the object put (the KV; + hidden states with host_copy)
        self.put_booked = False  # sync_put: booked when the step finishing the prompt was priced


class PDCoordinator:
    """Joins a cluster's prefill instances (replicas ``0…P−1``) to its decode instances (``P…P+D−1``)."""

    def __init__(self, cluster: Any, spec: PDSpec, make_replica: Callable[[int, Any, DPGroup | None], Any],
                 decode_router: Any) -> None:
        self.cluster = cluster
        self.spec = spec
        self.env = cluster.env
        self.prefill = list(cluster.replicas)
        for rep in self.prefill:
            rep.on_finished = self.on_prefilled
            rep.on_rejected = self.on_prefill_rejected
            if spec.layerwise:
                rep.pre_step = self.on_prefill_step
            if spec.store is not None and spec.store.sync_put:
                self._wire_blocking(rep, self.sync_put_s)
        # a decode instance with data-parallel attention is ``dp`` ranks (engine cores of their own,
        # behind the decode router like every rank of the aggregated path) stepping in lockstep
        dp = spec.decode.dp
        groups = [DPGroup(self.env, dp, spec.decode.cost_model) if dp > 1 else None for _ in range(spec.num_decode)]
        self.decode = [make_replica(len(cluster.replicas) + j, spec.decode, groups[j // dp])
                       for j in range(spec.num_decode * dp)]
        for rep in self.decode:
            self._wire_decode_hooks(rep)
        cluster.replicas.extend(self.decode)
        cluster.routable = self.prefill  # new requests go to the prefill pool only
        self.decode_router = decode_router
        self.links: dict[tuple[int, int], KVLink] = {}
        self.fabric = NICFabric(self.env, spec.bandwidth_bytes_per_s) if spec.sharing == "nic" else None
        self.store = StoreHandoff(spec.store) if spec.store is not None else None
        self.states: dict[int, _PDState] = {}  # request id -> state, while the request is in the pipeline
        # sync_get: request id -> state of a request handed to its decode scheduler whose get has not run
        self.pending_gets: dict[int, _PDState] = {}
        self.finished_states: list[_PDState] = []
        self.admission: dict[int, deque[_PDState]] = {rep.index: deque() for rep in self.decode}
        # Σ worst-case blocks (prompt + max output) of the requests admitted to each decode instance and
        # not ended: admission keeps it within the instance's KV, so a decode instance never preempts
        self.committed_blocks = {rep.index: 0 for rep in self.decode}
        self.num_admitted = {rep.index: 0 for rep in self.decode}  # decode blocks allocated, KV in flight
        self.num_in_transit = 0  # prefilled (or streaming), not yet handed to a decode scheduler
        # autoscaled pools (sim.engine.pd_autoscaler) change these: decode instances taking transfers, and
        # the prefill-side KV each prefill instance still holds for transfers (a drain waits for both)
        self.decode_routable = list(self.decode)
        self.num_holding: dict[int, int] = {}
        self.on_prefill_released: Callable[[Any], None] | None = None

    def wire_prefill(self, rep: Any) -> None:
        """Hook a prefill instance started at run time (autoscaling) into the pipeline."""
        rep.on_finished = self.on_prefilled
        rep.on_rejected = self.on_prefill_rejected
        if self.spec.layerwise:
            rep.pre_step = self.on_prefill_step
        if self.spec.store is not None and self.spec.store.sync_put:
            self._wire_blocking(rep, self.sync_put_s)
        self.prefill.append(rep)

    def _wire_decode_hooks(self, rep: Any) -> None:
        rep.post_step = self.on_decode_step
        rep.on_finished = self.on_decoded
        if self.spec.store is not None and self.spec.store.sync_get:
            self._wire_blocking(rep, self.sync_get_s)

    def wire_decode(self, rep: Any) -> None:
        """Hook a decode instance started at run time (autoscaling) into the pipeline."""
        self._wire_decode_hooks(rep)
        self.decode.append(rep)
        self.admission[rep.index] = deque()
        self.committed_blocks[rep.index] = 0
        self.num_admitted[rep.index] = 0

    # ------------------------------------------------------------------ prefill side
    def hand_over(self, main: Request) -> bool:
        """Give ``main`` (routed to prefill instance ``main.replica``) to its prefill scheduler as a
        one-token copy; False if either pool can never run it (the reason is set on ``main``)."""
        reason = self.decode[0].scheduler.rejection_reason(main)
        pre = Request(main.request_id, dataclasses.replace(main.spec, max_output_tokens=1), main.arrival_s,
                      main.replica)
        rep = self.cluster.replicas[main.replica]
        if reason is None and self.store is not None and not self.store.fits(self._store_bytes(main)):
            reason = "the prompt's KV is larger than kv_store.capacity_gib"
        if reason is None and not rep.submit(pre):
            reason = pre.reject_reason
        if reason is not None:
            main.status = RequestStatus.REJECTED
            main.reject_reason = reason
            return False
        st = self.states[main.request_id] = _PDState(main, pre, main.replica,
                                                     float(self.spec.kv_bytes_fn(main.num_prompt_tokens)))
        if self.store is not None:
            st.store_bytes = self._store_bytes(main)
        return True

    def _store_bytes(self, main: Request) -> float:
        s = self.spec.store
        return s.object_bytes(float(self.spec.kv_bytes_fn(main.num_prompt_tokens)), main.num_prompt_tokens,
                              s.prefill_shards)

    def on_prefill_rejected(self, request_ids: tuple[int, ...]) -> None:
        """A prefill scheduler rejected requests while scheduling: the requests end rejected."""
        for rid in request_ids:
            st = self.states.pop(rid)
            st.main.status = RequestStatus.REJECTED
            st.main.reject_reason = st.pre.reject_reason
        self.cluster.on_rejected(request_ids)

    def on_prefill_step(self, out: Any, start_s: float) -> None:
        """Layer-wise: a request whose last prefill chunk starts now has its KV ready to stream."""
        for req, n in zip(out.scheduled, out.num_scheduled_tokens.values()):
            if req.num_output_tokens or req.num_computed_tokens + n < req.num_prompt_tokens:
                continue
            st = self.states.get(req.request_id)
            if st is not None and st.kv_ready_s < 0 and st.main.max_output_tokens > 1:
                st.kv_ready_s = start_s
                self.num_in_transit += 1
                self._route_decode(st)

    def on_prefilled(self, finished: list[Request]) -> None:
        """Prefill copies that produced their token: re-hold their KV and move them on."""
        now = self.env.now
        done_main: list[Request] = []
        for pre in finished:
            st = self.states[pre.request_id]
            st.prefill_done_s = now
            main = st.main
            # what the prefill produced: the first token and the prefill timing
            main.first_scheduled_s = pre.first_scheduled_s
            main.prefill_done_s = pre.prefill_done_s
            main.first_token_s = pre.first_token_s
            main.last_token_s = pre.last_token_s
            main.prefill_compute_s = pre.prefill_compute_s
            main.num_cached_tokens = pre.num_cached_tokens
            main.num_preemptions = pre.num_preemptions
            if main.max_output_tokens == 1:  # nothing to decode: it ends on the prefill instance
                main.runs = list(pre.runs)
                main.num_output_tokens = 1
                main.status = RequestStatus.FINISHED
                main.finish_s = pre.finish_s
                del self.states[pre.request_id]
                done_main.append(main)
                continue
            # the scheduler freed the prompt's blocks a moment ago: hold as many again until the transfer ends
            holder = Request(pre.request_id, pre.spec, now)
            if not self.cluster.replicas[st.prefill_rep].kv.allocate_slots(holder, pre.num_prompt_tokens):
                raise AssertionError("re-holding just-freed prefill blocks failed")
            st.holder = holder
            self.num_holding[st.prefill_rep] = self.num_holding.get(st.prefill_rep, 0) + 1
            if st.kv_ready_s < 0:
                st.kv_ready_s = now
                self.num_in_transit += 1
                if st.put_booked:  # sync_put: this step lasted until its put ended
                    self._put_done(st)
                elif self.store is not None:  # the decode side is asked once the put ended
                    self.store.request_put(st.store_bytes, now, lambda t, s=st: self._start_put(s, t))
                else:
                    self._route_decode(st)
            elif st.sent_s >= 0:  # layer-wise: everything was sent while it computed
                self._schedule_delivery(st)
        if done_main:
            self.cluster.on_finished(done_main)

    # ------------------------------------------------------------------ decode side
    def _route_decode(self, st: _PDState) -> None:
        dec = self.decode_routable
        j = self.decode_router.route(st.main.spec, [r.outstanding for r in dec], [r.kv.usage for r in dec])
        rep = dec[j]
        st.decode_rep = rep.index
        st.main.replica = rep.index
        rep.outstanding += 1
        st.queued = True
        self.admission[rep.index].append(st)
        self._admit(rep)

    def on_decoded(self, finished: list[Request]) -> None:
        """Requests that completed on a decode instance: release their reservation."""
        committed = self.committed_blocks
        for req in finished:
            rep = self.cluster.replicas[req.replica]
            committed[req.replica] -= rep.kv.num_blocks_for(req.num_prompt_tokens + req.max_output_tokens)
        self.cluster.on_finished(finished)

    def on_decode_step(self, rep: Any) -> None:
        """After each decode step: blocks may have been freed; admit waiting transfers."""
        if self.admission[rep.index]:
            self._admit(rep)

    def _admit(self, rep: Any) -> None:
        """Allocate decode blocks (prompt + the first token) for waiting transfers, FIFO."""
        queue, kv, sched = self.admission[rep.index], rep.kv, rep.scheduler
        while queue:
            # a sequence slot too: admitted requests must be able to run once their KV lands, or requests
            # holding blocks in the waiting queue could block a preempted one at its head for good
            if (len(sched.running) + sched.num_waiting + len(rep.inbox) + self.num_admitted[rep.index]
                    >= sched.max_num_seqs):
                return
            st = queue[0]
            main = st.main
            full = kv.num_blocks_for(main.num_prompt_tokens + main.max_output_tokens)
            if self.committed_blocks[rep.index] + full > kv.num_blocks:
                return
            main.num_computed_tokens = 0
            # the first generated token's slot as lookahead: allocated now, hashed when computed
            if not kv.allocate_slots(main, main.num_prompt_tokens, 1):
                return
            main.num_computed_tokens = main.num_prompt_tokens
            queue.popleft()
            st.queued = False
            st.admit_s = self.env.now
            self.num_admitted[rep.index] += 1
            self.committed_blocks[rep.index] += full
            if self.store is not None and self.spec.store.sync_get:
                # the decode scheduler takes it now; the step that first runs it makes the get (sync_get_s)
                self.pending_gets[main.request_id] = st
                self._hand_over(st)
                continue
            if self.store is not None:
                ss = self.spec.store
                end_s = self.store.get(main.request_id, rep.index, st.store_bytes, self.env.now,
                                       ss.host_copy_bytes(st.kv_bytes, main.num_prompt_tokens, ss.decode_shards,
                                                          ss.GET_HOST_COPIES) if ss.host_memcpy_bytes_per_s > 0 else 0.0)
                st.sent_s = end_s
                self.env.timeout(end_s - self.env.now).callbacks.append(lambda _ev, s=st: self._transferred(s))
                continue
            if self.fabric is not None:
                self.fabric.start(main.request_id, st.prefill_rep, rep.index, st.kv_bytes, lambda s=st: self._on_sent(s))
                continue
            link = self.links.get((st.prefill_rep, rep.index))
            if link is None:
                link = self.links[(st.prefill_rep, rep.index)] = KVLink(
                    self.env, self.spec.bandwidth_bytes_per_s, f"{st.prefill_rep}->{rep.index}")
            link.start(main.request_id, st.kv_bytes, lambda s=st: self._on_sent(s))

    # ------------------------------------------------------------------ via: store
    def _start_put(self, st: _PDState, now_s: float) -> None:
        """The store has room for the object: book its put; at its end the prefill side is released."""
        st.put_start_s = now_s
        end_s = self.store.put(st.main.request_id, st.prefill_rep, st.store_bytes, now_s, self._put_host_bytes(st))
        self.env.timeout(end_s - self.env.now).callbacks.append(lambda _ev, s=st: self._put_done(s))

    def _put_host_bytes(self, st: _PDState) -> float:
        ss = self.spec.store
        if ss.host_memcpy_bytes_per_s <= 0:
            return 0.0
        return ss.host_copy_bytes(st.kv_bytes, st.main.num_prompt_tokens, ss.prefill_shards, ss.PUT_HOST_COPIES)

    def _wire_blocking(self, rep: Any, blocked_s: Callable[[Any, Any, float], float]) -> None:
        """sync_put / sync_get: price each step of instance ``rep`` as its forward plus the store hand-offs
        it blocks on, ``blocked_s(rep, plan, forward_s)`` (:meth:`sync_put_s`, :meth:`sync_get_s`). The
        replica loop calls ``scheduler.schedule`` and then the cost model's ``step`` once, at the same
        instant; the wrappers hand the plan to the pricing. A leapt decode step (no ``schedule`` call)
        has no plan: it runs only requests already running, whose gets are done."""
        sched = rep.scheduler
        schedule = sched.schedule
        plan: list[Any] = [None]

        def schedule_and_keep(now_s: float) -> Any:
            out = plan[0] = schedule(now_s)
            return out

        def blocked(forward_s: float) -> float:
            out, plan[0] = plan[0], None
            return blocked_s(rep, out, forward_s)

        sched.schedule = schedule_and_keep
        rep.cost_model = BlockingHandoffCostModel(rep.cost_model, blocked)

    def sync_put_s(self, rep: Any, out: Any, forward_s: float) -> float:
        """Seconds the step planned as ``out`` on prefill instance ``rep`` (its forward ``forward_s``) waits
        for the puts of the prompts it finishes. vLLM V0's ``ModelRunner.execute_model`` calls the
        connector's ``send_kv_caches_and_hidden_states`` after the forward and before sampling, and
        ``MooncakeStore.put`` is synchronous ("A message queue needs to be introduced before making it
        asynchronous"), one request after the other. A put that finds the store full (or puts waiting)
        does not block: it waits for room after the step, as without sync_put."""
        if out is None or self.store is None:
            return 0.0
        start = self.env.now + forward_s
        t = start
        for req, n in zip(out.scheduled, out.num_scheduled_tokens.values()):
            if req.num_output_tokens or req.num_computed_tokens + n < req.num_prompt_tokens:
                continue  # not this request's last prefill chunk
            st = self.states.get(req.request_id)
            if st is None or st.main.max_output_tokens <= 1 or st.put_booked:
                continue
            if not self.store.try_reserve(st.store_bytes):
                continue
            st.put_booked = True
            st.put_start_s = t
            t = self.store.put(st.main.request_id, st.prefill_rep, st.store_bytes, t, self._put_host_bytes(st))
        return t - start

    def sync_get_s(self, rep: Any, out: Any, forward_s: float) -> float:
        """Seconds the step planned as ``out`` on decode instance ``rep`` spends on the gets of the requests
        it runs for the first time, before its forward. vLLM V0's ``ModelRunner.execute_model`` calls the
        connector's ``recv_kv_caches_and_hidden_states`` before the forward, and ``MooncakeStore.get`` is
        synchronous, one request after the other; the instance's other requests wait with them. (V0
        then skips the forward of a batch whose KV all arrived and samples the first token from the
        received hidden states; here the request keeps the engine's convention of one decode step
        after the hand-off, the forward that follows the gets.) Each get frees the object's room in the
        store at its end."""
        if out is None or not self.pending_gets:
            return 0.0
        start = t = self.env.now
        ss = self.spec.store
        for req in out.scheduled:
            st = self.pending_gets.pop(req.request_id, None)
            if st is None:
                continue
            host = (ss.host_copy_bytes(st.kv_bytes, req.num_prompt_tokens, ss.decode_shards, ss.GET_HOST_COPIES)
                    if ss.host_memcpy_bytes_per_s > 0 else 0.0)
            t = st.sent_s = st.end_s = self.store.get(req.request_id, rep.index, st.store_bytes, t, host)
            self.env.timeout(t - start).callbacks.append(lambda _ev, s=st: self._got(s))
        return t - start

    def _got(self, st: _PDState) -> None:
        """sync_get: the object's get ended (inside a decode step): free its room in the store."""
        if not self.cluster.stop.triggered:
            self.store.release(st.store_bytes, self.env.now)

    def _put_done(self, st: _PDState) -> None:
        """The KV is in the store: free the prefill instance's blocks and route the request to decode
        (the proxy sends it to the decode instance when the prefill's response, after the put, returns)."""
        if self.cluster.stop.triggered:
            return  # the run is over; drain() releases it
        st.put_end_s = self.env.now
        self._release_prefill(st)
        self._route_decode(st)

    def _release_prefill(self, st: _PDState) -> None:
        pre_rep = self.cluster.replicas[st.prefill_rep]
        pre_rep.kv.free(st.holder)
        st.holder = None
        self.num_holding[st.prefill_rep] -= 1
        if self.on_prefill_released is not None:
            self.on_prefill_released(pre_rep)

    def _on_sent(self, st: _PDState) -> None:
        st.sent_s = self.env.now
        if st.prefill_done_s >= 0:  # layer-wise streams finish later, from on_prefilled
            self._schedule_delivery(st)

    def _layer_tail_s(self, st: _PDState) -> float:
        """Layer-wise: the last layer's KV leaves after the prefill ends, at the link's full bandwidth."""
        if not self.spec.layerwise:
            return 0.0
        return st.kv_bytes / max(self.spec.num_layers, 1) / self.spec.bandwidth_bytes_per_s

    def posting_s(self, num_prompt_tokens: int) -> tuple[float, float]:
        """Serial host time to post a direct transfer's copies (``copy_overhead_us`` × copies), and the
        part of it after the prefill ends when layer-wise (the last layer's copies)."""
        c = self.spec.copy_overhead_s
        if c <= 0.0:
            return 0.0, 0.0
        total = num_kv_copies(num_prompt_tokens, self.spec.block_size, self.spec.copies_per_page) * c
        return total, (total / max(self.spec.num_layers, 1) if self.spec.layerwise else total)

    def _schedule_delivery(self, st: _PDState) -> None:
        """The transfer completes ``latency`` after the later of the last byte sent and (layer-wise) the
        prefill's end plus the last layer's bytes, each after the serial posting of its copies."""
        post, post_tail = self.posting_s(st.main.num_prompt_tokens) if self.spec.copy_overhead_s > 0.0 else (0.0, 0.0)
        end_s = max(st.sent_s + post, st.prefill_done_s + self._layer_tail_s(st) + post_tail) + self.spec.latency_s
        self.env.timeout(end_s - self.env.now).callbacks.append(lambda _ev, s=st: self._transferred(s))

    def _transferred(self, st: _PDState) -> None:
        """The KV is on the decode instance: free the prefill side, hand the request to the decode scheduler."""
        if self.cluster.stop.triggered:
            return  # the run is over; drain() releases it
        st.end_s = self.env.now
        if self.store is not None:  # the prefill side was released at the put's end
            self.store.release(st.store_bytes, st.end_s)
        else:
            self._release_prefill(st)
        self._hand_over(st)

    def _hand_over(self, st: _PDState) -> None:
        """Give the request to its decode instance's scheduler, its prompt computed and one token emitted."""
        main = st.main
        main.num_output_tokens = 1
        main.status = RequestStatus.WAITING
        st.delivered = True
        self.num_in_transit -= 1
        self.num_admitted[st.decode_rep] -= 1
        del self.states[main.request_id]
        self.finished_states.append(st)
        rep = self.cluster.replicas[st.decode_rep]
        rep.outstanding -= 1  # submit() counts it again
        if not rep.submit(main):  # checked at hand-over; a decode scheduler that still refuses: rejected
            if self.pending_gets.pop(main.request_id, None) is not None:  # sync_get: never got
                self.store.drop(main.request_id, st.store_bytes, self.env.now)
            rep.kv.free(main)
            self.committed_blocks[rep.index] -= rep.kv.num_blocks_for(main.num_prompt_tokens + main.max_output_tokens)
            self.cluster.num_rejected += 1
            self.cluster._end(main)
            self.cluster._check_stop()

    # ------------------------------------------------------------------ end of run
    def drain(self) -> int:
        """At the horizon: release what requests in transit hold on both pools and cut the transfers
        in flight; returns the number of requests in transit whose prefill had finished (those whose
        prefill copy is still in a prefill scheduler are drained and counted by the engine)."""
        n = 0
        for st in list(self.states.values()):
            if st.holder is not None:
                self.cluster.replicas[st.prefill_rep].kv.free(st.holder)
                st.holder = None
                self.num_holding[st.prefill_rep] -= 1
            if st.decode_rep >= 0:
                self.cluster.replicas[st.decode_rep].kv.free(st.main)
            if st.prefill_done_s >= 0:
                n += 1
        for link in self.links.values():
            link._advance()
            link.bytes_requested -= sum(max(f[0], 0.0) for f in link.flows.values())  # never sent
            link.flows.clear()
        if self.fabric is not None:
            self.fabric.cut()
        if self.store is not None:
            self.store.drain()
        for q in self.admission.values():
            q.clear()
        self.pending_gets.clear()  # their requests are in decode schedulers, drained by the engine
        return n

    def extend_timeline(self, requests: list[Request]) -> dict[int, list[float]]:
        """Extra timeline entries per decode instance (module docstring): the first token's time of each
        request that moved there, placed after that instance's real iterations, and prepended to its runs."""
        extra: dict[int, list[float]] = {rep.index: [] for rep in self.decode}
        decode_ids = set(extra)
        for req in requests:
            if req.first_token_s < 0 or req.replica not in decode_ids:
                continue
            ext = extra[req.replica]
            v = len(self.cluster.replicas[req.replica].log) + len(ext)
            ext.append(req.first_token_s)
            req.runs = [v, v] + req.runs
        return extra

    def check_invariants(self) -> tuple[str, ...]:
        """The PD end-of-run checks (module docstring); raises AssertionError on the first failure."""
        for key, link in self.links.items():
            if link.flows:
                raise AssertionError(f"KV link {link.name}: {len(link.flows)} transfer(s) still active")
            if link.bytes_requested > link.bandwidth * (link.busy_s + link.clock_rounding_s) * (1 + 1e-9) + 1.0:
                raise AssertionError(f"KV link {link.name}: carried {link.bytes_requested:.0f} B in "
                                     f"{link.busy_s:.6f} s busy, above its bandwidth")
        if self.fabric is not None:
            self.fabric.check()
        bw = self.spec.bandwidth_bytes_per_s
        if self.store is not None:
            self.store.check()
            nic = self.spec.store.nic_bytes_per_s
            for st in self.finished_states:
                if (st.put_end_s - st.put_start_s < st.store_bytes / nic * (1 - 1e-9) - 1e-12
                        or st.end_s - max(st.admit_s, st.put_end_s) < st.store_bytes / nic * (1 - 1e-9) - 1e-12):
                    raise AssertionError(f"request {st.main.request_id}: store put or get faster than the NIC")
            bw = float("inf")  # the point-to-point check below does not apply
        for st in self.finished_states:
            if st.sent_s - st.admit_s < st.kv_bytes / bw * (1 - 1e-9) - 1e-12 - math.ulp(st.sent_s):
                raise AssertionError(f"request {st.main.request_id}: transfer faster than the link bandwidth")
        if any(self.admission.values()):
            raise AssertionError("requests left waiting for decode admission")
        if self.pending_gets:
            raise AssertionError(f"{len(self.pending_gets)} request(s) handed to a decode instance never got their KV")
        return ("KV links idle at the end; no link above its bandwidth", "KV blocks free on both pools")

    def requests_frame(self) -> pd.DataFrame:
        """One row per request that went through a transfer (:data:`PD_REQUEST_COLUMNS`)."""
        # kv_wait: from the KV being ready for the decode side (in the store, via: store) to admission
        rows = [(st.main.request_id, st.prefill_rep, st.decode_rep, st.kv_bytes, st.prefill_done_s,
                 st.kv_ready_s, st.admit_s, st.end_s,
                 st.admit_s - (st.put_end_s if st.put_end_s >= 0 else st.kv_ready_s), st.end_s - st.admit_s)
                for st in self.finished_states]
        if not rows:
            return pd.DataFrame({c: [] for c in PD_REQUEST_COLUMNS})
        return pd.DataFrame(rows, columns=list(PD_REQUEST_COLUMNS)).sort_values("request_id", ignore_index=True)

    def output(self) -> dict[str, Any]:
        """What the run reports about the PD pipeline (``EngineOutput.disagg``)."""
        links = [{"link": link.name, "num_transfers": link.num_flows, "bytes": link.bytes_requested,
                  "busy_s": link.busy_s, "max_concurrent": link.max_concurrent} for link in self.links.values()]
        if self.fabric is not None:
            links = self.fabric.links()
        out = {"requests": self.requests_frame(), "links": links,
               "prefill_replicas": [r.index for r in self.prefill],
               "decode_replicas": [r.index for r in self.decode],
               "bandwidth_bytes_per_s": self.spec.bandwidth_bytes_per_s, "latency_s": self.spec.latency_s,
               "layerwise": self.spec.layerwise}
        if self.store is not None:
            done = [st for st in self.finished_states if st.put_end_s >= 0]
            out["store"] = self.store.report(float(self.env.now))
            # prefill end (sync_put: the forward's end, where the put starts) → the object is in the store
            out["store_put_s"] = np.asarray([st.put_end_s - min(st.kv_ready_s, st.put_start_s) for st in done],
                                            dtype=np.float64)
            out["store_get_s"] = np.asarray([st.end_s - st.admit_s for st in done], dtype=np.float64)
        return out


def np_stats(values: np.ndarray) -> dict[str, float | None]:
    """mean/p50/p90/p99/max of ``values`` in ms (None when empty)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ms = v * 1000.0
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}
