"""Speculative decoding speed: wall time of a run with and without ``engine.speculative``.

    python benchmarks/bench_speculative.py                  # 5,000 requests at 20 req/s
    python benchmarks/bench_speculative.py --requests 20000

Llama-3.1-8B on one H100, Poisson arrivals, 512-token prompts and 256-token answers; EAGLE-3 with
k = 3 and α = 0.7. Without speculation the vLLM policy advances steady decodes as a group in O(1) per
step; with it every running request takes the exact per-request path (a random number of tokens per
step), so the cost per iteration is O(running requests) — and nothing per token: the time per
iteration must not grow with the answers' length (the second table: 64 clients, answers 4× longer).
Only the engine (``simulate()``) is timed, not the metrics.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.config import parse_experiment  # noqa: E402
from sim.deploy.deployment import build_deployment  # noqa: E402
from sim.engine.simulator import simulate  # noqa: E402
from sim.runs.runner import replica_setup  # noqa: E402
from workloads import build_workload  # noqa: E402

SPEC = {"method": "eagle3", "num_speculative_tokens": 3, "acceptance": {"rate": 0.7}}


def experiment(num_requests: int, rate: float, spec: dict | None, output_tokens: int = 256) -> dict:
    engine = {"policy": "vllm", "max_num_seqs": 256, "max_num_batched_tokens": 8192, "max_model_len": 8192}
    if spec is not None:
        engine["speculative"] = spec
    return {"name": "bench-spec", "model": "llama-3.1-8b", "hardware": "h100-sxm", "engine": engine,
            "workload": {"num_requests": num_requests, "arrival": {"process": "poisson", "rate": rate},
                         "input_tokens": {"dist": "fixed", "value": 512},
                         "output_tokens": {"dist": "fixed", "value": output_tokens}}}


def engine_run(d: dict) -> tuple[float, int, float]:
    """(engine wall seconds, iterations, mean batch) of one experiment dict."""
    cfg = parse_experiment(d)
    dep = build_deployment(cfg)
    workload_seq, engine_seq = np.random.SeedSequence(cfg.seed).spawn(2)
    workload = build_workload(cfg.workload, workload_seq, Path("."), model_name=dep.model.name)
    out = simulate(workload, replica_setup(dep, None), seed_seq=engine_seq)
    it = out.iterations
    return out.stats["wall_s"], len(it), float(it["num_seqs"].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    print("| speculation | engine wall s | iterations | µs / iteration | mean batch |")
    print("|---|---|---|---|---|")
    for spec in (None, SPEC):
        wall, n, batch = engine_run(experiment(args.requests, args.rate, spec))
        print(f"| {'on' if spec else 'off'} | {wall:.2f} | {n:,} | {wall / n * 1e6:.0f} | {batch:.1f} |")
    print("\n| answer length | engine wall s | iterations | µs / iteration |")
    print("|---|---|---|---|")
    for out_len in (1500, 6000):
        d = experiment(64, 1.0, SPEC, output_tokens=out_len)
        d["workload"]["arrival"] = {"process": "closed", "clients": 64}
        wall, n, _ = engine_run(d)
        print(f"| {out_len} | {wall:.2f} | {n:,} | {wall / n * 1e6:.0f} |")


if __name__ == "__main__":
    main()
