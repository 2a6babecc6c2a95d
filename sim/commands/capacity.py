"""``simctl capacity FILE``: the highest request rate (or fewest replicas) meeting the experiment's SLO."""
from __future__ import annotations

from pathlib import Path

import click

from sim.outpaths import default_out_dir, ensure_writable_dir


def _fmt(v, spec: str = ",.1f") -> str:
    return "-" if v is None else format(v, spec)


def print_probe(probe) -> None:
    """One line per probe as the search runs."""
    verdict = "[green]pass[/green]" if probe.passed else f"[red]fail[/red] ({', '.join(probe.failed)})"
    s = probe.summary
    from rich.console import Console
    Console().print(f"  {probe.request_rate:>10.4g} req/s × {probe.replicas} replica(s): {verdict}  "
                    f"P99 TTFT {_fmt(s.get('p99_ttft_ms'))} ms, P99 TPOT {_fmt(s.get('p99_tpot_ms'))} ms")


def print_result(result, out: Path | None) -> None:
    """Probe table and the answer."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="capacity search probes")
    for col in ("rate (req/s)", "replicas", "SLO", "binding", "P99 TTFT ms", "P99 TPOT ms", "tok/s"):
        t.add_column(col, justify="right")
    for p in sorted(result.probes, key=lambda p: (p.replicas, p.request_rate)):
        s = p.summary
        t.add_row(f"{p.request_rate:.4g}", str(p.replicas), "pass" if p.passed else "FAIL", p.binding or "-",
                  _fmt(s.get("p99_ttft_ms")), _fmt(s.get("p99_tpot_ms")), _fmt(s.get("output_throughput"), ",.0f"))
    console.print(t)
    if result.target == "replicas":
        console.print(f"min replicas: {_fmt(result.min_replicas, 'd')} for {result.max_request_rate} req/s; "
                      f"GPUs {_fmt(result.num_gpus, 'd')}, ${_fmt(result.cost_per_hour_usd, ',.2f')}/h")
    else:
        nxt = ("" if result.lowest_failing_rate is None else
               f" (next probe {result.lowest_failing_rate:.4g} req/s failed on {result.binding_constraint})")
        console.print(f"max request rate: [bold]{_fmt(result.max_request_rate, '.4g')} req/s[/bold]{nxt}; "
                      f"converged: {result.converged}")
        if result.interval_level is not None:
            console.print(f"{100 * result.interval_level:.0f}% range over the hardware profile's uncertainty: "
                          f"{_fmt(result.max_request_rate_low, '.4g')}–{_fmt(result.max_request_rate_high, '.4g')} "
                          f"req/s (plan with the low end)")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if out is not None:
        console.print(f"capacity.json in {out}/")


@click.command("capacity")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="output directory for capacity.json (default results/<name>-capacity/)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="override a config key, e.g. --set search.tolerance=0.05 (repeatable)")
@click.option("--quiet", is_flag=True, help="do not print each probe as it finishes")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="worker processes simulating probes at once (default: the cores, at most 4); "
                   "the result does not depend on it")
def command(file: str, out_dir: str | None, sets: tuple[str, ...], quiet: bool, jobs: int | None) -> None:
    """Find the highest request rate meeting the SLO of the experiment FILE (or, with
    `search: {target: replicas, target_rate: R}`, the fewest replicas); write capacity.json."""
    from sim.commands.run import parse_sets
    from sim.config import load_experiment, with_overrides
    from sim.plan.capacity import capacity_search, default_capacity_jobs

    cfg = load_experiment(file)
    overrides = parse_sets(sets)
    if overrides:
        cfg = with_overrides(cfg, overrides)
    out = ensure_writable_dir(out_dir if out_dir else default_out_dir(cfg.name, "-capacity"))
    result = capacity_search(cfg, out_dir=out, progress=None if quiet else print_probe,
                             jobs=jobs or default_capacity_jobs())
    print_result(result, out)
