"""Static (request-level) batching (``static``), driven through schedule()/update_from_output()
without the event loop: batch boundaries (finished requests leave, nobody joins until the batch is
empty), one-iteration batch prefill, KV reservation, and one end-to-end run (TTFT ≥ batch completion)."""
from __future__ import annotations

import pytest

from policies.registry import get_policy, register_policy
from policies.static import REJECT_OVER_BUDGET, StaticBatchScheduler
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import RequestSpec, RequestStatus
from sim.engine.simulator import ReplicaSetup, simulate
from tests.policy_helpers import Driver, add, assert_fast_path_matches_exact_loop
from workloads.base import OpenLoopWorkload


@register_policy("static-exact-loop")
class _ExactLoop(StaticBatchScheduler):
    """The same policy without the decode group: every step walks running requests one by one."""

    uses_decode_group = False


POLICY = "static"
CASES = [{}, {"enable_prefix_caching": True}]

def make_sched(num_blocks=100, block_size=4, max_model_len=1000, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    cfg = EngineConfig(policy="static", block_size=block_size, **engine)
    kv = KVCacheManager(num_blocks, block_size)
    return get_policy("static")(cfg, kv, max_model_len)


def test_registered_by_name():
    assert get_policy("static") is StaticBatchScheduler


def test_batch_runs_to_completion_before_the_next_forms():
    s = make_sched(max_num_seqs=2)
    a, b, c = add(s, 0, 8, out=2), add(s, 1, 8, out=5), add(s, 2, 8, out=3)
    d = Driver(s)
    out = d.step()
    assert out.kind == "prefill" and out.num_scheduled_tokens == {0: 8, 1: 8}  # one iteration
    out = d.step()
    assert out.num_scheduled_tokens == {0: 1, 1: 1}
    assert a.status is RequestStatus.FINISHED
    for _ in range(3):  # b decodes alone: a left, c may not join
        out = d.step()
        assert out.kind == "decode" and out.num_scheduled_tokens == {1: 1} and out.num_grouped == 1
        assert c.status is RequestStatus.WAITING
    assert b.status is RequestStatus.FINISHED
    out = d.step()
    assert out.kind == "prefill" and out.num_scheduled_tokens == {2: 8}


def test_new_arrivals_wait_for_the_running_batch():
    s = make_sched(max_num_seqs=8)
    d = Driver(s)
    add(s, 0, 8, out=4)
    d.step()
    late = add(s, 1, 8, out=4)
    while s.running:
        assert 1 not in d.step().num_scheduled_tokens
    assert late.status is RequestStatus.WAITING
    assert d.step().num_scheduled_tokens == {1: 8}


def test_batch_formation_respects_budget_and_kv_reservation():
    s = make_sched(max_num_batched_tokens=64, max_num_seqs=8)
    assert add(s, 9, 65).reject_reason == REJECT_OVER_BUDGET
    for rid in range(3):
        add(s, rid, 30)
    assert Driver(s).step().num_scheduled_tokens == {0: 30, 1: 30}  # 90 tokens > 64
    # 20 blocks × 4: each request may reach 10 + 30 - 1 = 39 tokens = 10 blocks -> two per batch
    s = make_sched(num_blocks=20, max_num_batched_tokens=1000, max_num_seqs=8)
    for rid in range(3):
        add(s, rid, 10, out=30)
    assert list(Driver(s).step().num_scheduled_tokens) == [0, 1]


def test_end_to_end_ttft_not_before_previous_batch_completes():
    specs = [RequestSpec(0.02 * i, 100 + 7 * i, 20 + (13 * i) % 50) for i in range(30)]
    cfg = EngineConfig(policy="static", max_num_seqs=4, max_num_batched_tokens=2048)
    setup = ReplicaSetup(engine=cfg, num_kv_blocks=2000, max_model_len=4096,
                         cost_model=ConstantCostModel(0.01, 1e-5))
    out = simulate(OpenLoopWorkload(specs), setup)
    r = out.requests
    assert out.stop_reason == "drained" and (r.status == "completed").all()
    assert out.stats["num_preemptions"] == 0
    assert set(out.iterations.kind) == {"prefill", "decode"}
    # requests first scheduled at the same instant form one batch; batches never overlap
    batches = sorted(r.groupby("first_scheduled_s"), key=lambda g: g[0])
    assert len(batches) >= 30 // 4
    for (_, prev), (start, nxt) in zip(batches, batches[1:]):
        assert len(prev) <= 4
        assert start >= prev.finish_s.max()
        assert (nxt.first_token_s >= prev.finish_s.max()).all()


@pytest.mark.parametrize("case", CASES)
def test_decode_group_fast_path_matches_exact_loop(case):
    """Same records and iteration log with and without the decode group (under KV pressure)."""
    assert_fast_path_matches_exact_loop(POLICY, case)
