"""Speed and static fidelity of the roofline cost model.

    python benchmarks/bench_roofline.py [--speed-only] [--calibration-dir DIR]

1. **Speed**: microseconds per ``RooflineCostModel.step`` for a 256-request batch (255 decodes with
   500-754 cached tokens + one 512-token prefill chunk), for dense, MoE, MLA and sliding-window models.
   Target: well under 50 µs (the engine calls ``step`` once per simulated iteration).
2. **Static fidelity** against the bundled vLLM v0.15.1 H100 runs (``measured_summary.csv``): the
   per-token decode time they imply, (E2E − TTFT)/(output − 1), and their mean TTFT, next to what the
   cost model gives for an iteration of the same concurrency and context — without simulating queueing,
   chunking or prefix caching (``simctl validate`` replays the runs through the full simulator).
   Concurrency = achieved rate × mean E2E (Little's law); context = mean prompt + half the mean output.
   Model ITL: decode iterations interleaved with one mixed iteration per arriving prompt,
   ``t_dec / (1 − λ·(t_mix − t_dec))``. Model TTFT: the mixed iteration (decodes + the whole prompt) plus
   half a decode iteration of waiting for the running step. The runs serve part of every prompt from the
   prefix cache (shared system prompts, multi-turn), so the model's prefill work is an upper bound.
"""
from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwprofiles import load_profile
from sim.config import ParallelConfig
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel, uniform_batch_shape
from sim.deploy.step_cost import BatchShapeBuilder

CALIBRATION_DIR = ROOT / "sim" / "data" / "calibration"  # the bundled runs (sim/data/calibration/README.md)
CODELLAMA = ROOT / "tests" / "data" / "models" / "codellama-34b-instruct.json"


def bench_speed() -> list[tuple[str, float, float]]:
    """(model, µs per step, µs to construct) for a 256-request mixed batch on H100."""
    hw = load_profile("h100-sxm")
    out = []
    for name, tp in (("llama-2-7b", 1), ("llama-3.1-70b", 4), ("mixtral-8x7b", 2), ("deepseek-v3", 8),
                     ("gemma-2-9b", 1)):
        spec = load_model(name)
        t0 = timeit.default_timer()
        cm = RooflineCostModel(spec, hw, ParallelConfig(tp=tp))
        build_us = (timeit.default_timer() - t0) * 1e6
        b = BatchShapeBuilder()
        for i in range(255):
            b.add(1, 500 + i)
        b.add(512, 0)
        shape = b.build()
        n = 20000
        per_step = min(timeit.repeat(lambda cm=cm, shape=shape: cm.step(shape), number=n, repeat=3)) / n
        out.append((f"{name} tp={tp}", per_step * 1e6, build_us))
    return out


def calibration_gap(summary_csv: Path) -> list[dict]:
    """Measured vs modelled per-token decode time and TTFT, per run and load stage."""
    import pandas as pd

    d = pd.read_csv(summary_csv)
    hw = load_profile("h100-sxm")
    rows = []
    for _, r in d[d["stage"] >= 0].iterrows():
        model = "llama-2-7b" if "llama-2-7b" in r["experiment"] else str(CODELLAMA)
        cm = RooflineCostModel(load_model(model), hw, ParallelConfig(tp=int(r["tp"])))
        rate = float(r["achieved_rate_rps"])
        conc = rate * r["e2e_mean_ms"] / 1e3
        batch = max(1, round(conc))
        prompt = round(r["prompt_len_mean"])
        ctx = round(r["prompt_len_mean"] + r["output_len_mean"] / 2)
        t_dec = cm.step(uniform_batch_shape(batch, 1, ctx)).time_s
        mix = BatchShapeBuilder()
        for _ in range(max(0, batch - 1)):
            mix.add(1, ctx)
        mix.add(prompt, 0)
        t_mix = cm.step(mix.build()).time_s
        itl_model = t_dec / max(1e-9, 1 - rate * (t_mix - t_dec))
        itl_meas = (r["e2e_mean_ms"] - r["ttft_mean_ms"]) / (r["output_len_mean"] - 1) / 1e3
        ttft_model = t_mix + t_dec / 2
        rows.append({
            "run": r["experiment"][16:], "stage": int(r["stage"]), "rate_rps": rate, "concurrency": conc,
            "context": ctx, "decode_step_ms": t_dec * 1e3, "itl_model_ms": itl_model * 1e3,
            "itl_measured_ms": itl_meas * 1e3, "itl_error": itl_model / itl_meas - 1,
            "ttft_model_ms": ttft_model * 1e3, "ttft_measured_ms": float(r["ttft_mean_ms"]),
            "ttft_error": ttft_model * 1e3 / r["ttft_mean_ms"] - 1,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--calibration-dir", type=Path, default=None)
    args = ap.parse_args()
    print("RooflineCostModel.step on H100, 256 requests (255 decodes + one 512-token chunk):")
    for name, us, build in bench_speed():
        print(f"  {name:<22} {us:6.1f} µs per step   ({build / 1e3:.1f} ms to construct)")
    if args.speed_only:
        return
    csv = (args.calibration_dir or CALIBRATION_DIR) / "measured_summary.csv"
    if not csv.is_file():
        print(f"{csv} not found; skipping the fidelity table")
        return
    print(f"\nstatic fidelity vs {csv} (h100-sxm profile as bundled):")
    print(f"  {'run':<28}{'stage':>5}{'req/s':>7}{'conc':>7}{'ctx':>6}{'step':>8}{'ITL model':>11}{'ITL meas':>10}"
          f"{'err':>7}{'TTFT model':>12}{'TTFT meas':>11}{'err':>7}")
    for row in calibration_gap(csv):
        print(f"  {row['run']:<28}{row['stage']:>5}{row['rate_rps']:>7.1f}{row['concurrency']:>7.1f}{row['context']:>6}"
              f"{row['decode_step_ms']:>8.2f}{row['itl_model_ms']:>11.2f}{row['itl_measured_ms']:>10.2f}"
              f"{100 * row['itl_error']:>6.0f}%{row['ttft_model_ms']:>12.1f}{row['ttft_measured_ms']:>11.1f}"
              f"{100 * row['ttft_error']:>6.0f}%")


if __name__ == "__main__":
    main()
