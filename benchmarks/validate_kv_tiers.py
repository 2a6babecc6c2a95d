"""KV-cache tiers against published measurements (shared/data/published/measurements.json).

Each case recreates a published setup (model, GPUs, parallelism, tier sizes, workload) and runs it
twice — without and with the tier — through the whole engine; the table compares the simulated
change of TTFT and throughput with the measured one (docs/validation.md, "KV-cache tiers").

    python benchmarks/validate_kv_tiers.py            # the Markdown table (a few minutes)
    python benchmarks/validate_kv_tiers.py llmd       # only cases whose id contains "llmd"

LMCACHE-MOONCAKE-H800 runs its two rounds on two identical replicas that share the store: round 1
(cold) on the first, round 2 on the second — an engine restarted between rounds, as the published
"round 2 all hits from Mooncake Store" needs (the GPU prefix cache alone would otherwise serve it).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.registry import register_router  # noqa: E402
from policies.routers import Router  # noqa: E402
from sim.config import load_experiment, parse_experiment  # noqa: E402
from sim.deploy.deployment import build_deployment  # noqa: E402
from sim.engine.request import RequestSpec  # noqa: E402
from sim.engine.simulator import simulate  # noqa: E402
from sim.runs.runner import replica_setup, run  # noqa: E402
from workloads.base import OpenLoopWorkload  # noqa: E402

HERE = Path(__file__).resolve().parent / "kv_tiers"


def _pct(a: float, b: float) -> float:
    return 100.0 * (b - a) / a


def _yaml_case(name: str, *, no_offload: bool = False, no_store: bool = False) -> dict[str, Any]:
    """Run ``name``.yaml as written ("on") and without its tier ("base")."""
    cfg = load_experiment(HERE / f"{name}.yaml")
    on = run(cfg).summary
    data = cfg.to_dict()
    if no_offload:
        data["engine"] = {**data["engine"], "kv_offload": None}
    if no_store:
        data["kv_store"] = None
    base = run(parse_experiment(data, name, cfg.base_dir)).summary
    return {"base": base, "on": on}


def llmd(bound: str) -> dict[str, Any]:
    """LLMD-CPU-OFFLOAD-QWEN32B, memory- or compute-bound case."""
    r = _yaml_case(f"llmd_cpu_offload_{bound}_bound", no_offload=True)
    b, o = r["base"], r["on"]
    return {"ttft_base_s": b["mean_ttft_ms"] / 1e3, "ttft_on_s": o["mean_ttft_ms"] / 1e3,
            "tput_base": b["total_token_throughput"], "tput_on": o["total_token_throughput"],
            "e2e_base_s": b["mean_e2el_ms"] / 1e3, "e2e_on_s": o["mean_e2el_ms"] / 1e3,
            "hit_base": b["prefix_cache_hit_rate"], "hit_on": o["prefix_cache_hit_rate"]}


@register_router("validation-two-rounds")
class _TwoRounds(Router):
    """Round 1 (requests with session_id 0) to replica 0, round 2 (session_id 1) to replica 1."""

    def route(self, spec: RequestSpec, outstanding, kv_usage) -> int:
        return spec.session_id


def lmcache_mooncake() -> dict[str, Any]:
    """LMCACHE-MOONCAKE-H800: 50 × (9,728 in, 64 out) burst, cold vs all-hit from Mooncake Store."""
    cfg = load_experiment(HERE / "lmcache_mooncake_h800.yaml")
    dep = build_deployment(cfg)
    setup = replica_setup(dep, cfg.engine.num_kv_blocks, cfg.kv_store)
    gap_s = 3600.0  # round 2 starts long after round 1 ends
    specs = [RequestSpec(arrival_s=r * gap_s, num_prompt_tokens=9728, max_output_tokens=64, session_id=r,
                         prompt_segments=((("doc", i), 9712), (("question", r, i), 16)))
             for r in (0, 1) for i in range(50)]
    out = simulate(OpenLoopWorkload(specs), setup, num_replicas=2, router="validation-two-rounds",
                   seed_seq=np.random.SeedSequence(0))
    df = out.requests
    res = {}
    for r, key in ((0, "cold"), (1, "hit")):
        d = df[df["replica"] == r]
        ttft = (d["first_token_s"] - d["arrival_s"]).mean()
        span = d["finish_s"].max() - d["arrival_s"].min()
        res[key] = {"ttft_s": float(ttft), "req_s": len(d) / float(span)}
    res["store_hit_rate"] = out.stats["kv_tiers"]["tiers"]["store"]["hit_rate"]
    return {"ttft_base_s": res["cold"]["ttft_s"], "ttft_on_s": res["hit"]["ttft_s"],
            "tput_base": res["cold"]["req_s"], "tput_on": res["hit"]["req_s"], "store_hit_rate": res["store_hit_rate"]}


def agentic_store() -> dict[str, Any]:
    """VLLM-MOONCAKE-STORE-GB200 (synthetic agentic sessions, round-robin), scaled to one replica set."""
    r = _yaml_case("mooncake_store_gb200_agentic", no_store=True)
    b, o = r["base"], r["on"]
    return {"ttft_base_s": b["p50_ttft_ms"] / 1e3, "ttft_on_s": o["p50_ttft_ms"] / 1e3,
            "tput_base": b["total_token_throughput"], "tput_on": o["total_token_throughput"],
            "hit_base": b["prefix_cache_hit_rate"], "hit_on": o["prefix_cache_hit_rate"]}


def hicache() -> dict[str, Any]:
    """SGL-HICACHE (Novita coding agent): GPU-only radix cache vs HiCache host tier."""
    r = _yaml_case("sglang_hicache_coding_agent", no_offload=True)
    b, o = r["base"], r["on"]
    return {"ttft_base_s": b["mean_ttft_ms"] / 1e3, "ttft_on_s": o["mean_ttft_ms"] / 1e3,
            "tput_base": b["total_token_throughput"], "tput_on": o["total_token_throughput"],
            "hit_base": b["prefix_cache_hit_rate"], "hit_on": o["prefix_cache_hit_rate"]}


def hicache_3fs() -> dict[str, Any]:
    """SGL-HICACHE (Novita) second recreation: GPU-only radix cache vs HiCache host tier + a 3FS-like
    L3 store, on the SGLang blog's Qwen3-235B-A22B / 8 × H800 setup (sglang_hicache_3fs_h800.yaml)."""
    r = _yaml_case("sglang_hicache_3fs_h800", no_offload=True, no_store=True)
    b, o = r["base"], r["on"]
    return {"ttft_base_s": b["mean_ttft_ms"] / 1e3, "ttft_on_s": o["mean_ttft_ms"] / 1e3,
            "tput_base": b["total_token_throughput"], "tput_on": o["total_token_throughput"],
            "hit_base": b["prefix_cache_hit_rate"], "hit_on": o["prefix_cache_hit_rate"]}


# id -> (function, measured TTFT change %, measured throughput change %, which TTFT, which throughput)
CASES = {
    "LLMD-CPU-OFFLOAD-QWEN32B memory-bound": (lambda: llmd("memory"), -25.6, 21.1, "mean", "total tok/s"),
    "LLMD-CPU-OFFLOAD-QWEN32B compute-bound (control)": (lambda: llmd("compute"), 8.3, -1.5, "mean", "total tok/s"),
    "LMCACHE-MOONCAKE-H800": (lmcache_mooncake, -69.1, 191.0, "mean", "req/s"),
    "VLLM-MOONCAKE-STORE-GB200": (agentic_store, -97.8, 280.0, "p50", "total tok/s"),
    "SGL-HICACHE (Novita)": (hicache, -56.0, 100.0, "mean", "total tok/s"),
    "SGL-HICACHE (Novita) host + 3FS tiers, Qwen3-235B/H800": (hicache_3fs, -56.0, 100.0, "mean", "total tok/s"),
}


def main(filters: list[str]) -> None:
    print("| anchor | TTFT change: sim / measured | throughput change: sim / measured | cache hit base → tier (sim) |")
    print("|---|---|---|---|")
    for cid, (fn, m_ttft, m_tput, which_ttft, which_tput) in CASES.items():
        if filters and not any(f.lower() in cid.lower() for f in filters):
            continue
        r = fn()
        s_ttft = _pct(r["ttft_base_s"], r["ttft_on_s"])
        s_tput = _pct(r["tput_base"], r["tput_on"])
        hit = (f"{r['hit_base']:.2f} → {r['hit_on']:.2f}" if "hit_base" in r else f"store {r['store_hit_rate']:.2f}")
        print(f"| {cid} | {which_ttft} {r['ttft_base_s']:.3g} → {r['ttft_on_s']:.3g} s: **{s_ttft:+.0f}%** / {m_ttft:+.0f}% "
              f"| {which_tput} {r['tput_base']:.4g} → {r['tput_on']:.4g}: **{s_tput:+.0f}%** / {m_tput:+.0f}% | {hit} |",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
