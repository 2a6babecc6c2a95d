"""Autoscaling each pool of a disaggregated deployment: one :class:`~sim.engine.autoscaler.Autoscaler`
per pool (``disaggregation.prefill.autoscaling`` / ``disaggregation.decode.autoscaling``).

Each controller drives a :class:`PoolView` — the pool seen as the cluster the aggregated controller
expects — so the controller, its policies, behaviour rules, cold starts and warm pool are the same code:

- **prefill** pool: the replicas taking new requests are the cluster's routable list (the prefill
  router's); a new instance is a prefill instance (the prefill setup, hooked into the PD pipeline); its
  signals are the prefill engines' waiting/running/KV gauges and the TTFT window. A draining prefill
  instance takes no new request and is released when its prefills have finished *and* the KV it holds
  for transfers in flight has been sent (:attr:`PDCoordinator.num_holding` is 0);
- **decode** pool: the replicas taking transfers are :attr:`PDCoordinator.decode_routable` (the decode
  router's); its signals are the decode engines' KV usage, running requests and the TPOT window. A
  draining decode instance receives no transfer and is released when its last request (admitted,
  in transfer or decoding) has ended.

A pool with DP attention (its ``parallel.dp > 1``) is wrapped once more in a
:class:`~sim.engine.dp_pool.DPPoolView`: the controller then starts, drains and releases whole instances
of ``dp`` lockstep ranks (a prefill instance is released when none of its ranks has a prefill or held KV).

Every request still ends exactly once (nothing is moved or dropped by a drain), and the PD end-of-run
checks (no KV held on either pool, links idle) run on every instance ever started. The cold-start
draws of pool ``i`` (prefill 0, decode 1) use the engine stream ``(4, i)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sim.engine.autoscaler import Autoscaler, AutoscalerSpec
from sim.engine.dp_pool import DPPoolView

__all__ = ["POOL_STREAM", "PDAutoscalers", "PoolView"]

POOL_STREAM = 4  # engine stream key of the pools' cold-start draws: (4, 0) prefill, (4, 1) decode
ROLES = ("prefill", "decode")


class PoolView:
    """One PD pool as the controller's cluster: ``env``, ``replicas`` (all, by index), ``requests``,
    ``routable``, ``set_routable`` and ``start_replica``."""

    def __init__(self, cluster: Any, role: str, make_replica: Any) -> None:
        self.cluster = cluster
        self.role = role
        self.env = cluster.env
        self.replicas = cluster.replicas  # the same list: the controller looks replicas up by index
        self.requests = cluster.requests
        self._make = make_replica

    @property
    def routable(self) -> list[Any]:
        """The pool's replicas taking new work."""
        return self.cluster.routable if self.role == "prefill" else self.cluster.pd.decode_routable

    def set_routable(self, replicas: list[Any]) -> None:
        """Send new work of this pool to ``replicas`` only (its router sees them as 0…n−1)."""
        if self.role == "prefill":
            self.cluster.set_routable(replicas)
        else:
            self.cluster.pd.decode_routable = replicas
            self.cluster.pd.decode_router.resize(len(replicas))

    @property
    def setup(self) -> Any:
        """The ReplicaSetup of one instance (one DP rank when dp > 1) of this pool."""
        pd = self.cluster.pd
        return pd.spec.prefill if self.role == "prefill" else pd.spec.decode

    def start_replica(self, group: Any = None) -> Any:
        """A new instance of this pool (its process starts now, hooked into the PD pipeline); with
        ``group`` a new rank of that DP group."""
        pd = self.cluster.pd
        rep = self._make(len(self.cluster.replicas), self.setup, group)
        self.cluster.replicas.append(rep)
        (pd.wire_prefill if self.role == "prefill" else pd.wire_decode)(rep)
        self.env.process(rep.run(self.env))
        return rep


class PDAutoscalers:
    """The controllers of the autoscaled pools; the cluster calls :meth:`on_end` like one autoscaler."""

    def __init__(self, cluster: Any, specs: dict[str, AutoscalerSpec], make_replica: Any) -> None:
        unknown = set(specs) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown PD pool(s) {sorted(unknown)}")
        pd = cluster.pd
        self.controllers: dict[str, Autoscaler] = {}
        for i, role in enumerate(ROLES):
            if role not in specs:
                continue
            view: Any = PoolView(cluster, role, make_replica)
            initial = list(pd.prefill) if role == "prefill" else list(pd.decode)
            busy = ((lambda r: r.outstanding > 0 or pd.num_holding.get(r.index, 0) > 0) if role == "prefill"
                    else None)
            if view.setup.dp > 1:  # the scale unit is an instance of dp lockstep ranks
                view = DPPoolView(view, view.setup.dp, initial, view.start_replica, view.setup.cost_model, busy)
                initial, busy = view.instances, None
            self.controllers[role] = Autoscaler(view, specs[role], np.random.default_rng(cluster.stream(POOL_STREAM, i)),
                                                initial=initial, busy=busy)
        if "prefill" in self.controllers:
            ctl = self.controllers["prefill"]
            pool, lookup = ctl.pool, ctl.cluster.replicas  # a rank → its instance when dp > 1
            pd.on_prefill_released = lambda rep: pool.release_if_empty(lookup[rep.index]) if pool.draining else None

    def processes(self) -> list[Any]:
        """The controllers' generators (one SimPy process each)."""
        return [c.run() for c in self.controllers.values()]

    def on_end(self, req: Any) -> None:
        """A request ended: every controller notes its latency; its pool may release a drained replica."""
        for c in self.controllers.values():
            c.on_end(req)

    def check_invariants(self, end_s: float) -> None:
        """Each pool's replica lives (AssertionError naming the pool)."""
        for role, c in self.controllers.items():
            try:
                c.check_invariants(end_s)
            except AssertionError as exc:
                raise AssertionError(f"disaggregation.{role}.autoscaling: {exc}") from None

    def output(self) -> dict[str, Any]:
        """``{"pools": {role: Autoscaler.output()}}`` for the autoscaled pools."""
        return {"pools": {role: c.output() for role, c in self.controllers.items()}}
