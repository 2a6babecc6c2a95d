"""Routers: which replica a new request goes to.

A router sees only what a load balancer in front of real engines sees: the request itself, how many
requests each replica has outstanding (sent and not answered), and each replica's reported KV-cache
usage. It never reads scheduler queues. Every router is deterministic given its RNG stream.

Interface: ``Router(num_replicas, rng)`` then ``route(spec, outstanding, kv_usage) -> replica index``.
Ties always go to the lowest replica index.
"""
from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import numpy as np

from policies.registry import register_router
from sim.engine.request import RequestSpec


class Router:
    """Base router: subclasses implement :meth:`route`."""

    router_name = "base"

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        self.num_replicas = num_replicas
        self.rng = rng

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """Return the replica index for ``spec``."""
        raise NotImplementedError

    def resize(self, num_replicas: int) -> None:
        """The pool now has ``num_replicas`` replicas taking traffic (an autoscaler changed it)."""
        self.num_replicas = num_replicas


def _argmin(values: Sequence[float]) -> int:
    """Index of the smallest value, lowest index on ties."""
    best, best_v = 0, values[0]
    for i in range(1, len(values)):
        if values[i] < best_v:
            best, best_v = i, values[i]
    return best


def stable_hash(key: Hashable) -> int:
    """A hash of ``key`` that is the same in every process (Python's ``hash`` of str is salted)."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")


@register_router("round-robin")
class RoundRobinRouter(Router):
    """Replica 0, 1, …, n−1, 0, … in submission order."""

    def __init__(self, num_replicas: int, rng: np.random.Generator) -> None:
        super().__init__(num_replicas, rng)
        self._next = 0

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """Next replica in turn."""
        i = self._next
        self._next = (i + 1) % self.num_replicas
        return i

    def resize(self, num_replicas: int) -> None:
        """Keep the turn within the new pool."""
        super().resize(num_replicas)
        self._next %= num_replicas


@register_router("random")
class RandomRouter(Router):
    """Uniformly random replica, from the router's own RNG stream."""

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """A uniform draw."""
        return int(self.rng.integers(self.num_replicas))


@register_router("least-outstanding-requests")
class LeastOutstandingRouter(Router):
    """Replica with the fewest requests in flight (join-the-shortest-queue)."""

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """Fewest outstanding requests."""
        return _argmin(outstanding)


@register_router("least-kv-usage")
class LeastKVUsageRouter(Router):
    """Replica reporting the lowest KV-cache usage (ties: fewer outstanding, then lowest index)."""

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """Lowest reported KV usage."""
        return min(range(self.num_replicas), key=lambda i: (kv_usage[i], outstanding[i], i))


@register_router("prefix-affinity")
class PrefixAffinityRouter(Router):
    """Requests sharing a prefix go to the same replica, so its prefix cache can serve them.

    The key is the request's ``prefix_group`` if set, else the content key of its first prompt
    segment; ``stable_hash(key) mod n`` picks the replica. Requests with neither (one unique segment)
    go to the least-outstanding replica. No load bound: a hot prefix can overload its replica, as with
    plain consistent hashing.
    """

    def route(self, spec: RequestSpec, outstanding: Sequence[int], kv_usage: Sequence[float]) -> int:
        """Hash of the prefix key, or least-outstanding without one."""
        if spec.prefix_group >= 0:
            key: Hashable = ("group", spec.prefix_group)
        elif spec.prompt_segments:
            key = ("segment", spec.prompt_segments[0][0])
        else:
            return _argmin(outstanding)
        return stable_hash(key) % self.num_replicas
