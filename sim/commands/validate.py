"""``simctl validate``: replay the bundled real vLLM runs and print the per-run, per-metric error table."""
from __future__ import annotations

import json
from pathlib import Path

import click


def print_report(report) -> None:
    """Rich tables: APE per run and metric, the median against the issue's targets, KV blocks."""
    import math

    from rich.console import Console
    from rich.table import Table

    from sim.validation import TARGETS

    console = Console()
    table = report.run_table()
    t = Table(title="absolute percentage error |sim − meas| / meas")
    t.add_column("run")
    for c in table.columns:
        t.add_column(c, justify="right")
    fmt = lambda v: "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"  # noqa: E731
    for run, row in table.iterrows():
        t.add_row(str(run), *[fmt(v) for v in row])
    med = report.medians()
    t.add_row("median", *[fmt(med[c]) for c in table.columns], style="bold")
    console.print(t)
    checks = report.target_check()
    console.print("targets (median over runs): " + ", ".join(
        f"{k} {fmt(v['median_ape'])} ≤ {fmt(TARGETS[k])} [{'green' if v['met'] else 'red'}]"
        f"{'ok' if v['met'] else 'MISSED'}[/]" for k, v in checks.items()))
    s = Table(title="per stage: simulated / measured (ms)")
    s.add_column("run")
    s.add_column("stage")
    df = report.frame()
    metrics = list(dict.fromkeys(df["metric"]))
    for m in metrics:
        s.add_column(m, justify="right")
    for (run, stage), g in df.groupby(["run", "stage"], sort=False):
        vals = {r["metric"]: r for _, r in g.iterrows()}
        s.add_row(run, str(stage), *[f"{vals[m]['simulated']:.1f} / {vals[m]['measured']:.1f}" for m in metrics])
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

    from sim.validation import load_runs, validate

    if hardware.endswith((".yaml", ".yml")):
        hardware = str(Path(hardware).resolve())
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
