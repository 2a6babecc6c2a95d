"""The serving engine in SimPy: a router feeding replicas, each one SimPy process.

Each replica runs the thin loop (STYLE.md §1)::

    out = scheduler.schedule(now)               # SchedulerOutput (frozen)
    cost = cost_model.step(out.shape)           # StepCost
    yield env.timeout(cost.time_s)
    finished = scheduler.update_from_output(out, iteration, env.now, cost.time_s)

No SimPy event per token: tokens are emitted at iteration ends and recorded as runs of iteration
indices (``sim.engine.request``). An idle replica (nothing to run) waits on an event that the next
``submit`` to it triggers — no polling. The workload is its own process
(``workload.process(env, submit)``); ``submit(spec)`` returns an event succeeded with the
:class:`~sim.engine.request.Request` when it ends (completed or rejected).

Event order is SimPy's: time, then priority, then insertion order — deterministic, so the same
workload and seed give identical output.

**Horizon.** With ``max_duration_s`` the run stops at that simulated time. Without it, it stops when
the workload has submitted everything and every request has ended. Safety nets so that an overloaded
run always ends: once arrivals are over, the backlog gets at most
``max(DRAIN_MIN_S, DRAIN_FACTOR × arrival span)`` more simulated seconds; a workload that does not
declare its size (``describe()["num_requests"]``) and may never end has its arrivals cut at
:data:`DEFAULT_MAX_DURATION_S`; and a cluster where no replica can make progress while no arrival can
come (a policy waiting for something that never happens) stops at once. Requests not ended then are
reported with status ``"unfinished"`` and counted in ``backlog``.

**Swap pricing.** Swap preemption moves ``BatchShape.swap_bytes`` over PCIe. The engine prices it:
it adds ``swap_bytes / swap_bandwidth`` to the step time (``ReplicaSetup.swap_bandwidth_bytes_per_s``,
default :data:`DEFAULT_SWAP_BANDWIDTH_BYTES_PER_S`) and hands the cost model the shape with
``swap_bytes = 0``, so a cost model that would also price swaps cannot count them twice. A cost model
that should price swaps itself instead declares ``prices_swap = True`` and gets the shape unchanged.
"""
from __future__ import annotations

import dataclasses
import gc
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import simpy

from policies.base import Scheduler
from policies.registry import build_router, get_policy
from policies.speculative import Speculator, spec_decode_counters
from sim.deploy.step_cost import CostModel, StepCost
from sim.engine.autoscaler import Autoscaler, AutoscalerSpec
from sim.engine.disagg import PDCoordinator, PDSpec
from sim.engine.dp_group import DPGroup
from sim.engine.dp_pool import dp_pool_view
from sim.engine.kv_cache import KVCacheManager
from sim.engine.kv_tiers import ClusterTiers, TierInvariantError
from sim.engine.leap import leap, leap_off_reasons, leap_report
from sim.engine.output_server import apply_output_server
from sim.engine.pd_autoscaler import PDAutoscalers
from sim.engine.routing_view import RoutingView
from sim.engine.request import (
    RECORD_COLUMNS,
    Request,
    RequestSpec,
    RequestStatus,
    TokenTimeline,
    records_frame,
)
from sim.errors import ConfigError

__all__ = ["ReplicaSetup", "EngineOutput", "simulate", "SimulationInvariantError", "ITERATION_COLUMNS",
           "DEFAULT_MAX_DURATION_S", "DRAIN_MIN_S", "DRAIN_FACTOR"]

GIB = 1024 ** 3
# Safety-net horizon when no max_duration_s is given (see the module docstring).
DEFAULT_MAX_DURATION_S = 86_400.0  # arrivals are cut after one simulated day
DRAIN_MIN_S = 3_600.0  # once arrivals end, the backlog gets at least an hour ...
DRAIN_FACTOR = 2.0  # ... or twice the arrival span, whichever is longer
# PCIe 4.0 x16 effective host<->device bandwidth, used when the setup gives none.
DEFAULT_SWAP_BANDWIDTH_BYTES_PER_S = 25e9

ITERATION_COLUMNS: tuple[str, ...] = (
    "replica", "iteration", "start_s", "end_s", "time_s", "kind", "num_seqs", "num_tokens",
    "num_prefill_tokens", "num_decode_seqs", "num_waiting", "num_running", "kv_usage", "flops",
    "bytes_moved", "mfu", "mbu", "prefill_time_s", "num_preempted",
)


class SimulationInvariantError(AssertionError):
    """An end-of-run invariant failed (a bug in simctl, never a user error)."""


@dataclass(frozen=True)
class ReplicaSetup:
    """Everything one replica needs: engine settings, KV capacity, model length limit, cost model."""

    engine: Any  # sim.config.EngineConfig (defaults resolved)
    num_kv_blocks: int
    max_model_len: int
    cost_model: CostModel
    kv_block_bytes: int = 0  # bytes of one KV block on one GPU (sizes the swap pool, prices swaps)
    swap_bandwidth_bytes_per_s: float = 0.0  # host<->device bandwidth; 0 = DEFAULT_SWAP_BANDWIDTH_BYTES_PER_S
    frontend_s: float = 0.0  # API-server latency between a request's arrival and the engine seeing it
    dp: int = 1  # data-parallel attention ranks per replica, stepping in lockstep (sim.engine.dp_group)
    kv_tiers: Any = None  # sim.engine.kv_tiers.TierSpec: CPU/disk tiers and a shared store (None = GPU only)
    output_server: Any = None  # sim.engine.output_server.OutputServerSpec: API-server output queue (None = off)


@dataclass
class EngineOutput:
    """What :func:`simulate` returns.

    - ``requests``: one row per submitted request (``sim.engine.request.RECORD_COLUMNS``), ordered by
      ``request_id`` = submission order; unfinished requests have status ``"unfinished"``;
    - ``iterations``: one row per executed iteration per replica (:data:`ITERATION_COLUMNS`);
    - ``timeline``: token timestamps, compactly (``sim.engine.request.TokenTimeline``);
    - ``end_s``: simulated time the run stopped; ``horizon_reached``: it stopped with requests unfinished;
    - ``backlog``: counts of requests not ended (waiting, running, swapped) and, when the workload
      tells its size, ``not_arrived``; ``stop_reason``: "drained", "horizon" or "stalled";
    - ``invariants``: the end-of-run checks that passed (a failing one raises
      :class:`SimulationInvariantError`);
    - ``stats``: wall time, iterations, preemptions, prefix-cache hit rate;
    - ``fleet``: with autoscaling, :meth:`sim.engine.autoscaler.Autoscaler.output` (else None).
    """

    requests: pd.DataFrame
    iterations: pd.DataFrame
    timeline: TokenTimeline
    end_s: float
    horizon_reached: bool
    backlog: dict[str, Any]
    stop_reason: str = "drained"
    invariants: tuple[str, ...] = ()
    stats: dict[str, Any] = field(default_factory=dict)
    fleet: dict[str, Any] | None = None  # autoscaled runs: replica lives and controller ticks
    disagg: dict[str, Any] | None = None  # disaggregated runs: sim.engine.disagg.PDCoordinator.output()


# Cost of a step that only swaps (no tokens): priced by the engine from swap_bytes alone.
_SWAP_ONLY = StepCost(time_s=0.0)


class _Ended:
    """What an ended request keeps of its done event: the event itself (~0.4 KB with its attribute
    dict) lives on only in the event queue and with a client waiting on it."""

    __slots__ = ()
    triggered = True

    def succeed(self, value: Any = None) -> None:
        """Ending a request twice is an engine bug, as it is with the event (simpy raises then)."""
        raise RuntimeError("a request ended twice")


_ENDED = _Ended()


class _IterationLog:
    """The iteration log of one replica as typed columns (``array.array``): compact and cheap to append."""

    # column -> array typecode, in ITERATION_COLUMNS order (without "replica" and "iteration")
    COLUMNS = (("start_s", "d"), ("end_s", "d"), ("time_s", "d"), ("kind", "b"), ("num_seqs", "q"),
               ("num_tokens", "q"), ("num_prefill_tokens", "q"), ("num_decode_seqs", "q"),
               ("num_waiting", "q"), ("num_running", "q"), ("kv_usage", "d"), ("flops", "d"),
               ("bytes_moved", "d"), ("mfu", "d"), ("mbu", "d"), ("prefill_time_s", "d"),
               ("num_preempted", "q"))

    def __init__(self) -> None:
        self.columns = {name: array(code) for name, code in self.COLUMNS}
        self.end_s = self.columns["end_s"]  # iteration end times = the token timestamps
        self.kind_code: dict[str, int] = {}

    def appenders(self) -> tuple:
        """Bound ``append`` of every column, in :attr:`COLUMNS` order."""
        return tuple(self.columns[name].append for name, _ in self.COLUMNS)

    def __len__(self) -> int:
        return len(self.end_s)

    def frame(self, replica: int) -> pd.DataFrame:
        """The log as a DataFrame with :data:`ITERATION_COLUMNS`."""
        n = len(self.end_s)
        data: dict[str, Any] = {"replica": np.full(n, replica, dtype=np.int64),
                                "iteration": np.arange(n, dtype=np.int64)}
        names = np.array(sorted(self.kind_code, key=self.kind_code.get) or ["idle"], dtype=object)
        for name, _ in self.COLUMNS:
            col = np.frombuffer(self.columns[name], dtype=self.columns[name].typecode) if n else np.array([])
            data[name] = names[col] if name == "kind" and n else col
        # copy=False: the frame views the typed columns instead of holding the log a second time
        return pd.DataFrame(data, columns=list(ITERATION_COLUMNS), copy=False)


class _Replica:
    """One engine instance: a scheduler, its KV cache, the cost model and the iteration log."""

    def __init__(self, index: int, setup: ReplicaSetup, cluster: _Cluster, dp_group: DPGroup | None = None) -> None:
        eng = setup.engine
        num_cpu_blocks = 0
        if eng.preemption_mode == "swap" and setup.kv_block_bytes > 0:
            num_cpu_blocks = int(eng.swap_space_gib * GIB // setup.kv_block_bytes)
        self.index = index
        self.cluster = cluster
        self.kv = KVCacheManager(setup.num_kv_blocks, eng.block_size, bool(eng.enable_prefix_caching),
                                 num_cpu_blocks=num_cpu_blocks, block_bytes=setup.kv_block_bytes)
        policy_cls = get_policy(eng.policy)
        self.scheduler: Scheduler = policy_cls(eng, self.kv, setup.max_model_len, **dict(eng.policy_options))
        if getattr(eng, "speculative", None) is not None:  # its own random stream per replica
            rng = np.random.default_rng(cluster.stream(1, index))
            self.scheduler.enable_speculation(Speculator(eng.speculative, rng))
        self.cost_model = setup.cost_model
        self.swap_s_per_byte = 0.0 if getattr(setup.cost_model, "prices_swap", False) else (
            1.0 / (setup.swap_bandwidth_bytes_per_s or DEFAULT_SWAP_BANDWIDTH_BYTES_PER_S))
        self.wake: simpy.Event | None = None  # set while the replica waits for work
        self.wake_stalled = False  # that wait is with work it cannot run (vs. no work at all)
        self.log = _IterationLog()
        self.outstanding = 0  # requests routed here and not ended (what a load balancer sees)
        self.num_preempted = 0
        # Async scheduling (vLLM V1 default): step k+1 is planned when step k starts, so it sees only
        # requests delivered by then. Delivered requests wait in the inbox until a plan can see them.
        self.async_scheduling = self.scheduler.async_scheduling  # engine flag, else the policy's default
        self.inbox: deque[tuple[float, Request]] = deque()  # (delivered_s, request), in delivery order
        self.plan_cutoff_s = 0.0  # requests delivered at or before this time are visible to the next plan
        # DP attention: this engine core is one rank of a group whose steps are synchronous
        self.dp_group = dp_group
        self.dp_rank = index % setup.dp
        # where this replica's ended requests go, and per-step hooks (a disaggregated run's
        # sim.engine.disagg.PDCoordinator sets them on its prefill and decode instances)
        self.on_finished: Callable[[list[Request]], None] = cluster.on_finished
        self.on_rejected: Callable[[tuple[int, ...]], None] = cluster.on_rejected
        self.pre_step: Callable[[Any, float], None] | None = None
        self.post_step: Callable[[_Replica], None] | None = None
        self.tiers = cluster.tiers.attach(self.kv) if cluster.tiers is not None else None  # sim.engine.kv_tiers
        self.leap_off: tuple[str, ...] = ()  # why this replica never leaps (sim.engine.leap; set in run())
        self.num_leapt = 0  # iterations run by leaping
        self.leap_flush: Callable[[], None] | None = None  # writes a leap's buffered log rows (run stopped in it)

    def submit(self, req: Request) -> bool:
        """Hand ``req`` to the scheduler (through the inbox under async scheduling); wake the loop if it
        is waiting. False if rejected."""
        if self.async_scheduling:
            reason = self.scheduler.rejection_reason(req)
            if reason is not None:
                req.status = RequestStatus.REJECTED
                req.reject_reason = reason
                return False
            self.inbox.append((self.cluster.env.now, req))
        elif not self.scheduler.add_request(req):
            return False
        self.outstanding += 1
        wake = self.wake
        if wake is not None:
            # Count the replica as busy now, not when its process resumes: the stop rule must not
            # see an "everyone is waiting" state that a pending wake-up is about to end.
            self.wake = None
            self.cluster.on_replica_woken(self.wake_stalled)
            wake.succeed()
        return True

    def run(self, env: simpy.Environment):
        """The replica's SimPy process: schedule → price → wait → update, forever."""
        sched, cluster, log = self.scheduler, self.cluster, self.log
        schedule, update = sched.schedule, sched.update_from_output
        step_cost = self.cost_model.step
        kv = self.kv
        swap_s_per_byte = self.swap_s_per_byte
        timeout = env.timeout
        # bound appends of the iteration log's columns (hot loop: no per-iteration objects kept)
        (a_start, a_end, a_time, a_kind, a_seqs, a_tokens, a_prefill, a_decode, a_waiting, a_running,
         a_usage, a_flops, a_bytes, a_mfu, a_mbu, a_prefill_time, a_preempted) = log.appenders()
        kind_code = log.kind_code
        ends = log.end_s
        inbox = self.inbox
        group = self.dp_group
        on_finished, on_rejected, pre_step, post_step = self.on_finished, self.on_rejected, self.pre_step, self.post_step
        tiers = self.tiers
        self.leap_off = leap_off_reasons(self)
        leap_ready = sched.leap_ready if not self.leap_off else None
        while True:
            if inbox:
                self._admit_visible(sched.has_unfinished())
            if not sched.has_unfinished():
                yield from self._wait_for_work(env, stalled=False)
                continue
            if leap_ready is not None and leap_ready():  # steady decode: sim.engine.leap
                if (yield from leap(self, env, kind_code, SimulationInvariantError)):
                    continue
            now = env.now
            out = schedule(now)
            if out.rejected_ids:
                on_rejected(out.rejected_ids)
            shape = out.shape
            swap_bytes = shape.swap_bytes
            if shape.num_tokens:
                # the engine prices swaps itself unless the cost model says it does (never twice)
                cost = step_cost(shape if not swap_bytes or not swap_s_per_byte
                                 else dataclasses.replace(shape, swap_bytes=0))
                dt = cost.time_s
            elif swap_bytes:
                cost = _SWAP_ONLY
                dt = 0.0
            else:
                if out.preempted_ids:
                    continue  # preemption freed memory: schedule again at the same instant
                if inbox:
                    self._admit_visible(busy=False)  # nothing runs: the engine core sees them now
                    continue
                land_s = tiers.next_load_end_s(now) if tiers is not None else None
                if land_s is not None:  # only async tier loads in flight: vLLM polls its connector
                    yield timeout(max(land_s - now, 0.0))
                    self.plan_cutoff_s = env.now  # its empty polling steps saw every arrival
                    continue
                yield from self._wait_for_work(env, stalled=True)
                continue
            if swap_bytes:
                dt += swap_bytes * swap_s_per_byte  # 0 when the cost model priced them
            if not dt >= 0.0:
                raise SimulationInvariantError(f"cost model returned step time {dt!r} for {shape}")
            if tiers is not None:
                dt = tiers.step_time(now, dt)  # synchronous / layer-wise tier loads
            num_waiting, num_running, usage = sched.num_waiting + len(inbox), len(sched.running), kv.usage
            self.plan_cutoff_s = now  # the next step is planned while this one runs
            if pre_step is not None:
                pre_step(out, now)
            if group is None:
                yield timeout(dt)
            else:  # the group's slowest rank sets the step time; it may start later than planned
                now, dt, cost = yield from group.step(self.dp_rank, shape)
            end = env.now
            iteration = len(ends)
            finished = update(out, iteration, end, dt)
            if tiers is not None:
                tiers.after_step(end)  # write-through of the blocks this step filled
            # all columns appended together: a run stopped at the horizon mid-step logs nothing of it
            a_end(end)
            a_waiting(num_waiting)
            a_running(num_running)
            a_usage(usage)
            a_start(now)
            a_time(dt)
            kind = out.kind if cost is not _SWAP_ONLY else "swap"
            code = kind_code.get(kind)
            if code is None:
                code = kind_code[kind] = len(kind_code)
            a_kind(code)
            a_seqs(shape.num_seqs)
            a_tokens(shape.num_tokens)
            a_prefill(shape.num_prefill_tokens)
            a_decode(shape.num_decode_seqs)
            a_flops(cost.flops)
            a_bytes(cost.bytes_moved)
            a_mfu(cost.mfu)
            a_mbu(cost.mbu)
            a_prefill_time(cost.prefill_time_s)
            npre = len(out.preempted_ids)
            a_preempted(npre)
            if npre:
                self.num_preempted += npre
            if finished:
                self.outstanding -= len(finished)
                on_finished(finished)
            if post_step is not None:
                post_step(self)

    def _admit_visible(self, busy: bool) -> None:
        """Move inbox requests the next plan can see into the scheduler. While the engine is busy that
        is those delivered by the start of the step now ending (``plan_cutoff_s``); an idle engine core
        picks up everything delivered so far at once."""
        inbox, add = self.inbox, self.scheduler.add_request
        cutoff = self.plan_cutoff_s if busy else self.cluster.env.now
        while inbox and inbox[0][0] <= cutoff:
            add(inbox.popleft()[1])  # already checked by rejection_reason() on delivery

    def _wait_for_work(self, env: simpy.Environment, stalled: bool):
        """Sleep until the next submit to this replica (``stalled``: it has work it cannot run)."""
        wake = self.wake = env.event()
        self.wake_stalled = stalled
        self.cluster.on_replica_waiting(stalled)
        yield wake  # succeeded by submit(), which also clears self.wake and the waiting count


class _Cluster:
    """Router + replicas + the request table; decides when the run stops."""

    def __init__(self, env: simpy.Environment, workload: Any, setup: ReplicaSetup, num_replicas: int,
                 router: str, seed_seq: np.random.SeedSequence, max_duration_s: float | None,
                 progress: Callable[[dict[str, Any]], None] | None, router_options: dict | None = None) -> None:
        self.env = env
        self.workload = workload
        self.max_duration_s = max_duration_s
        self.setup = setup
        self.seed_seq = seed_seq
        self.tiers = None if setup.kv_tiers is None else ClusterTiers(setup.kv_tiers, lambda: env.now)  # kv_tiers
        # with DP attention every rank is an engine core of its own, behind the same router
        groups = [DPGroup(env, setup.dp, setup.cost_model) if setup.dp > 1 else None for _ in range(num_replicas)]
        self.replicas = [_Replica(i, setup, self, groups[i // setup.dp]) for i in range(num_replicas * setup.dp)]
        num_replicas *= setup.dp
        self.routable = self.replicas  # replicas taking new requests (an autoscaler changes it)
        self.autoscaler: Any = None  # sim.engine.autoscaler.Autoscaler when the pool autoscales
        self.router = self.build_router(router, router_options)
        self.requests: list[Request] = []
        self.num_ended = 0
        self.num_rejected = 0
        self.arrivals_done = False
        self.arrivals_end_s = 0.0
        self.frontend_s = float(setup.frontend_s)
        self.num_in_frontend = 0  # requests sent but not yet handed to an engine
        self.num_stalled = 0  # replicas waiting with work they cannot run
        self.num_idle = 0  # replicas waiting with no work
        self.stop = env.event()
        self.stop_reason = ""
        self.progress = progress
        self._last_progress_wall = time.perf_counter()
        self.pd: Any = None  # sim.engine.disagg.PDCoordinator in a disaggregated run
        self.leap_prices: dict[int, dict] = {}  # memoised decode-step prices per cost model (sim.engine.leap)

    def build_router(self, router: str, router_options: dict | None) -> Any:
        """The router over the current replicas, on the routing stream; cache-aware routers are bound to
        a view of the replicas' caches."""
        built = build_router(router, len(self.replicas), np.random.default_rng(self.stream(0)), router_options)
        if hasattr(built, "bind"):
            built.bind(RoutingView(self))
        return built

    def stream(self, *key: int) -> np.random.SeedSequence:
        """The engine's random stream ``key`` (routing: (0,); speculative acceptance of replica i:
        (1, i); the autoscaler's cold-start draws: (2,); a disaggregated run's decode router: (3,); autoscaled PD pools: (4, i)), derived without mutating the caller's SeedSequence (spawn() would)."""
        seq = self.seed_seq
        return np.random.SeedSequence(seq.entropy, spawn_key=tuple(seq.spawn_key) + key)

    # -------------------------------------------------------------- arrivals
    def submit(self, spec: RequestSpec) -> simpy.Event:
        """Route ``spec`` to a replica now; the returned event succeeds with the Request when it ends."""
        env = self.env
        req = Request(len(self.requests), spec, env.now)
        done = env.event()
        req.done_event = done
        self.requests.append(req)
        replicas = self.replicas
        pool = self.routable
        idx = pool[self.router.route(spec, [r.outstanding for r in pool], [r.kv.usage for r in pool])].index
        req.replica = idx
        if self.frontend_s > 0.0:
            # the API server works on it first; the load balancer already counts it as outstanding
            self.num_in_frontend += 1
            replicas[idx].outstanding += 1
            env.timeout(self.frontend_s).callbacks.append(lambda _ev, r=req: self._deliver(r))
        else:
            self._hand_over(req)
        return done

    def _deliver(self, req: Request) -> None:
        """The API server hands ``req`` to its replica's engine (after ``frontend_s``)."""
        self.num_in_frontend -= 1
        self.replicas[req.replica].outstanding -= 1
        if not self.stop.triggered:
            self._hand_over(req)

    def _hand_over(self, req: Request) -> None:
        if not (self.replicas[req.replica].submit(req) if self.pd is None else self.pd.hand_over(req)):
            self.num_rejected += 1
            self._end(req)
            self._check_stop()

    def arrivals(self):
        """Run the workload's process, then note that no more requests will come."""
        env = self.env
        yield from self.workload.process(env, self.submit)
        self.arrivals_done = True
        self.arrivals_end_s = env.now
        if self.max_duration_s is None:
            drain = max(DRAIN_MIN_S, DRAIN_FACTOR * env.now)
            env.process(self._deadline(drain, "horizon"))
        self._check_stop()

    def arrival_cutoff(self):
        """Safety net for endless workloads without max_duration_s."""
        yield self.env.timeout(DEFAULT_MAX_DURATION_S)
        if not self.arrivals_done:
            self._trigger_stop("horizon")

    def _deadline(self, delay_s: float, reason: str):
        yield self.env.timeout(delay_s)
        self._trigger_stop(reason)

    # -------------------------------------------------------------- replicas at run time
    def start_replica(self) -> _Replica:
        """Add a replica (its process starts now); it takes traffic once in :attr:`routable`."""
        rep = _Replica(len(self.replicas), self.setup, self)
        self.replicas.append(rep)
        self.env.process(rep.run(self.env))
        return rep

    def set_routable(self, replicas: list[_Replica]) -> None:
        """Route new requests to ``replicas`` only (the router sees them as 0…n−1)."""
        self.routable = replicas
        self.router.resize(len(replicas))

    # -------------------------------------------------------------- request ends
    def _end(self, req: Request) -> None:
        self.num_ended += 1
        req.done_event.succeed(req)
        req.done_event = _ENDED
        # an ended request never allocates again: its prefix hashes (~2 KB) would only pile up over a run
        # (the largest per-request holder); recomputed identically should anything ask again
        req.block_hashes = None
        if self.autoscaler is not None:
            self.autoscaler.on_end(req)

    def on_finished(self, finished: list[Request]) -> None:
        """Completed requests: succeed their events; maybe the run is over."""
        for req in finished:
            self._end(req)
        if self.progress is not None:
            self._report_progress()
        if self.arrivals_done and self.num_ended == len(self.requests):
            self._trigger_stop("drained")

    def on_rejected(self, request_ids: tuple[int, ...]) -> None:
        """Requests a policy rejected while scheduling."""
        for rid in request_ids:
            req = self.requests[rid]
            self.num_rejected += 1
            self.replicas[req.replica].outstanding -= 1
            self._end(req)
        self._check_stop()

    def on_replica_waiting(self, stalled: bool) -> None:
        if stalled:
            self.num_stalled += 1
        else:
            self.num_idle += 1
        self._check_stop()

    def on_replica_woken(self, stalled: bool) -> None:
        if stalled:
            self.num_stalled -= 1
        else:
            self.num_idle -= 1

    def _check_stop(self) -> None:
        if not self.arrivals_done:
            return
        if self.num_ended == len(self.requests):
            self._trigger_stop("drained")
        elif (self.num_stalled + self.num_idle == len(self.replicas) and not self.num_in_frontend
              and not (self.pd is not None and self.pd.num_in_transit)):
            self._trigger_stop("stalled")  # nobody can progress and nothing will arrive

    def _trigger_stop(self, reason: str) -> None:
        if not self.stop.triggered:
            self.stop_reason = reason
            self.stop.succeed()

    def _report_progress(self) -> None:
        wall = time.perf_counter()
        if wall - self._last_progress_wall >= 0.5:
            self._last_progress_wall = wall
            self.progress({"now_s": self.env.now, "num_submitted": len(self.requests),
                           "num_ended": self.num_ended})


def simulate(workload: Any, setup: ReplicaSetup, *, num_replicas: int = 1, router: str = "round-robin",
             seed_seq: np.random.SeedSequence | None = None, max_duration_s: float | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None,
             autoscaling: AutoscalerSpec | None = None, disagg: PDSpec | None = None,
             replica_setups: list[ReplicaSetup] | None = None,
             router_options: dict | None = None) -> EngineOutput:
    """Simulate ``workload`` on ``num_replicas`` identical replicas behind ``router``.

    ``seed_seq`` feeds the engine's own randomness (the ``random`` router, cold-start draws); the
    workload carries its own streams. ``progress``, if given, is called about twice a second of wall
    time and once at the end with ``{"now_s", "num_submitted", "num_ended"}``. ``autoscaling`` adds the
    controller of :mod:`sim.engine.autoscaler` (``num_replicas`` are then the replicas ready at t = 0);
    with ``disagg`` it is a ``{pool: AutoscalerSpec}`` dict (:mod:`sim.engine.pd_autoscaler`).
    ``disagg`` makes it a disaggregated run (:mod:`sim.engine.disagg`): ``setup``/``num_replicas``/
    ``router`` are then the prefill pool's, and ``disagg`` adds the decode pool and the KV links.
    ``replica_setups`` (one per replica, ``num_replicas`` of them) makes the replicas heterogeneous
    (``sim.runs.replica_groups``); ``setup`` then only sets the API server's frontend time.
    See the module docstring for the horizon rules.
    """
    if num_replicas < 1:
        raise ConfigError(f"replicas must be ≥ 1, got {num_replicas}")
    if seed_seq is None:
        seed_seq = np.random.SeedSequence(0)
    wall0 = time.perf_counter()
    env = simpy.Environment()
    cluster = _Cluster(env, workload, setup, num_replicas, router, seed_seq, max_duration_s, progress, router_options)
    if replica_setups is not None:  # heterogeneous replicas behind the same router
        if autoscaling is not None or disagg is not None or len(replica_setups) != num_replicas:
            raise ConfigError("replica_groups: one setup per replica, without autoscaling or disaggregation")
        # a dp > 1 replica is dp lockstep ranks, each an engine core behind the router (the uniform DP path)
        cluster.replicas = []
        for s in replica_setups:
            group = DPGroup(env, s.dp, s.cost_model) if s.dp > 1 else None
            cluster.replicas.extend(_Replica(len(cluster.replicas), s, cluster, group) for _ in range(s.dp))
        cluster.routable = cluster.replicas
        if len(cluster.replicas) != num_replicas * setup.dp:  # the router was sized by the first setup's dp
            cluster.router = cluster.build_router(router, router_options)
    if disagg is not None:
        if setup.output_server is not None:
            raise ConfigError("engine.output_server: not supported in a disaggregated deployment yet")
        if isinstance(autoscaling, AutoscalerSpec):
            raise ConfigError("disaggregation: autoscale each pool (disaggregation.<pool>.autoscaling)")
        cluster.pd = PDCoordinator(cluster, disagg, lambda i, s, g: _Replica(i, s, cluster, g),
                                   build_router(disagg.decode_router, disagg.num_decode * disagg.decode.dp,
                                                np.random.default_rng(cluster.stream(3))))
    for rep in cluster.replicas:
        env.process(rep.run(env))
    if autoscaling is not None and disagg is not None:  # per-pool controllers: sim.engine.pd_autoscaler
        cluster.autoscaler = PDAutoscalers(cluster, autoscaling, lambda i, s, g=None: _Replica(i, s, cluster, g))
        for proc in cluster.autoscaler.processes():
            env.process(proc)
    elif autoscaling is not None:  # with dp > 1 the scale unit is an instance of dp ranks (sim.engine.dp_pool)
        view = cluster if setup.dp == 1 else dp_pool_view(cluster, setup, lambda i, g: _Replica(i, setup, cluster, g))
        cluster.autoscaler = Autoscaler(view, autoscaling, np.random.default_rng(cluster.stream(2)),
                                        initial=None if setup.dp == 1 else view.instances)
        env.process(cluster.autoscaler.run())
    env.process(cluster.arrivals())
    if max_duration_s is not None:
        env.process(cluster._deadline(max_duration_s, "horizon"))
    elif _workload_size(workload) is None:  # possibly endless: cut arrivals after a simulated day
        env.process(cluster.arrival_cutoff())
    # The run allocates many long-lived objects (one Request per request) and almost no reference
    # cycles; Python's cyclic GC would rescan the growing heap again and again (~20 % of the wall
    # time at 100k requests). Pause it for the run and restore the caller's setting.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        env.run(until=cluster.stop)
    finally:
        if gc_was_enabled:
            gc.enable()
    if progress is not None:  # always a final report
        progress({"now_s": env.now, "num_submitted": len(cluster.requests), "num_ended": cluster.num_ended})
    return _collect(cluster, workload, time.perf_counter() - wall0)


# ------------------------------------------------------------------ results
def _collect(cluster: _Cluster, workload: Any, wall_s: float) -> EngineOutput:
    """Release unfinished requests, check the end-of-run invariants and build the tables."""
    env, requests, replicas = cluster.env, cluster.requests, cluster.replicas
    backlog = {"waiting": 0, "running": 0, "swapped": 0}
    num_unfinished = 0
    for rep in replicas:
        if rep.leap_flush is not None:  # the run stopped inside a leap: log its steps that ended
            rep.leap_flush()
        for req in rep.scheduler.drain_unfinished():
            num_unfinished += 1
            if req.status is RequestStatus.RUNNING:
                backlog["running"] += 1
            elif req.status is RequestStatus.SWAPPED:
                backlog["swapped"] += 1
            else:
                backlog["waiting"] += 1
        for _, req in rep.inbox:  # delivered, not yet visible to the scheduler
            num_unfinished += 1
            backlog["waiting"] += 1
        rep.inbox.clear()
    num_unfinished += cluster.num_in_frontend  # still in the API server when the run stopped
    backlog["waiting"] += cluster.num_in_frontend
    if cluster.pd is not None:  # prefilled, not yet on a decode instance
        backlog["kv_transfer"] = cluster.pd.drain()
        num_unfinished += backlog["kv_transfer"]
    backlog["unfinished"] = num_unfinished
    num_total = _workload_size(workload)
    if num_total is not None:
        backlog["not_arrived"] = max(0, num_total - len(requests))
    invariants = _check_invariants(cluster, num_unfinished)
    extra_ends = None
    if cluster.pd is not None:
        try:
            invariants += cluster.pd.check_invariants()
        except AssertionError as exc:
            raise SimulationInvariantError(str(exc)) from None
        extra_ends = cluster.pd.extend_timeline(requests)
    cluster.leap_prices.clear()  # memoised prices: not needed past the run (freed before the tables are built)
    req_df = _requests_frame(requests)
    it_df = _iterations_frame(replicas)
    timeline = _timeline(requests, replicas, extra_ends)
    if cluster.setup.output_server is not None:  # token times as the client sees them (API-server queue)
        apply_output_server(req_df, timeline, cluster.setup.output_server)
    stats = {
        "wall_s": wall_s, "num_requests": len(requests),
        "num_iterations": int(sum(len(r.log) for r in replicas)),
        "num_preemptions": int(sum(r.num_preempted for r in replicas)),
        "prefix_cache_hit_rate": [r.kv.prefix_hit_rate() for r in replicas],
        "leap": leap_report(replicas),
    }
    if cluster.tiers is not None:
        stats["kv_tiers"] = cluster.tiers.report(float(env.now))
    specs = [r.scheduler.speculator for r in replicas if r.scheduler.speculator is not None]
    if specs:
        stats["spec_decode"] = spec_decode_counters(specs)
    horizon_reached = num_unfinished > 0 or backlog.get("not_arrived", 0) > 0
    fleet = None
    if cluster.autoscaler is not None:
        try:
            cluster.autoscaler.check_invariants(float(env.now))
        except AssertionError as exc:
            raise SimulationInvariantError(str(exc)) from None
        invariants += ("replica lives ordered; drained replicas released only when empty",)
        fleet = cluster.autoscaler.output()
    return EngineOutput(req_df, it_df, timeline, float(env.now), horizon_reached, backlog,
                        cluster.stop_reason or "drained", invariants, stats, fleet,
                        cluster.pd.output() if cluster.pd is not None else None)


def _workload_size(workload: Any) -> int | None:
    """Number of requests the workload will submit, if it says."""
    try:
        n = workload.describe().get("num_requests")
    except Exception:  # a workload's describe() is informational; never fail the run on it
        return None
    return int(n) if isinstance(n, (int, np.integer)) else None


def _check_invariants(cluster: _Cluster, num_unfinished: int) -> tuple[str, ...]:
    """End-of-run checks; raise :class:`SimulationInvariantError` on the first that fails."""
    requests = cluster.requests
    ended = sum(1 for r in requests if r.done_event.triggered)
    finished_status, rejected_status = RequestStatus.FINISHED, RequestStatus.REJECTED
    completed = sum(1 for r in requests if r.status is finished_status)
    rejected = sum(1 for r in requests if r.status is rejected_status)
    if ended != completed + rejected or ended + num_unfinished != len(requests) or ended != cluster.num_ended:
        raise SimulationInvariantError(
            f"request accounting: {len(requests)} submitted, {completed} completed, {rejected} rejected, "
            f"{num_unfinished} unfinished, {ended} ended events ({cluster.num_ended} counted)")
    for rep in cluster.replicas:
        rep.kv.check_invariants()
        if rep.kv.num_free_blocks != rep.kv.num_blocks:
            raise SimulationInvariantError(
                f"replica {rep.index}: {rep.kv.num_used_blocks} KV blocks still held after the run")
        if rep.kv.num_free_cpu_blocks != rep.kv.num_cpu_blocks:
            raise SimulationInvariantError(f"replica {rep.index}: host swap blocks still held after the run")
        ends = np.frombuffer(rep.log.end_s, dtype=np.float64) if len(rep.log) else np.zeros(0)
        if ends.size and (np.any(np.diff(ends) < 0) or ends[-1] > cluster.env.now):
            raise SimulationInvariantError(f"replica {rep.index}: time went backwards")
    for req in requests:
        if req.status is finished_status and req.num_output_tokens != req.max_output_tokens:
            raise SimulationInvariantError(f"request {req.request_id} finished with "
                                           f"{req.num_output_tokens}/{req.max_output_tokens} tokens")
    checks = ("every request ended exactly once", "KV blocks all free at the end",
              "KV allocator invariants", "time never went backwards", "completed requests got all tokens")
    if cluster.tiers is not None:
        try:
            checks += cluster.tiers.check_invariants()
        except TierInvariantError as exc:
            raise SimulationInvariantError(str(exc)) from None
    return checks


def _requests_frame(requests: list[Request]) -> pd.DataFrame:
    """The per-request table (columns RECORD_COLUMNS), one row per request in submission order."""
    if not requests:
        return pd.DataFrame({c: [] for c in RECORD_COLUMNS})
    return records_frame(requests)


def _iterations_frame(replicas: list[_Replica]) -> pd.DataFrame:
    """The iteration log of all replicas (replica-major, iteration order)."""
    parts = [rep.log.frame(rep.index) for rep in replicas if len(rep.log)]
    if not parts:
        return pd.DataFrame({c: [] for c in ITERATION_COLUMNS})
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _timeline(requests: list[Request], replicas: list[_Replica],
              extra_ends: dict[int, list[float]] | None = None) -> TokenTimeline:
    """Token timestamps: per-replica iteration end times + flat emission runs per request row.
    ``extra_ends[replica]`` are entries after that replica's iterations (a disaggregated run's
    first-token times, ``sim.engine.disagg``)."""
    lengths = np.fromiter((len(r.runs) for r in requests), dtype=np.int64, count=len(requests))
    offsets = np.zeros(len(requests) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    runs = np.fromiter((i for r in requests for i in r.runs), dtype=np.int64, count=int(offsets[-1]))
    bursts = burst_offsets = None
    if any(r.bursts for r in requests):  # speculative decoding: multi-token emissions
        blen = np.fromiter((len(r.bursts) if r.bursts else 0 for r in requests), dtype=np.int64,
                           count=len(requests))
        burst_offsets = np.zeros(len(requests) + 1, dtype=np.int64)
        np.cumsum(blen, out=burst_offsets[1:])
        bursts = np.fromiter((i for r in requests if r.bursts for i in r.bursts), dtype=np.int64,
                             count=int(burst_offsets[-1]))
    def ends(rep: _Replica) -> np.ndarray:
        # a view of the log's end times (the iteration frame views the same buffer: not held twice)
        own = np.frombuffer(rep.log.end_s, dtype=np.float64) if len(rep.log) else np.zeros(0)
        extra = (extra_ends or {}).get(rep.index)
        return np.concatenate([own, np.array(extra, dtype=np.float64)]) if extra else own

    return TokenTimeline(
        iteration_end_s={rep.index: ends(rep) for rep in replicas},
        replica_of=np.fromiter((r.replica for r in requests), dtype=np.int64, count=len(requests)),
        runs=runs, run_offsets=offsets, bursts=bursts, burst_offsets=burst_offsets)
