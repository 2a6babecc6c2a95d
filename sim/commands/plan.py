"""``simctl plan FILE``: fixed-for-peak vs autoscaled vs oracle fleets over a day, per candidate
deployment, and the cheapest one meeting the SLO."""
from __future__ import annotations

from pathlib import Path

import click


def _f(v, spec: str = ",.1f") -> str:
    return "-" if v is None else format(v, spec)


def print_plan(result: dict, out: Path | None) -> None:
    """One table row per candidate and fleet kind, then the recommendation."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160) if not Console().is_terminal else Console()
    t = Table(title=f"fleet plan — {result['name']}")
    for col in ("candidate", "c (req/s/replica)", "fleet", "GPU-h", "$/day", "peak GPUs", "mean GPUs",
                "SLO att.", "SLO", "gap to oracle"):
        t.add_column(col, justify="right" if col not in ("candidate", "fleet") else "left")
    for row in result["candidates"]:
        if row["status"] != "ok":
            t.add_row(row["name"], _f(row.get("replica_capacity_rps"), ".3g"), row["status"], "", "", "", "", "", "",
                      row["reason"][:60])
            continue
        for kind in ("oracle", "fixed", "autoscaled"):
            r = row[kind]
            att = r.get("slo_attainment")
            t.add_row(row["name"] if kind == "oracle" else "", _f(row["replica_capacity_rps"], ".3g") if kind == "oracle" else "",
                      kind + (f" ({r['replicas']}×)" if kind == "fixed" else ""), _f(r["gpu_hours"], ",.2f"),
                      _f(r.get("usd_per_day_on_demand"), ",.0f"), _f(r.get("peak_gpus"), "d"), _f(r.get("mean_gpus"), ",.2f"),
                      "-" if att is None else f"{100 * att:.1f}%",
                      "bound" if kind == "oracle" else ("pass" if r["slo_passed"] else "FAIL"),
                      "" if kind == "oracle" else f"{100 * r['gpu_hours_gap_to_oracle']:+.1f}%")
    console.print(t)
    if result["recommended"]:
        console.print(f"cheapest meeting the SLO: [bold]{result['recommended']}[/bold] ({result['recommended_fleet']} fleet)")
    else:
        console.print("[yellow]no candidate meets the SLO[/yellow]")
    if out is not None:
        console.print(f"plan.json in {out}/")


@click.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="output directory for plan.json (default results/<name>-plan/)")
@click.option("-j", "--jobs", type=int, default=None, help="candidates evaluated in parallel (default: all local cores)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a config key (repeatable)")
def command(file: str, out_dir: str | None, jobs: int | None, sets: tuple[str, ...]) -> None:
    """For the day of traffic in FILE, compare a fleet fixed for the peak, the autoscaled fleet and the
    oracle lower bound for each plan.candidates entry, and pick the cheapest meeting the SLO."""
    from sim.commands.run import parse_sets
    from sim.config import load_experiment, with_overrides
    from sim.plan.fleet_plan import plan_fleet

    cfg = load_experiment(file)
    if sets:
        cfg = with_overrides(cfg, parse_sets(sets))
    out = Path(out_dir) if out_dir else Path("results") / f"{cfg.name}-plan"
    result = plan_fleet(cfg, out_dir=out, jobs=jobs)
    print_plan(result, out)
