"""``simctl compare SIM_DIR REAL``: simulated vs measured, with the relative error of each metric."""
from __future__ import annotations

from pathlib import Path

import click

from sim.outpaths import ensure_writable_file


def print_comparison(comp) -> None:
    """Rich table: metric, simulated, measured, relative error (colour by size)."""
    from rich.console import Console
    from rich.table import Table

    from sim.fidelity.compare import _fmt, _fmt_err

    console = Console()
    d = comp.to_dict()
    t = Table(title=f"simulated vs measured ({d['measured']['format']})")
    t.add_column("metric")
    t.add_column("simulated", justify="right")
    t.add_column("measured", justify="right")
    t.add_column("rel. error", justify="right")
    for r in comp.rows:
        err = r["rel_error"]
        style = "" if err is None else ("green" if abs(err) <= 0.05 else "yellow" if abs(err) <= 0.15 else "red")
        t.add_row(r["metric"], _fmt(r["simulated"]), _fmt(r["measured"]),
                  f"[{style}]{_fmt_err(err)}[/{style}]" if style else _fmt_err(err))
    console.print(t)
    if d["median_abs_rel_error"] is not None:
        console.print(f"median |relative error|: {100 * d['median_abs_rel_error']:.1f}%")
    for n in comp.notes:
        if n.startswith("warning: "):
            console.print(f"[yellow]warning:[/yellow] {n.removeprefix('warning: ')}")
        else:
            console.print(f"note: {n}")


@click.command("compare")
@click.argument("sim_dir", type=click.Path(file_okay=False))
@click.argument("real", type=click.Path(dir_okay=False))
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="where to write compare.json (compare.md goes beside it); default SIM_DIR/compare.json")
def command(sim_dir: str, real: str, out_file: str | None) -> None:
    """Compare the simulated run in SIM_DIR (summary.json + requests.parquet) with REAL: a
    `vllm bench serve` result JSON (detailed or not), a GenAI-Perf profile_export JSON, or a
    per-request CSV (arrival_time_s,input_tokens,output_tokens,ttft_s,e2e_s). Prints the table and
    writes compare.json and compare.md."""
    from sim.fidelity.compare import compare_paths, write_comparison

    ensure_writable_file(out_file or Path(sim_dir) / "compare.json")
    comp = compare_paths(sim_dir, real)
    print_comparison(comp)
    js, md = write_comparison(comp, out_file or Path(sim_dir) / "compare.json")
    click.echo(f"wrote {js} and {md}")
