"""``simctl hw``: list and show hardware profiles.

    simctl hw list [--json]
    simctl hw show NAME|PATH [--json | --yaml]
"""
from __future__ import annotations

import json

import click

from sim.deploy.hardware import GIB, PARAMETER_SECTIONS


@click.group("hw")
def command() -> None:
    """List and show hardware profiles (hwprofiles/*.yaml, or your own YAML file)."""


def _status_label(p) -> str:
    return {"calibrated": "calibrated", "partial": "partly calibrated",
            "uncalibrated": "assumed efficiencies — uncalibrated"}[p.calibration_status]


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_cmd(as_json: bool) -> None:
    """One line per bundled profile: memory, bandwidth, dense peaks, link, price, calibration."""
    from hwprofiles import list_profiles, load_profile

    profiles = [load_profile(n) for n in list_profiles()]
    if as_json:
        click.echo(json.dumps([p.describe() for p in profiles], indent=2))
        return
    header = f"{'name':<15} {'GPU':<27} {'mem GiB':>8} {'TB/s':>5} {'bf16 TF':>8} {'fp8 TF':>7} {'link GB/s':>9} {'$/GPU-h':>7}  efficiencies"
    lines = [header, "-" * len(header)]
    for p in profiles:
        fp8 = p.peak_tflops.get("fp8")
        bf16 = p.peak_tflops.get("bf16", p.peak_tflops.get("fp16", 0.0))
        price = "-" if p.usd_per_gpu_hour is None else f"{p.usd_per_gpu_hour:.2f}"
        lines.append(f"{p.name:<15} {p.display_name[:27]:<27} {p.memory_bytes / GIB:>8.2f} "
                     f"{p.memory_bandwidth_bytes_per_s / 1e12:>5.2f} {bf16:>8,.0f} {'-' if fp8 is None else f'{fp8:,.0f}':>7} "
                     f"{p.interconnect.intra_node_bandwidth_bytes_per_s / 1e9:>9,.0f} {price:>7}  {_status_label(p)}")
    lines.append("dense (not sparse) peaks; link = intra-node bandwidth per GPU per direction (per peer link on a mesh). "
                 "simctl hw show NAME for sources.")
    click.echo("\n".join(lines))


@command.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="the full profile as JSON")
@click.option("--yaml", "as_yaml", is_flag=True, help="print the profile file itself (with its source comments)")
def show_cmd(name: str, as_json: bool, as_yaml: bool) -> None:
    """Everything about one profile: datasheet numbers, links, and each tunable parameter with its
    status (calibrated or assumed) and basis. NAME is a profile name, an alias or a YAML path."""
    from pathlib import Path

    from hwprofiles import load_profile

    p = load_profile(name)
    if as_yaml:
        click.echo(Path(p.source).read_text(encoding="utf-8") if p.source and Path(p.source).is_file() else p.to_yaml())
        return
    if as_json:
        d = p.to_dict()
        d["calibration_status"] = p.calibration_status
        d["source"] = p.source
        click.echo(json.dumps(d, indent=2))
        return
    ic = p.interconnect
    lines = [
        f"{p.display_name}  [{p.name}]" + (f"  aliases: {', '.join(p.aliases)}" if p.aliases else ""),
        f"  efficiencies   {p.calibration_note()}",
        (f"  memory         {p.memory_bytes / GIB:.2f} GiB {p.memory.kind} ({p.memory_bytes:,} bytes as CUDA reports), "
        f"{p.memory_bandwidth_bytes_per_s / 1e12:.2f} TB/s"),
        "  dense peaks    " + ", ".join(f"{k} {v:,.1f}" for k, v in p.peak_tflops.items()) + " TFLOPS",
        f"  intra-node     {ic.intra_node}: {ic.intra_node_bandwidth_bytes_per_s / 1e9:,.0f} GB/s per direction"
        + (" per peer link (mesh)" if ic.topology == "mesh" else "") + f", {ic.gpus_per_node} GPUs per node",
        (f"  inter-node     {ic.inter_node_bandwidth_bytes_per_s / 1e9:,.1f} GB/s per GPU;  PCIe to host "
        f"{ic.pcie_bandwidth_bytes_per_s / 1e9:,.0f} GB/s"),
        "  price          " + ("-" if p.usd_per_gpu_hour is None else f"${p.usd_per_gpu_hour:.2f} per GPU-hour")
        + (f" ({p.price_source})" if p.price_source else ""),
        f"  source         {p.source}  (datasheet sources are comments in that file: simctl hw show {p.name} --yaml)",
        "",
        "  tunable parameters (simctl calibrate fits these):",
    ]
    for pname, section in PARAMETER_SECTIONS.items():
        t = p.parameter(pname)
        lines.append(f"    {section + '.' + pname:<44} {t.value:<12.6g} {t.status:<10}  {t.basis}")
    if p.notes:
        lines += ["", f"  notes          {p.notes}"]
    click.echo("\n".join(lines))
