#!/usr/bin/env python3
"""Coverage of simctl's 80% intervals on the bundled real vLLM runs (sim/fidelity/coverage.py).

    python benchmarks/interval_coverage.py [--samples 8] [--window-s 60] [--level 0.8] [--hardware h100-sxm]

Prints one row per load stage and statistic (point, interval, measured, inside) and the coverage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwprofiles import load_profile  # noqa: E402
from sim.fidelity.coverage import coverage_check  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hardware", default="h100-sxm")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--level", type=float, default=0.8)
    ap.add_argument("--window-s", type=float, default=60.0)
    args = ap.parse_args()
    rep = coverage_check(load_profile(args.hardware), samples=args.samples, level=args.level,
                         window_s=args.window_s, progress=lambda m: print(m, file=sys.stderr))
    df = rep.frame()
    print("| run | stage | metric | point | interval | measured | inside |\n|---|---|---|---:|---:|---:|---|")
    for _, r in df.iterrows():
        print(f"| {r['run']} | {r['stage']} | {r['metric']} | {r['point']:.1f} | {r['low']:.1f}–{r['high']:.1f} "
              f"| {r['measured']:.1f} | {'yes' if r['inside'] else 'no'} |")
    print(f"\ncoverage of the {100 * args.level:.0f}% intervals: {100 * rep.coverage:.0f}% of {len(df)} cases; "
          + ", ".join(f"{m} {100 * v:.0f}%" for m, v in rep.by_metric().items()))


if __name__ == "__main__":
    main()
