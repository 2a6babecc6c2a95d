"""Shared prefixes and multi-turn conversations: prompt segments let a prefix cache find shared blocks."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from tests.test_workload_helpers import make, run

BASE = {"input_tokens": {"dist": "uniform", "low": 20, "high": 200}, "output_tokens": {"dist": "uniform", "low": 5, "high": 50}}


def test_prefix_segments_and_groups():
    w = make({**BASE, "num_requests": 3000, "arrival": {"process": "poisson", "rate": 10},
              "prefix": {"num_groups": 4, "prefix_tokens": {"dist": "uniform", "low": 100, "high": 900}}})
    lengths: dict[int, int] = {}
    for uid, s in enumerate(w.specs):
        (pkey, plen), (rkey, rlen) = s.prompt_segments
        assert pkey == ("prefix", s.prefix_group) and rkey == ("req", uid)
        assert s.num_prompt_tokens == plen + rlen and 20 <= rlen <= 200
        assert lengths.setdefault(s.prefix_group, plen) == plen  # one length per group
    counts = Counter(s.prefix_group for s in w.specs)
    assert set(counts) == {0, 1, 2, 3}
    for c in counts.values():  # uniform assignment
        assert abs(c - 750) < 6 * math.sqrt(3000 * 0.25 * 0.75)
    prefixes = w.describe()["prefix"]["workload"]
    assert prefixes["num_groups"] == 4 and "mean" in prefixes["prefix_tokens"]


def test_prefix_round_robin_zipf_and_fraction():
    rr = make({**BASE, "num_requests": 9, "arrival": {"process": "constant", "rate": 1},
               "prefix": {"num_groups": 3, "prefix_tokens": 64, "assignment": "round-robin"}})
    assert [s.prefix_group for s in rr.specs] == [0, 1, 2] * 3
    zipf = make({**BASE, "num_requests": 5000, "arrival": {"process": "poisson", "rate": 1},
                 "prefix": {"num_groups": 5, "prefix_tokens": 64, "assignment": "zipf", "zipf_s": 1.2}})
    c = Counter(s.prefix_group for s in zipf.specs)
    assert c[0] > c[1] > c[2] > c[4]
    w = 1 / np.arange(1, 6) ** 1.2
    assert abs(c[0] / 5000 - w[0] / w.sum()) < 0.03
    part = make({**BASE, "num_requests": 4000, "arrival": {"process": "poisson", "rate": 1},
                 "prefix": {"num_groups": 2, "prefix_tokens": 64, "fraction": 0.25}})
    plain = [s for s in part.specs if s.prefix_group == -1]
    assert abs(len(plain) / 4000 - 0.75) < 0.03 and all(s.prompt_segments == () for s in plain)


def test_class_own_prefix_groups_do_not_collide():
    w = make({"num_requests": 400, "arrival": {"process": "poisson", "rate": 5}, **BASE,
              "prefix": {"num_groups": 2, "prefix_tokens": 100},
              "classes": [{"name": "a"}, {"name": "b", "prefix": {"num_groups": 3, "prefix_tokens": 500}}]})
    groups = {s.class_name: set() for s in w.specs}
    for s in w.specs:
        groups[s.class_name].add(s.prefix_group)
    assert groups["a"] <= {0, 1} and groups["b"] <= {2, 3, 4}


def test_conversation_prompts_grow_by_previous_turn():
    w = make({**BASE, "num_requests": 200, "arrival": {"process": "poisson", "rate": 0.5},
              "conversation": {"turns": 4, "think_time_s": 3.0}, "prefix": {"num_groups": 1, "prefix_tokens": 256}})
    assert w.specs == () and w.closed_loop
    cluster = run(w, service=lambda s: 1.0)
    by_session: dict[int, list] = {}
    for t, s in cluster.sent:
        by_session.setdefault(s.session_id, []).append((t, s))
    assert len(cluster.sent) == 200
    for sid, turns in by_session.items():
        first = turns[0][1]
        assert first.prompt_segments[0] == (("prefix", 0), 256) and first.prefix_group == 0
        for (t0, prev), (t1, cur) in zip(turns, turns[1:]):
            assert cur.prompt_segments[:len(prev.prompt_segments)] == prev.prompt_segments
            out_seg, user_seg = cur.prompt_segments[len(prev.prompt_segments):]
            assert out_seg == (prev.output_key, prev.max_output_tokens)
            assert user_seg[0][0] == "req"
            assert cur.num_prompt_tokens == prev.num_prompt_tokens + prev.max_output_tokens + user_seg[1]
            assert t1 - t0 == pytest.approx(1.0 + 3.0)  # service + think time
        assert all(s.output_key == ("out", s.prompt_segments[-1][0][1]) for _, s in turns)
    complete = [turns for sid, turns in by_session.items() if len(turns) == 4]
    assert complete  # sessions run their 4 turns (only the last ones may be cut by num_requests)


def test_conversation_ends_on_rejection_and_context_limit():
    cfg = {**BASE, "duration_s": 100, "arrival": {"process": "poisson", "rate": 0.2}, "conversation": {"turns": 5}}
    rejected = run(make(cfg), reject=lambda s: s.num_prompt_tokens > 150)
    sessions = Counter(s.session_id for _, s in rejected.sent)
    for sid in sessions:
        turns = [s for _, s in rejected.sent if s.session_id == sid]
        assert all(s.num_prompt_tokens <= 150 for s in turns[:-1])  # nothing sent after a rejection
    limited = run(make({**cfg, "conversation": {"turns": 50, "max_context_tokens": 1000}}))
    assert all(s.num_prompt_tokens + s.max_output_tokens <= 1000 for _, s in limited.sent)


def test_closed_loop_sessions():
    w = make({**BASE, "num_requests": 60, "arrival": {"process": "closed", "clients": 2}, "conversation": {"turns": {"dist": "uniform", "low": 1, "high": 5}}})
    cluster = run(w, service=lambda s: 0.3)
    assert len(cluster.sent) == 60 and cluster.max_in_flight <= 2
    assert w.describe()["kind"] == "sessions"
