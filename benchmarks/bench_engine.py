"""Engine speed benchmarks.

**Issue 10's matrix (default).** A whole ``simctl run`` (simulate, metrics, outputs, report) of the
issue's workload — Llama-3.1-8B / H100-SXM, Poisson 15 req/s, lognormal lengths 600/200 — for 100k
and 1M requests on 1 replica and on 64 lightly loaded replicas (``benchmarks/bench_run.py``, one
subprocess per case so each peak RSS is its own). Reported per case: simulated requests per CPU-s,
µs per iteration, µs per request, peak RSS and the CPU split simulate / metrics / outputs / report,
against the issue's targets (1M: ≤ 50 s and ≤ 2 GiB; 100k: ≤ 5 s; 64 replicas: ≤ 2× one replica).

    python benchmarks/bench_engine.py                       # 100k and 1M × 1 and 64 replicas (minutes)
    python benchmarks/bench_engine.py --quick               # 10k and 100k × 1 and 64 replicas
    python benchmarks/bench_engine.py --sizes 100000 --replicas 1 --json out.json

**Engine only (``--engine-only``, issue 3).** 100k requests of a Poisson chat workload through
``simulate()`` alone. Target: ≤ 15 s of wall time on a 2-core machine. Also shows that the work per
iteration does not grow with the number of tokens generated: a long decode-only run is timed in windows.

    python benchmarks/bench_engine.py --engine-only                 # both cost models, 100k requests
    python benchmarks/bench_engine.py --engine-only --requests 20000 --cost constant
    python benchmarks/bench_engine.py --engine-only --profile       # cProfile the constant-cost run

Workload (engine only): Poisson arrivals at ``--rate`` req/s (default 20: a steady, unsaturated server
with a mean batch of ~45 sequences under the roofline model), ShareGPT lengths (vllm bench serve
filter, mean 393 in / 234 out, shipped in ``workloads/datasets``). Only ``simulate()`` is timed
(tables included); building the request list is not. Engine: vLLM V1 defaults for an 80 GB GPU
(8192-token budget, max_num_seqs 1024 here as V1 on H100), block size 16, KV blocks from simctl's
memory plan.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.config import EngineConfig  # noqa: E402
from sim.deploy.step_cost import BatchShape, ConstantCostModel, StepCost  # noqa: E402
from sim.engine.request import RequestSpec  # noqa: E402
from sim.engine.simulator import ReplicaSetup, simulate  # noqa: E402
from workloads.base import OpenLoopWorkload  # noqa: E402

# Llama-3.1-8B bf16 on one H100-80GB at gpu_memory_utilization 0.9: ~ 55 GiB of KV at 128 KiB/token
# = ~ 28k blocks of 16 tokens. Used only when the memory plan cannot be built.
FALLBACK_NUM_KV_BLOCKS = 28_000
# Constant model: 7 ms fixed per step + 40 µs per token (roughly an 8B model's decode/prefill on H100).
CONSTANT_COST = ConstantCostModel(step_time_s=0.007, per_token_s=4e-5)


def chat_workload(num_requests: int, rate: float, seed: int) -> OpenLoopWorkload:
    """Poisson arrivals with ShareGPT (input, output) pairs sampled jointly."""
    from workloads.datasets import load_dataset

    rng = np.random.default_rng(seed)
    inputs, outputs = load_dataset("sharegpt")
    rows = rng.integers(len(inputs), size=num_requests)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, num_requests))
    specs = [RequestSpec(float(t), int(inputs[r]), int(outputs[r])) for t, r in zip(arrivals, rows)]
    return OpenLoopWorkload(specs, {"kind": "poisson-sharegpt", "num_requests": num_requests, "rate": rate})


def roofline_setup(engine: EngineConfig) -> tuple[ReplicaSetup, str] | None:
    """Llama-3.1-8B on H100-SXM through simctl's deployment builder, or None if unavailable."""
    try:
        from sim.api import build_deployment
        from sim.config import parse_experiment

        cfg = parse_experiment({"model": "llama-3.1-8b", "hardware": "h100-sxm",
                                "engine": engine.model_dump(exclude_none=True)})
        dep = build_deployment(cfg)
    except Exception as exc:  # the roofline may not exist yet in a partial checkout
        print(f"  (roofline cost model unavailable: {type(exc).__name__}: {exc})")
        return None
    setup = ReplicaSetup(dep.engine, int(dep.memory_plan.num_kv_blocks), dep.max_model_len, dep.cost_model,
                         kv_block_bytes=int(dep.memory_plan.block_bytes))
    return setup, type(dep.cost_model).__name__


class WindowTimer:
    """Wraps a cost model; records wall time every ``window`` iterations (one ``step`` = one iteration)."""

    def __init__(self, inner, window: int) -> None:
        self.inner, self.window = inner, window
        self.calls = 0
        self.tokens = 0
        self.marks: list[tuple[int, int, float]] = []  # (iterations, tokens so far, wall)

    def step(self, shape: BatchShape) -> StepCost:
        self.calls += 1
        self.tokens += shape.num_decode_seqs
        if self.calls % self.window == 0:
            self.marks.append((self.calls, self.tokens, time.perf_counter()))
        return self.inner.step(shape)


def run_chat(setup: ReplicaSetup, label: str, args) -> dict:
    wl = chat_workload(args.requests, args.rate, args.seed)
    t0 = time.perf_counter()
    out = simulate(wl, setup, seed_seq=np.random.SeedSequence(args.seed))
    wall = time.perf_counter() - t0
    req = out.requests
    done = req[req.status == "completed"]
    n_it = len(out.iterations)
    res = {
        "cost model": label, "requests": len(req), "completed": len(done), "wall_s": wall,
        "sim_s": out.end_s, "iterations": n_it, "us_per_iteration": 1e6 * wall / max(n_it, 1),
        "output_tokens": int(req.num_output_tokens.sum()), "requests_per_wall_s": len(req) / wall,
        "mean_batch": float(out.iterations.num_seqs.mean()) if n_it else 0.0,
        "mean_ttft_ms": 1e3 * float(done.ttft_s.mean()), "p99_ttft_ms": 1e3 * float(done.ttft_s.quantile(0.99)),
        "mean_tpot_ms": 1e3 * float(done.tpot_s.mean()), "preemptions": out.stats["num_preemptions"],
    }
    ok = "PASS" if wall <= 15.0 else "FAIL"
    print(f"[{label}] {res['requests']} requests ({res['completed']} completed), {n_it} iterations, "
          f"{res['output_tokens']:,} output tokens, {res['sim_s']:.0f} s simulated")
    print(f"    wall {wall:.2f} s  ({res['requests_per_wall_s']:,.0f} req/s, {res['us_per_iteration']:.1f} µs/iteration, "
          f"mean batch {res['mean_batch']:.0f})  target ≤ 15 s: {ok}")
    print(f"    mean TTFT {res['mean_ttft_ms']:.1f} ms, p99 TTFT {res['p99_ttft_ms']:.1f} ms, "
          f"mean TPOT {res['mean_tpot_ms']:.2f} ms, preemptions {res['preemptions']}")
    return res


def per_iteration_scaling(setup_cost, num_blocks: int) -> None:
    """256 requests decoding 16k tokens each: wall time per iteration, window by window."""
    timer = WindowTimer(setup_cost, window=2000)
    engine = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=1024)
    setup = ReplicaSetup(engine, num_blocks, 32_768, timer)
    specs = [RequestSpec(0.0, 128, 16_000) for _ in range(256)]
    simulate(OpenLoopWorkload(specs), setup, seed_seq=np.random.SeedSequence(0))
    print("  per-iteration wall time vs tokens generated (256 sequences decoding 16k tokens each):")
    prev = None
    for calls, tokens, wall in timer.marks:
        if prev is not None:
            us = 1e6 * (wall - prev[2]) / (calls - prev[0])
            print(f"    iterations {prev[0]:>6}-{calls:<6} tokens generated so far {tokens:>10,}  {us:6.1f} µs/iteration")
        prev = (calls, tokens, wall)


# issue 10's targets: whole-run wall seconds on 2 cores by request count, and peak RSS
TARGET_WALL_S = {100_000: 5.0, 1_000_000: 50.0}
TARGET_RSS_GIB = 2.0
TARGET_REPLICA_RATIO = 2.0  # 64 light replicas vs one replica, same request count
BENCH_RUN = Path(__file__).resolve().parent / "bench_run.py"


def run_case(num_requests: int, replicas: int) -> dict:
    """One ``bench_run.py`` case in its own process (its own peak RSS); its JSON numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "case.json"
        subprocess.run([sys.executable, str(BENCH_RUN), "--requests", str(num_requests), "--replicas", str(replicas),
                        "--json", str(out)], check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def matrix_table(cases: list[dict]) -> str:
    """The cases as a Markdown table, with the issue's targets where it sets one."""
    one = {c["requests"]: c["cpu_s"] for c in cases if c["replicas"] == 1}
    lines = ["| requests | replicas | iterations | CPU-s | req / CPU-s | µs / iteration | µs / request | peak RSS GiB "
             "| simulate | metrics | outputs | report | target |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in cases:
        sp = c["split_cpu_s"]
        targets = []
        if c["requests"] in TARGET_WALL_S and c["replicas"] == 1:
            targets.append(f"≤ {TARGET_WALL_S[c['requests']]:g} s")
        if c["replicas"] > 1 and c["requests"] in one:
            targets.append(f"{c['cpu_s'] / one[c['requests']]:.1f}× one replica (≤ {TARGET_REPLICA_RATIO:g}×)")
        targets.append(f"RSS ≤ {TARGET_RSS_GIB:g} GiB")
        lines.append(f"| {c['requests']:,} | {c['replicas']} | {c['iterations']:,} | {c['cpu_s']:.1f} "
                     f"| {c['requests_per_cpu_s']:,.0f} | {c['us_per_iteration']:.1f} | {c['us_per_request']:.0f} "
                     f"| {c['peak_rss_gib']:.2f} | {sp['simulate']:.1f} | {sp['metrics']:.1f} | {sp['outputs']:.1f} "
                     f"| {sp['report']:.1f} | {'; '.join(targets)} |")
    return "\n".join(lines)


def run_matrix(sizes: list[int], replica_counts: list[int], json_path: str | None) -> list[dict]:
    """Every (size, replicas) case once, smallest first; prints the table and writes ``json_path``."""
    cases = []
    for n in sorted(sizes):
        for r in sorted(replica_counts):
            print(f"  {n:,} requests × {r} replica(s) ...", flush=True)
            cases.append(run_case(n, r))
            if json_path:  # after each case: a long matrix keeps what it has measured
                Path(json_path).write_text(json.dumps(cases, indent=1))
    print(matrix_table(cases))
    return cases


def engine_only(args) -> None:
    """The issue-3 measurement: ``simulate()`` alone, both cost models, and the per-iteration check."""
    engine = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=1024, block_size=16)
    roof = roofline_setup(engine) if args.cost in ("both", "roofline") else None
    num_blocks = roof[0].num_kv_blocks if roof else FALLBACK_NUM_KV_BLOCKS
    runs = []
    if args.cost in ("both", "constant") or roof is None:
        runs.append((ReplicaSetup(engine, num_blocks, 131_072, CONSTANT_COST), "ConstantCostModel"))
    if roof is not None:
        runs.append(roof)
    for setup, label in runs:
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            run_chat(setup, label, args)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        else:
            run_chat(setup, label, args)
    if not args.no_scaling:
        per_iteration_scaling(runs[-1][0].cost_model, max(num_blocks, 256 * 1010))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="matrix: request counts (default 100k 1M)")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 64], help="matrix: replica counts")
    ap.add_argument("--quick", action="store_true", help="matrix: 10k and 100k requests instead of 100k and 1M")
    ap.add_argument("--json", help="matrix: write the cases' numbers to this file")
    ap.add_argument("--engine-only", action="store_true", help="the issue-3 simulate()-only benchmark")
    ap.add_argument("--requests", type=int, default=100_000, help="engine only")
    ap.add_argument("--rate", type=float, default=20.0, help="engine only")
    ap.add_argument("--seed", type=int, default=0, help="engine only")
    ap.add_argument("--cost", choices=["both", "roofline", "constant"], default="both", help="engine only")
    ap.add_argument("--profile", action="store_true", help="engine only: cProfile the run, print the top functions")
    ap.add_argument("--no-scaling", action="store_true", help="engine only: skip the per-iteration scaling check")
    args = ap.parse_args()
    if args.engine_only:
        engine_only(args)
        return
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [100_000, 1_000_000])
    run_matrix(sizes, args.replicas, args.json)


if __name__ == "__main__":
    main()
