"""Orca policy (``orca``), driven through schedule()/update_from_output() without the event loop:
every running request decodes each iteration, whole prompts join under the token budget, KV is
reserved for each request's maximum length (so nothing is preempted), and one end-to-end run."""
from __future__ import annotations

import pytest

from policies.orca import REJECT_OVER_BUDGET, OrcaScheduler
from policies.registry import get_policy, register_policy
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import RequestSpec, RequestStatus
from sim.engine.simulator import ReplicaSetup, simulate
from tests.policy_helpers import Driver, add, assert_fast_path_matches_exact_loop
from workloads.base import OpenLoopWorkload


@register_policy("orca-exact-loop")
class _ExactLoop(OrcaScheduler):
    """The same policy without the decode group: every step walks running requests one by one."""

    uses_decode_group = False


POLICY = "orca"
CASES = [{}, {"enable_prefix_caching": True}, {"max_num_batched_tokens": 320}]

def make_sched(num_blocks=100, block_size=4, max_model_len=1000, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    cfg = EngineConfig(policy="orca", block_size=block_size, **engine)
    kv = KVCacheManager(num_blocks, block_size)
    return get_policy("orca")(cfg, kv, max_model_len)


def test_registered_by_name():
    assert get_policy("orca") is OrcaScheduler


def test_prompts_are_never_split():
    s = make_sched(max_num_batched_tokens=64)
    assert add(s, 0, 65).reject_reason == REJECT_OVER_BUDGET  # could never run whole
    d = Driver(s)
    add(s, 1, 40), add(s, 2, 40)
    out = d.step()
    assert out.num_scheduled_tokens == {1: 40}  # 80 > 64: the second prompt waits whole
    out = d.step()
    assert out.num_scheduled_tokens == {1: 1, 2: 40} and out.kind == "mixed"


def test_every_running_request_decodes_each_iteration_and_newcomers_join():
    s = make_sched(max_num_batched_tokens=64)
    d = Driver(s)
    reqs = [add(s, 0, 10, out=6)]
    d.step()
    for rid in range(1, 4):
        reqs.append(add(s, rid, 10, out=6))
        out = d.step()
        assert out.num_scheduled_tokens == {**{r.request_id: 1 for r in reqs[:-1]}, rid: 10}
    out = d.step()
    assert out.kind == "decode" and len(out.num_scheduled_tokens) == 4
    assert out.num_grouped == 4  # all of them advance in the decode group, O(1)


def test_max_num_seqs_caps_the_batch():
    s = make_sched(max_num_batched_tokens=1000, max_num_seqs=3)
    for rid in range(5):
        add(s, rid, 10)
    out = Driver(s).step()
    assert list(out.num_scheduled_tokens) == [0, 1, 2] and len(s.waiting) == 2


def test_kv_reserved_for_maximum_length_so_nothing_is_preempted():
    # 20 blocks × 4 tokens. Each request may reach 10 + 30 - 1 = 39 tokens = 10 blocks: two fit, a
    # third must wait although its prompt (3 blocks) would fit today.
    s = make_sched(num_blocks=20, block_size=4, max_num_batched_tokens=1000)
    a, b, c = add(s, 0, 10, out=30), add(s, 1, 10, out=30), add(s, 2, 10, out=30)
    d = Driver(s)
    out = d.step()
    assert list(out.num_scheduled_tokens) == [0, 1] and c.status is RequestStatus.WAITING
    assert b.status is RequestStatus.RUNNING
    assert s.kv.num_used_blocks == 6  # blocks are allocated lazily, only the reservation is full
    while a.status is not RequestStatus.FINISHED:
        out = d.step()
        assert not out.preempted_ids and c.status is RequestStatus.WAITING
    out = d.step()
    assert 2 in out.num_scheduled_tokens  # c joins as soon as a's reservation is released


def test_end_to_end_never_preempts_where_vllm_does():
    specs = [RequestSpec(0.01 * i, 200, 300) for i in range(40)]

    def run(policy):
        cfg = EngineConfig(policy=policy, max_num_seqs=64, max_num_batched_tokens=2048)
        setup = ReplicaSetup(engine=cfg, num_kv_blocks=200, max_model_len=4096,
                             cost_model=ConstantCostModel(0.01, 1e-5))
        return simulate(OpenLoopWorkload(specs), setup)

    orca, v1 = run("orca"), run("vllm")
    for out in (orca, v1):
        assert out.stop_reason == "drained" and (out.requests.status == "completed").all()
    assert orca.stats["num_preemptions"] == 0 and v1.stats["num_preemptions"] > 0
    # reservation: at most floor(200 / ceil(499 / 16)) = 6 requests run at once
    assert orca.iterations.num_seqs.max() <= 6 < v1.iterations.num_seqs.max()
    assert orca.iterations.num_tokens.max() <= 2048


@pytest.mark.parametrize("case", CASES)
def test_decode_group_fast_path_matches_exact_loop(case):
    """Same records and iteration log with and without the decode group (under KV pressure)."""
    assert_fast_path_matches_exact_loop(POLICY, case)
