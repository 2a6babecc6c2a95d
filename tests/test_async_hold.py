"""vLLM V1 async scheduling under pressure: a request finishing in step k still holds its running slot
and KV blocks when step k+1 is planned (vLLM plans k+1 before processing k's output), so they count
for the plan of step k+2. Driven through schedule()/update_from_output() without the event loop."""
from __future__ import annotations

from policies.registry import get_policy
from sim.config import EngineConfig
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import Request, RequestSpec, RequestStatus
from tests.policy_helpers import random_specs, run_policy


def make_sched(num_blocks=100, async_scheduling=True, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    cfg = EngineConfig(block_size=4, async_scheduling=async_scheduling, **engine)
    return get_policy("vllm")(cfg, KVCacheManager(num_blocks, 4, enable_prefix_caching=False), 1000)


def add(sched, rid, prompt, out):
    req = Request(rid, RequestSpec(0.0, prompt, out), 0.0)
    assert sched.add_request(req)
    return req


def steps_until_scheduled(sched, rid, add_late=None, max_steps=10):
    """Step the scheduler by hand; return the index of the first step that schedules ``rid``.
    ``add_late`` = (after_step, prompt, out): ``rid`` arrives after that step."""
    now = 0.0
    for k in range(max_steps):
        out = sched.schedule(now)
        ids = set(out.num_scheduled_tokens) | set(sched.decode_group.members if out.num_grouped else ())
        if rid in ids:
            return k
        now += 1.0
        sched.update_from_output(out, k, now)
        sched.kv.check_invariants()
        if add_late is not None and k == add_late[0]:
            add(sched, rid, add_late[1], add_late[2])
    raise AssertionError(f"request {rid} never scheduled")


def test_flag_follows_engine_setting_and_policy_default():
    assert make_sched(async_scheduling=None).async_scheduling is True  # vLLM's default
    assert make_sched(async_scheduling=False).async_scheduling is False
    cfg = EngineConfig(policy="sglang", block_size=4, max_num_batched_tokens=64)
    assert get_policy("sglang")(cfg, KVCacheManager(10, 4, False), 1000).async_scheduling is False


def test_finishing_request_keeps_its_running_slot_through_the_next_plan():
    # max_num_seqs 2: A (2 output tokens) finishes at the end of step 1; C keeps running; B waits.
    def first_step_of_b(async_scheduling):
        sched = make_sched(async_scheduling=async_scheduling, max_num_seqs=2)
        add(sched, 0, 4, 2)
        add(sched, 1, 4, 20)
        add(sched, 2, 4, 5)
        return steps_until_scheduled(sched, 2)
    assert first_step_of_b(False) == 2  # synchronous: A's slot is free for step 2
    assert first_step_of_b(True) == 3  # async: step 2 was planned with A still running


def test_finishing_request_keeps_its_kv_blocks_through_the_next_plan():
    # 6 blocks of 4: after step 1, A (8 + 1 tokens) holds 3, C (4 + 1, growing) 2: 1 free. A finishes
    # at the end of step 1 and B (8 tokens: 2 blocks) arrives then.
    def run(async_scheduling):
        sched = make_sched(num_blocks=6, async_scheduling=async_scheduling)
        add(sched, 0, 8, 2)
        add(sched, 1, 4, 20)
        return sched, steps_until_scheduled(sched, 2, add_late=(1, 8, 5))
    assert run(False)[1] == 2
    sched, k = run(True)
    assert k == 3
    assert not sched.held and sched.kv.num_used_blocks == 2 + 2  # C and B; A's 3 blocks came back


def test_held_blocks_are_released_after_the_plan_that_saw_them():
    sched = make_sched(num_blocks=10)
    a = add(sched, 0, 8, 1)
    c = add(sched, 1, 4, 20)
    out = sched.schedule(0.0)
    sched.update_from_output(out, 0, 1.0)  # A finishes (one output token)
    assert a.status is RequestStatus.FINISHED and sched.held == [a]
    assert sched.kv.num_used_blocks == 2 + 1  # A's blocks are still allocated
    sched.schedule(1.0)  # the plan of step 1: planned before step 0's output was processed
    assert not sched.held and sched.kv.num_used_blocks == 2  # C: 5 tokens in 2 blocks
    assert c.status is RequestStatus.RUNNING


def test_idle_engine_core_plans_with_everything_released():
    # A fills the cache and finishes; nothing else runs. Whether the next request comes at the same
    # instant (the plan is empty: the engine core processes A's output and plans again) or later
    # (the engine went idle), it runs at once.
    for arrival_s in (1.0, 5.0):
        sched = make_sched(num_blocks=3)
        add(sched, 0, 8, 1)
        out = sched.schedule(0.0)
        sched.update_from_output(out, 0, 1.0)
        assert sched.held and not sched.has_unfinished()
        add(sched, 1, 8, 1)
        out = sched.schedule(arrival_s)
        assert out.num_scheduled_tokens == {1: 8}
        sched.kv.check_invariants()


def test_hold_never_leaks_under_kv_pressure():
    # simulate() checks at the end that every block is free and every request ended once
    out = run_policy("vllm", random_specs(3), num_kv_blocks=60, async_scheduling=True)
    assert out.stop_reason == "drained"
    assert (out.requests.status == "completed").all()
    sync = run_policy("vllm", random_specs(3), num_kv_blocks=60, async_scheduling=False)
    assert out.requests.finish_s.mean() > sync.requests.finish_s.mean()  # pressure costs time
