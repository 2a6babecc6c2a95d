"""Sweep runner: expansion, naming, infeasible points, parallel execution, resume, Ray backend.

The sweep never needs the real engine to be tested: a *point function* is injected. The fakes here
(module level, so worker processes can import them) build synthetic but self-consistent
:class:`sim.runs.result.RunResult` objects whose latency grows with load and shrinks with TP; the report
tests reuse them.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.config import parse_experiment
from sim.engine.request import RECORD_COLUMNS, TokenTimeline
from sim.errors import ConfigError, InfeasibleConfigError
from sim.plan.sweep import (
    POINT_FILE,
    POINTS_DIR,
    SWEEP_CSV,
    SWEEP_PLAN,
    SWEEP_TABLE,
    SweepConfig,
    capacity_row,
    plan_sweep,
    point_names,
    sweep,
)
from sim.runs.result import RunResult

# ---------------------------------------------------------------------------------------------
# Synthetic results (shared with the report tests)

GPU_MEMORY_GIB = {"h100-sxm": 80.0, "a100-sxm-80gb": 80.0, "a100-sxm-40gb": 40.0}
GPU_SPEED = {"h100-sxm": 1.0, "a100-sxm-80gb": 1.7, "a100-sxm-40gb": 1.7}
GPU_PRICE = {"h100-sxm": 3.0, "a100-sxm-80gb": 1.8, "a100-sxm-40gb": 1.3}
WEIGHTS_GIB = 131.0  # a 70B model in bf16


def experiment(sweep_section: dict | None = None, **top) -> object:
    """A small experiment config (with an optional sweep: section) for tests."""
    data = {
        "name": "unit", "seed": 1, "model": "llama-3.1-70b", "hardware": "h100-sxm",
        "parallel": {"tp": 4}, "engine": {"max_num_seqs": 64},
        "workload": {"num_requests": 120, "arrival": {"process": "poisson", "rate": 2.0},
                     "input_tokens": {"dist": "fixed", "value": 256}, "output_tokens": {"dist": "fixed", "value": 24}},
        "slo": {"ttft_ms": {"p99": 1500}, "tpot_ms": {"p99": 60}},
    }
    data.update(top)
    if sweep_section is not None:
        data["sweep"] = sweep_section
    return parse_experiment(data, "<test>")


def synthetic_result(cfg) -> RunResult:
    """A deterministic, internally consistent RunResult for ``cfg`` without simulating anything.

    Each replica steps every ``dt`` seconds (slower on A100, faster with more TP, slower under load);
    a request starts when a batch slot frees, emits its first token after one step and then one token
    per step. Raises InfeasibleConfigError when the weights do not fit, as the real memory plan does.
    """
    d = cfg.to_dict()
    hw, tp, replicas = d["hardware"], d["parallel"]["tp"], d["replicas"]
    mem = GPU_MEMORY_GIB.get(hw, 80.0)
    weights = WEIGHTS_GIB / tp
    if weights > 0.9 * mem - 2:
        raise InfeasibleConfigError(f"model weights need {weights:.1f} GiB per GPU at TP={tp}, "
                                    f"but {hw} has {0.9 * mem - 2:.1f} GiB usable; smallest TP that fits: 8")
    wl = d["workload"]
    rate, n = float(wl["arrival"]["rate"]), int(wl["num_requests"])
    n_in, n_out = int(wl["input_tokens"]["value"]), int(wl["output_tokens"]["value"])
    max_seqs = int(d["engine"]["max_num_seqs"])
    rng = np.random.default_rng(d["seed"])
    arrivals = np.cumsum(rng.exponential(1 / rate, n))
    dt = 0.012 * GPU_SPEED.get(hw, 1.0) / tp ** 0.6 * (1 + 0.08 * rate / replicas)
    replica_of = np.arange(n) % replicas
    first_iter = np.zeros(n, dtype=np.int64)
    slots: dict[int, list[int]] = {r: [] for r in range(replicas)}  # iteration each running request ends
    for i in range(n):
        r = int(replica_of[i])
        k = math.ceil(arrivals[i] / dt)
        busy = sorted(e for e in slots[r] if e >= k)
        if len(busy) >= max_seqs:
            k = busy[len(busy) - max_seqs] + 1
        first_iter[i] = k
        slots[r] = busy + [k + n_out - 1]
    last_iter = first_iter + n_out - 1
    num_iters = int(last_iter.max()) + 1
    ends = {r: (np.arange(num_iters) + 1) * dt for r in range(replicas)}
    first_token = (first_iter + 1) * dt
    finish = (last_iter + 1) * dt
    ttft = first_token - arrivals
    tpot = (finish - first_token) / (n_out - 1)
    queue = first_iter * dt - arrivals
    records = pd.DataFrame({
        "request_id": np.arange(n), "replica": replica_of, "class": "default", "status": "completed",
        "reject_reason": "", "arrival_s": arrivals, "first_scheduled_s": first_iter * dt,
        "first_token_s": first_token, "finish_s": finish, "num_prompt_tokens": n_in, "num_output_tokens": n_out,
        "max_output_tokens": n_out, "num_cached_tokens": 0, "num_preemptions": 0, "ttft_s": ttft, "tpot_s": tpot,
        "e2el_s": finish - arrivals, "queue_s": np.clip(queue, 0, None), "prefill_compute_s": dt,
        "session_id": -1, "prefix_group": -1})[list(RECORD_COLUMNS)]
    iters = []
    kv_blocks = 4000
    for r in range(replicas):
        mine = replica_of == r
        active = np.zeros(num_iters + 1)
        np.add.at(active, first_iter[mine], 1)
        np.add.at(active, last_iter[mine] + 1, -1)
        active = np.cumsum(active)[:num_iters]
        starting = np.bincount(first_iter[mine], minlength=num_iters)[:num_iters]
        waiting = np.array([np.sum((arrivals[mine] <= (k + 1) * dt) & (first_iter[mine] > k)) for k in range(num_iters)])
        time_s = np.full(num_iters, dt)
        prefill_time = np.where(starting > 0, dt * 0.4, 0.0)
        iters.append(pd.DataFrame({
            "replica": r, "iteration": np.arange(num_iters), "start_s": ends[r] - dt, "end_s": ends[r],
            "time_s": time_s, "kind": "mixed", "num_seqs": active.astype(int),
            "num_tokens": (active - starting + starting * n_in).astype(int),
            "num_prefill_tokens": (starting * n_in).astype(int), "num_decode_seqs": (active - starting).astype(int),
            "num_waiting": waiting, "num_running": active.astype(int),
            "kv_usage": np.minimum(active * (n_in + n_out / 2) / 16 / kv_blocks, 1.0),
            "mfu": 0.05 + 0.4 * starting / np.maximum(active, 1), "mbu": 0.3 + 0.4 * active / max_seqs,
            "prefill_time_s": prefill_time}))
    iterations = pd.concat(iters, ignore_index=True)
    runs = np.stack([first_iter, last_iter], axis=1).reshape(-1)
    timeline = TokenTimeline(iteration_end_s=ends, replica_of=replica_of, runs=runs,
                             run_offsets=np.arange(0, 2 * n + 1, 2, dtype=np.int64))
    duration = float(finish.max() - arrivals.min())
    summary = {"completed": n, "rejected": 0, "unfinished": 0, "duration": duration,
               "request_throughput": n / duration, "output_throughput": n * n_out / duration,
               "total_token_throughput": n * (n_in + n_out) / duration,
               "mean_batch_size": float(iterations["num_seqs"].mean()),
               "mean_kv_cache_usage": float(iterations["kv_usage"].mean()),
               "peak_kv_cache_usage": float(iterations["kv_usage"].max()), "num_preemptions": 0,
               "mfu": float(iterations["mfu"].mean()), "mbu": float(iterations["mbu"].mean())}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("e2el", finish - arrivals), ("itl", np.full(n, dt))):
        ms = values * 1000
        summary.update({f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
                        f"std_{name}_ms": float(ms.std())})
        summary.update({f"p{p}_{name}_ms": float(np.percentile(ms, p)) for p in (50, 90, 95, 99)})
    passed = summary["p99_ttft_ms"] <= 1500 and summary["p99_tpot_ms"] <= 60
    summary["slo"] = {"passed": passed, "binding": None if passed else "p99_tpot_ms"}
    price = GPU_PRICE.get(hw, 2.0)
    summary.update(num_gpus=tp * replicas, gpu_hour_usd=price, cost_per_hour_usd=price * tp * replicas,
                   usd_per_million_output_tokens=price * tp * replicas / (summary["output_throughput"] * 3600) * 1e6)
    gib = 1024 ** 3
    meta = {
        "simctl_version": "test", "model": {"name": "llama-3.1-70b", "total_params": 70_553_706_496,
                                            "active_params": 70_553_706_496, "kv_cache_bytes_per_token": 327_680},
        "hardware": {"name": hw, "display_name": hw.upper(), "memory_gib": mem, "memory_bytes": mem * gib,
                     "intra_node": "nvlink", "intra_node_bandwidth_gb_s": 450.0,
                     "usd_per_gpu_hour": GPU_PRICE.get(hw, 2.0), "calibration_status": "assumed"},
        "gpus_total": tp * replicas, "max_model_len": 8192, "num_kv_blocks_used": kv_blocks,
        "memory_plan": {"capacity_bytes": mem * gib, "gpu_memory_utilization": 0.9, "budget_bytes": 0.9 * mem * gib,
                        "weights_bytes": weights * gib, "activation_bytes": 1.5 * gib, "non_torch_bytes": 1.0 * gib,
                        "kv_cache_bytes": (0.9 * mem - weights - 2.5) * gib, "block_size": 16,
                        "block_bytes": 16 * 327_680 // tp, "num_kv_blocks": kv_blocks},
        "workload": {"kind": "poisson", "rate": rate, "num_requests": n},
        "warnings": ["synthetic result built by the tests"],
    }
    return RunResult(summary, records, iterations, timeline, d, meta)


def fake_run(cfg) -> RunResult:
    """Point function: the synthetic result."""
    return synthetic_result(cfg)


def fake_capacity(cfg) -> dict:
    """Point function for mode capacity: a capacity-search-like result."""
    d = cfg.to_dict()
    if WEIGHTS_GIB / d["parallel"]["tp"] > 0.9 * GPU_MEMORY_GIB.get(d["hardware"], 80) - 2:
        raise InfeasibleConfigError("does not fit")
    cap = 3.0 * d["parallel"]["tp"] ** 0.7 / GPU_SPEED.get(d["hardware"], 1.0) * d["replicas"]
    probes = [{"request_rate": r, "passed": r <= cap, "summary": {"p99_ttft_ms": 100 * r, "request_throughput": r,
                                                                  "output_throughput": 24 * r}}
              for r in (cap / 2, cap, cap * 1.05)]
    return {"max_request_rate": cap, "probes": probes, "binding_constraint": "p99_tpot_ms"}


def failing_after_marker(cfg) -> RunResult:
    """Point function that dies (like a killed process) once a marker file exists."""
    marker = Path(os.environ["SIMCTL_TEST_KILL_MARKER"])
    if marker.exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return synthetic_result(cfg)


def buggy_run(cfg) -> RunResult:
    """Point function with a bug on one point."""
    if cfg.parallel.tp == 8:
        raise ZeroDivisionError("boom")
    return synthetic_result(cfg)


GRID = {"grid": {"engine.max_num_seqs": [16, 64], "workload.arrival.rate": [1.0, 4.0]},
        "zip": [{"hardware": ["h100-sxm", "h100-sxm", "a100-sxm-40gb"], "parallel.tp": [4, 8, 2]}]}


# ---------------------------------------------------------------------------------------------
# Config and expansion


def test_grid_times_zip_expansion_order_and_names():
    cfg = experiment(GRID)
    spec = cfg.sweep
    assert isinstance(spec, SweepConfig)
    points = spec.points()
    assert len(points) == 2 * 2 * 3
    assert points[0] == {"engine.max_num_seqs": 16, "workload.arrival.rate": 1.0, "hardware": "h100-sxm", "parallel.tp": 4}
    assert points[-1] == {"engine.max_num_seqs": 64, "workload.arrival.rate": 4.0, "hardware": "a100-sxm-40gb", "parallel.tp": 2}
    names = point_names(points, spec.keys)
    assert names[0] == "max_num_seqs=16__rate=1.0__hardware=h100-sxm__tp=4"
    assert len(set(names)) == len(names)
    # names depend on the values only, not on the grid position
    assert point_names([points[5]], spec.keys) == [names[5]]
    assert spec.resolved_load_key == "workload.arrival.rate"


def test_names_disambiguate_same_last_component_and_collisions():
    keys = ["engine.max_num_seqs", "policy_options.max_num_seqs"]
    names = point_names([{keys[0]: 1, keys[1]: 2}], keys)
    assert names == ["engine.max_num_seqs=1__policy_options.max_num_seqs=2"]
    clash = point_names([{"hardware": "a/b"}, {"hardware": "x/b"}], ["hardware"])
    assert len(set(clash)) == 2 and all(n.startswith("hardware=b-") for n in clash)


@pytest.mark.parametrize("section, message", [
    ({"grid": {}}, "at least one key"),
    ({"grid": {"parallel.tp": []}}, "at least one value"),
    ({"zip": [{"parallel.tp": [1, 2], "hardware": ["h100-sxm"]}]}, "equal length"),
    ({"grid": {"parallel.tp": [1]}, "zip": [{"parallel.tp": [2]}]}, "swept twice"),
    ({"grid": {"parallel.tp": [1]}, "mode": "fastest"}, "sweep.mode"),
    ({"grid": {"parallel.tp": [1]}, "griid": 1}, "unknown key"),
    ({"grid": {"parallel.tp": [1]}, "load_key": "workload.arrival.rate"}, "not one of the swept keys"),
])
def test_sweep_section_validation_names_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        experiment(section)


def test_capacity_mode_without_slo_is_an_error():
    with pytest.raises(ConfigError, match="needs an slo"):
        plan_sweep(experiment({"grid": {"parallel.tp": [4]}, "mode": "capacity"}, slo=None))


def test_unknown_swept_key_is_an_error_not_an_infeasible_point():
    cfg = experiment({"grid": {"engine.max_num_seq": [1, 2]}})
    with pytest.raises(ConfigError, match="max_num_seqs"):
        plan_sweep(cfg)


def test_invalid_value_makes_only_that_point_infeasible(tmp_path):
    cfg = experiment({"grid": {"parallel.tp": [0, 4]}})
    table = sweep(cfg, tmp_path, jobs=1, point_fn=fake_run)
    assert list(table["status"]) == ["infeasible", "ok"]
    assert "parallel.tp" in table["reason"][0]


# ---------------------------------------------------------------------------------------------
# Running


def test_sweep_writes_points_table_and_infeasible_reasons(tmp_path):
    cfg = experiment(GRID)
    table = sweep(cfg, tmp_path, jobs=2, point_fn=fake_run)
    assert len(table) == 12
    assert (tmp_path / SWEEP_TABLE).is_file() and (tmp_path / SWEEP_CSV).is_file()
    assert pd.read_parquet(tmp_path / SWEEP_TABLE).equals(table)
    plan = json.loads((tmp_path / SWEEP_PLAN).read_text())
    assert plan["keys"] == ["engine.max_num_seqs", "workload.arrival.rate", "hardware", "parallel.tp"]
    infeasible = table[table["status"] == "infeasible"]
    assert len(infeasible) == 4 and set(infeasible["hardware"]) == {"a100-sxm-40gb"}
    assert infeasible["reason"].str.contains("smallest TP that fits").all()
    ok = table[table["status"] == "ok"]
    assert ok["p99_ttft_ms"].notna().all() and (ok["num_gpus"] == ok["parallel.tp"]).all()
    assert "slo.passed" in table and "usd_per_million_output_tokens" in table
    for name in ok["point"]:
        d = tmp_path / POINTS_DIR / name
        assert {"summary.json", "requests.parquet", "iterations.parquet", "config.yaml", "meta.json",
                POINT_FILE, "row.json"} <= {p.name for p in d.iterdir()}
    # the swept values really reached each point's config
    cfg_text = (tmp_path / POINTS_DIR / ok["point"].iloc[-1] / "config.yaml").read_text()
    assert "max_num_seqs: 64" in cfg_text and "sweep: null" in cfg_text


def test_parallel_and_serial_give_identical_tables(tmp_path):
    cfg = experiment(GRID)
    serial = sweep(cfg, tmp_path / "a", jobs=1, point_fn=fake_run)
    parallel = sweep(cfg, tmp_path / "b", jobs=2, point_fn=fake_run)
    pd.testing.assert_frame_equal(serial, parallel)


def test_unexpected_error_is_recorded_and_retried(tmp_path):
    cfg = experiment({"grid": {"parallel.tp": [4, 8]}})
    table = sweep(cfg, tmp_path, jobs=1, point_fn=buggy_run)
    assert list(table["status"]) == ["ok", "error"]
    assert "ZeroDivisionError: boom" in table["reason"][1]
    info = json.loads((tmp_path / POINTS_DIR / "tp=8" / POINT_FILE).read_text())
    assert "Traceback" in info["traceback"]
    table = sweep(cfg, tmp_path, jobs=1, point_fn=fake_run)  # the bug fixed: only the error point reruns
    assert list(table["status"]) == ["ok", "ok"]


def test_capacity_mode_rows(tmp_path):
    cfg = experiment({"zip": [{"hardware": ["h100-sxm", "h100-sxm", "a100-sxm-40gb"], "parallel.tp": [4, 8, 2]}],
                      "mode": "capacity", "target_request_rate": 20})
    table = sweep(cfg, tmp_path, jobs=1, point_fn=fake_capacity)
    assert list(table["status"]) == ["ok", "ok", "infeasible"]
    assert table["max_request_rate"].iloc[1] > table["max_request_rate"].iloc[0]
    assert table["binding_constraint"].iloc[0] == "p99_tpot_ms"
    assert (tmp_path / POINTS_DIR / "hardware=h100-sxm__tp=4" / "capacity.json").is_file()
    # metrics of the best passing probe are carried into the row
    assert table["p99_ttft_ms"].iloc[0] == pytest.approx(100 * table["max_request_rate"].iloc[0])


def test_capacity_row_accepts_other_probe_layouts():
    row = capacity_row({"max_request_rate": 2.0, "binding": {"metric": "ttft"},
                        "probes": [{"rate": 1.0, "pass": True, "metrics": {"x": 1}}, {"rate": 3.0, "pass": False}]})
    assert row == {"max_request_rate": 2.0, "binding_constraint": '{"metric": "ttft"}', "num_probes": 2, "x": 1}


# ---------------------------------------------------------------------------------------------
# Resume


class _Interrupt(BaseException):
    """Stands for Ctrl-C: escapes the per-point error handling like KeyboardInterrupt."""


def test_resume_after_interrupt_gives_identical_table(tmp_path):
    cfg = experiment(GRID)
    reference = sweep(cfg, tmp_path / "ref", jobs=1, point_fn=fake_run)

    calls = []

    def interrupting(c):
        if len(calls) == 5:
            raise _Interrupt()
        calls.append(1)
        return synthetic_result(c)

    out = tmp_path / "resumed"
    with pytest.raises(_Interrupt):
        sweep(cfg, out, jobs=1, point_fn=interrupting)
    assert not (out / SWEEP_TABLE).exists()
    done = [p for p in (out / POINTS_DIR).iterdir() if (p / POINT_FILE).is_file()]
    assert len(done) == 5  # the five points evaluated before the interrupt (one of them infeasible)

    rerun_calls = []

    def counting(c):
        rerun_calls.append(1)
        return synthetic_result(c)

    resumed = sweep(cfg, out, jobs=1, point_fn=counting)
    assert len(rerun_calls) == 12 - 5  # only the unfinished points ran again
    pd.testing.assert_frame_equal(resumed, reference)
    assert (out / SWEEP_CSV).read_text() == (tmp_path / "ref" / SWEEP_CSV).read_text()


def test_changed_base_config_invalidates_finished_points(tmp_path):
    sweep(experiment({"grid": {"parallel.tp": [4, 8]}}), tmp_path, jobs=1, point_fn=fake_run)
    calls = []

    def counting(c):
        calls.append(1)
        return synthetic_result(c)

    sweep(experiment({"grid": {"parallel.tp": [4, 8]}}, seed=2), tmp_path, jobs=1, point_fn=counting)
    assert len(calls) == 2


SCRIPT = textwrap.dedent("""
    import sys
    from tests.test_sweep import experiment, GRID, failing_after_marker
    from sim.plan.sweep import sweep
    sweep(experiment(GRID), sys.argv[1], jobs=2, point_fn=failing_after_marker)
""")


def test_killed_sweep_process_resumes_to_identical_table(tmp_path):
    """A real kill: the workers die with SIGKILL after a few points; the rerun completes the table."""
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "sweep"
    marker = tmp_path / "kill-now"
    env = {**os.environ, "SIMCTL_TEST_KILL_MARKER": str(marker), "PYTHONPATH": str(repo)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / POINTS_DIR).is_dir() and sum((p / POINT_FILE).is_file() for p in (out / POINTS_DIR).iterdir()) >= 3:
            marker.touch()
            break
        time.sleep(0.02)
    marker.touch()
    proc.wait(timeout=60)
    assert proc.returncode != 0, proc.stderr.read().decode()[-2000:]
    assert not (out / SWEEP_TABLE).exists()
    finished = sum((p / POINT_FILE).is_file() for p in (out / POINTS_DIR).iterdir())
    assert 3 <= finished < 12
    resumed = sweep(experiment(GRID), out, jobs=2, point_fn=fake_run)
    reference = sweep(experiment(GRID), tmp_path / "ref", jobs=1, point_fn=fake_run)
    pd.testing.assert_frame_equal(resumed, reference)
    assert not any(p.name.startswith(".tmp-") for p in (out / POINTS_DIR).iterdir())


# ---------------------------------------------------------------------------------------------
# Ray


def test_ray_backend_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    cfg = experiment({"grid": {"parallel.tp": [2, 4, 8]}}, hardware="a100-sxm-40gb")
    local = sweep(cfg, tmp_path / "local", jobs=1, point_fn=fake_run)
    try:
        on_ray = sweep(cfg, tmp_path / "ray", jobs=2, backend="ray", point_fn=fake_run)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    pd.testing.assert_frame_equal(on_ray, local)
    assert list(on_ray["status"]) == ["infeasible", "ok", "ok"]


def test_ray_missing_gives_install_hint(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from sim.errors import SimctlError

    with pytest.raises(SimctlError, match=r"pip install 'simctl\[ray\]'"):
        sweep(experiment({"grid": {"parallel.tp": [4]}}), tmp_path, backend="ray", point_fn=fake_run)
