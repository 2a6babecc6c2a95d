#!/usr/bin/env python3
"""DataCrunch's SGLang / H200 benchmark recreated (docs/validation.md, "Saturation").

    python benchmarks/sglang_h200.py                 # the five random-dataset points, full size (minutes)
    python benchmarks/sglang_h200.py --rates 1,2,4
    python benchmarks/sglang_h200.py --output-server # with the API-server output queue (docs/output-server.md)
    python benchmarks/sglang_h200.py --offline       # the five offline (all requests at t = 0) throughput runs
    python benchmarks/sglang_h200.py --no-cuda-graphs  # CUDA-graph padding / eager floor off (sim/deploy/cuda_graphs.py)

Setup (``datacrunch-research/h200-benchmarks``, ``sglang/experiments/llama_3_3_70b_sglang.sh``):
Llama-3.3-70B-Instruct bf16 on 4×H200, TP4, radix cache off, torch.compile on, SGLang's other defaults;
``sglang.bench_serving --dataset-name random --random-input 1024 --random-output 1024`` (range ratio 0:
lengths uniform on [1, 1024]) with Poisson arrivals at 1, 2, 4, 8, 16 req/s and 300 s worth of requests.
Measured values: ``sglang/outputs/llama_3_3_70b_online_output.jsonl`` (copied into MEASURED below).
The offline rows (``--offline``: ``--num-prompt N`` with every request sent at once, lengths uniform on
[1, input] and [1, output]) are ``sglang/outputs/llama_3_3_70b_offline_output.jsonl`` (same commit): their
output throughput is the engine's capacity for that length mix, with no arrival process in the way.
The base experiment is ``experiments/sglang_h200_llama70b.yaml``; only rate and request count change.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.api import run  # noqa: E402
from sim.config import load_experiment, with_overrides  # noqa: E402

EXPERIMENT = ROOT / "experiments" / "sglang_h200_llama70b.yaml"
#: rate (req/s) -> (requests, median E2E ms, median TTFT ms, median ITL ms, output tok/s), from
#: llama_3_3_70b_online_output.jsonl (commit c091ef5), random dataset rows
MEASURED = {
    1.0: (300, 7819.0, 85.7, 13.64, 537.4),
    2.0: (600, 8561.4, 87.6, 14.83, 987.3),
    4.0: (1200, 12534.9, 106.1, 19.42, 2047.9),
    8.0: (2400, 50316.2, 191.4, 70.76, 3515.0),
    16.0: (3200, 159469.0, 614.2, 179.12, 4288.0),
}
#: (requests, max input, max output) -> (output tok/s, duration s, median ITL ms), from
#: llama_3_3_70b_offline_output.jsonl (commit c091ef5), random-dataset rows (the 4096/1024 row appears
#: twice there, 1655.0 and 1652.9 tok/s; the first is used)
MEASURED_OFFLINE = {
    (3000, 1024, 1024): (4520.7, 341.7, 159.0),
    (4000, 1024, 512): (3492.3, 294.8, 258.9),
    (800, 4096, 2048): (2051.3, 399.1, 120.5),
    (1500, 4096, 1024): (1655.0, 459.3, 134.0),
    (6000, 256, 512): (6648.4, 230.1, 187.6),
}


def _overrides(cuda_graphs: bool, output_server: bool) -> dict:
    out: dict = {} if cuda_graphs else {"engine.policy_options": {}}
    if output_server:
        out["engine.output_server"] = True
    return out


def simulate(rate: float, num_requests: int | None = None, output_server: bool = False,
             cuda_graphs: bool = True) -> dict[str, float]:
    """Simulated medians for one rate (``num_requests`` default: the benchmark's; ``output_server``:
    ``engine.output_server`` on; ``cuda_graphs`` False: the CUDA-graph model off)."""
    n = num_requests or MEASURED[rate][0]
    overrides = {"workload.arrival.rate": rate, "workload.num_requests": n, **_overrides(cuda_graphs, output_server)}
    cfg = with_overrides(load_experiment(EXPERIMENT), overrides)
    s = run(cfg).summary
    return {"median_e2el_ms": s["median_e2el_ms"], "median_ttft_ms": s["median_ttft_ms"],
            "median_itl_ms": s["median_itl_ms"], "output_throughput": s["output_throughput"]}


def simulate_offline(num_requests: int, max_input: int, max_output: int, cuda_graphs: bool = True) -> dict[str, float]:
    """Simulated output throughput, duration and median ITL of one offline run (every request at t = 0)."""
    overrides = {"workload.arrival": {"process": "offline"}, "workload.num_requests": num_requests,
                 "workload.input_tokens": {"dist": "uniform", "low": 1, "high": max_input},
                 "workload.output_tokens": {"dist": "uniform", "low": 1, "high": max_output},
                 **_overrides(cuda_graphs, False)}
    s = run(with_overrides(load_experiment(EXPERIMENT), overrides)).summary
    return {"output_throughput": s["output_throughput"], "duration_s": s["duration"],
            "median_itl_ms": s["median_itl_ms"]}


def main_offline(cuda_graphs: bool) -> None:
    """The offline table."""
    print("| requests | input / output max | out tok/s sim / meas | err | duration s sim / meas | median ITL sim / meas |")
    print("|---|---|---|---|---|---|")
    for (n, i, o), (tput, dur, itl) in MEASURED_OFFLINE.items():
        s = simulate_offline(n, i, o, cuda_graphs)
        print(f"| {n} | {i} / {o} | {s['output_throughput']:.0f} / {tput:.0f} | {s['output_throughput'] / tput - 1:+.1%} | "
              f"{s['duration_s']:.0f} / {dur:.0f} | {s['median_itl_ms']:.1f} / {itl:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1,2,4,8,16")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--output-server", action="store_true", help="model the API-server output queue")
    ap.add_argument("--offline", action="store_true", help="the offline throughput runs instead of the rate sweep")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="CUDA-graph padding / eager floor off")
    args = ap.parse_args()
    if args.offline:
        main_offline(not args.no_cuda_graphs)
        return
    rows = []
    print("| req/s | median E2E sim / meas (ms) | err | median TTFT sim / meas | median ITL sim / meas | out tok/s sim / meas |")
    print("|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        n, e2e, ttft, itl, tput = MEASURED[rate]
        s = simulate(rate, output_server=args.output_server, cuda_graphs=not args.no_cuda_graphs)
        rows.append({"rate": rate, **s, "measured": {"median_e2el_ms": e2e, "median_ttft_ms": ttft,
                                                     "median_itl_ms": itl, "output_throughput": tput}})
        print(f"| {rate:g} | {s['median_e2el_ms']:.0f} / {e2e:.0f} | {(s['median_e2el_ms'] - e2e) / e2e:+.1%} | "
              f"{s['median_ttft_ms']:.0f} / {ttft:.0f} | {s['median_itl_ms']:.1f} / {itl:.1f} | "
              f"{s['output_throughput']:.0f} / {tput:.0f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
