"""The KV-tier examples run end to end: experiments/agentic_offload_routing.yaml (routers on
multi-turn agentic traffic with a CPU tier) and experiments/cpu_offload_pays_sweep.yaml (when CPU
offload pays). Assertions are orderings and invariants, not pinned digits."""
from __future__ import annotations

import json
from pathlib import Path

from sim.config import load_experiment
from sim.plan.sweep import sweep

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _summaries(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("points/*/summary.json"))}


def _imbalance(s: dict) -> float:
    """max / mean requests completed per replica (1 = perfectly balanced)."""
    done = [r["completed"] for r in s["per_replica"].values()]
    return max(done) / (sum(done) / len(done))


def test_agentic_offload_routing_example(tmp_path):
    cfg = load_experiment(EXPERIMENTS / "agentic_offload_routing.yaml")
    table = sweep(cfg, tmp_path, jobs=2)
    assert (table["status"] == "ok").all() and len(table) == 4
    s = {k.removeprefix("router="): v for k, v in _summaries(tmp_path).items()}
    for name, summ in s.items():
        # every request ends exactly once: completed + rejected + unfinished = issued
        assert summ["completed"] + summ["rejected"] + summ["unfinished"] == summ["num_requests"], name
        tiers = summ["kv_tiers"]
        assert 0.0 <= tiers["gpu_hit_rate"] <= tiers["total_hit_rate"] <= 1.0
        assert tiers["tiers"]["cpu"]["blocks_held_end"] <= tiers["tiers"]["cpu"]["capacity_blocks"]
    rr = s["round-robin"]
    # cache-aware routing keeps a session's history where its KV is: more GPU hits than round-robin
    for name in ("precise-prefix", "consistent-hash-bounded", "session-affinity"):
        assert s[name]["kv_tiers"]["gpu_hit_rate"] > rr["kv_tiers"]["gpu_hit_rate"], name
        assert s[name]["mean_ttft_ms"] < rr["mean_ttft_ms"], name
    # round-robin balances requests best; the bounded routers stay within their load bound
    assert _imbalance(rr) < 1.1
    assert _imbalance(s["consistent-hash-bounded"]) < 1.25 + 0.1


def test_cpu_offload_pays_sweep_example(tmp_path):
    cfg = load_experiment(EXPERIMENTS / "cpu_offload_pays_sweep.yaml")
    table = sweep(cfg, tmp_path, jobs=2)
    assert (table["status"] == "ok").all() and len(table) == 8
    s = _summaries(tmp_path)

    def pt(ctx: int, groups: int, offload: bool) -> dict:
        key = f"prefix_tokens={ctx}__num_groups={groups}__kv_offload=" + ("_cpu_gib_32_" if offload else "None")
        return s[key]

    # everything fits in HBM (2K × 4 groups = 8K tokens ≪ 32K): the CPU tier changes nothing
    assert pt(2000, 4, True)["mean_ttft_ms"] == pt(2000, 4, False)["mean_ttft_ms"]
    assert pt(2000, 4, True)["kv_tiers"]["tiers"]["cpu"]["hit_tokens"] == 0
    # long, reused prefixes that outgrow the pool: offload lifts the hit rate and cuts TTFT the most
    on, off = pt(16000, 4, True), pt(16000, 4, False)
    assert on["prefix_cache_hit_rate"] > off["prefix_cache_hit_rate"] + 0.3
    gain = {(c, g): pt(c, g, False)["mean_ttft_ms"] / pt(c, g, True)["mean_ttft_ms"]
            for c in (2000, 16000) for g in (4, 64)}
    assert gain[(16000, 4)] == max(gain.values()) and gain[(16000, 4)] > 1.5
    assert all(v >= 0.99 for v in gain.values())  # offload never makes TTFT worse here
