"""``simctl calibrate``: fit a hardware profile to measurements and write it as a new profile YAML."""
from __future__ import annotations

import json
from pathlib import Path

import click

from sim.errors import ConfigError
from sim.outpaths import ensure_writable_file


def _print_fit(fit, names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="fitted parameters")
    for col, just in (("parameter", "left"), ("start", "right"), ("fitted", "right"), ("± 1σ", "right"),
                      ("status", "left")):
        t.add_column(col, justify=just)
    undetermined = []
    for n in names:
        s = fit.stderr.get(n)
        known = s is not None and s == s
        if not known:
            undetermined.append(n)
        t.add_row(n, f"{fit.initial[n]:.4g}", f"{fit.parameters[n]:.4g}",
                  f"{s:.2g} ({100 * s / abs(fit.parameters[n] or 1):.0f}%)" if known else "undetermined",
                  "calibrated" if known else "[yellow]assumed[/yellow]")
    console.print(t)
    if undetermined:
        console.print(f"[yellow]warning:[/yellow] the measurements do not determine {', '.join(undetermined)}: "
                      "written as status: assumed, not calibrated (fit fewer parameters with --params, or add "
                      "measurements at other loads)")
    m = Table(title="objective (simulated vs measured)")
    for col in ("case", "metric", "simulated", "measured", "rel. error"):
        m.add_column(col, justify="left" if col in ("case", "metric") else "right")
    for case, metrics in fit.metrics.items():
        for k, v in metrics.items():
            m.add_row(case, k, f"{v['simulated']:.2f}", f"{v['measured']:.2f}", f"{100 * v['rel_error']:+.1f}%")
    console.print(m)
    console.print(f"RMS relative error {100 * fit.initial_rms_rel_error:.1f}% → {100 * fit.rms_rel_error:.1f}% "
                  f"in {fit.num_evaluations} simulations ({fit.message})")


@click.command("calibrate")
@click.option("--measurements", type=click.Path(dir_okay=False), default=None,
              help="per-request measurements: CSV (arrival_time_s,input_tokens,output_tokens,ttft_s,e2e_s) or "
                   "`vllm bench serve --save-detailed` JSON with start_times")
@click.option("--experiment", type=click.Path(dir_okay=False), default=None,
              help="experiment YAML with the serving settings the measurements were taken under")
@click.option("--microbench", type=click.Path(dir_okay=False), default=None,
              help="CSV written by benchmarks/gpu_profile.py (instead of --measurements/--experiment)")
@click.option("--base-profile", default=None,
              help="profile to start from (name or YAML); default: the experiment's hardware")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="calibrated profile YAML to write (a fit report .fit.json goes beside it)")
@click.option("--params", default=None,
              help="comma-separated tunable parameters to fit (default: the profile's recommended set; "
                   "`simctl hw show NAME` lists them)")
@click.option("--window-s", type=float, default=None,
              help="fit on the requests arriving in the first N seconds only (faster)")
@click.option("--max-evals", type=int, default=None, help="cap on simulations (default 25 × (parameters + 1))")
@click.option("--name", default=None, help="name of the new profile (default: <base>-calibrated)")
def command(measurements, experiment, microbench, base_profile, out_path, params, window_s, max_evals, name) -> None:
    """Fit a hardware profile's free parameters and write a new profile YAML usable as `hardware:`.

    Replay mode (--measurements + --experiment) replays the measured requests through the simulator and
    fits efficiencies/overheads by least squares on TTFT (mean, p50, p90), mean E2E and the derived
    inter-token latency. Microbenchmark mode (--microbench) turns benchmarks/gpu_profile.py's CSV into
    efficiencies directly. See docs/calibration.md.
    """
    from hwprofiles import load_profile
    from sim.fidelity import calibrate as cal

    out = ensure_writable_file(out_path)  # before the fit: a finished fit is never lost to a bad path
    ensure_writable_file(out.with_suffix(".fit.json"))
    if max_evals is not None and max_evals < 1:
        raise ConfigError(f"--max-evals {max_evals}: must be ≥ 1")
    if microbench:
        if measurements or experiment:
            raise ConfigError("--microbench cannot be combined with --measurements/--experiment")
        if not base_profile:
            raise ConfigError("--microbench needs --base-profile (the GPU's datasheet profile to start from)")
        base = load_profile(base_profile)
        fitted, report = cal.fit_microbench(microbench, base, parameters=params.split(",") if params else None)
        prof, note = cal.calibrated_profile(base, fitted, on=f"microbenchmarks {Path(microbench).name}",
                                            method="microbench", name=name)
        out.write_text(cal.profile_yaml(prof, note))
        (out.with_suffix(".fit.json")).write_text(json.dumps(report, indent=2, default=float))
        for k, v in fitted.items():
            click.echo(f"{k:40s} {v:.4g}")
        click.echo(f"wrote {out} and {out.with_suffix('.fit.json')}")
        return

    if not measurements or not experiment:
        raise ConfigError("give --measurements FILE and --experiment EXP.yaml (or --microbench CSV)")
    from sim.config import load_experiment
    cfg = load_experiment(experiment)
    base = load_profile(base_profile or _hardware_of(cfg))  # a --base-profile path is relative to the CWD
    measured = cal.load_measurements(measurements)
    if window_s is not None:
        measured = measured[measured["arrival_s"] < window_s].reset_index(drop=True)
        if measured.empty:
            raise ConfigError(f"--window-s {window_s}: no request arrives in that window")
    case = cal.ReplayCase(Path(measurements).name, cfg, measured)
    names = params.split(",") if params else cal.default_parameters(base)
    fit = cal.fit_profile(base, [case], parameters=names, max_nfev=max_evals,
                          progress=lambda s: click.echo(s, err=True))
    _print_fit(fit, names)
    prof, note = cal.calibrated_profile(base, fit.parameters, on=f"{Path(measurements).name} replayed with "
                                        f"{Path(experiment).name}", stderr=fit.stderr,
                                        rms_rel_error=fit.rms_rel_error, name=name, correlation=fit.correlation)
    out.write_text(cal.profile_yaml(prof, note))
    out.with_suffix(".fit.json").write_text(json.dumps(fit.to_dict(), indent=2))
    click.echo(f"wrote {out} and {out.with_suffix('.fit.json')}")


def _hardware_of(cfg) -> str:
    hw = cfg.hardware
    p = cfg.resolve_path(hw)
    return str(p) if hw.endswith((".yaml", ".yml")) and p.exists() else hw
