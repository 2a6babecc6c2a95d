"""``simctl run FILE``: simulate one experiment, write results and a report, print a short summary."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from sim.config import parse_set_value
from sim.errors import ConfigError
from sim.outpaths import default_out_dir, ensure_writable_dir


def parse_sets(values: tuple[str, ...]) -> dict:
    """Parse ``--set a.b=value`` options (values parsed as YAML, strictly: sim.config.parse_set_value)."""
    out = {}
    for item in values:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r} (empty key)")
        out[key] = parse_set_value(val, key)
    return out


def parse_percentiles(text: str) -> list[float]:
    """``--metric-percentiles 50,90,99.9`` → [50.0, 90.0, 99.9] (each in (0, 100])."""
    out = []
    for part in text.split(","):
        try:
            p = float(part)
        except ValueError:
            raise ConfigError(f"--metric-percentiles: {part.strip()!r} is not a number") from None
        if not 0 < p <= 100:
            raise ConfigError(f"--metric-percentiles: {p:g} is not in (0, 100]")
        out.append(p)
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
    mlperf = g("mlperf")
    if isinstance(mlperf, dict):
        console.print(f"MLPerf {mlperf.get('scenario')}: " + ("[green]VALID[/green]" if mlperf.get("valid") else
                      "[red]INVALID[/red] — " + "; ".join(mlperf.get("failed_rules", []))))
    slo = g("slo")
    if isinstance(slo, dict) and "passed" in slo:
        verdict = "PASS" if slo["passed"] else "FAIL"
        if isinstance(mlperf, dict) and not mlperf.get("valid") and slo["passed"]:
            verdict = "limits met, but the run is INVALID under MLPerf's rules (above)"
        console.print(f"SLO: {verdict}" + (f" (binding: {slo.get('binding')})" if slo.get("binding") else ""))
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
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="output directory (default results/<name>/)")
@click.option("--csv", "csv", is_flag=True, help="also write requests.csv and iterations.csv")
@click.option("--no-report", is_flag=True, help="skip report.html / report.md")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a config key, e.g. --set engine.max_num_seqs=128, --set parallel.tp=4, "
                   "--set workload.classes.0.weight=2 (repeatable)")
@click.option("--metric-percentiles", default=None, metavar="P,P,...",
              help="latency percentiles to report, as vllm bench serve (e.g. 50,90,99,99.9); default 50,90,95,99")
@click.option("--save-detailed", is_flag=True,
              help="also write detailed.json: the summary plus vLLM's per-request lists (ttfts, itls, "
                   "input_lens, output_lens, start_times), readable by vLLM's tooling")
@click.option("--no-progress", is_flag=True, help="no progress bar (shown on a terminal for runs over ~2 s)")
def command(file: str, out_dir: str | None, csv: bool, no_report: bool, sets: tuple[str, ...],
            metric_percentiles: str | None, save_detailed: bool, no_progress: bool) -> None:
    """Simulate the experiment FILE; write summary.json, requests.parquet, iterations.parquet,
    config.yaml, meta.json and a report to --out (default results/<name>/).

    \b
    Examples:
      simctl run experiments/quickstart.yaml                        # one H100, Poisson chat traffic
      simctl run experiments/quickstart.yaml --set parallel.tp=2    # the same on a TP-2 replica
      simctl run experiments/mlperf_server_llama2_70b.yaml          # MLPerf Server: SLO + validity
      simctl run experiments/azure_conv_replay.yaml                 # replay a real trace
      simctl run experiments/quickstart.yaml --set cost.gpu_hour_usd=2.5   # $/1M tokens
    """
    from sim.api import run
    from sim.config import load_experiment, with_overrides

    cfg = load_experiment(file)
    overrides = parse_sets(sets)
    if csv:
        overrides["save_csv"] = True
    if overrides:
        cfg = with_overrides(cfg, overrides)
    out = ensure_writable_dir(out_dir if out_dir else default_out_dir(cfg.name))
    if cfg.sweep is not None or cfg.search is not None:
        click.echo("note: this experiment has a sweep:/search: section; `simctl run` simulates the base "
                   "point only (use `simctl sweep` / `simctl capacity`)", err=True)
    pcts = parse_percentiles(metric_percentiles) if metric_percentiles else None
    res = run(cfg, out_dir=out, report=not no_report, percentiles=pcts, save_detailed=save_detailed,
              progress=not no_progress and sys.stderr.isatty())
    print_summary(res.summary, res.meta, out)
