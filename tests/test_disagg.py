"""Disaggregated prefill/decode: config errors, closed-form oracles, capacity bound, invariants.

Oracles (docs/disaggregation.md#oracles):
- one request on an idle system: TTFT(PD) = TTFT of the prefill pool alone; E2E(PD) = TTFT + KV bytes /
  link bandwidth + latency + the decode steps on the decode instance;
- the KV bytes are the hand-computed per-token KV of the model times the prompt;
- throughput of a saturated P:D deployment ≤ min(P × prefill capacity, D × decode capacity) from the cost
  model, and close to it (the binding pool is busy), at several ratios.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from sim.config import parse_experiment
from sim.deploy.step_cost import BatchShapeBuilder
from sim.errors import ConfigError
from sim.runs.disagg import pd_setup
from sim.runs.runner import replica_setup, run
from tests.pd_helpers import PD_BASE, edited, pd_config

# Llama-3.1-8B: 32 layers × 8 KV heads × 128 dims × (K and V) × 2 bytes (bf16) per token
LLAMA8B_KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2

BASE = edited(PD_BASE, {"disaggregation.decode.hardware": "h200"})


def _cfg(**changes):
    return pd_config(BASE, **changes)


def test_errors_name_key_and_file():
    with pytest.raises(ConfigError, match=r"^pd\.yaml: disaggregation\.prefill\.replica: unknown key"):
        _cfg(**{"disaggregation.prefill.replica": 2})
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.kv_transfer\.bandwidth_gbps"):
        _cfg(**{"disaggregation.kv_transfer.bandwidth_gbps": -1})
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.decode\.engine\.max_num_seqs"):
        _cfg(**{"disaggregation.decode.engine": {"max_num_seqs": 0}})
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.router.*least-kv"):
        _cfg(**{"disaggregation.router": {"decode": "least-kv"}})
    with pytest.raises(ConfigError, match="disaggregation.kv_transfer.link"):
        _cfg(**{"disaggregation.kv_transfer.link": "carrier-pigeon"})
    assert len(str(pytest.raises(ConfigError, _cfg, **{"disaggregation.prefill.replica": 2}).value).splitlines()) == 1


def test_pool_overrides_merge_over_top_level():
    cfg = _cfg(**{"disaggregation.decode.engine": {"max_num_seqs": 32}, "disaggregation.prefill.parallel": {"tp": 2}})
    pd = pd_setup(cfg, replica_setup)
    assert pd.configs["decode"].engine.max_num_seqs == 32
    assert pd.configs["decode"].engine.max_num_batched_tokens == 8192  # inherited
    assert pd.configs["prefill"].parallel.tp == 2 and pd.configs["decode"].parallel.tp == 1
    assert pd.deployments["decode"].hardware.name == "h200"
    assert pd.num_gpus == 3
    # without the section the resolved config has no such key (older results stay identical)
    plain = copy.deepcopy(BASE)
    del plain["disaggregation"]
    assert "disaggregation" not in parse_experiment(plain, "x.yaml").to_dict()
    # the resolved config parses back to an equal one
    again = parse_experiment(cfg.to_dict(), "y.yaml")
    assert again.disaggregation == cfg.disaggregation


@pytest.mark.parametrize("layerwise", [False, True])
def test_idle_single_request_oracles(layerwise):
    cfg = _cfg(**{"disaggregation.kv_transfer.layerwise": layerwise})
    res = run(cfg)
    r = res.requests.iloc[0]
    assert r["status"] == "completed" and r["num_output_tokens"] == 16
    # the prefill pool alone (aggregated, one replica, same settings) gives the same TTFT
    alone = copy.deepcopy(BASE)
    del alone["disaggregation"]
    alone["workload"]["output_tokens"] = {"dist": "fixed", "value": 1}
    ref = run(parse_experiment(alone, "alone.yaml")).requests.iloc[0]
    assert r["ttft_s"] == pytest.approx(ref["ttft_s"], rel=1e-12)
    # transfer = bytes / bandwidth + latency, bytes hand-computed
    kv_bytes = 4000 * LLAMA8B_KV_BYTES_PER_TOKEN
    bw = 100e9 / 8
    pdreq = res.summary["disaggregation"]["kv_transfer"]
    assert pdreq["mean_kv_bytes"] == kv_bytes
    it = res.iterations
    dec = it[it["replica"] == 1]
    assert len(dec) == 15 and (dec["num_seqs"] == 1).all()  # 15 decode steps on the decode instance
    if not layerwise:
        transfer = kv_bytes / bw + 20e-6
        assert pdreq["transfer_time"]["max_ms"] == pytest.approx(transfer * 1e3, rel=1e-9)
        assert r["e2el_s"] == pytest.approx(r["ttft_s"] + transfer + dec["time_s"].sum(), rel=1e-9)
        # the TTFT a client sees through a PD proxy: prefill + transfer + the first decode step
        side = res.summary["disaggregation"]["ttft_decode_side"]["mean_ms"]
        assert side == pytest.approx((r["ttft_s"] + transfer + dec["time_s"].iloc[0]) * 1e3, rel=1e-9)
    else:
        # streamed during the (single) prefill step: only the last layer's bytes remain after it
        tail = kv_bytes / 32 / bw + 20e-6
        prefill_step = it[it["replica"] == 0]["time_s"].iloc[0]
        assert prefill_step > kv_bytes / bw  # the link keeps up with the compute in this setup
        assert r["e2el_s"] == pytest.approx(r["ttft_s"] + tail + dec["time_s"].sum(), rel=1e-9)
    # the second token's gap includes the transfer (ITL from the timeline)


def _capacity_bounds(pd, prompt: int, out: int):
    """Upper bounds (req/s per instance) from the cost model: prefill at full token budget, decode at
    the largest batch at the shortest context (both the fastest per-request rates each pool can reach)."""
    pre_cm = pd.deployments["prefill"].cost_model
    budget = pd.configs["prefill"].engine.max_num_batched_tokens
    per_step = budget // prompt
    b = BatchShapeBuilder()
    for _ in range(per_step):
        b.add(prompt, 0)
    prefill_rps = per_step / pre_cm.step(b.build()).time_s
    dec_cm = pd.deployments["decode"].cost_model
    seqs = pd.configs["decode"].engine.max_num_seqs
    b = BatchShapeBuilder()
    for _ in range(seqs):
        b.add(1, prompt + 1)
    decode_rps = seqs / dec_cm.step(b.build()).time_s / (out - 1)
    return prefill_rps, decode_rps


@pytest.mark.parametrize("num_prefill,num_decode,prompt,out", [(1, 1, 2000, 64), (2, 1, 2000, 64), (1, 2, 2000, 64),
                                                                (2, 1, 500, 400), (4, 1, 500, 400)])
def test_throughput_bounded_by_the_binding_pool(num_prefill, num_decode, prompt, out):
    cfg = _cfg(**{"disaggregation.prefill.replicas": num_prefill, "disaggregation.decode.replicas": num_decode,
                  "disaggregation.decode.hardware": "h100-sxm",
                  "disaggregation.kv_transfer.bandwidth_gbps": 3200,
                  "workload.num_requests": 600, "workload.input_tokens.value": prompt,
                  "workload.output_tokens.value": out})
    res = run(cfg)
    pd = pd_setup(cfg, replica_setup)
    p_rps, d_rps = _capacity_bounds(pd, prompt, out)
    bound = min(num_prefill * p_rps, num_decode * d_rps)
    s = res.summary
    assert s["completed"] == 600
    # the steady-state rate: requests finished between 20% and 80% of the run
    fin = np.sort(res.requests["finish_s"].to_numpy())
    steady = (0.6 * len(fin)) / (fin[int(0.8 * len(fin))] - fin[int(0.2 * len(fin))])
    assert steady <= bound * 1.02
    assert steady >= 0.6 * bound
    binding = "prefill" if num_prefill * p_rps < num_decode * d_rps else "decode"
    assert s["disaggregation"]["bottleneck"] == binding


def test_invariants_and_determinism_under_contention():
    """Many concurrent transfers on few links, decode KV short: requests wait for decode blocks, the
    links never exceed their bandwidth, every request ends once and all blocks are free at the end."""
    cfg = _cfg(**{"disaggregation.prefill.replicas": 3, "disaggregation.decode.replicas": 2,
                  "disaggregation.decode.engine": {"num_kv_blocks": 1200},
                  "disaggregation.kv_transfer.bandwidth_gbps": 25,
                  "workload.num_requests": 300, "workload.arrival": {"process": "poisson", "rate": 30},
                  "workload.input_tokens": {"dist": "uniform", "low": 500, "high": 4000},
                  "workload.output_tokens": {"dist": "uniform", "low": 2, "high": 300}})
    a = run(cfg)
    b = run(cfg)
    assert a.summary == b.summary
    req = a.requests
    assert len(req) == 300 and req["request_id"].is_unique and (req["status"] == "completed").all()
    kv = a.summary["disaggregation"]["kv_transfer"]
    assert kv["kv_wait_time"]["max_ms"] > 0  # decode KV was a real constraint
    assert kv["max_concurrent_per_link"] > 1  # links were shared
    # transfers never beat bytes / bandwidth (the engine's invariant, checked here from the outside)
    assert kv["transfer_time"]["p50_ms"] >= 500 * LLAMA8B_KV_BYTES_PER_TOKEN / (25e9 / 8) * 1e3 * 0.999


def test_horizon_releases_blocks_on_both_pools():
    cfg = _cfg(**{"max_duration_s": 1.0, "disaggregation.kv_transfer.bandwidth_gbps": 1,
                  "workload.num_requests": 50, "workload.arrival": {"process": "poisson", "rate": 40},
                  "workload.output_tokens.value": 200})
    res = run(cfg)  # the engine raises if blocks or transfers are left over
    s = res.summary
    assert s["completed"] + s.get("unfinished", 0) + s.get("rejected", 0) <= 50
    assert res.meta["backlog"]["unfinished"] > 0


def test_prefill_only_requests_end_on_the_prefill_pool():
    res = run(_cfg(**{"workload.num_requests": 3, "workload.output_tokens.value": 1}))
    assert (res.requests["status"] == "completed").all()
    assert res.summary["disaggregation"]["kv_transfer"]["num_transfers"] == 0


def test_capacity_search_finds_the_cheapest_prefill_decode_pair(tmp_path):
    """search: {target: replicas}: the (P, D) found passes at the target rate, one fewer prefill or one
    fewer decode replica fails, and capacity.json carries the search detail."""
    from sim.plan.capacity import capacity_search

    cfg = _cfg(**{"disaggregation.decode.hardware": "h100-sxm",
                  "workload.num_requests": 200, "workload.arrival": {"process": "poisson", "rate": 12},
                  "workload.input_tokens.value": 3000, "workload.output_tokens.value": 64,
                  "slo": {"ttft_ms": {"p99": 600}, "tpot_ms": {"p99": 30}},
                  "search": {"target": "replicas", "target_rate": 12, "max_replicas": 6, "max_probes": 30,
                             "num_requests": 200}})
    res = capacity_search(cfg, out_dir=tmp_path).to_dict()
    detail = res["disaggregation"]
    p, d = detail["prefill_replicas"], detail["decode_replicas"]
    assert p is not None and d is not None and res["min_replicas"] == p + d
    probes = {(pr["summary"]["prefill_replicas"], pr["summary"]["decode_replicas"]): pr for pr in res["probes"]}
    assert probes[(p, d)]["passed"]
    for fewer in ((p - 1, d), (p, d - 1)):
        if min(fewer) >= 1 and fewer in probes:
            assert not probes[fewer]["passed"]
    assert detail["rate_matching_start"]["prefill"] >= 1
