"""Builders shared by the scheduler tests: drive ``schedule()``/``update_from_output()`` by hand (no
event loop), and compare a policy's decode-group fast path with its exact in-order loop end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.request import Request, RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from workloads.base import OpenLoopWorkload


def add(sched, rid, prompt, out=5, segments=()):
    req = Request(rid, RequestSpec(0.0, prompt, out, prompt_segments=segments), 0.0)
    sched.add_request(req)
    return req


class Step:
    """One step's output; ``num_scheduled_tokens`` also lists the decode-group members (1 token each)."""

    def __init__(self, out, tokens):
        self.out, self.num_scheduled_tokens = out, tokens

    def __getattr__(self, name):
        return getattr(self.out, name)


class Driver:
    """Steps a scheduler by hand: one call = schedule + update (+ KV invariant check)."""

    def __init__(self, sched):
        self.sched, self.iteration, self.now = sched, 0, 0.0

    def step(self):
        sched = self.sched
        out = sched.schedule(self.now)
        grouped = list(sched.decode_group.members) if out.num_grouped else []
        assert len(grouped) == out.num_grouped  # the fast path decodes every member
        self.now += 1.0
        sched.update_from_output(out, self.iteration, self.now)
        self.iteration += 1
        sched.kv.check_invariants()
        return Step(out, {**out.num_scheduled_tokens, **dict.fromkeys(grouped, 1)})


def random_specs(seed: int, n: int = 160, prefix: bool = False) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(0.01, n))
    prompts, outs = rng.integers(5, 300, n), rng.integers(1, 120, n)
    return [RequestSpec(float(a), int(p), int(o),
                        prompt_segments=((("sys", int(i % 3)), 32), (("u", i), int(p))) if prefix else ())
            for i, (a, p, o) in enumerate(zip(t, prompts, outs))]


def run_policy(policy: str, specs, num_kv_blocks: int = 120, **engine):
    engine.setdefault("max_num_batched_tokens", 512)
    cfg = EngineConfig(policy=policy, max_num_seqs=48, **engine)
    setup = ReplicaSetup(engine=cfg, num_kv_blocks=num_kv_blocks, max_model_len=4096,
                         cost_model=ConstantCostModel(0.01, 1e-5), kv_block_bytes=1 << 20)
    return simulate(OpenLoopWorkload(specs), setup)


def assert_fast_path_matches_exact_loop(policy: str, case: dict) -> None:
    """Same records and iteration log with and without the decode group (under KV pressure): ``policy``
    against its ``<policy>-exact-loop`` twin registered by the test module."""
    engine, prefix = dict(case), case.get("enable_prefix_caching", False)
    specs = random_specs(7, prefix=prefix)
    fast, exact = run_policy(policy, specs, **engine), run_policy(policy + "-exact-loop", specs, **engine)
    assert fast.stop_reason == exact.stop_reason == "drained"
    pd.testing.assert_frame_equal(fast.requests, exact.requests)
    pd.testing.assert_frame_equal(fast.iterations, exact.iterations)
    assert fast.stats["num_preemptions"] == exact.stats["num_preemptions"]
