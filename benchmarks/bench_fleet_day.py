"""Fleet over a real 24 h day: speed of a day-long autoscaled run, and DeepSeek's peak/average nodes.

    python benchmarks/bench_fleet_day.py day [--fraction 0.25]   # experiments/autoscale_diurnal.yaml over 24 h
    python benchmarks/bench_fleet_day.py deepseek [--requests 300000]

``day`` runs the autoscaling example with its compressed day stretched to 86,400 s (peak 16 req/s at
2 pm, trough 2 req/s, ≈ 780k requests of Llama-3.1-70B TP4 on H100, HPA defaults: 15 s sync, 300 s
scale-down stabilization, a 10-minute cold start from ANYSCALE-COLDSTART's breakdown). ``--fraction``
simulates only the first part of the day (the rate there is the night's, so it is cheaper per
request than the full day) and prints requests, wall time and requests simulated per second.

``deepseek`` checks the published anchor DS-DAY6-AUTOSCALE (278 nodes at peak, 226.75 on average over
24 h: peak/average 1.226). The node-count curve itself is a figure that was not read, so the load is
a diurnal sinusoid whose *own* peak/mean is the published 1.226 (trough/peak = 2/1.226 − 1 = 0.631);
the question is whether an autoscaler in the loop — ceil to whole nodes, a 5-minute window, a
10-minute cold start, 300 s scale-down stabilization — keeps that ratio or inflates it. Nodes are
constant-step replicas (4 requests per 5 s step, 4 output tokens each: 0.2 req/s per node at most),
so the engine's cost stays small at a realistic day's request count (noise in a window's arrival
count shrinks as 1/√count, and DeepSeek's counts are large).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

ROOT = Path(__file__).resolve().parent.parent


def day(fraction: float) -> dict:
    from sim.config import load_experiment, with_overrides
    from sim.runs.runner import run

    cfg = load_experiment(ROOT / "experiments" / "autoscale_diurnal.yaml")
    cfg = with_overrides(cfg, {
        "workload.duration_s": 86_400 * fraction, "workload.arrival.period_s": 86_400, "workload.arrival.peak_at_s": 50_400,
        "autoscaling.interval_s": 15, "autoscaling.metrics_window_s": 60, "autoscaling.scale_down.stabilization_s": 300,
        "autoscaling.max_replicas": 16,
        "autoscaling.provisioning": {"node_s": 75, "image_s": 270, "weights_gb_per_s": 0.5, "engine_init_s": 30}})
    t0 = time.perf_counter()
    res = run(cfg)
    wall = time.perf_counter() - t0
    a = res.summary["autoscaling"]
    return {"fraction_of_day": fraction, "requests": len(res.requests), "wall_s": round(wall, 1),
            "requests_per_wall_s": round(len(res.requests) / wall), "peak_replicas": a["peak_replicas_billed"],
            "mean_replicas": round(a["mean_replicas_billed"], 2), "usd_per_day_on_demand": round(a["usd_per_day_on_demand"]),
            "cold_start_s": round(a["mean_cold_start_s"] or 0, 1), "cold_start_requests": a["cold_start_requests"],
            "min_interval_slo_attainment": a.get("min_interval_slo_attainment")}


def deepseek(num_requests: int) -> dict:
    from sim.config import EngineConfig
    from sim.deploy.step_cost import ConstantCostModel
    from sim.engine.autoscaler import AutoscalerSpec
    from sim.engine.autoscaling_config import AutoscalingConfig
    from sim.engine.request import RequestSpec
    from sim.engine.simulator import ReplicaSetup, simulate
    from sim.measure.fleet import fleet_summary
    from sim.plan.fleet_plan import oracle_fleet
    from workloads.arrivals import parse_arrival
    from workloads.base import OpenLoopWorkload

    ratio = 278 / 226.75
    mean = num_requests / 86_400
    peak = 2 * mean / (1 + (2 / ratio - 1))
    proc = parse_arrival({"process": "diurnal", "peak_rate": peak, "trough_rate": peak * (2 / ratio - 1), "peak_at_s": 50_400})
    specs = [RequestSpec(float(t), 1, 4) for t in proc.arrival_times(np.random.default_rng(0), None, 86_400)]
    setup = ReplicaSetup(EngineConfig(max_num_seqs=4, max_num_batched_tokens=64, async_scheduling=False), 100_000, 4096,
                         ConstantCostModel(5.0))
    capacity = 0.8 * 4 / (4 * 5.0)  # run nodes at 80 % of their 0.2 req/s
    cfg = AutoscalingConfig.model_validate({
        "policy": "planner", "interval_s": 60, "metrics_window_s": 300, "min_replicas": 1, "max_replicas": 400,
        "policy_options": {"replica_capacity_rps": capacity, "predictor": "mean", "history_intervals": 5},
        "scale_down": {"stabilization_s": 300}})
    t0 = time.perf_counter()
    out = simulate(OpenLoopWorkload(specs), setup, num_replicas=int(np.ceil(proc.rate(0.0) / capacity)),
                   router="least-outstanding-requests", autoscaling=AutoscalerSpec(cfg, lambda rng: 600.0))
    wall = time.perf_counter() - t0
    block, _ = fleet_summary(out.fleet, out.requests, end_s=out.end_s, gpus_per_replica=8, gpu_hour_usd=2.0)
    oracle = oracle_fleet(proc, 86_400.0, capacity, 60.0, 1, 8)
    return {"requests": len(specs), "wall_s": round(wall, 1), "load_peak_to_mean": round(peak / proc.mean_rate, 3),
            "oracle_peak_to_mean_nodes": round(oracle["peak_gpus"] / oracle["mean_gpus"], 3),
            "simulated_peak_nodes": block["peak_replicas_billed"], "simulated_mean_nodes": round(block["mean_replicas_billed"], 2),
            "simulated_peak_to_mean_nodes": round(block["peak_to_mean_gpus"], 3), "published_peak_to_mean": round(ratio, 3),
            "usd_per_day_at_2usd_per_gpu_hour": round(block["usd_per_day_on_demand"]),
            "completed_fraction": float((out.requests.status == "completed").mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("day")
    d.add_argument("--fraction", type=float, default=1.0)
    s = sub.add_parser("deepseek")
    s.add_argument("--requests", type=int, default=300_000)
    args = p.parse_args()
    out = day(args.fraction) if args.what == "day" else deepseek(args.requests)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
