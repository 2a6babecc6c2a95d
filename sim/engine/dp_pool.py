"""Autoscaling replicas with data-parallel attention (``parallel.dp > 1``): the scale unit is one
*instance* — ``dp`` engine cores (ranks) stepping in lockstep through one :class:`~sim.engine.dp_group.DPGroup`
— started, drained and released together, and billed for its ``tp × pp × dp`` GPUs.

:class:`DPPoolView` puts a pool of ranks in front of the controller (:class:`~sim.engine.autoscaler.Autoscaler`)
as a pool of instances, so the controller, its policies, behaviour rules, cold starts and drains are the
same code as for ``dp = 1``:

- ``routable`` is the list of instances taking work; the router underneath still picks a *rank*
  (every rank of a routable instance is routable), as in the fixed-size DP path;
- a new instance (``start_replica``) is ``dp`` new ranks joined by a new lockstep group, all taking work
  at the same instant after the instance's cold start (one weight load for the instance);
- a drained instance takes no new request on any rank and is released when none of its ranks has
  work left (``busy`` of every rank false);
- the gauges the controller samples are per instance, as an HPA per-pod metric over the pod's engines:
  Σ over its ranks of waiting, running and outstanding requests, and the mean KV-cache usage of its
  ranks. A policy target (e.g. ``num_requests_running: 32``) is therefore per instance.

The same view serves the aggregated pool (``autoscaling:``) and each pool of a disaggregated deployment
(:mod:`sim.engine.pd_autoscaler`): the base it wraps only needs ``env``, ``requests``, ``replicas`` (ranks
by engine index), ``routable``/``set_routable`` over ranks, and a way to start one rank of a group.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sim.engine.dp_group import DPGroup

__all__ = ["DPInstance", "DPPoolView"]


class DPInstance:
    """``dp`` lockstep ranks that scale as one; ``index`` is its first rank's engine index."""

    __slots__ = ("index", "ranks")

    def __init__(self, ranks: list[Any]) -> None:
        self.ranks = ranks
        self.index = ranks[0].index

    @property
    def outstanding(self) -> int:
        """Requests routed to any of its ranks and not ended (what the load balancer sees)."""
        return sum(r.outstanding for r in self.ranks)

    def gauges(self) -> tuple[int, int, float, int]:
        """(waiting, running, KV-cache usage, outstanding) of the instance: sums over its ranks, the
        usage their mean."""
        ranks = self.ranks
        waiting = sum(r.scheduler.num_waiting + len(r.inbox) for r in ranks)
        running = sum(len(r.scheduler.running) for r in ranks)
        usage = sum(float(r.kv.usage) for r in ranks) / len(ranks)
        return waiting, running, usage, self.outstanding


class _InstanceOfRank:
    """``view.replicas[rank_index]`` → the instance holding that rank (what the controller looks up
    from a request's engine index)."""

    def __init__(self, base_replicas: list[Any]) -> None:
        self.by_rank: dict[int, DPInstance] = {}
        self.base_replicas = base_replicas

    def __getitem__(self, rank_index: int) -> Any:
        # a rank of another pool (a PD controller sees every request end) stands for itself: it is in
        # no drain of this pool, so looking it up is a no-op for the controller
        inst = self.by_rank.get(rank_index)
        return inst if inst is not None else self.base_replicas[rank_index]


class DPPoolView:
    """A pool of DP ranks seen as a pool of instances by the controller (module docstring)."""

    def __init__(self, base: Any, dp: int, initial_ranks: list[Any], make_rank: Callable[[DPGroup], Any],
                 cost_model: Any, rank_busy: Callable[[Any], bool] | None = None) -> None:
        """``base``: the pool of ranks (a ``_Cluster`` or a PD :class:`~sim.engine.pd_autoscaler.PoolView`);
        ``initial_ranks``: its ranks at t = 0, ``dp`` consecutive ranks per instance; ``make_rank(group)``:
        a new rank of ``group`` (the next engine index), appended to ``base.replicas``, wired and started; ``rank_busy(rank)``: whether a rank still has work (default: outstanding requests)."""
        if dp < 2 or len(initial_ranks) % dp:
            raise ValueError(f"a DP pool needs dp ≥ 2 and whole instances, got dp = {dp}, {len(initial_ranks)} ranks")
        self.base = base
        self.env = base.env
        self.requests = base.requests
        self.dp = dp
        self.cost_model = cost_model
        self._make_rank = make_rank
        self.replicas = _InstanceOfRank(base.replicas)
        self.instances: list[DPInstance] = []
        for k in range(0, len(initial_ranks), dp):
            self._add(DPInstance(list(initial_ranks[k:k + dp])))
        self._routable: list[DPInstance] = list(self.instances)
        self._rank_busy = rank_busy or (lambda rank: rank.outstanding > 0)

    def _add(self, inst: DPInstance) -> None:
        self.instances.append(inst)
        for r in inst.ranks:
            self.replicas.by_rank[r.index] = inst

    @property
    def routable(self) -> list[DPInstance]:
        """The instances taking new work."""
        return self._routable

    def set_routable(self, instances: list[DPInstance]) -> None:
        """Send new work to every rank of ``instances`` only."""
        self._routable = list(instances)
        self.base.set_routable([r for inst in instances for r in inst.ranks])

    def start_replica(self) -> DPInstance:
        """A new instance: ``dp`` ranks of a new lockstep group, their processes started now."""
        group = DPGroup(self.env, self.dp, self.cost_model)
        ranks = [self._make_rank(group) for _ in range(self.dp)]
        inst = DPInstance(ranks)
        self._add(inst)
        return inst

    def busy(self, inst: DPInstance) -> bool:
        """Whether any rank of ``inst`` still has work (a drained instance is released when none has)."""
        return any(self._rank_busy(r) for r in inst.ranks)


def dp_pool_view(cluster: Any, setup: Any, make_rank: Callable[[int, DPGroup], Any]) -> DPPoolView:
    """The aggregated pool of a ``_Cluster`` with DP replicas as instances: a new rank is
    ``make_rank(index, group)``, appended to the cluster's replicas and started."""
    def start(group: DPGroup) -> Any:
        rank = make_rank(len(cluster.replicas), group)
        cluster.replicas.append(rank)
        cluster.env.process(rank.run(cluster.env))
        return rank

    return DPPoolView(cluster, setup.dp, list(cluster.replicas), start, setup.cost_model)
