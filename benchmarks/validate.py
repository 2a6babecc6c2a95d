#!/usr/bin/env python3
"""Fidelity against real vLLM runs: validate a hardware profile, or fit one and validate it.

    python benchmarks/validate.py                                 # h100-sxm on all bundled runs (~15 s)
    python benchmarks/validate.py --window-s 120                  # first 120 s of each load stage
    python benchmarks/validate.py --profile sim/data/calibration/h100_fit.yaml
    python benchmarks/validate.py --fit --fit-runs llama-2-7b --window-s 120   # refit h100_fit.yaml (~5 min)

``--fit`` fits the chosen parameters on the ``--fit-runs`` (default: the three Llama-2-7B runs, every load
stage as its own case) with :func:`sim.fidelity.calibrate.fit_profile`, writes the fitted profile to
``--fit-out`` (default ``sim/data/calibration/h100_fit.yaml``) and then validates it on every run — the
CodeLlama-34B TP2 run is held out of the fit. Results (JSON + Markdown) go to ``--out``
(default ``results/validation/``). The method and the latest table are in docs/validation.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwprofiles import load_profile  # noqa: E402
from sim.fidelity import calibrate as cal  # noqa: E402
from sim.fidelity import validate as val  # noqa: E402

DEFAULT_FIT_PARAMETERS = ("memory_efficiency", "attention_memory_efficiency", "per_iteration_s", "per_request_s",
                          "gemm_kernel_s")
DEFAULT_FIT_METRICS = ("mean_e2el_ms", "mean_itl_derived_ms")


def fit(args) -> tuple[object, dict]:
    """Fit the profile on the fit runs; returns (fitted profile, fit report)."""
    base = load_profile(args.hardware)
    runs = val.load_runs(select=args.fit_runs.split(","))
    cases = []
    for run in runs:
        cases += val.replay_cases(run, args.hardware, window_s=args.window_s, lead_s=args.lead_s)
    names = args.params.split(",") if args.params else list(DEFAULT_FIT_PARAMETERS)
    metrics = args.fit_metrics.split(",") if args.fit_metrics else list(DEFAULT_FIT_METRICS)
    t0 = time.perf_counter()
    start = json.loads(args.start) if args.start else None
    result = cal.fit_profile(base, cases, parameters=names, metric_names=metrics, max_nfev=args.max_evals, start=start,
                             progress=lambda s: print(s, file=sys.stderr, flush=True))
    on = (f"{len(runs)} vLLM v0.15.1 H100 runs ({', '.join(r.short_name for r in runs)}; "
          f"{'first %g s of each stage' % args.window_s if args.window_s else 'whole runs'})")
    prof, note = cal.calibrated_profile(base, result.parameters, on=on, stderr=result.stderr,
                                        rms_rel_error=result.rms_rel_error, name=f"{base.name}-fit",
                                        correlation=result.correlation)
    report = {"fit": result.to_dict(), "fit_runs": [r.run_id for r in runs], "metrics": metrics,
              "wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(args.fit_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cal.profile_yaml(prof, note))
    print(f"wrote {out} ({result.num_evaluations} simulations, {report['wall_s']} s): "
          + ", ".join(f"{k}={v:.4g}±{result.stderr[k]:.2g}" for k, v in result.parameters.items()), file=sys.stderr)
    return prof, report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hardware", default="h100-sxm", help="base profile (name or YAML)")
    p.add_argument("--profile", default=None, help="validate this profile YAML instead of --hardware")
    p.add_argument("--runs", default=None, help="comma-separated substrings selecting the runs to validate")
    p.add_argument("--window-s", type=float, default=None, help="replay only the first N s of each stage")
    p.add_argument("--lead-s", type=float, default=20.0, help="warm-up seconds before each window")
    p.add_argument("--prefix-model", default="pool", choices=["pool", "none"])
    p.add_argument("--output-model", default="repaired", choices=["repaired", "recorded"])
    p.add_argument("--fit", action="store_true", help="fit the profile first (see module docstring)")
    p.add_argument("--fit-runs", default="llama-2-7b", help="runs to fit on (substrings)")
    p.add_argument("--params", default=None, help=f"parameters to fit (default {','.join(DEFAULT_FIT_PARAMETERS)})")
    p.add_argument("--fit-metrics", default=None, help=f"objective metrics (default {','.join(DEFAULT_FIT_METRICS)})")
    p.add_argument("--max-evals", type=int, default=None)
    p.add_argument("--start", default=None, help='starting values as JSON, e.g. \'{"memory_efficiency": 0.9}\'')
    p.add_argument("--fit-out", default=str(ROOT / "sim" / "data" / "calibration" / "h100_fit.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "validation"))
    args = p.parse_args(argv)

    fit_report = None
    if args.fit:
        profile, fit_report = fit(args)
        label = "fitted"
    elif args.profile:
        profile, label = load_profile(args.profile), Path(args.profile).stem
    else:
        profile, label = load_profile(args.hardware), args.hardware
    t0 = time.perf_counter()
    report = val.validate(val.load_runs(select=args.runs.split(",") if args.runs else None),
                          hardware=args.hardware, profile=profile, window_s=args.window_s, lead_s=args.lead_s,
                          prefix_model=args.prefix_model, output_model=args.output_model,
                          progress=lambda s: print(s, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    data["wall_s"] = round(wall, 1)
    if fit_report:
        data["fit"] = fit_report
    (out / f"validation-{label}.json").write_text(json.dumps(data, indent=2, default=float))
    md = report.to_markdown()
    (out / f"validation-{label}.md").write_text(md)
    print(md)
    print(f"({wall:.1f} s of replay; written to {out}/validation-{label}.*)")


if __name__ == "__main__":
    main()
