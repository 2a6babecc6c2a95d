"""KV hand-off paths of disaggregated serving (sim.engine.kv_handoff; docs/disaggregation.md, "KV hand-off paths").

Oracles:
- NIC sharing: two concurrent transfers out of one NIC to two decode peers each get half of it (the
  per-pair links would give each the whole); max-min rates by hand for a three-flow pattern;
- per-copy cost: an idle transfer takes bytes / bandwidth + copies × overhead + latency, with copies =
  ceil(prompt / page) × layers × 2 (K and V) counted by hand;
- store hand-off: an idle request's put = PCIe d2h + NIC out (+ latency), its get = NIC in (+ latency) +
  PCIe h2d, each bytes / bandwidth, and the decode-side TTFT = prefill + put + get + the first decode step;
- invariants (every request ends once, blocks free on both pools, store bytes back to 0), determinism.
"""
from __future__ import annotations

import pytest
import simpy

from sim.engine.kv_handoff import NICFabric, num_kv_copies
from sim.errors import ConfigError
from sim.runs.runner import run
from tests.pd_helpers import PD_BASE, pd_config

LLAMA8B_KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2  # layers × KV heads × dims × (K, V) × bf16

BASE = PD_BASE
_cfg = pd_config


STORE = {"capacity_gib": 16, "bandwidth_gbps": 25, "latency_us": 30}


# ---------------------------------------------------------------- config errors
def test_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"kv_store: with disaggregation.*kv_transfer.via: store"):
        run(_cfg(kv_store=STORE))
    with pytest.raises(ConfigError, match=r"kv_transfer.via: store needs the top-level kv_store"):
        run(_cfg(**{"disaggregation.kv_transfer.via": "store"}))
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.kv_transfer.*layerwise"):
        _cfg(**{"disaggregation.kv_transfer.via": "store", "disaggregation.kv_transfer.layerwise": True})
    with pytest.raises(ConfigError, match=r"pd\.yaml: disaggregation\.kv_transfer.*store_staging"):
        _cfg(**{"disaggregation.kv_transfer.store_staging": "host"})
    with pytest.raises(ConfigError, match=r"disaggregation\.kv_transfer\.copy_overhead_us"):
        _cfg(**{"disaggregation.kv_transfer.copy_overhead_us": -1})
    with pytest.raises(ConfigError, match=r"disaggregation\.kv_transfer\.sharing"):
        _cfg(**{"disaggregation.kv_transfer.sharing": "bus"})
    msg = str(pytest.raises(ConfigError, run, _cfg(kv_store=STORE)).value)
    assert len(msg.splitlines()) == 1


# ---------------------------------------------------------------- NIC sharing
def _fabric_run(flows, bw=100.0):
    """Start ``flows`` [(id, src, dst, bytes)] at t = 0 on one fabric; their completion times."""
    env = simpy.Environment()
    fab = NICFabric(env, bw)
    done = {}
    for fid, src, dst, nbytes in flows:
        fab.start(fid, src, dst, nbytes, lambda f=fid: done.__setitem__(f, env.now))
    rates = fab.rates()
    env.run()
    fab.check()
    return done, rates, fab


def test_two_transfers_out_of_one_nic_each_get_half():
    done, rates, fab = _fabric_run([(1, 0, 10, 1000.0), (2, 0, 11, 1000.0)])
    assert rates == {1: pytest.approx(50.0), 2: pytest.approx(50.0)}
    assert done[1] == pytest.approx(20.0) and done[2] == pytest.approx(20.0)  # 2000 B through a 100 B/s port
    out = {p["link"]: p for p in fab.links()}
    assert out["0.out"]["max_concurrent"] == 2 and out["0.out"]["busy_s"] == pytest.approx(20.0)
    assert out["0.out"]["bytes"] == pytest.approx(2000.0)


def test_max_min_rates_by_hand():
    """A→X, A→Y, B→Y: A's egress splits 50/50; Y's ingress gives B what A→Y leaves (50); all 50. Then
    A→X alone on A's egress speeds up when A→Y ends."""
    done, rates, _ = _fabric_run([(1, 0, 10, 500.0), (2, 0, 11, 500.0), (3, 1, 11, 2000.0)])
    assert rates == {1: pytest.approx(50.0), 2: pytest.approx(50.0), 3: pytest.approx(50.0)}
    assert done[1] == pytest.approx(10.0) and done[2] == pytest.approx(10.0)
    assert done[3] == pytest.approx(10.0 + 1500.0 / 100.0)  # alone at full rate after t = 10
    # unequal pressure: three flows into one ingress, one of whose senders also sends elsewhere
    _, rates, _ = _fabric_run([(1, 0, 10, 1e3), (2, 1, 10, 1e3), (3, 2, 10, 1e3), (4, 0, 11, 1e3)])
    # ingress 10 is the bottleneck (100/3 each); A's egress gives flow 4 the remaining 100 - 100/3
    assert rates[1] == pytest.approx(100 / 3) and rates[4] == pytest.approx(200 / 3)
    assert sum(r for f, r in rates.items() if f != 4) == pytest.approx(100.0)


def test_nic_sharing_in_a_run_slows_fan_out():
    """One prefill instance feeding two decode instances at once: with sharing: nic both transfers
    share its NIC; with pairs each has a link of its own."""
    over = {"disaggregation.decode.replicas": 2, "disaggregation.router": {"decode": "round-robin"},
            "workload.num_requests": 2, "disaggregation.prefill.engine": {"max_num_batched_tokens": 8192}}
    pair = run(_cfg(**over)).summary["disaggregation"]["kv_transfer"]
    nic = run(_cfg(**over, **{"disaggregation.kv_transfer.sharing": "nic"})).summary["disaggregation"]["kv_transfer"]
    one = 4000 * LLAMA8B_KV_BYTES_PER_TOKEN / (100e9 / 8)
    assert pair["transfer_time"]["max_ms"] == pytest.approx((one + 20e-6) * 1e3, rel=1e-9)
    assert nic["transfer_time"]["max_ms"] == pytest.approx((2 * one + 20e-6) * 1e3, rel=1e-9)
    assert nic["sharing"] == "nic" and nic["max_concurrent_per_link"] == 2


# ---------------------------------------------------------------- per-copy cost
def test_copy_count_by_hand():
    assert num_kv_copies(7500, 16, 64) == 469 * 64  # 30 016 copies: Llama-3.1-8B, 16-token pages
    assert num_kv_copies(7500, 128, 64) == 59 * 64
    assert num_kv_copies(16, 16, 2) == 2


@pytest.mark.parametrize("block_size", [16, 128])
def test_per_copy_cost_adds_copies_times_overhead(block_size):
    c_us = 3.0
    res = run(_cfg(**{"engine.block_size": block_size, "disaggregation.kv_transfer.copy_overhead_us": c_us}))
    kv = res.summary["disaggregation"]["kv_transfer"]
    copies = -(-4000 // block_size) * 32 * 2
    expected = 4000 * LLAMA8B_KV_BYTES_PER_TOKEN / (100e9 / 8) + copies * c_us * 1e-6 + 20e-6
    assert kv["transfer_time"]["max_ms"] == pytest.approx(expected * 1e3, rel=1e-9)
    assert kv["copy_overhead_us"] == c_us


def test_per_copy_cost_off_by_default_is_the_plain_link():
    a = run(_cfg()).summary
    b = run(_cfg(**{"disaggregation.kv_transfer.copy_overhead_us": 0.0})).summary
    assert a["disaggregation"]["kv_transfer"]["transfer_time"] == b["disaggregation"]["kv_transfer"]["transfer_time"]


def test_per_copy_cost_layerwise_leaves_only_the_last_layer_after_the_prefill():
    c_us = 1.0
    res = run(_cfg(**{"disaggregation.kv_transfer.layerwise": True, "disaggregation.kv_transfer.copy_overhead_us": c_us}))
    base = run(_cfg(**{"disaggregation.kv_transfer.layerwise": True}))
    r, r0 = res.requests.iloc[0], base.requests.iloc[0]
    copies_last_layer = -(-4000 // 16) * 2
    assert r["e2el_s"] - r0["e2el_s"] == pytest.approx(copies_last_layer * c_us * 1e-6, rel=1e-6)


# ---------------------------------------------------------------- via: store
@pytest.mark.parametrize("staging", ["host", "gpudirect"])
def test_store_handoff_idle_oracle(staging):
    cfg = _cfg(kv_store=STORE, **{"disaggregation.kv_transfer": {"via": "store", "store_staging": staging}})
    res = run(cfg)
    r = res.requests.iloc[0]
    assert r["status"] == "completed" and r["num_output_tokens"] == 16
    kv = res.summary["disaggregation"]["kv_transfer"]
    nbytes = 4000 * LLAMA8B_KV_BYTES_PER_TOKEN
    pcie = 64e9 if staging == "host" else float("inf")  # h100-sxm: PCIe Gen5 x16 per direction
    nic, lat = 25e9, 30e-6
    put = nbytes / pcie + nbytes / nic + lat
    get = nbytes / nic + lat + nbytes / pcie
    st = kv["store"]
    assert st["put_time"]["max_ms"] == pytest.approx(put * 1e3, rel=1e-9)
    assert st["get_time"]["max_ms"] == pytest.approx(get * 1e3, rel=1e-9)
    assert kv["transfer_time"]["max_ms"] == pytest.approx(get * 1e3, rel=1e-9)
    assert kv["kv_hold_after_prefill"]["max_ms"] == pytest.approx(put * 1e3, rel=1e-9)
    assert st["num_puts"] == st["num_gets"] == 1 and st["peak_bytes"] == nbytes
    it = res.iterations
    dec = it[it["replica"] == 1]
    side = res.summary["disaggregation"]["ttft_decode_side"]["mean_ms"]
    assert side == pytest.approx((r["ttft_s"] + put + get + dec["time_s"].iloc[0]) * 1e3, rel=1e-9)
    assert r["e2el_s"] == pytest.approx(r["ttft_s"] + put + get + dec["time_s"].sum(), rel=1e-9)


def test_store_puts_of_one_instance_queue_on_its_nic():
    """Two prompts prefilled in one step and put at once: the second put waits for the first on the
    prefill instance's NIC (first come first served)."""
    cfg = _cfg(kv_store=STORE, **{"disaggregation.kv_transfer": {"via": "store", "store_staging": "gpudirect"},
                                  "workload.num_requests": 2, "workload.input_tokens.value": 2000})
    st = run(cfg).summary["disaggregation"]["kv_transfer"]["store"]
    one = 2000 * LLAMA8B_KV_BYTES_PER_TOKEN / 25e9
    assert st["put_time"]["max_ms"] == pytest.approx((2 * one + 30e-6) * 1e3, rel=1e-9)
    assert st["put_time"]["p50_ms"] == pytest.approx((1.5 * one + 30e-6) * 1e3, rel=1e-9)


def test_store_capacity_holds_puts_and_rejects_what_never_fits():
    one_gib_tokens = 8000  # 8000 tokens × 128 KiB = 0.98 GiB per object
    small = {"capacity_gib": 1.0, "bandwidth_gbps": 5, "latency_us": 10}
    cfg = _cfg(kv_store=small, **{"disaggregation.kv_transfer.via": "store",
                                  "workload.num_requests": 6, "workload.arrival": {"process": "poisson", "rate": 50},
                                  "workload.input_tokens": {"dist": "fixed", "value": one_gib_tokens // 2 + 500},
                                  "workload.output_tokens.value": 8})
    res = run(cfg)  # the engine checks the store's invariants at the end
    st = res.summary["disaggregation"]["kv_transfer"]["store"]
    assert st["peak_bytes"] <= st["capacity_bytes"]
    assert st["num_puts_waited_for_room"] > 0  # two objects do not fit at once
    assert (res.requests["status"] == "completed").all()
    too_big = _cfg(kv_store={"capacity_gib": 0.1, "bandwidth_gbps": 5},
                   **{"disaggregation.kv_transfer.via": "store"})
    res = run(too_big)
    assert res.requests.iloc[0]["status"] == "rejected"


def test_store_invariants_and_determinism_under_load():
    cfg = _cfg(kv_store=STORE, **{"disaggregation.kv_transfer.via": "store",
                                  "disaggregation.prefill.replicas": 2, "disaggregation.decode.replicas": 2,
                                  "disaggregation.decode.engine": {"num_kv_blocks": 1500},
                                  "workload.num_requests": 150, "workload.arrival": {"process": "poisson", "rate": 25},
                                  "workload.input_tokens": {"dist": "uniform", "low": 300, "high": 3000},
                                  "workload.output_tokens": {"dist": "uniform", "low": 2, "high": 200}})
    a, b = run(cfg), run(cfg)
    assert a.summary == b.summary
    req = a.requests
    assert len(req) == 150 and req["request_id"].is_unique and (req["status"] == "completed").all()
    st = a.summary["disaggregation"]["kv_transfer"]["store"]
    assert st["num_puts"] == st["num_gets"] == 150


def test_store_horizon_releases_everything():
    cfg = _cfg(kv_store={"capacity_gib": 16, "bandwidth_gbps": 0.5},
               **{"disaggregation.kv_transfer.via": "store", "max_duration_s": 1.0, "workload.num_requests": 40,
                  "workload.arrival": {"process": "poisson", "rate": 40}, "workload.output_tokens.value": 100})
    res = run(cfg)  # raises if blocks, store bytes or transfers are left over
    assert res.meta["backlog"]["unfinished"] > 0


def test_nic_sharing_invariants_under_load():
    cfg = _cfg(**{"disaggregation.kv_transfer.sharing": "nic", "disaggregation.kv_transfer.bandwidth_gbps": 25,
                  "disaggregation.prefill.replicas": 3, "disaggregation.decode.replicas": 2,
                  "workload.num_requests": 150, "workload.arrival": {"process": "poisson", "rate": 30},
                  "workload.input_tokens": {"dist": "uniform", "low": 500, "high": 4000},
                  "workload.output_tokens": {"dist": "uniform", "low": 2, "high": 100}})
    a, b = run(cfg), run(cfg)
    assert a.summary == b.summary
    assert (a.requests["status"] == "completed").all()
    kv = a.summary["disaggregation"]["kv_transfer"]
    assert kv["transfer_time"]["p50_ms"] >= 500 * LLAMA8B_KV_BYTES_PER_TOKEN / (25e9 / 8) * 1e3 * 0.999


def test_run_report_names_the_store_path():
    from sim.report.markdown import render_markdown
    from sim.report.run_report import build_run_document

    res = run(_cfg(kv_store=STORE, **{"disaggregation.kv_transfer.via": "store", "workload.num_requests": 3}))
    md, _ = render_markdown(build_run_document(res), "assets")
    assert "hand-offs of" in md and "through the KV store (host staging; put" in md
    md, _ = render_markdown(build_run_document(run(_cfg(**{"disaggregation.kv_transfer.sharing": "nic"}))), "assets")
    assert "Gb/s NIC ports (at most 1 sharing one NIC port" in md


def test_store_handoff_unit_fifo_room_and_ready_times():
    """StoreHandoff alone: a put waits (FIFO) until a release makes room; a get starts no earlier than
    its put's end; bytes return to 0; over-capacity objects never fit."""
    from sim.engine.kv_handoff import StoreHandoff, StoreHandoffSpec

    st = StoreHandoff(StoreHandoffSpec(capacity_bytes=100.0, nic_bytes_per_s=10.0, latency_s=1.0, staging="host",
                                       prefill_pcie_bytes_per_s=20.0, decode_pcie_bytes_per_s=40.0))
    started = []
    st.request_put(60.0, 0.0, lambda t: started.append(("a", t)))
    st.request_put(60.0, 0.0, lambda t: started.append(("b", t)))  # does not fit next to a
    st.request_put(30.0, 0.0, lambda t: started.append(("c", t)))  # would fit, but FIFO behind b
    assert started == [("a", 0.0)] and st.held_bytes == 60.0
    end_a = st.put(1, 0, 60.0, 0.0)
    assert end_a == pytest.approx(60 / 20 + 60 / 10 + 1.0)  # PCIe d2h, then NIC + latency
    get_end = st.get(1, 5, 60.0, 2.0)  # asked before the put ended: starts at the put's end
    assert get_end == pytest.approx(end_a + 60 / 10 + 1.0 + 60 / 40)
    st.release(60.0, get_end)
    assert started == [("a", 0.0), ("b", get_end), ("c", get_end)] and st.held_bytes == 90.0
    assert st.fits(100.0) and not st.fits(100.5)
    for rid, n in ((2, 60.0), (3, 30.0)):
        st.get(rid, 5, n, st.put(rid, 0, n, get_end))
        st.release(n, 1e3)
    st.check()
    assert st.peak_bytes == 90.0 and st.num_waited == 2
