"""``simctl run FILE``: simulate one experiment, write results and a report, print a short summary."""
from __future__ import annotations

from pathlib import Path

import click
import yaml

from sim.errors import ConfigError


def parse_sets(values: tuple[str, ...]) -> dict:
    """Parse ``--set a.b=value`` options (values parsed as YAML scalars)."""
    out = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(val)
    return out


def print_summary(summary: dict, meta: dict, out_dir: Path | None) -> None:
    """Human summary: throughput, latency percentiles, rejections/backlog, SLO, warnings."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="latency (ms)", show_lines=False)
    t.add_column("metric")
    for col in ("mean", "median", "p90", "p99"):
        t.add_column(col, justify="right")
    for m in ("ttft", "tpot", "itl", "e2el"):
        row = [m.upper()]
        for stat in ("mean", "median", "p90", "p99"):
            v = summary.get(f"{stat}_{m}_ms")
            row.append("-" if v is None else f"{v:,.1f}")
        t.add_row(*row)
    console.print(t)
    g = summary.get
    console.print(
        f"completed {g('completed', 0):,}  rejected {g('rejected', 0):,}  unfinished {g('unfinished', 0):,}  "
        f"duration {g('duration', 0) or 0:,.1f} s")
    console.print(
        f"throughput {g('request_throughput', 0) or 0:,.2f} req/s, {g('output_throughput', 0) or 0:,.0f} output tok/s, "
        f"{g('total_token_throughput', 0) or 0:,.0f} total tok/s;  mean batch {g('mean_batch_size', 0) or 0:.1f}, "
        f"peak KV {100 * (g('peak_kv_cache_usage', 0) or 0):.0f}%, preemptions {g('num_preemptions', 0)}, "
        f"MFU {100 * (g('mfu', 0) or 0):.1f}%, MBU {100 * (g('mbu', 0) or 0):.1f}%")
    iv = g("intervals")
    if isinstance(iv, dict):
        parts = [f"{m.replace('_ms', '')} {iv[m]['low']:,.1f}–{iv[m]['high']:,.1f}" for m in
                 ("median_ttft_ms", "p99_ttft_ms", "median_e2el_ms", "p99_e2el_ms") if m in iv]
        console.print(f"{100 * iv['level']:.0f}% intervals (ms, {iv['samples']} extra runs): " + ", ".join(parts))
    slo = g("slo")
    if isinstance(slo, dict) and "passed" in slo:
        console.print(f"SLO: {'PASS' if slo['passed'] else 'FAIL'}"
                      + (f" (binding: {slo.get('binding')})" if slo.get("binding") else ""))
    resolved = meta.get("resolved_engine_defaults") or []
    if resolved:
        console.print("engine settings not in the file (the engine's defaults, sim/deploy/engine_defaults.py):")
        for r in resolved:
            console.print(f"  engine.{r['key']} = {r['value']}  [dim]({r['reason']})[/dim]")
    for w in meta.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {w}")
    if out_dir is not None:
        console.print(f"results in {out_dir}/")


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output directory (default results/<name>/)")
@click.option("--csv", "csv", is_flag=True, help="also write requests.csv and iterations.csv")
@click.option("--no-report", is_flag=True, help="skip report.html / report.md")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a config key, e.g. --set engine.max_num_seqs=128 (repeatable)")
def command(file: str, out_dir: str | None, csv: bool, no_report: bool, sets: tuple[str, ...]) -> None:
    """Simulate the experiment FILE; write summary.json, requests.parquet, iterations.parquet,
    config.yaml, meta.json and a report to --out (default results/<name>/)."""
    from sim.api import run
    from sim.config import load_experiment, with_overrides

    cfg = load_experiment(file)
    overrides = parse_sets(sets)
    if csv:
        overrides["save_csv"] = True
    if overrides:
        cfg = with_overrides(cfg, overrides)
    out = Path(out_dir) if out_dir else Path("results") / cfg.name
    if cfg.sweep is not None or cfg.search is not None:
        click.echo("note: this experiment has a sweep:/search: section; `simctl run` simulates the base "
                   "point only (use `simctl sweep` / `simctl capacity`)", err=True)
    res = run(cfg, out_dir=out, report=not no_report)
    print_summary(res.summary, res.meta, out)
