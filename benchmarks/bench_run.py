"""Whole-run benchmark: `simctl run` of a Poisson chat workload, with the split of CPU time per stage.

Issue 10's workload: Llama-3.1-8B / H100-SXM, Poisson arrivals at 15 req/s, lognormal lengths
(input mean 600 std 300, output mean 200 std 100, capped at 4096 / 2048), vLLM policy. With
``--replicas 64`` the rate is multiplied by the replica count divided by 16 (light load: ~0.23
req/s per replica) so each replica idles most of the time — the case where a per-replica or
per-iteration cost shows.

Reported per run: simulated requests per CPU-second, µs per iteration and per request, peak RSS,
the CPU-time split simulate / metrics / outputs / report, and the RSS and its high-water mark after
each stage (``memory_after_stage``: what a stage keeps, and what it allocates on top). CPU time
(``time.process_time``) is what is measured, not wall time: the benchmark machine is shared, and wall
time there measures the neighbours. Stages are timed by wrapping the functions ``sim.runs.runner`` and ``sim.api`` call, so
the run is exactly ``simctl run``'s.

    python benchmarks/bench_run.py --requests 100000                 # one replica
    python benchmarks/bench_run.py --requests 100000 --replicas 64   # 64 lightly loaded replicas
    python benchmarks/bench_run.py --requests 20000 --profile        # cProfile, top 30 by tottime
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sim.api as api  # noqa: E402
import sim.runs.runner as runner  # noqa: E402
from sim.config import parse_experiment  # noqa: E402

STAGES = {"simulate": (runner, "simulate"), "metrics": (runner, "summarize"),
          "outputs": (runner, "save_result"), "report": (api, "write_report")}


def experiment(num_requests: int, replicas: int, rate: float) -> dict:
    """The benchmark experiment as a config dict."""
    return {
        "name": f"bench-{num_requests}-{replicas}", "seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm",
        "replicas": replicas,
        "engine": {"policy": "vllm", "max_num_seqs": 256, "max_num_batched_tokens": 8192, "max_model_len": 8192},
        "workload": {
            "num_requests": num_requests,
            "arrival": {"process": "poisson", "rate": rate},
            "input_tokens": {"dist": "lognormal", "mean": 600, "std": 300, "max": 4096},
            "output_tokens": {"dist": "lognormal", "mean": 200, "std": 100, "max": 2048},
        },
    }


def _rss_gib() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**30
    except OSError:
        return 0.0


def timed(stage: str, fn, acc: dict, rss: dict):
    """``fn`` wrapped to add its CPU time to ``acc[stage]`` and record the RSS and peak RSS after it."""
    def wrapper(*a, **k):
        t0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            acc[stage] = acc.get(stage, 0.0) + time.process_time() - t0
            rss[stage] = {"rss_gib": round(_rss_gib(), 3),
                          "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--rate", type=float, default=15.0, help="req/s for one replica (scaled by replicas/16)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()

    rate = args.rate if args.replicas == 1 else args.rate * args.replicas / 16
    cfg = parse_experiment(experiment(args.requests, args.replicas, rate))
    acc: dict[str, float] = {}
    rss: dict[str, dict] = {"start": {"rss_gib": round(_rss_gib(), 3)}}
    for stage, (mod, name) in STAGES.items():
        setattr(mod, name, timed(stage, getattr(mod, name), acc, rss))
    prof = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        res = api.run(cfg, out_dir=tmp, report=True)
        if prof:
            prof.disable()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n_it = len(res.iterations) if getattr(res, "iterations", None) is not None else 0
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = {"requests": args.requests, "replicas": args.replicas, "rate": rate, "iterations": n_it,
           "cpu_s": cpu, "wall_s": wall, "requests_per_cpu_s": args.requests / cpu,
           "us_per_iteration": 1e6 * acc.get("simulate", 0.0) / max(n_it, 1),
           "us_per_request": 1e6 * cpu / args.requests, "peak_rss_gib": rss_gib,
           "split_cpu_s": {k: round(acc.get(k, 0.0), 3) for k in STAGES},
           # memory after each stage: what it keeps (rss) and the high-water mark so far (peak)
           "memory_after_stage": rss,
           # iteration leaping (sim/engine/leap.py; SIMCTL_NO_LEAP=1 turns it off)
           "leapt_share": (res.meta.get("leap") or {}).get("leapt_share")}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
