"""vLLM V1 policy, driven through schedule()/update_from_output() without the event loop
(SEMANTICS.md §3), plus a check that the decode-group fast path equals the plain in-order loop."""
from __future__ import annotations

import numpy as np
import pytest

from policies.base import REJECT_KV_CAPACITY, REJECT_TOO_LONG
from policies.registry import get_policy, register_policy
from policies.vllm import VLLMV1Scheduler
from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import Request, RequestSpec, RequestStatus
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from workloads.base import OpenLoopWorkload


@register_policy("vllm-exact-loop")
class ExactLoopV1(VLLMV1Scheduler):
    """The same policy without the decode group: every step walks running requests one by one."""

    uses_decode_group = False


def make_sched(num_blocks=100, block_size=4, max_model_len=1000, prefix=False, **engine):
    engine.setdefault("max_num_batched_tokens", 64)
    cfg = EngineConfig(block_size=block_size, enable_prefix_caching=prefix, **engine)
    kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=prefix)
    return get_policy("vllm")(cfg, kv, max_model_len)


def add(sched, rid, prompt, out=5, segments=()):
    req = Request(rid, RequestSpec(0.0, prompt, out, prompt_segments=segments), 0.0)
    sched.add_request(req)
    return req


class Driver:
    """Steps a scheduler by hand: one call = schedule + update, returns {id: tokens} (grouped decodes included)."""

    def __init__(self, sched):
        self.sched, self.iteration, self.now = sched, 0, 0.0

    def step(self):
        out = self.sched.schedule(self.now)
        self.now += 1.0
        self.sched.update_from_output(out, self.iteration, self.now)
        self.iteration += 1
        self.sched.kv.check_invariants()
        return out


def tokens(out, sched):
    """Tokens per request id this step, including members of the decode group (1 each)."""
    d = dict(out.num_scheduled_tokens)
    if out.num_grouped:
        group_ids = set(sched.decode_group.members) if sched.decode_group else set()
        for rid in group_ids:
            d.setdefault(rid, 1)
    return d


def test_budget_split_running_first_then_waiting_chunked():
    s = make_sched(max_num_batched_tokens=64)
    a, b, c = add(s, 0, 40), add(s, 1, 40), add(s, 2, 40)
    d = Driver(s)
    out = d.step()
    assert out.num_scheduled_tokens == {0: 40, 1: 24}  # b is chunked by the budget
    out = d.step()
    # running first: a decodes (1), b finishes its prompt (16), then c gets what is left (47 > 40)
    assert tokens(out, s) == {0: 1, 1: 16, 2: 40}
    assert out.shape.num_tokens == 57 and out.shape.num_decode_seqs == 1
    s.dissolve_decode_group()  # decode-group members' counters are written back lazily
    assert a.num_output_tokens == 2 and b.num_output_tokens == 1 and c.num_output_tokens == 1


def test_long_prefill_token_threshold_caps_each_chunk():
    s = make_sched(max_num_batched_tokens=64, long_prefill_token_threshold=16)
    add(s, 0, 40), add(s, 1, 40)
    out = Driver(s).step()
    assert out.num_scheduled_tokens == {0: 16, 1: 16}


def test_max_num_seqs_caps_admission():
    s = make_sched(max_num_batched_tokens=1000, max_num_seqs=2)
    for i in range(4):
        add(s, i, 10)
    out = Driver(s).step()
    assert list(out.num_scheduled_tokens) == [0, 1]
    assert s.num_running == 2 and s.num_waiting == 2


def test_preemption_takes_the_last_running_and_blocks_admission_in_that_step():
    # 3 blocks of 4 tokens: a (4-token prompt) and b (4-token prompt) each need a new block to decode.
    s = make_sched(num_blocks=3, block_size=4, max_num_batched_tokens=64, max_model_len=12)
    _, b = add(s, 0, 4, out=5), add(s, 1, 4, out=5)
    c = add(s, 2, 8, out=1)
    d = Driver(s)
    out = d.step()
    assert tokens(out, s) == {0: 4, 1: 4}
    assert s.num_waiting == 1  # c did not fit: first failed allocation stopped admission
    out = d.step()
    # a takes the last free block; b needs one too -> b (the last running) is preempted, c is not admitted
    assert out.preempted_ids == (1,)
    assert tokens(out, s) == {0: 1}
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert list(s.waiting) == [b, c]  # preempted request goes to the front
    assert b.num_preemptions == 1


def test_running_request_preempts_itself_when_alone():
    s = make_sched(num_blocks=2, block_size=4, max_num_batched_tokens=64, max_model_len=9)
    a = add(s, 0, 4, out=5)
    d = Driver(s)
    for _ in range(5):
        d.step()
    assert a.status is RequestStatus.FINISHED  # 4 + 5 - 1 = 8 positions = 2 blocks: fits exactly


def test_prompt_waits_for_budget_without_chunked_prefill():
    s = make_sched(num_blocks=1000, max_num_batched_tokens=1000, max_model_len=1000, enable_chunked_prefill=False)
    add(s, 0, 600), add(s, 1, 600), add(s, 2, 100)
    out = Driver(s).step()
    # the second prompt does not fit the remaining 400 tokens: it waits, and admission stops there
    assert out.num_scheduled_tokens == {0: 600}


def test_no_chunking_requires_budget_at_least_max_model_len():
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        make_sched(max_num_batched_tokens=100, max_model_len=1000, enable_chunked_prefill=False)


def test_prefix_hit_counts_full_blocks_capped_and_skips_computation():
    s = make_sched(prefix=True, block_size=4, max_num_batched_tokens=1000)
    a = add(s, 0, 10, out=2, segments=(("sys", 8), ("a", 2)))
    d = Driver(s)
    d.step()
    b = add(s, 1, 10, out=2, segments=(("sys", 8), ("b", 2)))
    c = add(s, 2, 8, out=2, segments=(("sys", 8),))
    out = d.step()
    assert b.num_cached_tokens == 8 and out.num_scheduled_tokens[1] == 2
    assert c.num_cached_tokens == 4 and out.num_scheduled_tokens[2] == 4  # capped at num_tokens - 1
    assert a.num_cached_tokens == 0


def test_only_the_scheduled_chunk_gets_blocks():
    s = make_sched(num_blocks=100, block_size=4, max_num_batched_tokens=8)
    add(s, 0, 40)
    Driver(s).step()
    assert s.kv.num_used_blocks == 2


def test_rejects_requests_that_can_never_run():
    s = make_sched(num_blocks=4, block_size=4, max_model_len=100)
    too_long = add(s, 0, 90, out=20)
    too_big = add(s, 1, 20, out=2)
    ok = add(s, 2, 15, out=2)
    assert too_long.status is RequestStatus.REJECTED and too_long.reject_reason == REJECT_TOO_LONG
    assert too_big.status is RequestStatus.REJECTED and too_big.reject_reason == REJECT_KV_CAPACITY
    assert ok.status is RequestStatus.WAITING and s.num_waiting == 1


def test_recompute_after_preemption_resamples_nothing_already_emitted():
    s = make_sched(num_blocks=4, block_size=4, max_num_batched_tokens=64, max_model_len=16)
    a, b = add(s, 0, 6, out=8), add(s, 1, 6, out=8)
    d = Driver(s)
    for _ in range(40):
        d.step()
        if not s.has_unfinished():
            break
    assert a.status is RequestStatus.FINISHED and b.status is RequestStatus.FINISHED
    assert a.num_output_tokens == 8 and b.num_output_tokens == 8
    assert b.num_preemptions >= 1
    # emission runs cover exactly the 8 tokens of each request
    for r in (a, b):
        runs = np.array(r.runs).reshape(-1, 2)
        assert int((runs[:, 1] - runs[:, 0] + 1).sum()) == 8


# ----------------------------------------------------------------------------- fast path == exact loop
def _random_case(seed):
    rng = np.random.default_rng(seed)
    n = 150
    arrivals = np.cumsum(rng.exponential(1 / rng.uniform(5, 60), n))
    prefix = bool(rng.integers(2))
    specs = []
    for t in arrivals:
        p, o = int(rng.integers(1, 400)), int(rng.integers(1, 120))
        segs = ()
        if prefix and rng.random() < 0.7:
            shared = int(rng.integers(1, p + 1))
            segs = ((("sys", int(rng.integers(3))), shared),) + (((("u", float(t)), p - shared),) if p > shared else ())
        specs.append(RequestSpec(float(t), p, o, prompt_segments=segs))
    engine = dict(max_num_batched_tokens=int(rng.choice([64, 256, 2048])), max_num_seqs=int(rng.choice([4, 32, 256])),
                  enable_prefix_caching=prefix, long_prefill_token_threshold=int(rng.choice([0, 0, 100])),
                  block_size=int(rng.choice([4, 16])))
    if rng.random() < 0.4:  # swap preemption with a small host pool (falls back to recompute when full)
        engine.update(preemption_mode="swap", swap_space_gib=float(rng.choice([1e-6, 1e-5])))
    return specs, int(rng.integers(60, 300)), engine


@pytest.mark.parametrize("seed", range(16))
def test_decode_group_fast_path_matches_exact_in_order_loop(seed):
    specs, num_blocks, engine = _random_case(seed)
    results = []
    for policy in ("vllm", "vllm-exact-loop"):
        setup = ReplicaSetup(EngineConfig(policy=policy, **engine), num_blocks, 4096, ConstantCostModel(0.02, 1e-5),
                             kv_block_bytes=100, swap_bandwidth_bytes_per_s=1e6)
        results.append(simulate(OpenLoopWorkload(specs), setup, seed_seq=np.random.SeedSequence(0)))
    fast, exact = results
    assert fast.requests.equals(exact.requests)
    cols = [c for c in fast.iterations.columns if c not in ("num_waiting", "num_running")]
    assert fast.iterations[cols].equals(exact.iterations[cols])
    assert np.array_equal(fast.timeline.runs, exact.timeline.runs)
