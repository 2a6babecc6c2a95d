"""Speculative decoding (docs/speculative.md): the Leviathan et al. closed form as an oracle, the
scheduler's draft/verify/rollback bookkeeping, acceptance models, pricing and metrics.

Closed form (Leviathan, Kalman & Matias 2023, §3.1, Eq. 1 and Theorem 3.8): with k drafts and every
draft position accepted with probability α independently, the tokens a request gets per step (accepted
drafts + the token the verification samples) have mean ``(1 − α^(k+1)) / (1 − α)``; with a constant
target step T and each of the k draft passes costing c·T, the walltime speedup is
``(1 − α^(k+1)) / ((1 − α)(k·c + 1))``.
"""
from __future__ import annotations

import numpy as np
import pytest

from policies.registry import get_policy
from policies.speculative import Speculator, acceptance_rate_for_length, expected_acceptance_length
from sim.config import EngineConfig, parse_experiment
from sim.deploy.speculative_cost import SpeculativeCostModel
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.kv_cache import KVCacheManager
from sim.engine.request import Request, RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.errors import ConfigError
from sim.measure.metrics import request_token_times, spec_decode_metrics, summarize
from sim.speculative_config import SpeculativeConfig
from workloads.base import OpenLoopWorkload


def spec_cfg(k=3, **acc):
    return SpeculativeConfig(method="ngram", num_speculative_tokens=k, acceptance=acc or {"rate": 0.7})


def engine(spec=None, **kw):
    kw.setdefault("max_num_seqs", 64)
    kw.setdefault("max_num_batched_tokens", 4096)
    return EngineConfig(async_scheduling=False, speculative=spec, **kw)


def run(spec, specs, cost=None, blocks=4000, seed=0, **kw):
    su = ReplicaSetup(engine(spec, **kw), blocks, 1 << 16, cost or ConstantCostModel(0.01))
    return simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(seed))


def closed_form_tokens_per_step(alpha, k):
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def tokens_per_step_sd(alpha, k):
    """Standard deviation of a + 1: P(a = j) = α^j (1 − α) for j < k, P(a = k) = α^k."""
    p = np.array([alpha ** j * (1 - alpha) for j in range(k)] + [alpha ** k])
    v = np.arange(1, k + 2)
    mean = (p * v).sum()
    return float(np.sqrt((p * (v - mean) ** 2).sum()))


@pytest.mark.parametrize("alpha,k,c", [(0.7, 4, 0.0), (0.5, 2, 0.0), (0.8, 5, 0.05)])
def test_leviathan_closed_form(alpha, k, c):
    """Tokens per step and the TPOT speedup match the closed form within 4 standard errors."""
    step = 0.01
    n_out = 3001
    specs = [RequestSpec(0.0, 16, n_out) for _ in range(8)]
    base = run(None, specs)
    draft = ConstantCostModel(c * step) if c else None
    cost = SpeculativeCostModel(ConstantCostModel(step), draft, k)
    out = run(spec_cfg(k, rate=alpha), specs, cost=cost)
    assert (out.requests.status == "completed").all()
    assert (out.requests.num_output_tokens == n_out).all()
    m = spec_decode_metrics(out.stats["spec_decode"])
    expected = closed_form_tokens_per_step(alpha, k)
    se = tokens_per_step_sd(alpha, k) / np.sqrt(m["num_drafts"])
    assert abs(m["mean_acceptance_length"] - expected) < 4 * se
    # TPOT: one token per step without speculation; E tokens per (1 + k·c)-long step with it
    assert base.requests.tpot_s.to_numpy() == pytest.approx(step)
    speedup = base.requests.tpot_s.mean() / out.requests.tpot_s.mean()
    leviathan = expected / (k * c + 1)
    # 4 standard errors + the last steps of each request, whose drafts are clipped at its end
    assert speedup == pytest.approx(leviathan, rel=4 * se / expected + k / n_out)
    # per-position acceptance: position i accepted with probability α^i
    np.testing.assert_allclose(m["acceptance_rate_per_position"], alpha ** np.arange(1, k + 1), atol=0.02)


def test_per_position_rates_give_expected_length():
    rates = (0.9, 0.7, 0.5)
    out = run(spec_cfg(3, per_position=rates), [RequestSpec(0.0, 8, 2001) for _ in range(8)])
    m = spec_decode_metrics(out.stats["spec_decode"])
    assert m["mean_acceptance_length"] == pytest.approx(expected_acceptance_length(rates, 3), abs=0.03)
    np.testing.assert_allclose(m["acceptance_rate_per_position"], np.cumprod(rates), atol=0.02)
    assert m["draft_acceptance_rate"] == pytest.approx(m["num_accepted_tokens"] / m["num_draft_tokens"])


def test_acceptance_rate_for_length_inverts_the_geometric_sum():
    for k in (1, 3, 7):
        a = np.array([0.0, 0.3, 0.7, 0.95, 1.0])
        lengths = [expected_acceptance_length(np.full(k, x), k) for x in a]
        np.testing.assert_allclose(acceptance_rate_for_length(np.array(lengths), k), a, atol=1e-9)


def test_bursts_emit_every_token_once_and_metrics_see_them():
    specs = [RequestSpec(0.01 * i, 32, 50 + i) for i in range(20)]
    out = run(spec_cfg(4, rate=0.8), specs)
    req = out.requests
    assert (req.num_output_tokens == req.max_output_tokens).all()
    for row in range(len(req)):
        t = request_token_times(out.timeline, row)
        assert t.size == req.num_output_tokens[row]
        assert t[0] == pytest.approx(req.first_token_s[row]) and t[-1] == pytest.approx(req.finish_s[row])
        assert np.all(np.diff(t) >= 0)
    s = summarize(req, out.iterations, out.timeline)
    # ITL is vLLM's gap between streamed chunks (one chunk per step): about the step time, while TPOT
    # divides the decode time by the tokens, so it falls by the acceptance length
    assert s["mean_itl_ms"] == pytest.approx(10.0, rel=0.01)
    assert s["mean_tpot_ms"] < 10.0 / 2.0
    assert 0.0 < s["mean_fluidity_index"] <= 1.0


def test_same_seed_same_result_and_streams_differ_by_seed():
    specs = [RequestSpec(0.0, 16, 200) for _ in range(4)]
    a, b = run(spec_cfg(), specs, seed=3), run(spec_cfg(), specs, seed=3)
    c = run(spec_cfg(), specs, seed=4)
    assert a.requests.equals(b.requests)
    assert not a.requests.finish_s.equals(c.requests.finish_s)


def test_disable_by_batch_size_turns_speculation_off_in_large_batches():
    specs = [RequestSpec(0.0, 16, 100) for _ in range(8)]
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=3, acceptance={"rate": 1.0},
                             disable_by_batch_size=8)
    out = run(spec, specs)
    assert out.stats["spec_decode"]["num_drafts"] == 0
    assert out.requests.tpot_s.to_numpy() == pytest.approx(0.01)
    spec = spec.model_copy(update={"disable_by_batch_size": 9})
    assert run(spec, specs).stats["spec_decode"]["num_drafts"] > 0


# ---------------------------------------------------------------------- scheduler bookkeeping
def scheduler(k=3, rate=1.0, blocks=64, block_size=4, budget=4096, prefix=False):
    eng = engine(spec_cfg(k, rate=rate), max_num_batched_tokens=budget, block_size=block_size,
                 enable_prefix_caching=prefix)
    kv = KVCacheManager(blocks, block_size, prefix)
    sched = get_policy("vllm")(eng, kv, 4096)
    sched.enable_speculation(Speculator(eng.speculative, np.random.default_rng(0)))
    return sched


def test_decoding_request_verifies_k_drafts_with_lookahead_slots():
    sched = scheduler(k=3, rate=1.0)
    req = Request(0, RequestSpec(0.0, 10, 8), 0.0)
    sched.add_request(req)
    out = sched.schedule(0.0)  # prefill: no drafts before the first token
    assert out.num_scheduled_tokens == {0: 10} and not out.num_draft_tokens
    sched.update_from_output(out, 0, 1.0)
    assert req.num_output_tokens == 1
    out = sched.schedule(1.0)
    assert out.num_scheduled_tokens == {0: 4} and out.num_draft_tokens == {0: 3}
    assert out.shape.num_spec_tokens == 3 and out.shape.num_decode_seqs == 1 and out.shape.num_prefill_tokens == 0
    assert sched.kv.num_held_blocks(req) == 4  # 10 + 1 + 3 = 14 positions: 4 blocks of 4
    sched.update_from_output(out, 1, 2.0)
    # all accepted: 3 drafts + the sampled token emitted together
    assert req.num_output_tokens == 5 and req.num_computed_tokens == 14 and req.runs == [0, 1]
    assert req.bursts == [1, 3]
    out = sched.schedule(2.0)  # 3 tokens left: 2 drafts (the last token is the sampled one)
    assert out.num_draft_tokens == {0: 2}
    fin = sched.update_from_output(out, 2, 3.0)
    assert fin == [req] and req.num_output_tokens == 8 and req.bursts == [1, 3, 2, 2]
    assert sched.kv.num_free_blocks == sched.kv.num_blocks


def test_rejected_drafts_are_rolled_back():
    sched = scheduler(k=4, rate=0.0)
    req = Request(0, RequestSpec(0.0, 8, 20), 0.0)
    sched.add_request(req)
    sched.update_from_output(sched.schedule(0.0), 0, 1.0)
    out = sched.schedule(1.0)
    assert out.num_draft_tokens == {0: 4}
    sched.update_from_output(out, 1, 2.0)
    assert req.num_output_tokens == 2 and req.num_computed_tokens == 9 and req.bursts is None
    assert sched.kv.num_held_blocks(req) == 4  # slots for 8 + 1 + 4 stay with the request for reuse
    sched.kv.check_invariants()


def test_token_budget_counts_verified_tokens_and_cuts_drafts_first():
    sched = scheduler(k=3, budget=6)
    a, b = (Request(i, RequestSpec(0.0, 2, 10), 0.0) for i in range(2))
    for r in (a, b):
        sched.add_request(r)
    sched.update_from_output(sched.schedule(0.0), 0, 1.0)
    out = sched.schedule(1.0)
    assert out.num_scheduled_tokens == {0: 4, 1: 2} and out.num_draft_tokens == {0: 3, 1: 1}
    assert out.shape.num_tokens == 6


def test_lookahead_slots_are_not_hashed_into_the_prefix_cache():
    sched = scheduler(k=3, rate=0.0, prefix=True)
    req = Request(0, RequestSpec(0.0, 7, 10), 0.0)
    sched.add_request(req)
    sched.update_from_output(sched.schedule(0.0), 0, 1.0)  # 7 computed, 8 tokens
    sched.schedule(1.0)  # verifies 8th + 3 drafts: positions 0..10 held
    st = sched.kv._reqs[0]
    assert len(st.blocks) == 3 and st.num_registered == 2  # only the block the sampled token fills


def test_other_policies_refuse_speculation_clearly():
    eng = engine(spec_cfg())
    for name in ("sarathi", "orca", "vllm-v0", "static"):
        sched = get_policy(name)(eng.model_copy(update={"max_num_batched_tokens": 4096}),
                                 KVCacheManager(64, 16), 4096)
        with pytest.raises(ConfigError, match="engine.speculative: policy"):
            sched.enable_speculation(Speculator(eng.speculative, np.random.default_rng(0)))


# ---------------------------------------------------------------------- acceptance models
def test_trace_and_class_acceptance(tmp_path):
    trace = tmp_path / "acc.csv"
    trace.write_text("acceptance_length\n4.0\n1.0\n")
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=3,
                             acceptance={"trace": str(trace), "by_class": {"code": {"rate": 0.0}}})
    sp = Speculator(spec, np.random.default_rng(0))
    mk = lambda rid, cls="default": Request(rid, RequestSpec(0.0, 4, 10, class_name=cls), 0.0)
    np.testing.assert_allclose(sp.rates_of(mk(0)), 1.0, atol=1e-9)  # length 4 = all 3 accepted
    np.testing.assert_allclose(sp.rates_of(mk(1)), 0.0, atol=1e-9)
    np.testing.assert_allclose(sp.rates_of(mk(2)), 1.0, atol=1e-9)  # replayed in request order
    assert sp.rates_of(mk(3, "code")).tolist() == [0.0, 0.0, 0.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("foo\n1\n")
    with pytest.raises(Exception, match="acceptance_rate"):
        Speculator(spec.model_copy(update={"acceptance": spec.acceptance.model_copy(update={"trace": str(bad)})}),
                   np.random.default_rng(0))


def test_concentration_draws_a_rate_per_request_with_the_right_mean():
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=2,
                             acceptance={"rate": 0.6, "concentration": 10.0})
    sp = Speculator(spec, np.random.default_rng(1))
    rates = np.array([sp.rates_of(Request(i, RequestSpec(0.0, 4, 10), 0.0))[0] for i in range(4000)])
    assert rates.mean() == pytest.approx(0.6, abs=0.01)
    assert rates.var() == pytest.approx(0.6 * 0.4 / 11.0, rel=0.1)  # Beta variance m(1−m)/(κ+1)


@pytest.mark.parametrize("bad,match", [
    ({"method": "eagle3", "num_speculative_tokens": 3, "acceptance": {"per_position": [0.5, 0.5]}},
     "per_position has 2 rates"),
    ({"method": "draft_model", "num_speculative_tokens": 3, "acceptance": {"rate": 0.5}}, "needs 'draft_model'"),
    ({"method": "eagle3", "num_speculative_tokens": 3, "acceptance": {}}, "exactly one of"),
    ({"method": "eagle3", "num_speculative_tokens": 3, "acceptance": {"rate": 1.5}}, "less than or equal"),
    ({"method": "medusa", "num_speculative_tokens": 3, "acceptance": {"rate": 0.5}}, "method"),
])
def test_bad_speculative_config_names_the_key_and_file(bad, match):
    with pytest.raises(ConfigError, match=match) as exc:
        parse_experiment({"model": "m", "hardware": "h", "engine": {"speculative": bad}}, "x.yaml")
    assert str(exc.value).startswith("x.yaml: engine.speculative")


# ---------------------------------------------------------------------- pricing
def _roofline(model, hw="h100-sxm", **prec):
    from hwprofiles import load_profile
    from sim.config import ParallelConfig, PrecisionConfig
    from sim.deploy.models import load_model
    from sim.deploy.roofline import RooflineCostModel
    return RooflineCostModel(load_model(model), load_profile(hw), ParallelConfig(), PrecisionConfig(**prec))


def _verify_shape(num_seqs, num_drafts, ctx):
    from sim.deploy.step_cost import BatchShapeBuilder
    b = BatchShapeBuilder()
    for _ in range(num_seqs):
        b.add_verify(1 + num_drafts, ctx, num_drafts)
    return b.build()


def test_verification_is_a_chunk_on_its_context_with_logits_for_every_draft():
    """A (1+k)-token verification prices like a (1+k)-token chunk on the same context (GEMMs, KV,
    the same attention pairs — run by the decode kernels, as vLLM's backends treat ≤ 1 + k queries)
    plus k more LM-head rows per request: 2·hidden·vocab FLOPs each (Llama-3.1-8B: 2 · 4096 · 128256)."""
    from sim.deploy.roofline import uniform_batch_shape
    rf = _roofline("llama-3.1-8b")
    s, k, c = 8, 3, 1000
    v, chunk = rf.step(_verify_shape(s, k, c)), rf.step(uniform_batch_shape(s, 1 + k, c))
    assert v.flops - chunk.flops == pytest.approx(s * k * 2 * 4096 * 128256, rel=1e-12)
    assert v.prefill_time_s == 0.0  # verification is decode work, not prefill
    bd_v, bd_c = rf.breakdown(_verify_shape(s, k, c)), rf.breakdown(uniform_batch_shape(s, 1 + k, c))
    for op in bd_c:
        if op not in ("lm_head", "sampler", "attention"):
            assert bd_v[op] == pytest.approx(bd_c[op], rel=1e-12), op
    assert bd_v["lm_head"] > bd_c["lm_head"] and bd_v["sampler"] > bd_c["sampler"]
    # attention: the same (query, key) pairs, run by the decode kernels (no prefill-efficiency penalty)
    assert 0 < bd_v["attention"] <= bd_c["attention"]


def test_mla_verification_runs_in_the_absorbed_form():
    """DeepSeek-V2-Lite: each verification query attends in the latent form, 2·heads·(576 + 512)
    FLOPs per (query, key) pair per layer (kv_lora_rank 512 + rope 64; 16 heads; 27 layers)."""
    rf = _roofline("deepseek-v2-lite")
    s, k, c = 4, 2, 500
    q = 1 + k
    pairs = s * (q * c + q * (q + 1) // 2)
    _, flops, _ = rf._attention(_verify_shape(s, k, c))
    assert flops == pytest.approx(27 * pairs * 2 * 16 * (576 + 512), rel=1e-12)


def test_drafter_passes_sequential_vs_parallel():
    """k sequential passes cost k·c·T; parallel drafting (P-EAGLE) one pass."""
    from sim.deploy.step_cost import BatchShape
    t, c = ConstantCostModel(0.010), ConstantCostModel(0.001)
    shape = _verify_shape(4, 5, 100)
    seq = SpeculativeCostModel(t, c, 5).step(shape).time_s
    par = SpeculativeCostModel(t, c, 5, parallel_drafting=True).step(shape).time_s
    assert seq == pytest.approx(0.010 + 5 * 0.001) and par == pytest.approx(0.011)
    assert SpeculativeCostModel(t, None, 5).step(shape).time_s == pytest.approx(0.010)  # n-gram
    assert SpeculativeCostModel(t, c, 5).step(BatchShape()).time_s == 0.010  # nothing to draft from


def test_eagle_head_weights_and_kv_in_the_memory_plan():
    """Llama-3.1-8B EAGLE-3 head, 1 layer, 32k draft vocabulary, bf16: attention 4096·(4096 + 2·1024)
    + 4096·4096, MLP 3·4096·14336, 2 norms of 4096, its LM head 32000·4096 and a final norm (the token
    embedding is the target's) = 349,188,096 parameters; its KV adds one layer to every block
    (16 tokens · 2 · 8 heads · 128 · 2 bytes = 65,536 bytes)."""
    from sim.deploy.deployment import build_deployment
    base = {"name": "m", "model": "llama-3.1-8b", "hardware": "h100-sxm", "engine": {"max_model_len": 4096}}
    spec = {"method": "eagle3", "num_speculative_tokens": 3, "draft_vocab_size": 32000,
            "acceptance": {"rate": 0.7}}
    p0 = build_deployment(parse_experiment(base)).memory_plan
    p1 = build_deployment(parse_experiment({**base, "engine": {"max_model_len": 4096, "speculative": spec}})).memory_plan
    params = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336 + 2 * 4096 + 32000 * 4096 + 4096
    assert params == 349_188_096
    assert p1.weights_bytes - p0.weights_bytes == pytest.approx(2 * params)
    assert p1.block_bytes - p0.block_bytes == 65_536
    assert p1.num_kv_blocks == int((p0.kv_cache_bytes - 2 * params) // (p0.block_bytes + 65_536))
    ngram = {**spec, "method": "ngram"}
    p2 = build_deployment(parse_experiment({**base, "engine": {"max_model_len": 4096, "speculative": ngram}})).memory_plan
    assert p2.num_kv_blocks == p0.num_kv_blocks  # n-gram lookup holds no weights


def test_draft_model_method_prices_and_holds_the_whole_draft_model(tmp_path):
    from sim.deploy.deployment import build_deployment
    from sim.deploy.memory_plan import weights_bytes_per_gpu
    from sim.deploy.models import load_model
    from sim.config import ParallelConfig
    base = {"name": "m", "model": "llama-3.1-8b", "hardware": "h100-sxm", "engine": {"max_model_len": 4096}}
    spec = {"method": "draft_model", "draft_model": "llama-3.2-1b", "num_speculative_tokens": 4,
            "acceptance": {"rate": 0.6}}
    d0 = build_deployment(parse_experiment(base))
    d1 = build_deployment(parse_experiment({**base, "engine": {"max_model_len": 4096, "speculative": spec}}))
    draft_bytes = weights_bytes_per_gpu(load_model("llama-3.2-1b"), ParallelConfig(), "bf16")
    assert d1.memory_plan.weights_bytes - d0.memory_plan.weights_bytes == pytest.approx(draft_bytes)
    shape = _verify_shape(16, 4, 800)
    t0, t1 = d0.cost_model.step(shape).time_s, d1.cost_model.step(shape).time_s
    draft_rf = d1.cost_model.draft
    assert draft_rf.model.name.startswith("llama-3.2-1b") or draft_rf.model.num_layers == 16
    assert t1 > t0  # four sequential 1B passes on top of the 8B verification


def test_missing_acceptance_trace_names_the_experiment(tmp_path):
    from sim.deploy.deployment import build_deployment
    cfg = parse_experiment({"name": "exp", "model": "llama-3.1-8b", "hardware": "h100-sxm",
                            "engine": {"max_model_len": 4096, "speculative": {
                                "method": "ngram", "num_speculative_tokens": 3,
                                "acceptance": {"trace": "nope.csv"}}}}, "x.yaml", tmp_path)
    with pytest.raises(ConfigError, match="exp: engine.speculative.acceptance.trace: no such file"):
        build_deployment(cfg)


def test_draft_weight_formats_are_the_experiment_weight_formats():
    import typing
    from sim.config import Dtype
    field = SpeculativeConfig.model_fields["draft_weights"].annotation
    assert set(typing.get_args(typing.get_args(field)[0])) == set(typing.get_args(Dtype))


def test_mtp_with_dp_attention_and_expert_parallelism_runs_in_lockstep():
    """DeepSeek-V2-Lite, 2 DP attention ranks × EP 2: an MTP run completes (KV invariants hold at the
    end of the run), every rank verifies drafts, and a group step costs the target's group step plus
    the drafter's passes."""
    from sim.deploy.deployment import build_deployment
    from sim.runs.runner import run as run_experiment
    d = {"name": "dp", "model": "deepseek-v2-lite", "hardware": "h100-sxm", "parallel": {"tp": 1, "dp": 2, "ep": 2},
         "engine": {"max_model_len": 4096, "speculative": {"method": "mtp", "num_speculative_tokens": 2,
                                                           "acceptance": {"per_position": [0.8, 0.6]}}},
         "workload": {"num_requests": 40, "arrival": {"process": "poisson", "rate": 10.0},
                      "input_tokens": {"dist": "fixed", "value": 256}, "output_tokens": {"dist": "fixed", "value": 64}}}
    res = run_experiment(parse_experiment(d))
    assert res.summary["completed"] == 40
    assert res.summary["spec_decode"]["mean_acceptance_length"] == pytest.approx(1 + 0.8 + 0.48, abs=0.1)
    assert set(res.requests["replica"]) == {0, 1}
    cm = build_deployment(parse_experiment(d)).cost_model
    shapes = [_verify_shape(4, 2, 300), _verify_shape(2, 2, 300)]
    t_spec, costs = cm.group_step(shapes)
    t_target, _ = cm.target.group_step(shapes)
    assert t_spec > t_target and len(costs) == 2


def test_sglang_decode_batches_verify_drafts():
    """SGLang's decode batch carries the drafts too (its prefill batches never do)."""
    specs = [RequestSpec(0.005 * i, 64, 80) for i in range(24)]
    base = run(None, specs, policy="sglang")
    out = run(spec_cfg(3, rate=0.7), specs, policy="sglang")
    assert (out.requests.num_output_tokens == 80).all()
    m = spec_decode_metrics(out.stats["spec_decode"])
    assert m["mean_acceptance_length"] == pytest.approx(closed_form_tokens_per_step(0.7, 3), abs=0.1)
    assert out.requests.tpot_s.mean() < 0.6 * base.requests.tpot_s.mean()
    assert not (out.iterations["kind"] == "mixed").any()


def test_saved_result_keeps_bursts_and_the_report_shows_spec_metrics(tmp_path):
    from sim.report import write_report
    from sim.runs.runner import run as run_experiment
    from sim.runs.storage import load_result
    d = {"name": "r", "model": "llama-3.2-1b", "hardware": "h100-sxm",
         "engine": {"max_model_len": 2048, "speculative": {"method": "eagle3", "num_speculative_tokens": 3,
                                                           "acceptance": {"rate": 0.7}}},
         "workload": {"num_requests": 20, "arrival": {"process": "poisson", "rate": 4.0},
                      "input_tokens": {"dist": "fixed", "value": 64}, "output_tokens": {"dist": "fixed", "value": 32}}}
    res = run_experiment(parse_experiment(d), out_dir=tmp_path)
    back = load_result(tmp_path)
    np.testing.assert_array_equal(back.timeline.bursts, res.timeline.bursts)
    assert request_token_times(back.timeline, 3).size == 32
    md = (tmp_path / "report.md").read_text() if write_report(tmp_path) else ""
    assert "mean acceptance length" in md and "Speculative decoding" in md


def test_draft_model_must_share_the_tokenizer():
    from sim.deploy.deployment import build_deployment
    cfg = parse_experiment({"name": "m", "model": "llama-3.1-8b", "hardware": "h100-sxm", "engine": {
        "max_model_len": 4096, "speculative": {"method": "draft_model", "draft_model": "qwen2.5-0.5b",
                                               "num_speculative_tokens": 3, "acceptance": {"rate": 0.5}}}})
    with pytest.raises(ConfigError, match="share the target's tokenizer"):
        build_deployment(cfg)
