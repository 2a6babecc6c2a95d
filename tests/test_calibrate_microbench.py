"""simctl calibrate --microbench: gpu_profile.py's CSV schema → fitted efficiencies → a loadable profile."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sim.errors import ConfigError
from sim.fidelity import calibrate as cal

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "tests" / "data" / "calibration" / "microbench_small.csv"


def test_schema_matches_gpu_profile_script():
    """The reader's columns are the ones benchmarks/gpu_profile.py writes (read without importing it:
    the script needs torch, CI has none)."""
    tree = ast.parse((ROOT / "benchmarks" / "gpu_profile.py").read_text())
    cols = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, "id", None) == "COLUMNS" for t in node.targets))
    written = [ast.literal_eval(e) for e in cols.elts]
    assert set(cal.MICROBENCH_COLUMNS) <= set(written)


def test_fit_recovers_the_handmade_numbers():
    from hwprofiles import load_profile
    fitted, report = cal.fit_microbench(CSV, load_profile("h100-sxm"))
    # the handmade file was generated with these values (tests/data/README.md)
    expect = {"gemm_compute_efficiency": 0.75, "gemm_half_tokens": 100.0, "memory_efficiency": 0.8,
              "gemm_kernel_s": 4e-6, "elementwise_kernel_s": 3e-6, "attention_compute_efficiency": 0.5,
              "attention_memory_efficiency": 0.6, "allreduce_latency_s": 10e-6, "communication_efficiency": 0.8}
    for k, v in expect.items():
        assert fitted[k] == pytest.approx(v, rel=0.01), k
    assert report["summary"]["layer_overhead_s"] == pytest.approx(30e-6, rel=0.05)
    assert "launch_per_layer_s" not in fitted  # reported only (eager benchmark vs CUDA graphs)
    only, _ = cal.fit_microbench(CSV, load_profile("h100-sxm"), parameters=["memory_efficiency"])
    assert list(only) == ["memory_efficiency"]


def test_cli_writes_a_calibrated_profile(tmp_path):
    from hwprofiles import load_profile
    from sim.cli import main
    out = tmp_path / "my-h100.yaml"
    main(["calibrate", "--microbench", str(CSV), "--base-profile", "h100-sxm", "--out", str(out),
          "--name", "my-h100"])
    prof = load_profile(str(out))
    assert prof.name == "my-h100"
    t = prof.parameter("memory_efficiency")
    assert t.value == pytest.approx(0.8, rel=0.01) and t.status == "calibrated"
    assert "microbenchmarks microbench_small.csv" in t.basis
    assert prof.parameter("per_iteration_s").status == load_profile("h100-sxm").parameter("per_iteration_s").status
    assert (tmp_path / "my-h100.fit.json").is_file()


def test_bad_microbench_files(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("op,time_s\ngemm,1\n")
    with pytest.raises(ConfigError, match="missing column"):
        cal.read_microbench(p)
    with pytest.raises(ConfigError, match="no such"):
        cal.read_microbench(tmp_path / "none.csv")
