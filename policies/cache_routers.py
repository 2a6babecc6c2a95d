"""Cache-aware routers with bounded load (docs/kv-tiers.md, "Routing").

- ``precise-prefix``: llm-d's precise-prefix-cache-aware profile. Each replica gets
  ``prefix_weight × (blocks of the prompt it holds / blocks of the prompt)``
  ``+ queue_weight × queue score + kv_weight × (1 − KV usage)``, the highest total wins. The queue
  score is llm-d's queue-scorer min-max normalisation ``(max q − q) / (max q − min q)`` (1 when all
  are equal). Default weights 3 / 2 / 2 are llm-d's precise profile (``precise-prefix-cache-scorer``
  3, ``queue-scorer`` 2, ``kv-cache-utilization-scorer`` 2; llm-d guide "precise prefix cache aware
  routing", ``gaie-kv-events`` values). The router's view of the caches is a snapshot refreshed every
  ``staleness_s`` (0 = always current), standing for the KV-event delay.
- ``consistent-hash-bounded``: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
  SODA 2018): a key (the session, else the prefix group, else the first prompt segment) hashes onto a
  ring of ``virtual_nodes`` points per replica; the request goes to the first replica clockwise whose
  outstanding requests are below ``ceil(load_factor × (total + 1) / n)``.
- ``session-affinity``: every turn of a session goes to the replica its first turn went to (chosen
  least-outstanding), unless that replica is over ``load_factor × (mean load + 1)`` (when set).

All key per-replica state by the replicas' stable ids (:meth:`RoutingView.replica_ids`), so an
autoscaler growing or shrinking the pool moves only the keys of the replicas that came or went.
Options come from the experiment's ``router_options`` and are validated here.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from policies.registry import register_router
from policies.routers import Router, _argmin, stable_hash
from sim.config_base import Frozen
from sim.engine.request import RequestSpec
from sim.errors import ConfigError

__all__ = ["PrecisePrefixRouter", "ConsistentHashBoundedRouter", "SessionAffinityRouter"]


def _options(model: type[Frozen], router: str, options: dict[str, Any]) -> Any:
    """Validate ``router_options`` for ``router`` with ``model``; one ConfigError line per problem."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            what = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"router_options.{where}: {what} (router {router})")
        raise ConfigError("\n".join(lines)) from None


def _affinity_key(spec: RequestSpec) -> Hashable | None:
    """What keeps related requests together: the session, else the prefix group, else the first
    prompt segment's content key; None for a request with nothing shared."""
    if spec.session_id >= 0:
        return ("session", spec.session_id)
    if spec.prefix_group >= 0:
        return ("group", spec.prefix_group)
    if spec.prompt_segments:
        return ("segment", spec.prompt_segments[0][0])
    return None


class _CacheAwareRouter(Router):
    """Base of the routers here: validated options and a :class:`RoutingView` bound by the cluster."""

    Options: type[Frozen] = Frozen

    def __init__(self, num_replicas: int, rng: np.random.Generator, **options: Any) -> None:
        super().__init__(num_replicas, rng)
        self.options = _options(self.Options, self.router_name, options)
        self.view: Any = None

    def bind(self, view: Any) -> None:
        """Called once by the cluster with its :class:`~sim.engine.routing_view.RoutingView`."""
        self.view = view


class PrecisePrefixOptions(Frozen):
    """``router_options`` of ``precise-prefix``."""

    prefix_weight: float = Field(3.0, ge=0.0, description="weight of the prefix-match score (llm-d precise profile: 3)")
    queue_weight: float = Field(2.0, ge=0.0, description="weight of the queue score (llm-d: 2)")
    kv_weight: float = Field(2.0, ge=0.0, description="weight of the free-KV score 1 − usage (llm-d: 2)")
    staleness_s: float = Field(0.0, ge=0.0, description="age of the router's cache index: snapshots refreshed this often (0 = live)")
    include_cpu_tier: bool = Field(True, description="count blocks in the replica's CPU tier as held (vLLM publishes CPU-tier KV events)")


@register_router("precise-prefix")
class PrecisePrefixRouter(_CacheAwareRouter):
    """llm-d precise-prefix-cache scorer + queue + KV-utilisation scorers (see the module docstring)."""

    Options = PrecisePrefixOptions

    def __init__(self, num_replicas: int, rng: np.random.Generator, **options: Any) -> None:
        super().__init__(num_replicas, rng, **options)
        self._snapshots: dict[int, set[int]] = {}  # replica id -> hashes as of _snapshot_s
        self._snapshot_s = -math.inf

    def _held(self, pos: int, rid: int, hashes: list[int]) -> int:
        """Leading blocks of ``hashes`` replica ``pos`` (id ``rid``) holds, as the router sees it."""
        o = self.options
        if o.staleness_s <= 0.0:
            n = 0
            for h in hashes:
                if not self.view.holds(pos, h, o.include_cpu_tier):
                    break
                n += 1
            return n
        snap = self._snapshots.get(rid)
        if snap is None:  # a replica added since the last refresh: its cache as of now
            snap = self._snapshots[rid] = self.view.cached_hashes(pos, o.include_cpu_tier)
        n = 0
        for h in hashes:
            if h not in snap:
                break
            n += 1
        return n

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """Highest weighted score; ties to the lowest position."""
        o, view = self.options, self.view
        n = len(outstanding)
        ids = view.replica_ids()
        if o.staleness_s > 0.0 and view.now_s - self._snapshot_s >= o.staleness_s:
            self._snapshots = {rid: view.cached_hashes(p, o.include_cpu_tier) for p, rid in enumerate(ids)}
            self._snapshot_s = view.now_s
        hashes = view.block_hashes(spec) if o.prefix_weight > 0 else []
        q_max, q_min = max(outstanding), min(outstanding)
        best, best_score = 0, -math.inf
        for p in range(n):
            prefix = self._held(p, ids[p], hashes) / len(hashes) if hashes else 0.0
            queue = 1.0 if q_max == q_min else (q_max - outstanding[p]) / (q_max - q_min)
            score = o.prefix_weight * prefix + o.queue_weight * queue + o.kv_weight * (1.0 - kv_usage[p])
            if score > best_score:
                best, best_score = p, score
        return best

    def resize(self, num_replicas: int) -> None:
        """Drop snapshots of replicas that left (ids stay valid for the others)."""
        super().resize(num_replicas)
        if self.view is not None:
            keep = set(self.view.replica_ids())
            self._snapshots = {rid: s for rid, s in self._snapshots.items() if rid in keep}


class ConsistentHashOptions(Frozen):
    """``router_options`` of ``consistent-hash-bounded``."""

    load_factor: float = Field(1.25, ge=1.0, description="c: no replica takes more than ceil(c × (total + 1) / n) "
                               "outstanding requests (Mirrokni et al. 2018; 1.25 is the paper's example)")
    virtual_nodes: int = Field(100, ge=1, le=10_000, description="ring points per replica")


@register_router("consistent-hash-bounded")
class ConsistentHashBoundedRouter(_CacheAwareRouter):
    """Consistent hashing with bounded loads (see the module docstring)."""

    Options = ConsistentHashOptions

    def __init__(self, num_replicas: int, rng: np.random.Generator, **options: Any) -> None:
        super().__init__(num_replicas, rng, **options)
        self._ring_ids: tuple[int, ...] = ()
        self._points: list[int] = []
        self._owners: list[int] = []  # replica id at each ring point

    def _ring(self, ids: list[int]) -> None:
        if tuple(ids) == self._ring_ids:
            return
        pts = sorted((stable_hash(("replica", rid, v)), rid) for rid in ids for v in range(self.options.virtual_nodes))
        self._points = [p for p, _ in pts]
        self._owners = [rid for _, rid in pts]
        self._ring_ids = tuple(ids)

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """First replica clockwise from the key's point that is under the load bound."""
        key = _affinity_key(spec)
        if key is None:
            return _argmin(outstanding)
        ids = self.view.replica_ids() if self.view is not None else list(range(len(outstanding)))
        self._ring(ids)
        pos_of = {rid: p for p, rid in enumerate(ids)}
        n = len(outstanding)
        cap = math.ceil(self.options.load_factor * (sum(outstanding) + 1) / n)
        start = bisect.bisect_left(self._points, stable_hash(key)) % len(self._points)
        m = len(self._points)
        for k in range(m):
            p = pos_of[self._owners[(start + k) % m]]
            if outstanding[p] < cap:
                return p
        return _argmin(outstanding)  # unreachable: cap ≥ mean + 1 leaves someone below it


class SessionAffinityOptions(Frozen):
    """``router_options`` of ``session-affinity``."""

    load_factor: float | None = Field(None, ge=1.0, description="break affinity when the replica has more than "
                                      "load_factor × (mean outstanding + 1) requests; None = never")


@register_router("session-affinity")
class SessionAffinityRouter(_CacheAwareRouter):
    """Sticky sessions (see the module docstring); requests without a session go least-outstanding."""

    Options = SessionAffinityOptions

    def __init__(self, num_replicas: int, rng: np.random.Generator, **options: Any) -> None:
        super().__init__(num_replicas, rng, **options)
        self._home: dict[int, int] = {}  # session id -> replica id
        self.num_reassigned = 0

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """The session's replica, or least-outstanding for a new session (or an overloaded home)."""
        ids = self.view.replica_ids() if self.view is not None else list(range(len(outstanding)))
        if spec.session_id < 0:
            return _argmin(outstanding)
        home = self._home.get(spec.session_id)
        if home is not None and home in ids:
            p = ids.index(home)
            lf = self.options.load_factor
            if lf is None or outstanding[p] <= lf * (sum(outstanding) / len(outstanding) + 1):
                return p
            self.num_reassigned += 1
        p = _argmin(outstanding)
        self._home[spec.session_id] = ids[p]
        return p
