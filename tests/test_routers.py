"""Routers: each sees only outstanding counts and reported KV usage; all are deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from policies.registry import get_router, router_names
from policies.routers import stable_hash
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import UnknownNameError
from workloads.base import OpenLoopWorkload


def make(name, n=3, seed=0):
    return get_router(name)(n, np.random.default_rng(seed))


def spec(**kw):
    return RequestSpec(0.0, 10, 1, **kw)


def test_all_documented_routers_are_registered():
    assert {"round-robin", "random", "least-outstanding-requests", "least-kv-usage",
            "prefix-affinity"} <= set(router_names())
    with pytest.raises(UnknownNameError, match="round-robin"):
        get_router("round-robin2")


def test_round_robin_cycles():
    r = make("round-robin")
    assert [r.route(spec(), [0, 0, 0], [0, 0, 0]) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_picks_min_with_lowest_index_on_ties():
    r = make("least-outstanding-requests")
    assert r.route(spec(), [3, 1, 1], [0, 0, 0]) == 1
    assert r.route(spec(), [2, 2, 0], [0, 0, 0]) == 2


def test_least_kv_usage_then_outstanding():
    r = make("least-kv-usage")
    assert r.route(spec(), [0, 5, 0], [0.5, 0.1, 0.2]) == 1
    assert r.route(spec(), [4, 2, 9], [0.1, 0.1, 0.1]) == 1


def test_random_is_reproducible_and_covers_replicas():
    a = [make("random", seed=5).route(spec(), [0] * 3, [0] * 3) for _ in range(1)]
    r1, r2 = make("random", seed=5), make("random", seed=5)
    seq1 = [r1.route(spec(), [0] * 3, [0] * 3) for _ in range(300)]
    seq2 = [r2.route(spec(), [0] * 3, [0] * 3) for _ in range(300)]
    assert seq1 == seq2 and set(seq1) == {0, 1, 2} and a[0] == seq1[0]


def test_prefix_affinity_keeps_a_prefix_on_one_replica_and_balances_the_rest():
    r = make("prefix-affinity", n=4)
    grp = {r.route(spec(prefix_group=7), [i, 0, 0, 0], [0] * 4) for i in range(5)}
    seg = {r.route(spec(prompt_segments=(("sys-a", 5), ("u", 5))), [0, i, 0, 0], [0] * 4) for i in range(5)}
    assert len(grp) == 1 and len(seg) == 1
    assert r.route(spec(), [2, 1, 0, 3], [0] * 4) == 2  # no prefix: least outstanding
    assert stable_hash(("group", 7)) == stable_hash(("group", 7))


def test_least_outstanding_balances_a_cluster_run():
    rng = np.random.default_rng(0)
    specs = [RequestSpec(float(t), 50, int(o)) for t, o in
             zip(np.cumsum(rng.exponential(1 / 60, 600)), rng.integers(1, 200, 600))]
    su = ReplicaSetup(EngineConfig(max_num_batched_tokens=2048), 2000, 4096, ConstantCostModel(0.02))
    out = simulate(OpenLoopWorkload(specs), su, num_replicas=3, router="least-outstanding-requests",
                   seed_seq=np.random.SeedSequence(0))
    counts = out.requests.replica.value_counts()
    assert counts.min() > 150
    assert (out.requests.status == "completed").all()
