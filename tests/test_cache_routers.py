"""Cache-aware routers (policies/cache_routers.py): scoring, load bounds, session stickiness, pool
resizing by stable replica ids, option validation, and an end-to-end multi-turn comparison."""
from __future__ import annotations

import math

import numpy as np
import pytest

from policies.registry import build_router
from sim.config import parse_experiment
from sim.engine.request import RequestSpec
from sim.errors import ConfigError
from sim.runs.runner import run


class FakeView:
    """A RoutingView stand-in: replica ids and per-replica sets of held hashes."""

    def __init__(self, ids, held=None, now=0.0):
        self.ids = list(ids)
        self.held = held or {}
        self.now_s = now

    def replica_ids(self):
        return list(self.ids)

    def block_hashes(self, spec):
        return [hash((spec.prompt_segments[0][0], i)) for i in range(4)] if spec.prompt_segments else []

    def _set(self, pos):
        return self.held.get(self.ids[pos], set())

    def holds(self, pos, h, include_cpu_tier=True):
        return h in self._set(pos)

    def cached_hashes(self, pos, include_cpu_tier=True):
        return set(self._set(pos))


def router(name, view, n=None, **opts):
    r = build_router(name, n or len(view.ids), np.random.default_rng(0), opts)
    r.bind(view)
    return r


def doc_spec(doc, session=-1):
    return RequestSpec(0.0, 100, 1, prompt_segments=((("doc", doc), 90), (("u", 0), 10)), session_id=session)


def test_precise_prefix_prefers_the_holder_when_loads_are_equal_and_balances_otherwise():
    v = FakeView([0, 1, 2])
    hs = v.block_hashes(doc_spec(5))
    v.held = {1: set(hs)}
    r = router("precise-prefix", v)
    assert r.route(doc_spec(5), [2, 2, 2], [0.1, 0.1, 0.1]) == 1
    # the holder: 3 × 1 (full prefix) + 2 × 0 (longest queue) + 2 × 0.9 = 4.8 > 0 + 2 × 1 + 2 × 0.9 = 3.8
    assert r.route(doc_spec(5), [2, 8, 2], [0.1, 0.1, 0.1]) == 1
    # with the holder's KV full, the free-KV score flips it: 3 + 0 + 0 = 3 < 0 + 2 + 2 × 0.9 = 3.8
    assert r.route(doc_spec(5), [2, 8, 2], [0.1, 1.0, 0.1]) == 0


def test_precise_prefix_staleness_uses_a_snapshot():
    v = FakeView([0, 1])
    hs = v.block_hashes(doc_spec(5))
    r = router("precise-prefix", v, staleness_s=10.0)
    assert r.route(doc_spec(5), [0, 0], [0, 0]) == 0  # nobody holds it
    v.held = {1: set(hs)}
    v.now_s = 5.0  # index 5 s old < 10 s: still the old snapshot
    assert r.route(doc_spec(5), [0, 0], [0, 0]) == 0
    v.now_s = 10.0  # refreshed
    assert r.route(doc_spec(5), [0, 0], [0, 0]) == 1


def test_consistent_hash_bounded_respects_the_bound_and_is_sticky():
    v = FakeView(list(range(4)))
    r = router("consistent-hash-bounded", v, load_factor=1.25)
    home = r.route(doc_spec(1, session=3), [0] * 4, [0] * 4)
    assert all(r.route(doc_spec(1, session=3), [0] * 4, [0] * 4) == home for _ in range(5))
    load = [0] * 4
    load[home] = 10  # cap = ceil(1.25 × 11 / 4) = 4 < 10: must move on
    other = r.route(doc_spec(1, session=3), load, [0] * 4)
    assert other != home and load[other] < math.ceil(1.25 * (sum(load) + 1) / 4)


def test_consistent_hash_resize_moves_only_keys_of_removed_replicas():
    v = FakeView([0, 1, 2, 3])
    r = router("consistent-hash-bounded", v, load_factor=100.0)
    before = {s: v.ids[r.route(doc_spec(0, session=s), [0] * 4, [0] * 4)] for s in range(200)}
    v.ids = [0, 1, 3]  # replica 2 drained by the autoscaler
    r.resize(3)
    after = {s: v.ids[r.route(doc_spec(0, session=s), [0] * 3, [0] * 3)] for s in range(200)}
    moved = [s for s in before if before[s] != after[s]]
    assert moved and all(before[s] == 2 for s in moved)


def test_session_affinity_sticks_and_survives_resize():
    v = FakeView([0, 1, 2])
    r = router("session-affinity", v)
    first = r.route(doc_spec(0, session=9), [1, 0, 1], [0] * 3)
    assert first == 1
    assert r.route(doc_spec(0, session=9), [0, 5, 0], [0] * 3) == 1
    v.ids = [0, 2]  # its replica left: re-homed least-outstanding
    r.resize(2)
    assert r.route(doc_spec(0, session=9), [3, 1], [0] * 2) == 1
    assert r.route(doc_spec(0, session=9), [0, 1], [0] * 2) == 1  # and sticks there


def test_session_affinity_load_factor_breaks_affinity():
    v = FakeView([0, 1])
    r = router("session-affinity", v, load_factor=1.5)
    assert r.route(doc_spec(0, session=1), [0, 0], [0, 0]) == 0
    assert r.route(doc_spec(0, session=1), [10, 0], [0, 0]) == 1  # 10 > 1.5 × (5 + 1)
    assert r.num_reassigned == 1


def test_router_options_validated():
    with pytest.raises(ConfigError, match=r"router_options.load_factr: unknown option \(router consistent-hash-bounded\)"):
        build_router("consistent-hash-bounded", 2, np.random.default_rng(0), {"load_factr": 2})
    with pytest.raises(ConfigError, match="router_options.load_factor"):
        build_router("consistent-hash-bounded", 2, np.random.default_rng(0), {"load_factor": 0.5})
    with pytest.raises(ConfigError, match="takes no options"):
        build_router("round-robin", 2, np.random.default_rng(0), {"x": 1})


MULTI_TURN = {
    "name": "mt", "model": "llama-3.1-8b", "hardware": "h100-sxm", "replicas": 3,
    "engine": {"policy": "vllm", "num_kv_blocks": 4000, "max_model_len": 32768},
    "workload": {"num_requests": 240, "arrival": {"process": "poisson", "rate": 3.0},
                 "input_tokens": {"dist": "uniform", "low": 200, "high": 600},
                 "output_tokens": {"dist": "uniform", "low": 40, "high": 120},
                 "conversation": {"turns": 6, "think_time_s": 3.0}},
}


@pytest.mark.parametrize("name", ["precise-prefix", "consistent-hash-bounded", "session-affinity"])
def test_cache_aware_routers_beat_round_robin_on_multi_turn(name):
    rr = run(parse_experiment({**MULTI_TURN, "router": "round-robin"}, "<t>")).summary
    ca = run(parse_experiment({**MULTI_TURN, "router": name}, "<t>")).summary
    assert ca["prefix_cache_hit_rate"] > rr["prefix_cache_hit_rate"] + 0.1
    assert ca["mean_ttft_ms"] < rr["mean_ttft_ms"]


def test_cache_aware_router_under_autoscaling_resizes_cleanly():
    data = {**MULTI_TURN, "replicas": 1, "router": "precise-prefix", "router_options": {"staleness_s": 0.5},
            "autoscaling": {"min_replicas": 1, "max_replicas": 3, "policy": "hpa", "interval_s": 5,
                            "policy_options": {"metrics": {"outstanding": 2}},
                            "provisioning": {"cold_start_s": 5},
                            "scale_down": {"stabilization_s": 10}}}
    res = run(parse_experiment(data, "<t>"))
    assert res.summary["completed"] == len(res.requests)
    assert res.summary["autoscaling"]["peak_replicas_billed"] > 1
