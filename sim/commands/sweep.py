"""``simctl sweep FILE``: run the experiment's ``sweep:`` grid in parallel (or on Ray), resumably,
then write the sweep report."""
from __future__ import annotations

import click

from sim.errors import ConfigError
from sim.outpaths import default_out_dir, ensure_writable_dir


def print_table(table, keys: list[str]) -> None:
    """A compact terminal view of the sweep table."""
    from rich.console import Console
    from rich.table import Table

    from sim.plan.sweep import short_keys

    short = short_keys(keys)
    t = Table(show_lines=False)
    for key in keys:
        t.add_column(short[key])
    cols = [("status", "status"), ("req/s", "request_throughput"), ("out tok/s", "output_throughput"),
            ("p99 TTFT ms", "p99_ttft_ms"), ("p99 TPOT ms", "p99_tpot_ms"), ("max req/s", "max_request_rate")]
    cols = [(name, col) for name, col in cols if col in table]
    t.add_column("status")
    for name, _ in cols[1:]:
        t.add_column(name, justify="right")
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in keys] + [str(row["status"])]
        for _, col in cols[1:]:
            v = row[col]
            cells.append("-" if v is None or v != v else f"{v:,.2f}" if isinstance(v, float) else str(v))
        t.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # a log file or pipe: do not squeeze the table into 80 columns
        console = Console(width=140)
    console.print(t)
    counts = table["status"].value_counts().to_dict()
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))


@click.command("sweep")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(), default=None,
              help="output directory (default results/<name>/); rerunning into it resumes")
@click.option("-j", "--jobs", type=int, default=None, help="parallel workers (default: all local cores)")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local process pool, or Ray tasks (pip install 'simctl[ray]')")
@click.option("--address", default=None, help="Ray cluster address (e.g. auto, ray://head:10001); default: a local Ray")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a base config key (repeatable)")
@click.option("--no-report", is_flag=True, help="skip report.html / report.md")
@click.option("--no-progress", is_flag=True, help="no progress bar")
def command(file: str, out_dir: str | None, jobs: int | None, backend: str, address: str | None,
            sets: tuple[str, ...], no_report: bool, no_progress: bool) -> None:
    """Run every point of FILE's sweep: section and write sweep.parquet, sweep.csv, one directory per
    point under points/, and a report. Interrupted sweeps resume where they stopped."""
    from sim.commands.run import parse_sets
    from sim.config import load_experiment, with_overrides
    from sim.plan.sweep import sweep

    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be ≥ 1 (omit it to use every local core)")
    cfg = load_experiment(file)
    if sets:
        cfg = with_overrides(cfg, parse_sets(sets))
    out = ensure_writable_dir(out_dir if out_dir else default_out_dir(cfg.name))
    table = sweep(cfg, out, jobs=jobs, backend=backend, address=address, progress=False if no_progress else None)
    print_table(table, cfg.sweep.keys)
    if not no_report:
        from sim.report import write_report

        paths = write_report(out)
        click.echo(f"report: {paths['html']}")
    click.echo(f"results in {out}/ (sweep.parquet, sweep.csv, points/)")
    if (table["status"] == "error").any():
        raise click.ClickException("some points failed with an unexpected error (see reason / points/*/point.json); "
                                   "rerun to retry them")
