"""What a cache-aware router may read of the cluster (``policies/cache_routers.py``).

A real cache-aware router (llm-d's precise-prefix-cache scorer, Dynamo's KV router, SGLang's router)
learns each engine's cached blocks from the KV events the engines publish (vLLM ``BlockStored`` /
``BlockRemoved``, including the CPU tier's), hashes an incoming prompt into the same block keys, and
reads queue lengths and KV usage from the engines' metrics. :class:`RoutingView` gives exactly that
and nothing else: the routable replicas' identities, their cached block hashes (GPU prefix cache and,
when present, the CPU tier), and the content hashes of a request's prompt blocks. Positions are the
router's indices ``0…n−1`` into the routable pool, which the autoscaler may change between calls; a
router that keeps per-replica state keys it by :meth:`replica_ids`, which are stable.
"""
from __future__ import annotations

from typing import Any

from sim.engine.request import Request, RequestSpec

__all__ = ["RoutingView"]


class RoutingView:
    """Read-only window on a cluster for routers (see the module docstring)."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster

    @property
    def now_s(self) -> float:
        """Simulated time now."""
        return float(self._cluster.env.now)

    def replica_ids(self) -> list[int]:
        """Stable ids of the routable replicas, in router position order."""
        return [r.index for r in self._cluster.routable]

    def block_size(self) -> int:
        """Tokens per KV block."""
        return self._cluster.replicas[0].kv.block_size

    def block_hashes(self, spec: RequestSpec) -> list[int]:
        """Content hashes of the full blocks of ``spec``'s prompt that a prefix hit could cover
        (the last prompt token is always computed, so at most ``(prompt − 1) // block_size``)."""
        kv = self._cluster.replicas[0].kv
        n = (spec.num_prompt_tokens - 1) // kv.block_size
        if n <= 0:
            return []
        # id −1 is never a real request: its unique segments hash to keys no real block carries
        return kv.content_hashes(Request(-1, spec, self.now_s), n)

    def cached_hashes(self, position: int, include_cpu_tier: bool = True) -> set[int]:
        """A snapshot of the block hashes replica ``position`` holds now: its GPU prefix cache and,
        with ``include_cpu_tier``, its CPU tier (ready or in flight, as KV events announce a store
        when it is issued)."""
        rep = self._cluster.routable[position]
        out = set(rep.kv.cached_hashes())
        if include_cpu_tier and rep.tiers is not None and rep.tiers.cpu is not None:
            out.update(rep.tiers.cpu.hashes())
        return out

    def holds(self, position: int, h: int, include_cpu_tier: bool = True) -> bool:
        """True if replica ``position`` holds block ``h`` now (live, no snapshot)."""
        rep = self._cluster.routable[position]
        if h in rep.kv.cached_hashes():
            return True
        return include_cpu_tier and rep.tiers is not None and rep.tiers.cpu is not None and h in rep.tiers.cpu
