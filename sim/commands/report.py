"""``simctl report DIR``: write report.html and report.md for a run or sweep directory."""
from __future__ import annotations

import click


@click.command("report")
@click.argument("result_dir", type=click.Path(file_okay=False, exists=True))
def command(result_dir: str) -> None:
    """Write a self-contained report.html (opens offline) and report.md (figures in report_files/)
    for RESULT_DIR: a `simctl run` output directory or a `simctl sweep` output directory."""
    from sim.report import write_report

    paths = write_report(result_dir)
    click.echo(f"wrote {paths['html']} and {paths['markdown']}")
