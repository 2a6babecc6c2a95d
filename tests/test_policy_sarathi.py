"""Sarathi-Serve policy (``sarathi``), driven through schedule()/update_from_output() without the event
loop: decodes first and never stalled, in-flight prefills before new ones, the chunk_size budget,
whole-prompt allocation with a watermark, tail preemption, and one end-to-end run."""
from __future__ import annotations

import pytest

from policies.registry import get_policy, register_policy
from policies.sarathi import SarathiScheduler
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import RequestSpec, RequestStatus
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from tests.policy_helpers import Driver, add, assert_fast_path_matches_exact_loop
from workloads.base import OpenLoopWorkload


@register_policy("sarathi-exact-loop")
class _ExactLoop(SarathiScheduler):
    """The same policy without the decode group: every step walks running requests one by one."""

    uses_decode_group = False


POLICY = "sarathi"
CASES = [{}, {"policy_options": {"chunk_size": 64}}, {"enable_prefix_caching": True},
         {"preemption_mode": "swap", "policy_options": {"chunk_size": 128}}]

def make_sched(num_blocks=100, block_size=4, max_model_len=1000, options=None, num_cpu_blocks=0, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    cfg = EngineConfig(policy="sarathi", block_size=block_size, **engine)
    kv = KVCacheManager(num_blocks, block_size, num_cpu_blocks=num_cpu_blocks, block_bytes=1000)
    return get_policy("sarathi")(cfg, kv, max_model_len, **(options or {}))


def test_registered_and_chunk_size_defaults_to_token_budget():
    assert get_policy("sarathi") is SarathiScheduler
    assert make_sched(max_num_batched_tokens=512).chunk_size == 512
    assert make_sched(max_num_batched_tokens=512, options={"chunk_size": 128}).chunk_size == 128


def test_chunk_size_validation():
    with pytest.raises(ConfigError, match="exceeds engine.max_num_batched_tokens"):
        make_sched(max_num_batched_tokens=64, options={"chunk_size": 128})
    with pytest.raises(ConfigError, match="integer"):
        make_sched(options={"chunk_size": 0})
    with pytest.raises(ConfigError, match="unknown"):
        make_sched(options={"chunk": 8})


def test_decodes_never_stall_and_prompt_is_chunked_around_them():
    s = make_sched(options={"chunk_size": 32})
    d = Driver(s)
    decoders = [add(s, rid, 4, out=50) for rid in range(4)]
    d.step()  # 4 × 4-token prompts
    long = add(s, 9, 100, out=3)
    for _ in range(3):
        out = d.step()
        assert all(out.num_scheduled_tokens[r.request_id] == 1 for r in decoders)  # every step
        assert out.num_scheduled_tokens[9] == 28  # the chunk fills what the decodes leave
        assert out.shape.num_tokens == 32 and out.kind == "mixed"
        assert out.num_grouped == 4  # the decodes advance in the decode group, O(1)
    out = d.step()
    assert out.num_scheduled_tokens[9] == 100 - 3 * 28 and out.shape.num_decode_seqs == 4
    assert long.num_output_tokens == 1


def test_in_flight_prefill_continues_before_new_admissions():
    s = make_sched(options={"chunk_size": 32})
    d = Driver(s)
    a, b = add(s, 0, 50), add(s, 1, 50)
    out = d.step()
    assert out.num_scheduled_tokens == {0: 32}  # b must wait: no budget left
    out = d.step()
    assert out.num_scheduled_tokens == {0: 18, 1: 14}  # a's rest first, then b's first chunk
    out = d.step()
    assert out.num_scheduled_tokens == {0: 1, 1: 31}  # a decodes first, b continues
    s.dissolve_decode_group()  # decode-group members' counters are written back lazily
    assert a.num_output_tokens == 2 and b.num_output_tokens == 0


def test_admission_allocates_whole_prompt_and_keeps_watermark():
    s = make_sched(num_blocks=100, block_size=4, options={"chunk_size": 16})
    r = add(s, 0, 80)
    Driver(s).step()
    assert s.kv.num_held_blocks(r) == 20  # all 80 prompt tokens, though only 16 were computed
    s = make_sched(num_blocks=100, block_size=4, max_model_len=2000)
    assert s.watermark_blocks == 1
    assert add(s, 0, 400).status is RequestStatus.REJECTED  # 100 blocks: never fits next to the watermark
    a = add(s, 1, 4, out=40)
    d = Driver(s)
    d.step()
    big = add(s, 2, 392)  # needs 98 blocks; a holds 2: 98 free - 98 < 1
    d.step()
    assert big.status is RequestStatus.WAITING and a.status is RequestStatus.RUNNING


def test_decode_shortage_preempts_last_running_even_a_partial_prefill():
    # 10 blocks of 4 tokens, watermark 0. a decodes; b's 32-token prompt (8 blocks, all held from
    # admission) is chunked 7 tokens a step. When a needs its 3rd block none is free: b, the last
    # running request, is preempted in the middle of its prefill.
    s = make_sched(num_blocks=10, block_size=4, max_model_len=100, options={"chunk_size": 8})
    d = Driver(s)
    a = add(s, 0, 4, out=30)
    d.step()
    b = add(s, 1, 32, out=2)
    for _ in range(4):
        assert d.step().num_scheduled_tokens == {0: 1, 1: 7}
    assert s.kv.num_free_blocks == 0 and b.num_computed_tokens == 28
    out = d.step()
    assert out.preempted_ids == (1,) and out.num_scheduled_tokens == {0: 1}  # the decode went ahead
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0 and s.waiting[0] is b
    assert b.num_output_tokens == 0 and a.status is RequestStatus.RUNNING

def test_step_never_exceeds_chunk_size_even_with_many_decodes():
    s = make_sched(max_num_seqs=16, options={"chunk_size": 8}, max_num_batched_tokens=64)
    d = Driver(s)
    for rid in range(12):
        add(s, rid, 1, out=6)
    for _ in range(10):
        out = d.step()
        assert out.shape.num_tokens <= 8


def test_swap_mode_resumes_swapped_requests():
    s = make_sched(num_blocks=8, block_size=4, max_model_len=100, num_cpu_blocks=20,
                   preemption_mode="swap", options={"chunk_size": 16})
    d = Driver(s)
    a, b = add(s, 0, 8, out=20), add(s, 1, 8, out=20)
    for _ in range(200):
        d.step()
        if not s.has_unfinished():
            break
    assert a.status is RequestStatus.FINISHED and b.status is RequestStatus.FINISHED
    assert b.num_preemptions >= 1 and s.kv.num_free_cpu_blocks == 20


def test_end_to_end_invariants_and_budget_respected():
    specs = [RequestSpec(0.0, 50, 200) for _ in range(16)]
    specs += [RequestSpec(0.5, 1500, 20) for _ in range(8)]
    cfg = EngineConfig(policy="sarathi", max_num_seqs=64, max_num_batched_tokens=2048,
                       policy_options={"chunk_size": 256})
    setup = ReplicaSetup(engine=cfg, num_kv_blocks=4000, max_model_len=4096,
                         cost_model=ConstantCostModel(0.01, 1e-5))
    out = simulate(OpenLoopWorkload(specs), setup)
    assert out.stop_reason == "drained" and (out.requests.status == "completed").all()
    assert out.iterations.num_tokens.max() <= 256
    # stall-free: once the 16 decoders are admitted (4 steps of 256 tokens), every step carries all
    # of them while the burst's 12000 prompt tokens are chunked around them
    it = out.iterations
    busy = it[(it.iteration >= 4) & (it.start_s < 2.0)]
    assert len(busy) > 40 and (busy.num_decode_seqs >= 16).all()
    assert (busy.kind == "mixed").sum() >= 12000 // 256


@pytest.mark.parametrize("case", CASES)
def test_decode_group_fast_path_matches_exact_loop(case):
    """Same records and iteration log with and without the decode group (under KV pressure)."""
    assert_fast_path_matches_exact_loop(POLICY, case)
