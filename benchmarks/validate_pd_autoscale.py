"""DS-DAY6-AUTOSCALE with both pools of a disaggregated deployment autoscaled on their own.

    python benchmarks/validate_pd_autoscale.py [--span 960] [--peak-nodes 20] [--window 6]

DeepSeek serves V3/R1 with prefill/decode disaggregation and reported 278 nodes at the daily peak
against 226.75 on average (peak/average 1.226). As in ``bench_fleet_day.py deepseek`` the node curve
is not published, so the load is a diurnal sinusoid whose own peak/mean is 1.226 (trough/peak =
2/1.226 − 1); here the day is compressed to ``--span`` seconds (the ratio does not depend on the time
scale with no cold start) and each pool has its own planner controller — one decision per 1/96 of
the day, the rate read over ``--window`` decisions — with whole 8-GPU nodes. Nodes are constant-step
engines whose capacity is known in closed form (tests/test_disagg_autoscaling.py): a prefill node runs
one 64-token prompt per D-second step (1/D req/s), a decode node 4 requests × 3 decode steps plus the
step its sequence slot waits for the KV (B/(K·D) = 1/D req/s), so both pools need ``--peak-nodes``
nodes at the peak. Prints the deployment's peak and mean billed nodes (both pools summed), their
ratio against the published one, and each pool's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.autoscaler import AutoscalerSpec
from sim.engine.autoscaling_config import AutoscalingConfig
from sim.engine.disagg import PDSpec
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from sim.measure.fleet import fleet_summary
from sim.runs.pd_autoscaled import _combined_gpus
from workloads.arrivals import parse_arrival
from workloads.base import OpenLoopWorkload

PUBLISHED_PEAK, PUBLISHED_MEAN = 278, 226.75  # DS-DAY6-AUTOSCALE, nodes of 8 H800
GPUS_PER_NODE = 8
STEP_S = 1.0  # D: one node-step; with B = 4 and K = 4 both pools serve 1/D req/s per node


def run(span_s: float, peak_nodes: float, window: float, seed: int = 0) -> dict:
    """One compressed day; returns the deployment's and each pool's peak/mean nodes."""
    ratio = PUBLISHED_PEAK / PUBLISHED_MEAN
    cap = 1.0 / STEP_S
    setup = ReplicaSetup(EngineConfig(max_num_seqs=4, max_num_batched_tokens=64, async_scheduling=False),
                         100_000, 4096, ConstantCostModel(STEP_S))
    proc = parse_arrival({"process": "diurnal", "peak_rate": peak_nodes * cap,
                          "trough_rate": peak_nodes * cap * (2 / ratio - 1), "period_s": span_s, "peak_at_s": span_s / 2})
    times = proc.arrival_times(np.random.default_rng(seed), None, span_s)
    specs = [RequestSpec(float(t), 64, 4) for t in times]
    pd = PDSpec(prefill=setup, decode=setup, num_prefill=1, num_decode=1, prefill_router="least-outstanding-requests",
                decode_router="least-outstanding-requests", kv_bytes_fn=lambda n: 1e3 * n,
                bandwidth_bytes_per_s=1e12, latency_s=0.0)
    interval = span_s / 96
    auto = AutoscalingConfig.model_validate({
        "policy": "planner", "interval_s": interval, "metrics_window_s": window * interval, "max_replicas": 4 * int(peak_nodes),
        "policy_options": {"replica_capacity_rps": cap}, "scale_down": {"stabilization_s": 0}})
    wall = time.perf_counter()
    out = simulate(OpenLoopWorkload(specs), setup, num_replicas=1, router="least-outstanding-requests", disagg=pd,
                   autoscaling={r: AutoscalerSpec(auto, lambda rng: 0.0) for r in ("prefill", "decode")})
    wall = time.perf_counter() - wall
    lives, pools = [], {}
    for role in ("prefill", "decode"):
        fleet = out.fleet["pools"][role]
        block, _ = fleet_summary(fleet, out.requests, end_s=out.end_s, gpus_per_replica=GPUS_PER_NODE,
                                 gpu_hour_usd=2.0)  # DeepSeek: $2 per H800-hour
        pools[role] = {"peak_nodes": block["peak_replicas_billed"], "mean_nodes": block["mean_replicas_billed"]}
        a = np.array([u["requested_s"] for u in fleet["units"]])
        b = np.array([u["released_s"] for u in fleet["units"]])
        lives.append((a, np.where(np.isnan(b), out.end_s, np.minimum(b, out.end_s)), GPUS_PER_NODE))
    peak, mean = _combined_gpus(lives, 0, out.end_s)
    return {"requests": len(specs), "completed": int((out.requests.status == "completed").sum()),
            "wall_s": round(wall, 1), "peak_nodes": peak / GPUS_PER_NODE, "mean_nodes": mean / GPUS_PER_NODE,
            "peak_to_mean": peak / mean, "published_peak_to_mean": ratio,
            "error": peak / mean / ratio - 1.0, "pools": pools}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--span", type=float, default=960.0, help="seconds of the compressed day")
    p.add_argument("--peak-nodes", type=float, default=20.0, help="nodes each pool needs at the peak")
    p.add_argument("--window", type=float, default=6.0, help="rate window, in decision intervals")
    args = p.parse_args()
    print(json.dumps(run(args.span, args.peak_nodes, args.window), indent=1))


if __name__ == "__main__":
    main()
