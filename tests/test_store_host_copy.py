"""Host copies and the synchronous put of the store hand-off (``kv_transfer.host_copy: connector``,
``kv_transfer.sync_put``; sim.engine.kv_handoff, docs/disaggregation.md "Host copies of the store connector").

Oracles, by hand:
- one idle request through the store: put = PCIe d2h + 5 host memcpys + NIC out (+ latency), get = NIC in
  (+ latency) + 3 host memcpys + PCIe h2d, each memcpy moving the rank's KV shard + the prompt's hidden
  states (hidden_size × 2 B a token) at ``host_memcpy_gbps``; the object in the store is the KV plus every
  rank's hidden states; the decode-side TTFT = prefill + put + get + the first decode step;
- sync_put: the prefill step that finished the prompt lasts its forward + the put, so the prefill-side
  TTFT grows by exactly the put and the decode-side TTFT does not change; the next prefill step starts
  exactly at the put's end;
- invariants under load (every request ends once, blocks free on both pools, store bytes back to 0),
  determinism; the default (both keys off) is the old store path exactly.
"""
from __future__ import annotations

import pytest

from sim.errors import ConfigError
from sim.runs.runner import run
from tests.pd_helpers import pd_config

LLAMA8B_KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2  # layers × KV heads × dims × (K, V) × bf16
LLAMA8B_HIDDEN_BYTES_PER_TOKEN = 4096 * 2  # hidden_size × 16-bit
STORE = {"capacity_gib": 16, "bandwidth_gbps": 25, "latency_us": 30}
MEMCPY = 10.0  # GB/s, a round number for the hand computation
CONNECTOR = {"via": "store", "host_copy": "connector", "host_memcpy_gbps": MEMCPY}
PCIE, NIC, LAT = 64e9, 25e9, 30e-6  # h100-sxm PCIe Gen5 x16 per direction; the STORE NIC and latency


def _run(kv: dict, **changes):
    return run(pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": kv}, **changes))


def _put_get(tokens: int = 4000, tp: int = 1) -> tuple[float, float, float]:
    kv = tokens * LLAMA8B_KV_BYTES_PER_TOKEN
    hidden = tokens * LLAMA8B_HIDDEN_BYTES_PER_TOKEN
    obj = kv + tp * hidden
    rank = kv / tp + hidden
    put = obj / (PCIE * tp) + 5 * rank / (MEMCPY * 1e9) + obj / NIC + LAT
    get = obj / NIC + LAT + 3 * rank / (MEMCPY * 1e9) + obj / (PCIE * tp)
    return put, get, obj


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.kv_transfer.*need via: store"):
        pd_config(**{"disaggregation.kv_transfer.host_copy": "connector"})
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.kv_transfer.*need via: store"):
        pd_config(**{"disaggregation.kv_transfer.sync_put": True})
    with pytest.raises(ConfigError, match=r"kv_transfer.*host_copy: connector needs host_memcpy_gbps"):
        pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {"via": "store", "host_copy": "connector"}})
    with pytest.raises(ConfigError, match=r"kv_transfer.*host_memcpy_gbps applies to host_copy: connector"):
        pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {"via": "store", "host_memcpy_gbps": 5}})
    with pytest.raises(ConfigError, match=r"kv_transfer.*store_staging: host"):
        pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {**CONNECTOR, "store_staging": "gpudirect"}})
    with pytest.raises(ConfigError, match=r"kv_transfer\.host_memcpy_gbps"):
        pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {**CONNECTOR, "host_memcpy_gbps": 0}})
    with pytest.raises(ConfigError, match=r"kv_transfer\.host_copy"):
        pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {"via": "store", "host_copy": "pinned"}})
    msg = str(pytest.raises(ConfigError, pd_config, **{"disaggregation.kv_transfer.sync_put": True}).value)
    assert len(msg.splitlines()) == 1


@pytest.mark.parametrize("tp", [1, 2])
def test_idle_request_through_the_store_with_host_copies(tp):
    res = _run(CONNECTOR, **{"parallel.tp": tp})
    r = res.requests.iloc[0]
    assert r["status"] == "completed" and r["num_output_tokens"] == 16
    kv = res.summary["disaggregation"]["kv_transfer"]
    st = kv["store"]
    put, get, obj = _put_get(tp=tp)
    assert st["put_time"]["max_ms"] == pytest.approx(put * 1e3, rel=1e-9)
    assert st["get_time"]["max_ms"] == pytest.approx(get * 1e3, rel=1e-9)
    assert st["peak_bytes"] == pytest.approx(obj, rel=1e-12)
    assert st["links"]["host_put"]["bytes_moved"] == int(5 * (4000 * LLAMA8B_KV_BYTES_PER_TOKEN / tp
                                                              + 4000 * LLAMA8B_HIDDEN_BYTES_PER_TOKEN))
    assert kv["host_copy"] == "connector" and st["host_memcpy_gbps"] == MEMCPY
    dec = res.iterations[res.iterations["replica"] == 1]
    side = res.summary["disaggregation"]["ttft_decode_side"]["mean_ms"]
    assert side == pytest.approx((r["ttft_s"] + put + get + dec["time_s"].iloc[0]) * 1e3, rel=1e-9)


def test_default_is_the_old_store_path_exactly():
    a = _run({"via": "store"}).summary
    b = _run({"via": "store", "host_copy": "none", "sync_put": False}).summary
    assert a == b
    assert "host_memcpy_gbps" not in a["disaggregation"]["kv_transfer"]["store"]


def test_sync_put_lengthens_the_prefill_step_by_the_put_exactly():
    async_ = _run(CONNECTOR)
    sync = _run({**CONNECTOR, "sync_put": True})
    put, _, _ = _put_get()
    ra, rs = async_.requests.iloc[0], sync.requests.iloc[0]
    # the first token is sampled after the put (V0: send before compute_logits/sample)
    assert rs["ttft_s"] == pytest.approx(ra["ttft_s"] + put, rel=1e-9)
    pre_a = async_.iterations[async_.iterations["replica"] == 0]
    pre_s = sync.iterations[sync.iterations["replica"] == 0]
    assert pre_s["time_s"].iloc[0] == pytest.approx(pre_a["time_s"].iloc[0] + put, rel=1e-9)
    # the put ends at the same instant either way, so the decode side sees nothing new
    side = lambda res: res.summary["disaggregation"]["ttft_decode_side"]["mean_ms"]  # noqa: E731
    assert side(sync) == pytest.approx(side(async_), rel=1e-9)
    assert sync.summary["disaggregation"]["kv_transfer"]["store"]["put_time"]["max_ms"] == pytest.approx(put * 1e3,
                                                                                                         rel=1e-9)


def test_sync_put_blocks_the_next_prefill_step_until_the_put_ends():
    """Two prompts 0.05 s apart on one prefill instance: the second arrives during the first's step; with
    sync_put its prefill starts exactly when the first's put ends, without it when the forward ends."""
    changes = {"workload.num_requests": 2, "workload.arrival": {"process": "constant", "rate": 20.0}}
    put, _, _ = _put_get()
    starts = {}
    for kv, name in ((CONNECTOR, "async"), ({**CONNECTOR, "sync_put": True}, "sync")):
        res = _run(kv, **changes)
        pre = res.iterations[res.iterations["replica"] == 0].reset_index(drop=True)
        assert len(pre) == 2 and (res.requests["status"] == "completed").all()
        second = res.requests.sort_values("arrival_s")["arrival_s"].iloc[1]
        assert pre["start_s"].iloc[0] < second < pre["start_s"].iloc[1]  # it waited for the first step
        starts[name] = (pre["start_s"].iloc[0], pre["start_s"].iloc[1], pre["time_s"].iloc[0])
    a0, a1, forward = starts["async"]
    s0, s1, _ = starts["sync"]
    assert a1 == pytest.approx(a0 + forward, rel=1e-12)  # without sync_put: as soon as the forward ends
    assert s0 == a0 and s1 == pytest.approx(s0 + forward + put, rel=1e-12)  # with it: when the put ends


def test_invariants_and_determinism_under_load():
    cfg = pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {**CONNECTOR, "sync_put": True},
                                       "disaggregation.prefill.replicas": 2, "disaggregation.decode.replicas": 2,
                                       "disaggregation.decode.engine": {"num_kv_blocks": 1500},
                                       "workload.num_requests": 150,
                                       "workload.arrival": {"process": "poisson", "rate": 25},
                                       "workload.input_tokens": {"dist": "uniform", "low": 300, "high": 3000},
                                       "workload.output_tokens": {"dist": "uniform", "low": 2, "high": 200}})
    a, b = run(cfg), run(cfg)  # the engine checks blocks, store bytes and link budgets at the end
    assert a.summary == b.summary
    req = a.requests
    assert len(req) == 150 and req["request_id"].is_unique and (req["status"] == "completed").all()
    st = a.summary["disaggregation"]["kv_transfer"]["store"]
    assert st["num_puts"] == st["num_gets"] == 150 and st["peak_bytes"] <= st["capacity_bytes"]


def test_sync_put_with_a_full_store_waits_for_room_after_the_step():
    """A put that finds no room does not block the step: it waits for room after it (module docstring)."""
    small = {"capacity_gib": 1.0, "bandwidth_gbps": 5, "latency_us": 10}
    cfg = pd_config(kv_store=small, **{"disaggregation.kv_transfer": {**CONNECTOR, "sync_put": True},
                                       "workload.num_requests": 6,
                                       "workload.arrival": {"process": "poisson", "rate": 50},
                                       "workload.input_tokens": {"dist": "fixed", "value": 3500},
                                       "workload.output_tokens.value": 8})
    res = run(cfg)
    st = res.summary["disaggregation"]["kv_transfer"]["store"]
    assert st["num_puts_waited_for_room"] > 0 and st["peak_bytes"] <= st["capacity_bytes"]
    assert (res.requests["status"] == "completed").all() and st["num_puts"] == 6


# ---------------------------------------------------------------- sync_get: the get blocks the decode step
SYNC_GET = {**CONNECTOR, "sync_get": True}


def test_sync_get_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.kv_transfer.*sync_get.*need via: store"):
        pd_config(**{"disaggregation.kv_transfer.sync_get": True})
    cfg = pd_config(kv_store=STORE, model="qwen1.5-moe-a2.7b", **{"disaggregation.kv_transfer": SYNC_GET,
                                                                   "disaggregation.decode.parallel": {"tp": 1, "dp": 2, "ep": 2}})
    msg = str(pytest.raises(ConfigError, run, cfg).value)
    assert "disaggregation.kv_transfer.sync_get" in msg and "dp = 1" in msg and len(msg.splitlines()) == 1


def test_sync_get_on_an_idle_decode_instance_changes_nothing():
    """Idle at admission, the step that runs the request starts at once: get then forward ends where the
    asynchronous get then the forward ends."""
    a, s = _run(CONNECTOR), _run(SYNC_GET)
    _, get, _ = _put_get()
    side = lambda res: res.summary["disaggregation"]["ttft_decode_side"]["mean_ms"]  # noqa: E731
    assert side(s) == pytest.approx(side(a), rel=1e-12)
    assert s.summary["disaggregation"]["kv_transfer"]["store"]["get_time"]["max_ms"] == pytest.approx(get * 1e3, rel=1e-9)
    dec_a, dec_s = (r.iterations[r.iterations["replica"] == 1] for r in (a, s))
    assert dec_s["time_s"].iloc[0] == pytest.approx(dec_a["time_s"].iloc[0] + get, rel=1e-9)  # get + forward
    assert s.summary["disaggregation"]["kv_transfer"]["sync_get"] is True


def test_sync_get_stalls_the_other_requests_decode_by_the_get_exactly():
    """Request B reaches the decode instance while A decodes there. With sync_get the step that first runs
    B lasts its forward plus B's get, so A's tokens pause for the get; without it A never pauses."""
    changes = {"workload.num_requests": 2, "workload.arrival": {"process": "constant", "rate": 3.0},
               "workload.output_tokens.value": 200}
    _, get, _ = _put_get()
    pauses = {}
    for kv, name in ((CONNECTOR, "async"), (SYNC_GET, "sync")):
        res = _run(kv, **changes)
        assert (res.requests["status"] == "completed").all()
        dec = res.iterations[res.iterations["replica"] == 1].reset_index(drop=True)
        first_pair = int((dec["num_seqs"] == 2).idxmax())  # the step that first runs B next to A
        assert dec["num_seqs"].iloc[first_pair - 1] == 1
        pauses[name] = dec["time_s"].iloc[first_pair] - dec["time_s"].iloc[first_pair + 1]
        # B's get ran inside that step: it cannot end before it
        st = res.summary["disaggregation"]["kv_transfer"]["store"]
        assert st["get_time"]["max_ms"] >= get * 1e3 * (1 - 1e-9)
        assert st["num_gets"] == 2
    # the next step runs the same two requests one token further: their forwards differ by one token of
    # attention context, nanoseconds against a get of ~0.2 s
    assert pauses["sync"] == pytest.approx(get, abs=1e-6)
    assert abs(pauses["async"]) < 1e-6


def test_sync_get_invariants_and_determinism_under_load():
    cfg = pd_config(kv_store=STORE, **{"disaggregation.kv_transfer": {**SYNC_GET, "sync_put": True},
                                       "disaggregation.prefill.replicas": 2, "disaggregation.decode.replicas": 2,
                                       "disaggregation.decode.engine": {"num_kv_blocks": 1500},
                                       "workload.num_requests": 150,
                                       "workload.arrival": {"process": "poisson", "rate": 25},
                                       "workload.input_tokens": {"dist": "uniform", "low": 300, "high": 3000},
                                       "workload.output_tokens": {"dist": "uniform", "low": 2, "high": 200}})
    a, b = run(cfg), run(cfg)  # the engine checks blocks, store bytes, pending gets and link budgets at the end
    assert a.summary == b.summary
    req = a.requests
    assert len(req) == 150 and req["request_id"].is_unique and (req["status"] == "completed").all()
    st = a.summary["disaggregation"]["kv_transfer"]["store"]
    assert st["num_puts"] == st["num_gets"] == 150 and st["peak_bytes"] <= st["capacity_bytes"]


def test_sync_get_at_the_horizon_leaves_nothing_held():
    """A run cut at max_duration_s with gets pending in decode schedulers ends cleanly (invariants hold)."""
    cfg = pd_config(kv_store=STORE, max_duration_s=1.5, **{"disaggregation.kv_transfer": SYNC_GET,
                                                           "workload.num_requests": 60,
                                                           "workload.arrival": {"process": "poisson", "rate": 40},
                                                           "workload.output_tokens.value": 100})
    res = run(cfg)
    assert len(res.requests) == 60 and res.requests["request_id"].is_unique
    assert (res.requests["status"] != "completed").any()
