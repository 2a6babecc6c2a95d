#!/usr/bin/env python3
"""DataCrunch's SGLang / H200 benchmark recreated (docs/validation.md, "Saturation").

    python benchmarks/sglang_h200.py                 # the five random-dataset points, full size (minutes)
    python benchmarks/sglang_h200.py --rates 1,2,4
    python benchmarks/sglang_h200.py --output-server # with the API-server output queue (docs/output-server.md)

Setup (``datacrunch-research/h200-benchmarks``, ``sglang/experiments/llama_3_3_70b_sglang.sh``):
Llama-3.3-70B-Instruct bf16 on 4×H200, TP4, radix cache off, torch.compile on, SGLang's other defaults;
``sglang.bench_serving --dataset-name random --random-input 1024 --random-output 1024`` (range ratio 0:
lengths uniform on [1, 1024]) with Poisson arrivals at 1, 2, 4, 8, 16 req/s and 300 s worth of requests.
Measured values: ``sglang/outputs/llama_3_3_70b_online_output.jsonl`` (copied into MEASURED below).
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


def simulate(rate: float, num_requests: int | None = None, output_server: bool = False) -> dict[str, float]:
    """Simulated medians for one rate (``num_requests`` default: the benchmark's; ``output_server``:
    ``engine.output_server`` on)."""
    n = num_requests or MEASURED[rate][0]
    overrides = {"workload.arrival.rate": rate, "workload.num_requests": n}
    if output_server:
        overrides["engine.output_server"] = True
    cfg = with_overrides(load_experiment(EXPERIMENT), overrides)
    s = run(cfg).summary
    return {"median_e2el_ms": s["median_e2el_ms"], "median_ttft_ms": s["median_ttft_ms"],
            "median_itl_ms": s["median_itl_ms"], "output_throughput": s["output_throughput"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1,2,4,8,16")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--output-server", action="store_true", help="model the API-server output queue")
    args = ap.parse_args()
    rows = []
    print("| req/s | median E2E sim / meas (ms) | err | median TTFT sim / meas | median ITL sim / meas | out tok/s sim / meas |")
    print("|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        n, e2e, ttft, itl, tput = MEASURED[rate]
        s = simulate(rate, output_server=args.output_server)
        rows.append({"rate": rate, **s, "measured": {"median_e2el_ms": e2e, "median_ttft_ms": ttft,
                                                     "median_itl_ms": itl, "output_throughput": tput}})
        print(f"| {rate:g} | {s['median_e2el_ms']:.0f} / {e2e:.0f} | {(s['median_e2el_ms'] - e2e) / e2e:+.1%} | "
              f"{s['median_ttft_ms']:.0f} / {ttft:.0f} | {s['median_itl_ms']:.1f} / {itl:.1f} | "
              f"{s['output_throughput']:.0f} / {tput:.0f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
