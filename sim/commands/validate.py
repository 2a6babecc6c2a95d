"""``simctl validate``: replay the bundled real vLLM runs and print the per-run, per-metric error table."""
from __future__ import annotations

import json
from pathlib import Path

import click

from sim.outpaths import ensure_writable_file


def _label(run: str) -> str:
    """Compact run label for narrow terminals: ``llama-2-7b-tp1-codegen`` -> ``7b-codegen``."""
    return run.replace("codellama-", "").replace("llama-2-", "").replace("-tp1", "")


def print_report(report) -> None:
    """Rich tables: APE per metric (rows) and run (columns) with the median and the issue's target, then
    simulated / measured per load stage, then KV blocks."""
    import math

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from sim.fidelity.validate import TARGETS

    console = Console(width=max(Console().width, 110))
    table = report.run_table()
    med, checks = report.medians(), report.target_check()
    fmt = lambda v: "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"  # noqa: E731
    t = Table(title="absolute percentage error |sim − meas| / meas", box=box.SIMPLE_HEAD)
    t.add_column("metric")
    for run in table.index:
        t.add_column(_label(str(run)), justify="right")
    t.add_column("median", justify="right", style="bold")
    t.add_column("target", justify="right")
    for metric in table.columns:
        target = checks.get(metric)
        verdict = "" if target is None else (" [green]ok[/]" if target["met"] else " [red]missed[/]")
        t.add_row(metric, *[fmt(v) for v in table[metric]], fmt(med[metric]),
                  ("≤ " + fmt(TARGETS[metric]) + verdict) if metric in TARGETS else "")
    console.print(t)
    df = report.frame()
    shown = ["mean_ttft_ms", "p99_ttft_ms", "mean_e2el_ms", "p99_e2el_ms", "mean_itl_ms"]
    s = Table(title="simulated / measured (ms) per load stage", box=box.SIMPLE_HEAD)
    s.add_column("run")
    s.add_column("stage")
    for m in shown:
        s.add_column(m, justify="right")
    for (run, stage), g in df.groupby(["run", "stage"], sort=False):
        vals = {r["metric"]: r for _, r in g.iterrows()}
        s.add_row(_label(run), str(stage), *[f"{vals[m]['simulated']:.1f} / {vals[m]['measured']:.1f}" for m in shown])
    console.print(s)
    for k in report.kv_blocks:
        console.print(f"KV blocks {k['run']}: simctl {k['simulated']:,} vs vLLM {k['measured']:,} ({fmt(k['ape'])})")


@click.command("validate")
@click.option("--runs", default=None, help="comma-separated substrings selecting runs (default: all bundled)")
@click.option("--window-s", type=float, default=None,
              help="replay only the first N seconds of each load stage (faster; default: whole runs)")
@click.option("--hardware", default="h100-sxm", show_default=True, help="hardware profile (name or YAML)")
@click.option("--prefix-model", type=click.Choice(["pool", "none"]), default="pool", show_default=True,
              help="how the runs' shared prompts are modelled (docs/validation.md)")
@click.option("--output-model", type=click.Choice(["repaired", "recorded"]), default="repaired", show_default=True,
              help="replay the runs' output counts repaired (rows whose count was lost) or as recorded")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="also write the report as JSON (and Markdown beside it)")
def command(runs, window_s, hardware, prefix_model, output_model, out_file) -> None:
    """Replay every bundled calibration run (real vLLM on H100) with its settings and print the error
    of mean/p90/p99 TTFT and E2E, the derived ITL and the KV block count, per run and per load stage."""
    from hwprofiles import load_profile
    from sim.fidelity.validate import load_runs, validate

    if hardware.endswith((".yaml", ".yml")):
        hardware = str(Path(hardware).resolve())
    if out_file:
        ensure_writable_file(out_file)
    selected = load_runs(select=[s.strip() for s in runs.split(",")] if runs else None)
    report = validate(selected, hardware=hardware, profile=load_profile(hardware), window_s=window_s,
                      prefix_model=prefix_model, output_model=output_model, progress=lambda s: click.echo(s, err=True))
    print_report(report)
    if out_file:
        out = Path(out_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2, default=float))
        out.with_suffix(".md").write_text(report.to_markdown())
        click.echo(f"wrote {out} and {out.with_suffix('.md')}")
