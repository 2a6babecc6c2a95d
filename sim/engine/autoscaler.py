"""The autoscaler: one more SimPy process that changes a pool's replica count while the run goes.

Every ``interval_s`` it samples what a real autoscaler sees (:class:`~sim.engine.autoscaling_policies.FleetSignals`:
each ready engine's ``num_requests_waiting``, ``num_requests_running``, KV-cache usage and the
gateway's outstanding count; the router's arrival rate and the latency of requests finished over the
window), asks the policy for a replica count, applies the behaviour rules, and acts:

- **up**: a sleeping replica of the warm pool wakes in ``wake_s`` (and the pool is refilled by a cold
  start); otherwise a new replica takes traffic after its cold start (``provisioning``). Starting
  replicas count towards the current size, so the controller does not ask twice for the same load;
- **down**: starting replicas are cancelled first (newest first), then ready replicas are *drained*:
  the router stops sending them requests, every request already there finishes, and the replica is
  released when its last one ends. No request is ever dropped or moved.

Behaviour rules (Kubernetes HPA ``behavior``), applied to the policy's recommendation ``r`` clamped to
``[min_replicas, max_replicas]``: scaling up uses the *smallest* recommendation of the last
``scale_up.stabilization_s`` (never below the current size), scaling down the *largest* of the last
``scale_down.stabilization_s``; a change is at most ``max_step`` replicas or ``max_percent`` % of the
current size (the larger of the two with ``select_policy: max``, HPA's default); no change in a direction within ``cooldown_s`` of the previous one in that direction.
``metrics_delay_s`` makes the decision use the signals of ⌈delay / interval⌉ samples ago.

The pool abstraction (:class:`ReplicaPool`) is what the controller drives: it needs from the cluster
only ``start_replica()``, the list of replicas taking traffic, and a call when a request ends — so a
disaggregated deployment can give each of its pools a controller of its own
(:mod:`sim.engine.pd_autoscaler`), and replicas with DP attention scale as whole instances of lockstep
ranks (:mod:`sim.engine.dp_pool`).

Billing: a replica is paid from the moment it is asked for (the node is rented while it boots) until
it is released (cancelled, or drained empty) or the run ends; sleeping warm-pool replicas are paid too.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import simpy

from sim.engine.autoscaling_config import AutoscalingConfig
from sim.engine.autoscaling_policies import (
    LATENCY_METRICS,
    FleetSignals,
    get_autoscaling_policy,
)

__all__ = ["TICK_COLUMNS", "UNIT_COLUMNS", "Autoscaler", "AutoscalerSpec", "ReplicaPool", "ReplicaUnit"]

NAN = float("nan")

UNIT_COLUMNS = ("unit", "replica", "kind", "requested_s", "asked_s", "ready_s", "drain_s", "released_s", "cold_start_s")
TICK_COLUMNS = ("time_s", "recommended", "desired", "ready", "starting", "draining", "sleeping",
                "arrival_rate", "num_requests_waiting", "num_requests_running", "mean_kv_cache_usage",
                "outstanding", "p99_ttft_s", "mean_tpot_s")


@dataclass(frozen=True)
class AutoscalerSpec:
    """What the engine needs to autoscale a pool: the validated section and the cold-start sampler
    (``cold_start_s(rng) -> seconds``, resolved by the runner from the deployment's weight bytes)."""

    config: AutoscalingConfig
    cold_start_s: Callable[[np.random.Generator], float]


@dataclass
class ReplicaUnit:
    """One replica's life: asked for, ready, drained, released (NaN: not (yet) happened)."""

    unit: int
    kind: str  # "initial", "cold" (cold start), "warm" (woken from the warm pool), "sleeping" (pool refill)
    requested_s: float  # billing starts (a warm-pool replica: when it was provisioned)
    asked_s: float = NAN  # the controller asked it to take traffic (scale-up decision)
    ready_s: float = NAN
    drain_s: float = NAN
    released_s: float = NAN
    cold_start_s: float = NAN  # provisioning delay this unit paid (wake or cold start)
    replica: int = -1  # engine replica index once it took traffic
    cancelled: bool = False

    @property
    def starting(self) -> bool:
        return math.isnan(self.ready_s) and not self.cancelled and self.kind != "sleeping"


class ReplicaPool:
    """The replicas of one pool and their lives: start, wake, cancel, drain, release."""

    def __init__(self, cluster: Any, env: simpy.Environment, initial: list[Any] | None = None,
                 busy: Callable[[Any], bool] | None = None) -> None:
        self.cluster = cluster
        self.env = env
        self.units: list[ReplicaUnit] = []
        self.by_replica: dict[int, ReplicaUnit] = {}
        self.draining: dict[int, ReplicaUnit] = {}
        self.sleeping: deque[ReplicaUnit] = deque()  # warm pool, ready to wake
        # what keeps a draining replica alive: its outstanding requests (a PD prefill instance: also the
        # KV it holds for transfers in flight)
        self.busy = busy or (lambda rep: rep.outstanding > 0)
        initial = list(cluster.replicas) if initial is None else list(initial)
        cluster.set_routable(list(initial))  # its own list: replicas are added to both separately
        for rep in initial:
            u = self._new_unit("initial", 0.0)
            u.asked_s = u.ready_s = 0.0
            u.cold_start_s = 0.0
            u.replica = rep.index
            self.by_replica[rep.index] = u

    def _new_unit(self, kind: str, now: float) -> ReplicaUnit:
        u = ReplicaUnit(len(self.units), kind, now)
        self.units.append(u)
        return u

    # ---- counts ---------------------------------------------------------------------------------
    @property
    def num_ready(self) -> int:
        return len(self.cluster.routable)

    @property
    def starting(self) -> list[ReplicaUnit]:
        return [u for u in self.units if u.starting]

    # ---- actions --------------------------------------------------------------------------------
    def add_sleeping(self, delay_s: float) -> None:
        """A warm-pool replica that becomes available (asleep) after ``delay_s``."""
        u = self._new_unit("sleeping", self.env.now)
        u.cold_start_s = delay_s
        if delay_s <= 0:
            self.sleeping.append(u)
        else:
            self.env.timeout(delay_s).callbacks.append(lambda _e, u=u: self.sleeping.append(u))

    def start(self, kind: str, delay_s: float) -> ReplicaUnit:
        """Ask for a replica that takes traffic after ``delay_s`` (a woken sleeper keeps its unit)."""
        if kind == "warm":
            u = self.sleeping.popleft()
            u.kind = "warm"
        else:
            u = self._new_unit(kind, self.env.now)
        u.cold_start_s = delay_s
        u.asked_s = self.env.now
        if delay_s <= 0:
            self._ready(u)
        else:
            self.env.timeout(delay_s).callbacks.append(lambda _e, u=u: self._ready(u))
        return u

    def _ready(self, u: ReplicaUnit) -> None:
        if u.cancelled:
            return
        rep = self.cluster.start_replica()
        u.ready_s = self.env.now
        u.replica = rep.index
        self.by_replica[rep.index] = u
        self.cluster.set_routable(self.cluster.routable + [rep])

    def cancel(self, u: ReplicaUnit) -> None:
        """Give up a starting replica (it never takes traffic; billing stops now)."""
        u.cancelled = True
        u.released_s = self.env.now

    def drain(self, replica: Any) -> None:
        """Stop routing to ``replica``; release it once its outstanding requests have ended."""
        u = self.by_replica[replica.index]
        u.drain_s = self.env.now
        self.cluster.set_routable([r for r in self.cluster.routable if r is not replica])
        self.draining[replica.index] = u
        self.release_if_empty(replica)

    def release_if_empty(self, replica: Any) -> None:
        """Release a draining replica whose last request has ended."""
        if replica.index in self.draining and not self.busy(replica):
            self.draining.pop(replica.index).released_s = self.env.now

    def records(self) -> list[dict[str, Any]]:
        """One row per unit (:data:`UNIT_COLUMNS`)."""
        return [{k: asdict(u)[k] for k in UNIT_COLUMNS} for u in self.units]


class Autoscaler:
    """The controller process of one pool (module docstring)."""

    def __init__(self, cluster: Any, spec: AutoscalerSpec, rng: np.random.Generator,
                 initial: list[Any] | None = None, busy: Callable[[Any], bool] | None = None) -> None:
        """``cluster``: what the controller drives (``env``, ``replicas`` by index, ``requests``,
        ``routable``, ``set_routable``, ``start_replica``; a DP pool, :class:`sim.engine.dp_pool.DPPoolView`,
        also ``busy`` and replicas with ``gauges()``); ``initial``: the pool's replicas at t = 0
        (default: all of ``cluster.replicas``); ``busy(replica)``: whether a draining replica still has
        work (default: the cluster's ``busy``, else outstanding requests)."""
        self.cluster = cluster
        self.env: simpy.Environment = cluster.env
        self.cfg = spec.config
        self.cold_start_s = spec.cold_start_s
        self.rng = rng
        self.policy = get_autoscaling_policy(self.cfg.policy, self.cfg.policy_options)
        self.policy.check_runnable()
        self.pool = ReplicaPool(cluster, self.env, initial, busy or getattr(cluster, "busy", None))
        for _ in range(self.cfg.provisioning.warm_pool):
            self.pool.add_sleeping(0.0)  # the pool is warm when the run starts
        self.lag = math.ceil(self.cfg.metrics_delay_s / self.cfg.interval_s - 1e-9)
        self.pending: deque[FleetSignals] = deque()
        self.recommendations: deque[tuple[float, int]] = deque()
        self.last_up_s = -math.inf
        self.last_down_s = -math.inf
        self.finished: deque[tuple[float, float, float, float]] = deque()  # (finish_s, ttft, tpot, e2el)
        self.ticks: list[dict[str, Any]] = []

    # ---- hooks from the cluster -------------------------------------------------------------------
    def on_end(self, req: Any) -> None:
        """A request ended (completed or rejected): note its latency; maybe release its replica."""
        if req.finish_s >= 0:
            tpot = ((req.last_token_s - req.first_token_s) / (req.num_output_tokens - 1)
                    if req.num_output_tokens > 1 else NAN)
            self.finished.append((req.finish_s, req.first_token_s - req.arrival_s, tpot, req.finish_s - req.arrival_s))
        if self.pool.draining:
            self.pool.release_if_empty(self.cluster.replicas[req.replica])

    # ---- the process --------------------------------------------------------------------------------
    def run(self):
        """Sample, decide and act every ``interval_s``, forever (the run's stop event ends it)."""
        interval = self.cfg.interval_s
        while True:
            yield self.env.timeout(interval)
            sig = self.sample()
            self.pending.append(sig)
            use = self.pending.popleft() if len(self.pending) > self.lag else None
            rec = desired = None
            if use is not None:
                rec, desired = self.decide(use)
            self._log(sig, rec, desired)

    def sample(self) -> FleetSignals:
        """What the autoscaler sees now (Prometheus gauges of ready engines + window signals)."""
        now = self.env.now
        window = self.cfg.window_s
        ready = self.cluster.routable
        if ready and hasattr(ready[0], "gauges"):  # DP instances (sim.engine.dp_pool): per instance
            waiting, running, usage, outstanding = (tuple(col) for col in zip(*(r.gauges() for r in ready)))
        else:
            waiting = tuple(r.scheduler.num_waiting + len(r.inbox) for r in ready)
            running = tuple(len(r.scheduler.running) for r in ready)
            usage = tuple(float(r.kv.usage) for r in ready)
            outstanding = tuple(int(r.outstanding) for r in ready)
        span = min(window, now) or window
        reqs = self.cluster.requests
        first = bisect.bisect_left(reqs, now - span, key=lambda q: q.arrival_s)
        rate = (len(reqs) - first) / span
        fin = self.finished
        while fin and fin[0][0] < now - window:
            fin.popleft()
        latency: dict[str, float] = {}
        if fin:
            arr = np.array(fin, dtype=np.float64)
            ttft, tpot, e2el = arr[:, 1], arr[:, 2], arr[:, 3]
            tpot = tpot[np.isfinite(tpot)]
            latency = {"p90_ttft_s": float(np.percentile(ttft, 90)), "p99_ttft_s": float(np.percentile(ttft, 99)),
                       "mean_ttft_s": float(ttft.mean()), "p99_e2el_s": float(np.percentile(e2el, 99))}
            if tpot.size:
                latency.update(mean_tpot_s=float(tpot.mean()), p99_tpot_s=float(np.percentile(tpot, 99)))
        assert set(latency) <= set(LATENCY_METRICS)
        return FleetSignals(now, len(ready), len(self.pool.starting), len(self.pool.draining), waiting, running,
                            usage, outstanding, window, rate, latency)

    def decide(self, sig: FleetSignals) -> tuple[int, int]:
        """Recommendation → behaviour rules → action; returns (recommended, desired)."""
        cfg, now = self.cfg, self.env.now
        current = self.pool.num_ready + len(self.pool.starting)
        rec = min(max(self.policy.recommend(sig, current), cfg.min_replicas), cfg.max_replicas)
        self.recommendations.append((now, rec))
        horizon = max(cfg.scale_up.stabilization_s, cfg.scale_down.stabilization_s)
        while self.recommendations and self.recommendations[0][0] < now - horizon:
            self.recommendations.popleft()
        desired = current
        if rec > current:
            up = cfg.scale_up
            desired = max(current, min(r for t, r in self.recommendations if t >= now - up.stabilization_s))
            desired = min(desired, current + self._step_limit(up, current))
            if now - self.last_up_s < up.cooldown_s:
                desired = current
        elif rec < current:
            down = cfg.scale_down
            desired = min(current, max(r for t, r in self.recommendations if t >= now - down.stabilization_s))
            desired = max(desired, current - self._step_limit(down, current))
            if now - self.last_down_s < down.cooldown_s:
                desired = current
        if desired > current:
            self.scale_up(desired - current)
            self.last_up_s = now
        elif desired < current:
            self.scale_down(current - desired)
            self.last_down_s = now
        return rec, desired

    @staticmethod
    def _step_limit(rules: Any, current: int) -> int:
        """Most replicas one decision may add or remove (HPA policies: ``select_policy`` max or min)."""
        limits = []
        if rules.max_step is not None:
            limits.append(rules.max_step)
        if rules.max_percent is not None:
            limits.append(max(1, math.ceil(current * rules.max_percent / 100.0 - 1e-9)))
        if not limits:
            return 1 << 30
        return int(max(limits) if rules.select_policy == "max" else min(limits))

    def scale_up(self, n: int) -> None:
        """Ask for ``n`` more replicas: wake sleepers first, cold-start the rest; refill the warm pool."""
        prov = self.cfg.provisioning
        for _ in range(n):
            if self.pool.sleeping:
                self.pool.start("warm", prov.wake_s)
                self.pool.add_sleeping(self._draw_cold_start())
            else:
                self.pool.start("cold", self._draw_cold_start())

    def scale_down(self, n: int) -> None:
        """Remove ``n`` replicas: cancel starting ones (newest first), then drain the ready replicas with
        the fewest outstanding requests (the newest on ties)."""
        starting = sorted(self.pool.starting, key=lambda u: -u.requested_s)
        for u in starting[:n]:
            self.pool.cancel(u)
        n -= min(n, len(starting))
        if n <= 0:
            return
        ready = sorted(self.cluster.routable, key=lambda r: (r.outstanding, -r.index))
        for rep in ready[:n]:
            self.pool.drain(rep)

    def _draw_cold_start(self) -> float:
        return max(0.0, float(self.cold_start_s(self.rng)))

    def _log(self, sig: FleetSignals, rec: int | None, desired: int | None) -> None:
        self.ticks.append({
            "time_s": sig.time_s, "recommended": -1 if rec is None else rec,
            "desired": -1 if desired is None else desired,
            "ready": self.pool.num_ready, "starting": len(self.pool.starting),
            "draining": len(self.pool.draining), "sleeping": len(self.pool.sleeping),
            "arrival_rate": sig.arrival_rate, "num_requests_waiting": sig.total("num_requests_waiting"),
            "num_requests_running": sig.total("num_requests_running"),
            "mean_kv_cache_usage": sig.total("kv_cache_usage") / sig.num_ready if sig.num_ready else NAN,
            "outstanding": sig.total("outstanding"), "p99_ttft_s": sig.latency.get("p99_ttft_s", NAN),
            "mean_tpot_s": sig.latency.get("mean_tpot_s", NAN),
        })

    # ---- end of run ---------------------------------------------------------------------------------
    def check_invariants(self, end_s: float) -> None:
        """Replica lives are ordered and every released replica had no request left (AssertionError)."""
        for u in self.pool.units:
            times = [t for t in (u.requested_s, u.ready_s, u.drain_s, u.released_s) if not math.isnan(t)]
            if times != sorted(times) or (times and times[-1] > end_s + 1e-9):
                raise AssertionError(f"replica unit {u.unit}: life out of order {times}")
            if u.replica >= 0 and not math.isnan(u.released_s) and self.pool.busy(self.cluster.replicas[u.replica]):
                raise AssertionError(f"replica {u.replica} was released with requests outstanding")
        if self.pool.num_ready < 1 and not self.pool.starting:
            raise AssertionError("the pool ended with no replica taking traffic")

    def output(self) -> dict[str, Any]:
        """The fleet log: replica lives, controller ticks, and the settings that produced them."""
        return {"units": self.pool.records(), "ticks": self.ticks, "policy": self.policy.describe(),
                "interval_s": self.cfg.interval_s}
