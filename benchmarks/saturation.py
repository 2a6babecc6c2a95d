#!/usr/bin/env python3
"""Size of each saturation mechanism on the bundled vLLM runs' load stages (docs/validation.md, "Saturation").

    python benchmarks/saturation.py            # whole runs, ~2 × the time of `python -m sim validate`
    python benchmarks/saturation.py --window-s 60

Replays every bundled calibration run (``sim.fidelity.validate``) with the mechanism off and on and prints,
per load stage, measured vs simulated mean and p99 TTFT and mean E2E. Mechanisms:

- ``async-hold``: under vLLM V1 async scheduling a request finishing in step k keeps its running slot and
  KV blocks through the plan of step k+1 (``policies.vllm.VLLMV1Scheduler.holds_finishing_through_next_plan``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.vllm import VLLMV1Scheduler  # noqa: E402
from sim.fidelity import validate as val  # noqa: E402

METRICS = ("mean_ttft_ms", "p99_ttft_ms", "mean_e2el_ms")


def per_stage(report) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(run, stage, metric) -> (simulated, measured)."""
    return {(r["run"], r["stage"], r["metric"]): (r["simulated"], r["measured"]) for r in report.rows
            if r["metric"] in METRICS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--window-s", type=float, default=None, help="first N s of each load stage (default: all)")
    args = ap.parse_args()
    runs = val.load_runs()
    tables = {}
    for on in (False, True):
        VLLMV1Scheduler.holds_finishing_through_next_plan = on
        tables[on] = per_stage(val.validate(runs, window_s=args.window_s))
    VLLMV1Scheduler.holds_finishing_through_next_plan = True
    print("| run | stage | metric | measured | off | on | error off | error on |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(tables[True]):
        s_on, meas = tables[True][key]
        s_off = tables[False][key][0]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {meas:.1f} | {s_off:.1f} | {s_on:.1f} | "
              f"{val.ape(s_off, meas):.1%} | {val.ape(s_on, meas):.1%} |")


if __name__ == "__main__":
    main()
