"""benchmarks/bench_engine.py's matrix (issue 10): every case runs bench_run.py in its own process and
the table reports its numbers. A tiny matrix here; the real one (100k / 1M requests) is run by hand."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_engine  # noqa: E402


def test_matrix_runs_each_case_and_tabulates(tmp_path):
    out = tmp_path / "cases.json"
    cases = bench_engine.run_matrix([200], [1], str(out))
    assert json.loads(out.read_text()) == cases
    assert [(c["requests"], c["replicas"]) for c in cases] == [(200, 1)]
    for c in cases:
        split = c["split_cpu_s"]
        assert set(split) == {"simulate", "metrics", "outputs", "report"}
        assert all(v > 0 for v in split.values())  # every stage of the run was timed
        assert sum(split.values()) <= c["cpu_s"] * 1.05
        assert c["iterations"] > 0 and c["peak_rss_gib"] > 0
        assert c["us_per_request"] == 1e6 * c["cpu_s"] / 200
    light = {**cases[0], "replicas": 64, "cpu_s": 3 * cases[0]["cpu_s"]}  # the table's ratio column
    table = bench_engine.matrix_table([*cases, light])
    assert table.count("\n") == 3 and "| 3.0× one replica (≤ 2×)" in table.replace("; RSS", "|")
