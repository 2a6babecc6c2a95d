"""vLLM V0 policy (``vllm-v0``), driven through schedule()/update_from_output() without the event loop
(SEMANTICS.md §3): prefill priority with no mixing, watermark, whole-prompt allocation, tail preemption
(recompute and swap), the chunked-prefill mode, and one end-to-end run against V1."""
from __future__ import annotations

import numpy as np
import pytest

from policies.registry import get_policy, register_policy
from policies.vllm_v0 import REJECT_OVER_BUDGET, VLLMV0Scheduler
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import RequestSpec, RequestStatus
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from tests.policy_helpers import Driver, add, assert_fast_path_matches_exact_loop
from workloads.base import OpenLoopWorkload


@register_policy("vllm-v0-exact-loop")
class _ExactLoop(VLLMV0Scheduler):
    """The same policy without the decode group: every step walks running requests one by one."""

    uses_decode_group = False


POLICY = "vllm-v0"
CASES = [{}, {"preemption_mode": "swap"}, {"enable_prefix_caching": True},
         {"policy_options": {"enable_chunked_prefill": True}, "max_num_batched_tokens": 128}]

def make_sched(num_blocks=100, block_size=4, max_model_len=1000, num_cpu_blocks=0, options=None,
               chunked=False, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    options = {**(options or {}), **({"enable_chunked_prefill": True} if chunked else {})}
    cfg = EngineConfig(policy="vllm-v0", block_size=block_size, **engine)
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=cfg.enable_prefix_caching,
                        num_cpu_blocks=num_cpu_blocks, block_bytes=1000)
    return get_policy("vllm-v0")(cfg, kv, max_model_len, **(options or {}))


def test_registered_by_name():
    assert get_policy("vllm-v0") is VLLMV0Scheduler


def test_prefill_step_runs_no_decodes():
    s = make_sched(max_num_batched_tokens=64)
    d = Driver(s)
    a = add(s, 0, 20, out=10)
    assert d.step().num_scheduled_tokens == {0: 20}
    assert d.step().kind == "decode"
    add(s, 1, 30)
    out = d.step()  # b's prefill: a does not decode in this step
    assert out.kind == "prefill" and out.num_scheduled_tokens == {1: 30}
    assert out.shape.num_decode_seqs == 0
    assert a.num_output_tokens == 2
    out = d.step()
    assert out.kind == "decode" and out.num_scheduled_tokens == {0: 1, 1: 1}
    assert d.step().num_grouped == 2  # steady decode: both advance in the decode group, O(1)


def test_budget_and_max_num_seqs_limit_admission():
    s = make_sched(max_num_batched_tokens=64)
    for rid in range(3):
        add(s, rid, 30)
    out = Driver(s).step()
    assert out.num_scheduled_tokens == {0: 30, 1: 30}  # 90 > 64: the third waits (no chunking)
    assert len(s.waiting) == 1

    s = make_sched(max_num_batched_tokens=1000, max_num_seqs=2)
    for rid in range(3):
        add(s, rid, 10)
    d = Driver(s)
    assert list(d.step().num_scheduled_tokens) == [0, 1]
    assert d.step().kind == "decode"  # max_num_seqs reached: no prefill, so the running decode
    assert len(s.running) == 2


def test_whole_prompt_blocks_allocated_up_front_even_when_chunked():
    s = make_sched(max_num_batched_tokens=32, chunked=True)
    r = add(s, 0, 100)
    out = Driver(s).step()
    assert out.num_scheduled_tokens == {0: 32}
    assert s.kv.num_held_blocks(r) == 25  # all 100 prompt tokens / 4 per block


def test_chunked_prefill_is_a_policy_option_off_by_default():
    # engine.enable_chunked_prefill (default true) is V1's switch; V0's legacy default is off
    assert not make_sched(enable_chunked_prefill=True).enable_chunked_prefill
    assert make_sched(chunked=True).enable_chunked_prefill
    with pytest.raises(ConfigError, match="enable_chunked_prefill"):
        make_sched(options={"enable_chunked_prefill": "yes"})


def test_watermark_blocks_admission_and_rejects_never_fitting_prompts():
    s = make_sched(num_blocks=100, block_size=4, max_num_batched_tokens=1000, max_model_len=2000)
    assert s.watermark_blocks == 1
    too_big = add(s, 0, 400)  # 100 blocks > 100 - watermark: can never be admitted
    assert too_big.status is RequestStatus.REJECTED
    small = add(s, 1, 4, out=50)
    d = Driver(s)
    d.step()  # small holds 1 block (then 2 after its first decodes)
    big = add(s, 2, 396)  # needs 99 blocks: free 99 - 99 = 0 < watermark 1
    out = d.step()
    assert out.kind == "decode" and big.status is RequestStatus.WAITING
    s2 = make_sched(num_blocks=100, block_size=4, max_num_batched_tokens=1000, max_model_len=2000)
    ok = add(s2, 0, 396)
    assert Driver(s2).step().num_scheduled_tokens == {0: 396}  # 100 - 99 = 1 ≥ watermark
    assert ok.status is RequestStatus.RUNNING
    assert small.status is RequestStatus.RUNNING


def test_prompt_over_budget_rejected_without_chunking():
    s = make_sched(max_num_batched_tokens=64)
    r = add(s, 0, 65)
    assert r.status is RequestStatus.REJECTED and r.reject_reason == REJECT_OVER_BUDGET
    s = make_sched(max_num_batched_tokens=64, chunked=True)
    assert add(s, 0, 65).status is RequestStatus.WAITING


def test_decode_out_of_blocks_preempts_last_running_for_recompute():
    # 8 blocks of 4 tokens (watermark 0); each request may grow to 7 blocks: both cannot finish.
    s = make_sched(num_blocks=8, block_size=4, max_num_batched_tokens=64, max_model_len=100)
    d = Driver(s)
    a, b = add(s, 0, 8, out=20), add(s, 1, 8, out=20)
    preempted = None
    for _ in range(30):
        out = d.step()
        if out.preempted_ids:
            preempted = out
            break
    assert preempted is not None and preempted.preempted_ids == (1,)  # b, the last running
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert s.waiting[0] is b and b.num_preemptions == 1
    assert a.status is RequestStatus.RUNNING and 0 in preempted.num_scheduled_tokens


def test_swap_mode_swaps_out_and_blocks_prefills_until_swapped_back():
    s = make_sched(num_blocks=8, block_size=4, max_num_batched_tokens=64, max_model_len=100,
                   num_cpu_blocks=20, preemption_mode="swap")
    d = Driver(s)
    a, b = add(s, 0, 8, out=20), add(s, 1, 8, out=20)
    out = None
    for _ in range(30):
        out = d.step()
        if out.preempted_ids:
            break
    assert out.preempted_ids == (1,) and b.status is RequestStatus.SWAPPED
    assert out.shape.swap_bytes == s.kv.num_swapped_blocks(b) * 1000
    add(s, 2, 4, out=2)
    out = d.step()
    assert 2 not in out.num_scheduled_tokens  # swapped requests have priority over new prefills
    while b.status is RequestStatus.SWAPPED:
        out = d.step()
    assert a.status is RequestStatus.FINISHED  # b came back only once a freed its blocks
    assert out.shape.swap_bytes > 0 and 1 in out.num_scheduled_tokens  # swapped in and decoded
    assert b.num_computed_tokens > 8  # nothing recomputed


def test_chunked_mode_running_first_then_new_chunks_mixed():
    s = make_sched(max_num_batched_tokens=32, chunked=True)
    d = Driver(s)
    a = add(s, 0, 40, out=5)
    assert d.step().num_scheduled_tokens == {0: 32}
    b = add(s, 1, 40)
    out = d.step()
    assert out.num_scheduled_tokens == {0: 8, 1: 24}  # a finishes its prompt, b takes the rest
    out = d.step()
    assert out.num_scheduled_tokens == {0: 1, 1: 16} and out.kind == "mixed"
    s.dissolve_decode_group()  # decode-group members' counters are written back lazily
    assert a.num_output_tokens == 2 and b.num_output_tokens == 1


def test_watermark_option_validated():
    assert make_sched(options={"watermark": 0.0}).watermark_blocks == 0
    with pytest.raises(ConfigError, match="watermark"):
        make_sched(options={"watermark": 1.5})
    with pytest.raises(ConfigError, match="unknown"):
        make_sched(options={"chunk_size": 5})


# ------------------------------------------------------------------ end to end
def _max_itl_s(out) -> float:
    """Largest gap between consecutive tokens of any request (from the compact timeline)."""
    tl = out.timeline
    ends = tl.iteration_end_s[0]
    worst = 0.0
    for i in range(len(tl.run_offsets) - 1):
        pairs = tl.runs[tl.run_offsets[i]:tl.run_offsets[i + 1]].reshape(-1, 2)
        its = np.concatenate([np.arange(a, b + 1) for a, b in pairs]) if len(pairs) else np.array([], int)
        if len(its) > 1:
            worst = max(worst, float(np.max(np.diff(ends[its]))))
    return worst


def _burst_run(policy: str, **engine):
    # 16 short-prompt decoders, then a burst of 8 long prompts while they decode.
    specs = [RequestSpec(0.0, 50, 200) for _ in range(16)]
    specs += [RequestSpec(0.5, 1500, 20) for _ in range(8)]
    cfg = EngineConfig(policy=policy, max_num_seqs=64, max_num_batched_tokens=2048, **engine)
    setup = ReplicaSetup(engine=cfg, num_kv_blocks=4000, max_model_len=4096,
                         cost_model=ConstantCostModel(0.01, 1e-5))
    return simulate(OpenLoopWorkload(specs), setup)


def test_end_to_end_invariants_and_prefill_priority_stalls_decodes_longer_than_v1():
    v0 = _burst_run("vllm-v0")
    v1 = _burst_run("vllm")
    for out in (v0, v1):
        assert out.stop_reason == "drained"
        assert (out.requests.status == "completed").all()
        assert len(out.invariants) >= 2  # every request ended once, KV all free at the end
    assert set(v0.iterations.kind) <= {"prefill", "decode"}  # V0 never mixes
    # while the burst's prompts are prefilled one per step, V0's decoders wait for all of them
    assert _max_itl_s(v0) > 2 * _max_itl_s(v1)


@pytest.mark.parametrize("case", CASES)
def test_decode_group_fast_path_matches_exact_loop(case):
    """Same records and iteration log with and without the decode group (under KV pressure)."""
    assert_fast_path_matches_exact_loop(POLICY, case)
