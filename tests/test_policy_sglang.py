"""SGLang policy (``sglang``), driven through schedule()/update_from_output() without the event loop
(SEMANTICS.md §4): separate prefill and decode iterations with prefill priority, chunked prefill with
the in-flight chunk first, conservative admission (new_token_ratio), retraction order, fcfs/lpm
ordering with the prefix cache, option validation, and one end-to-end run."""
from __future__ import annotations

import pytest

from policies.registry import get_policy, register_policy
from policies.sglang import REJECT_OVER_BUDGET, RETRACT_DECODE_STEPS, SGLangScheduler
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import Request, RequestSpec, RequestStatus
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from tests.policy_helpers import Driver, add, assert_fast_path_matches_exact_loop
from workloads.base import OpenLoopWorkload


@register_policy("sglang-exact-loop")
class _ExactLoop(SGLangScheduler):
    """The same policy without the decode group: every step walks running requests one by one."""

    uses_decode_group = False


POLICY = "sglang"
CASES = [{}, {"policy_options": {"init_new_token_ratio": 0.05}},
         {"enable_prefix_caching": True, "policy_options": {"schedule_policy": "lpm", "chunked_prefill_size": 128}}]

def make_sched(num_blocks=100, block_size=4, max_model_len=1000, prefix=False, options=None, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    cfg = EngineConfig(policy="sglang", block_size=block_size, enable_prefix_caching=prefix, **engine)
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix)
    return get_policy("sglang")(cfg, kv, max_model_len, **(options or {}))


def test_registered_by_name():
    assert get_policy("sglang") is SGLangScheduler


def test_prefill_and_decode_are_separate_iterations_prefill_first():
    s = make_sched()
    d = Driver(s)
    a = add(s, 0, 10, out=10)
    assert d.step().kind == "prefill"
    assert d.step().kind == "decode"
    add(s, 1, 20)
    out = d.step()  # the new prefill batch runs first; a does not decode in it
    assert out.kind == "prefill" and out.num_scheduled_tokens == {1: 20}
    out = d.step()
    assert out.kind == "decode" and out.num_scheduled_tokens == {0: 1, 1: 1}
    assert d.step().num_grouped == 2  # steady decode: both advance in the decode group, O(1)
    s.dissolve_decode_group()  # decode-group members' counters are written back lazily
    assert a.num_output_tokens == 4


def test_chunked_prefill_in_flight_chunk_goes_first_and_decodes_wait():
    s = make_sched(max_num_batched_tokens=64, options={"chunked_prefill_size": 32})
    d = Driver(s)
    a = add(s, 0, 4, out=20)
    d.step()
    long = add(s, 1, 100, out=3)
    out = d.step()
    assert out.num_scheduled_tokens == {1: 32} and s.chunked_req is long
    c = add(s, 2, 10, out=3)
    assert d.step().num_scheduled_tokens == {1: 32}  # the chunk continues first; the batch is full
    assert d.step().num_scheduled_tokens == {1: 32}
    out = d.step()
    assert out.num_scheduled_tokens == {1: 4, 2: 10}  # last chunk, then c fills the budget
    assert s.chunked_req is None and long.num_output_tokens == 1
    assert a.num_output_tokens == 1  # no decode ran while prefill batches could be formed
    out = d.step()
    assert out.kind == "decode" and set(out.num_scheduled_tokens) == {0, 1, 2}
    assert c.num_output_tokens == 2


def test_conservative_admission_reserves_running_requests_future_tokens():
    # 60 blocks × 4 = 240 tokens. a holds 3 blocks and will still generate 199 tokens, of which
    # 0.7 × 199 ≈ 139 are reserved.
    def setup(ratio):
        s = make_sched(num_blocks=60, options={"init_new_token_ratio": ratio})
        d = Driver(s)
        add(s, 0, 10, out=200)
        d.step()
        b = add(s, 1, 40, out=60)
        return d.step(), b

    out, b = setup(0.7)  # 40 + 60 ≥ 228 - 139: b waits although its prompt fits today
    assert out.kind == "decode" and b.status is RequestStatus.WAITING
    out, b = setup(0.1)
    assert out.kind == "prefill" and b.status is RequestStatus.RUNNING


def test_new_token_ratio_decays_per_decode_step():
    s = make_sched()
    d = Driver(s)
    add(s, 0, 4, out=50)
    d.step()
    for k in range(1, 4):
        d.step()
        assert s.new_token_ratio == pytest.approx(0.7 - k * (0.7 - 0.7 * 0.14) / 600)


def _running(sched, rid, prompt, out_done, max_out):
    """Put a request straight into the running set, mid-decode, holding its KV (test set-up)."""
    req = Request(rid, RequestSpec(0.0, prompt, max_out), 0.0)
    req.num_output_tokens = out_done
    req.num_computed_tokens = prompt + out_done - 1
    req.first_scheduled_s = 0.0
    assert sched.kv.allocate_slots(req, 0)
    req.status = RequestStatus.RUNNING
    sched.running.append(req)
    return req


def test_decode_oom_retracts_fewest_outputs_then_longest_input_to_the_queue_end():
    s = make_sched(num_blocks=21, block_size=4, max_model_len=200)
    a = _running(s, 0, 8, 5, 50)  # 12 computed: 3 blocks
    b = _running(s, 1, 60, 1, 50)  # 60 computed: 15 blocks — 1 output, longest input: retracted
    c = _running(s, 2, 4, 1, 50)  # 4 computed: 1 block
    e = _running(s, 3, 8, 1, 50)  # 8 computed: 2 blocks
    assert s.kv.num_free_blocks == 0  # every one of them needs a new block for its next token
    w = add(s, 9, 8)  # waiting: cannot be admitted (no KV), so the step is a decode
    out = Driver(s).step()
    assert out.kind == "decode" and out.preempted_ids == (1,)
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0 and b.num_preemptions == 1
    assert list(s.waiting) == [w, b]  # retracted requests go to the end of the queue
    assert set(out.num_scheduled_tokens) == {0, 2, 3}
    # 15 freed blocks = 60 tokens ≥ 20 per remaining request: one retraction was enough
    assert 15 * 4 >= RETRACT_DECODE_STEPS * 3
    assert s.new_token_ratio == pytest.approx((5 + 1 + 1 + RETRACT_DECODE_STEPS * 3) / 150)
    for r in (a, c, e):
        assert r.status is RequestStatus.RUNNING


def test_retraction_keeps_at_least_one_request():
    s = make_sched(num_blocks=4, block_size=4, max_model_len=200)
    a = _running(s, 0, 8, 1, 20)  # 2 blocks
    b = _running(s, 1, 8, 1, 20)  # 2 blocks; free 0
    out = Driver(s).step()
    assert out.preempted_ids == (1,) and out.num_scheduled_tokens == {0: 1}  # tie: the later one goes
    assert a.status is RequestStatus.RUNNING and b.status is RequestStatus.PREEMPTED


def _cached_prefix_sched(policy, prefix=True, num_unique_first=1):
    """A scheduler whose prefix cache holds the 32-token "sys" prompt, with requests waiting."""
    s = make_sched(num_blocks=200, block_size=4, prefix=prefix, max_num_batched_tokens=2048,
                   max_num_seqs=256, options={"schedule_policy": policy})
    d = Driver(s)
    add(s, 0, 40, out=1, segments=(("sys", 32), ("u0", 8)))
    d.step()  # runs to completion: its blocks are freed but stay cached
    uniques = [add(s, 100 + i, 40, out=3, segments=((f"x{i}", 40),)) for i in range(num_unique_first)]
    shared = add(s, 1, 40, out=3, segments=(("sys", 32), ("u1", 8)))
    return s, d, uniques, shared


def test_fcfs_keeps_arrival_order():
    s, d, (x,), y = _cached_prefix_sched("fcfs")
    out = d.step()
    assert list(out.num_scheduled_tokens) == [100, 1]
    assert out.num_scheduled_tokens[1] == 8  # the shared prefix was still a cache hit


def test_lpm_puts_the_longest_prefix_match_first():
    s, d, (x,), y = _cached_prefix_sched("lpm")
    out = d.step()
    assert list(out.num_scheduled_tokens) == [1, 100]
    assert out.num_scheduled_tokens == {1: 8, 100: 40}
    assert s.kv.prefix_hit_rate() == pytest.approx(32 / 120)  # peeks are not counted as queries


def test_lpm_falls_back_to_fcfs_with_many_waiting_or_without_prefix_cache():
    s, d, uniques, y = _cached_prefix_sched("lpm", num_unique_first=128)  # 129 waiting > 128
    assert list(d.step().num_scheduled_tokens)[0] == 100
    s, d, (x,), y = _cached_prefix_sched("lpm", prefix=False)
    assert list(d.step().num_scheduled_tokens) == [100, 1]


def test_options_validation_and_no_chunking():
    assert make_sched(max_num_batched_tokens=512).prefill_budget == 512
    assert make_sched(max_num_batched_tokens=512, options={"chunked_prefill_size": 128}).prefill_budget == 128
    with pytest.raises(ConfigError, match="exceeds engine.max_num_batched_tokens"):
        make_sched(max_num_batched_tokens=64, options={"chunked_prefill_size": 128})
    with pytest.raises(ConfigError, match="schedule_policy"):
        make_sched(options={"schedule_policy": "sjf"})
    with pytest.raises(ConfigError, match="unknown"):
        make_sched(options={"chunk_size": 8})
    with pytest.raises(ConfigError, match="chunked_prefill_size"):
        make_sched(options={"chunked_prefill_size": 0})
    s = make_sched(max_num_batched_tokens=64, options={"chunked_prefill_size": -1})
    assert add(s, 0, 65).reject_reason == REJECT_OVER_BUDGET
    add(s, 1, 40), add(s, 2, 40)
    assert Driver(s).step().num_scheduled_tokens == {1: 40}  # never split: the second waits


def test_end_to_end_invariants_and_no_mixed_iterations():
    specs = [RequestSpec(0.005 * i, 100 + 37 * (i % 11), 30 + 17 * (i % 7),
                         prompt_segments=(("sys", 64), (f"u{i}", 36 + 37 * (i % 11))))
             for i in range(80)]
    # an optimistic new_token_ratio over-admits, so decodes run out of KV and retract
    for options in ({"schedule_policy": "fcfs"}, {"schedule_policy": "lpm", "init_new_token_ratio": 0.05}):
        cfg = EngineConfig(policy="sglang", max_num_seqs=32, max_num_batched_tokens=512,
                           enable_prefix_caching=True, policy_options=options)
        setup = ReplicaSetup(engine=cfg, num_kv_blocks=150, max_model_len=4096,
                             cost_model=ConstantCostModel(0.01, 1e-5))
        out = simulate(OpenLoopWorkload(specs), setup)
        assert out.stop_reason == "drained" and (out.requests.status == "completed").all()
        assert set(out.iterations.kind) <= {"prefill", "decode"}
        assert out.iterations.num_tokens.max() <= 512
        assert out.requests.num_cached_tokens.sum() > 0  # the shared prefix hits
    assert out.stats["num_preemptions"] > 0


@pytest.mark.parametrize("case", CASES)
def test_decode_group_fast_path_matches_exact_loop(case):
    """Same records and iteration log with and without the decode group (under KV pressure)."""
    assert_fast_path_matches_exact_loop(POLICY, case)


def test_schedule_conservativeness_scales_the_new_token_ratio():
    """scheduler.py: init = min(0.7 × conservativeness, 1), min = min(init × 0.14, 1), decay over 600 steps."""
    s = make_sched(options={"schedule_conservativeness": 0.5})
    assert s.init_new_token_ratio == pytest.approx(0.35)
    assert s.min_new_token_ratio == pytest.approx(0.35 * 0.14)
    assert s.new_token_ratio_decay == pytest.approx((0.35 - 0.049) / 600)
    assert make_sched(options={"schedule_conservativeness": 2.0}).init_new_token_ratio == 1.0
    with pytest.raises(ConfigError, match="schedule_conservativeness"):
        make_sched(options={"schedule_conservativeness": 0})
