"""``simctl hw list`` / ``simctl hw show``."""
from __future__ import annotations

import json

from click.testing import CliRunner

from sim.cli import cli


def test_hw_list_marks_uncalibrated():
    r = CliRunner().invoke(cli, ["hw", "list"])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.splitlines()[2:] if ln.strip()}
    assert "partly calibrated" in lines["h100-sxm"]
    assert "assumed efficiencies — uncalibrated" in lines["mi300x"]
    data = json.loads(CliRunner().invoke(cli, ["hw", "list", "--json"]).output)
    assert {d["name"] for d in data} >= {"h100-sxm", "a100-sxm-80gb", "b200"}


def test_hw_show_text_json_yaml():
    r = CliRunner().invoke(cli, ["hw", "show", "H100"])
    assert r.exit_code == 0, r.output
    assert "79.18 GiB" in r.output and "gemm_compute_efficiency" in r.output and "calibrated" in r.output
    d = json.loads(CliRunner().invoke(cli, ["hw", "show", "h100-sxm", "--json"]).output)
    assert d["memory"]["capacity_bytes"] == 85018542080 and d["calibration_status"] == "partial"
    y = CliRunner().invoke(cli, ["hw", "show", "h100-sxm", "--yaml"]).output
    assert y.startswith("# NVIDIA H100 SXM5") and "datasheet" in y  # the file with its source comments


def test_hw_show_unknown_name_is_one_line_error():
    import pytest

    from sim.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["hw", "show", "h100-sxn"])
    assert exc.value.code == 2
