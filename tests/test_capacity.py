"""Capacity search: bracketing + bisection on synthetic monotone runs, the M/D/1 oracle, replicas."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sim.config import EngineConfig, parse_experiment
from sim.errors import ConfigError
from sim.measure.slo import evaluate_slo
from sim.plan.capacity import SearchConfig, capacity_search

WORKLOAD = {"num_requests": 500, "arrival": {"process": "poisson", "rate": 3.0},
            "input_tokens": {"dist": "fixed", "value": 16}, "output_tokens": {"dist": "fixed", "value": 1}}


def experiment(slo, search=None, **extra):
    data = {"model": "m", "hardware": "h", "seed": 1, "workload": WORKLOAD, "slo": slo, **extra}
    if search is not None:
        data["search"] = search
    return parse_experiment(data, "<test>")


def synthetic_run_fn(true_capacity, calls=None):
    """P99 TTFT grows with rate and crosses 1000 ms exactly at ``true_capacity`` req/s × replicas."""
    def run(cfg):
        rate = cfg.workload.mean_rate
        if calls is not None:
            calls.append((rate, cfg.replicas))
        load = rate / (true_capacity * cfg.replicas)
        summary = {"completed": 100, "num_requests": 100, "unfinished": 0, "rejected": 0,
                   "p99_ttft_ms": 1000.0 * load, "num_gpus": cfg.replicas, "cost_per_hour_usd": 2.0 * cfg.replicas}
        summary["slo"] = evaluate_slo(summary, cfg.slo)
        return SimpleNamespace(summary=summary)
    return run


@pytest.mark.parametrize("true_capacity, start", [(7.3, 1.0), (7.3, 50.0), (0.37, 3.0), (123.0, 3.0)])
def test_reported_rate_passes_and_next_probe_fails_within_tolerance(true_capacity, start, tmp_path):
    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"start_rate": start, "tolerance": 0.02})
    res = capacity_search(cfg, synthetic_run_fn(true_capacity), out_dir=tmp_path)
    assert res.converged
    assert res.max_request_rate <= true_capacity < res.lowest_failing_rate
    assert res.lowest_failing_rate - res.max_request_rate <= 0.02 * res.max_request_rate
    probes = {p.request_rate: p for p in res.probes}
    assert probes[res.max_request_rate].passed and not probes[res.lowest_failing_rate].passed
    # monotone-safe: every passing probe is below every failing probe
    assert max(p.request_rate for p in res.probes if p.passed) < min(p.request_rate for p in res.probes if not p.passed)
    assert res.binding_constraint == "p99_ttft_ms"
    saved = json.loads((Path(tmp_path) / "capacity.json").read_text())
    assert saved["max_request_rate"] == res.max_request_rate and len(saved["probes"]) == len(res.probes)


def test_probe_budget_and_unreachable_slo():
    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"start_rate": 1.0, "max_probes": 3})
    res = capacity_search(cfg, synthetic_run_fn(1000.0))
    assert len(res.probes) == 3 and res.lowest_failing_rate is None and res.warnings
    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"start_rate": 1.0, "min_rate": 0.1})
    res = capacity_search(cfg, synthetic_run_fn(0.01))
    assert res.max_request_rate is None and any("not met" in w for w in res.warnings)


def test_min_replicas_for_a_target_rate():
    calls = []
    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"target": "replicas", "target_rate": 20.0})
    res = capacity_search(cfg, synthetic_run_fn(3.0, calls))
    assert res.min_replicas == 7  # 20 / 7 ≤ 3 < 20 / 6
    assert res.num_gpus == 7 and res.cost_per_hour_usd == 14.0
    assert all(rate == 20.0 for rate, _ in calls)


def test_probe_configs_scale_the_rate_and_request_count():
    seen = []

    def run(cfg):
        seen.append(cfg)
        return synthetic_run_fn(5.0)(cfg)

    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"num_requests": 300, "warmup_requests": 50, "start_rate": 4.0})
    capacity_search(cfg, run)
    first = seen[0]
    assert first.workload.mean_rate == 4.0 and first.workload.num_requests == 350
    assert first.warmup_s == pytest.approx(50 / 4.0)
    assert {c.workload.input_tokens.value for c in seen} == {16}  # everything but the rate is unchanged


def test_search_section_validation():
    with pytest.raises(ConfigError, match="target: replicas needs target_rate"):
        experiment({"ttft_ms": 100}, {"target": "replicas"})
    with pytest.raises(ConfigError, match=r"search.tolerance"):
        experiment({"ttft_ms": 100}, {"tolerance": 0})
    with pytest.raises(ConfigError, match="needs an 'slo:' section"):
        capacity_search(parse_experiment({"model": "m", "hardware": "h", "workload": WORKLOAD}), synthetic_run_fn(1))
    assert SearchConfig().tolerance == 0.025


def test_md1_capacity_matches_pollaczek_khinchine():
    """Batch cap 1 + constant step time D = M/D/1. An SLO on mean TTFT = D + W_q bounds the mean
    queueing delay by W, so the capacity is the λ solving λD²/(2(1 − λD)) = W (SEMANTICS.md §6):
    λ* = 2W / (D(D + 2W))."""
    from sim.deploy.step_cost import ConstantCostModel
    from sim.engine.simulator import ReplicaSetup, simulate
    from sim.measure.metrics import summarize
    from workloads import build_workload

    step_s, wait_s = 0.1, 0.05
    lam_star = 2 * wait_s / (step_s * (step_s + 2 * wait_s))  # 5 req/s, ρ = 0.5

    def run(cfg):
        seq = np.random.SeedSequence(cfg.seed)
        workload_seq, engine_seq = seq.spawn(2)
        workload = build_workload(cfg.workload, workload_seq, Path("."))
        setup = ReplicaSetup(engine=EngineConfig(max_num_seqs=1, max_num_batched_tokens=64), num_kv_blocks=100,
                             max_model_len=64, cost_model=ConstantCostModel(step_s))
        out = simulate(workload, setup, num_replicas=cfg.replicas, seed_seq=engine_seq)
        return SimpleNamespace(summary=summarize(out.requests, out.iterations, out.timeline,
                                                 warmup_s=cfg.warmup_s, slo=cfg.slo, by_class=False,
                                                 by_replica=False))

    cfg = experiment({"ttft_ms": {"mean": (step_s + wait_s) * 1000}},
                     {"tolerance": 0.02, "start_rate": 2.0, "num_requests": 3000, "warmup_requests": 100})
    res = capacity_search(cfg, run)
    assert res.converged and res.binding_constraint == "mean_ttft_ms"
    assert res.max_request_rate == pytest.approx(lam_star, rel=0.05)
    passing = [p for p in res.probes if p.request_rate == res.max_request_rate][0]
    assert passing.summary["mean_queue_ms"] <= wait_s * 1000


def test_simctl_capacity_command(tmp_path):
    """End to end on the real simulator: a small Llama-3.1-8B / H100 experiment, three probes."""
    import yaml

    from sim.cli import main

    exp = {"name": "cap", "seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm",
           "engine": {"max_model_len": 4096},
           "workload": {"num_requests": 60, "arrival": {"process": "poisson", "rate": 4.0},
                        "input_tokens": {"dist": "fixed", "value": 256},
                        "output_tokens": {"dist": "fixed", "value": 16}},
           "slo": {"ttft_ms": {"p90": 2000}}, "search": {"max_probes": 3, "start_rate": 4.0, "num_requests": 60}}
    path = tmp_path / "cap.yaml"
    path.write_text(yaml.safe_dump(exp))
    main(["capacity", str(path), "--out", str(tmp_path / "out"), "--quiet", "--jobs", "2"])
    saved = json.loads((tmp_path / "out" / "capacity.json").read_text())
    assert len(saved["probes"]) == 3 and saved["probes"][0]["request_rate"] == 4.0
    assert saved["max_request_rate"] is not None


# ---- parallel probes: the result never depends on jobs ------------------------------------------


class PicklableRun:
    """``synthetic_run_fn`` as a picklable object (it runs in worker processes); each call leaves a
    file named after the worker's pid and the rate in ``trace_dir``."""

    def __init__(self, true_capacity: float, trace_dir: str) -> None:
        self.true_capacity, self.trace_dir = true_capacity, trace_dir

    def __call__(self, cfg):
        import os

        Path(self.trace_dir, f"{os.getpid()}-{cfg.workload.mean_rate:.6g}-{cfg.replicas}").touch()
        return synthetic_run_fn(self.true_capacity)(cfg)


@pytest.mark.parametrize("search", [{"start_rate": 1.0, "tolerance": 0.02},
                                    {"start_rate": 50.0, "tolerance": 0.01, "max_probes": 9},
                                    {"target": "replicas", "target_rate": 20.0}])
def test_parallel_probes_give_the_sequential_result(tmp_path, search):
    """jobs 1, 2 and 3: the same capacity.json, the same probes in the same order, the same progress
    calls; with jobs > 1 probes really run in other processes, and more points are simulated than the
    sequential path holds (the speculative ones) but none of them is reported."""
    import os

    cfg = experiment({"ttft_ms": {"p99": 1000}}, {**search, "num_requests": 100})
    saved, seen = {}, {}
    for jobs in (1, 2, 3):
        trace = tmp_path / f"trace{jobs}"
        trace.mkdir()
        calls = []
        res = capacity_search(cfg, PicklableRun(7.3, str(trace)), out_dir=tmp_path / f"out{jobs}",
                              progress=calls.append, jobs=jobs)
        saved[jobs] = (tmp_path / f"out{jobs}" / "capacity.json").read_text()
        seen[jobs] = [p.name for p in trace.iterdir()]
        assert [(c.request_rate, c.replicas) for c in calls] == [(p.request_rate, p.replicas) for p in res.probes]
    assert saved[1] == saved[2] == saved[3]
    assert {n.split("-")[0] for n in seen[1]} == {str(os.getpid())}
    for jobs in (2, 3):
        assert str(os.getpid()) not in {n.split("-")[0] for n in seen[jobs]}  # workers did the simulating
        assert len(seen[jobs]) >= len(seen[1])
    assert len(seen[1]) == len(json.loads(saved[1])["probes"])  # in-process: no speculative probe


def test_parallel_probes_on_the_real_engine(tmp_path):
    """The real simulator in worker processes gives capacity.json byte for byte as in process."""
    exp = {"name": "cap", "seed": 0, "model": "llama-3.1-8b", "hardware": "h100-sxm",
           "engine": {"max_model_len": 4096},
           "workload": {"num_requests": 80, "arrival": {"process": "poisson", "rate": 4.0},
                        "input_tokens": {"dist": "lognormal", "mean": 2000, "std": 1000, "max": 4000},
                        "output_tokens": {"dist": "fixed", "value": 32}},
           "slo": {"ttft_ms": {"p90": 400}}, "search": {"max_probes": 6, "start_rate": 4.0, "tolerance": 0.1}}
    cfg = parse_experiment(exp, "<test>")
    a = capacity_search(cfg, out_dir=tmp_path / "a", jobs=1)
    capacity_search(cfg, out_dir=tmp_path / "b", jobs=2)
    assert (tmp_path / "a" / "capacity.json").read_bytes() == (tmp_path / "b" / "capacity.json").read_bytes()
    assert any(p.passed for p in a.probes) and any(not p.passed for p in a.probes)


def test_unpicklable_run_fn_runs_in_process():
    calls = []
    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"start_rate": 1.0, "num_requests": 100})
    res = capacity_search(cfg, synthetic_run_fn(7.3, calls), jobs=4)  # a closure: cannot be pickled
    assert len(calls) == len(res.probes)  # ran here, and only the sequential path


def test_default_probe_size_leaves_50_samples_above_the_percentile():
    from sim.plan.capacity import DEFAULT_TAIL_SAMPLES, default_probe_requests

    assert DEFAULT_TAIL_SAMPLES == 50
    p99 = experiment({"ttft_ms": {"p99": 1000}})
    assert default_probe_requests(p99) == 5000  # 50 / (1 − 0.99)
    assert default_probe_requests(p99, warmup_requests=100) == 5000
    assert default_probe_requests(experiment({"ttft_ms": {"p90": 1000}})) == 500
    assert default_probe_requests(experiment({"ttft_ms": {"p99.9": 1000}})) == 50_000
    assert default_probe_requests(experiment({"ttft_ms": {"mean": 100}})) == 500  # no percentile: the workload's
    big = parse_experiment({"model": "m", "hardware": "h", "workload": {**WORKLOAD, "num_requests": 8000},
                            "slo": {"ttft_ms": {"p99": 1000}}}, "<test>")
    assert default_probe_requests(big) == 8000 and default_probe_requests(big, 1000) == 7000
    # the probes send the default plus the warm-up; a set num_requests wins
    seen = []

    def run(cfg):
        seen.append(cfg.workload.num_requests)
        return synthetic_run_fn(5.0)(cfg)

    capacity_search(experiment({"ttft_ms": {"p99": 1000}}, {"warmup_requests": 100, "max_probes": 2}), run)
    assert seen == [5100, 5100]
    seen.clear()
    capacity_search(experiment({"ttft_ms": {"p99": 1000}}, {"num_requests": 300, "max_probes": 1}), run)
    assert seen == [300]
    seen.clear()
    capacity_search(experiment({"ttft_ms": {"mean": 100}}, {"max_probes": 1}), run)
    assert seen == [500]  # the workload as written


class FailingBelow(PicklableRun):
    """PicklableRun whose simulation raises a SimctlError at rates below ``fail_below`` req/s."""

    def __init__(self, true_capacity: float, trace_dir: str, fail_below: float) -> None:
        super().__init__(true_capacity, trace_dir)
        self.fail_below = fail_below

    def __call__(self, cfg):
        from sim.errors import SimctlError

        if cfg.workload.mean_rate < self.fail_below:
            raise SimctlError(f"no run at {cfg.workload.mean_rate} req/s")
        return super().__call__(cfg)


def test_a_failing_speculative_probe_does_not_stop_the_search(tmp_path):
    """From 1 req/s the path doubles upwards; jobs 3 also tries 0.5 req/s (if 1 had failed), whose
    simulation raises: the search must ignore it, and raise only for a failure on its path."""
    from sim.errors import SimctlError

    cfg = experiment({"ttft_ms": {"p99": 1000}}, {"start_rate": 1.0, "num_requests": 100})
    seq = capacity_search(cfg, FailingBelow(7.3, str(tmp_path), 0.9), jobs=1).to_dict()
    par = capacity_search(cfg, FailingBelow(7.3, str(tmp_path), 0.9), jobs=3).to_dict()
    assert seq == par and seq["max_request_rate"] is not None
    for jobs in (1, 3):  # 1 req/s itself fails to simulate: both raise it
        with pytest.raises(SimctlError, match="no run at 1"):
            capacity_search(cfg, FailingBelow(7.3, str(tmp_path), 1.5), jobs=jobs)


class PDRun:
    """A picklable synthetic disaggregated probe: each prefill instance holds ``cap_p`` req/s (P99 TTFT
    crosses 1000 ms there), each decode instance ``cap_d`` (P99 TPOT crosses 50 ms); one file per call
    (pid, P, D) in ``trace_dir``."""

    def __init__(self, cap_p: float, cap_d: float, trace_dir: str) -> None:
        self.cap_p, self.cap_d, self.trace_dir = cap_p, cap_d, trace_dir

    def __call__(self, cfg):
        import os

        p, d = cfg.disaggregation.prefill.replicas, cfg.disaggregation.decode.replicas
        Path(self.trace_dir, f"{os.getpid()}-{p}-{d}").touch()
        rate = cfg.workload.mean_rate
        summary = {"completed": 100, "num_requests": 100, "unfinished": 0, "rejected": 0,
                   "p99_ttft_ms": 1000.0 * rate / (self.cap_p * p), "p99_tpot_ms": 50.0 * rate / (self.cap_d * d),
                   "num_gpus": p + 2 * d, "cost_per_hour_usd": 2.0 * p + 5.0 * d}
        summary["slo"] = evaluate_slo(summary, cfg.slo)
        return SimpleNamespace(summary=summary)


@pytest.mark.parametrize("caps", [(5.0, 3.0), (40.0, 1.1), (1.3, 30.0)])
def test_parallel_pd_search_gives_the_sequential_result(tmp_path, caps):
    """The (P, D) search on the probe oracle: jobs 1, 2 and 3 write the same capacity.json and report the
    same progress; workers simulate (speculative points included), and the answer is the cheapest pair
    the synthetic pools allow: ⌈R / cap_p⌉ prefill and ⌈R / cap_d⌉ decode instances."""
    import math
    import os

    from tests.pd_helpers import pd_config

    cfg = pd_config(**{"workload.num_requests": 100, "workload.arrival": {"process": "poisson", "rate": 12},
                       "slo": {"ttft_ms": {"p99": 1000}, "tpot_ms": {"p99": 50}},
                       "search": {"target": "replicas", "target_rate": 12, "max_replicas": 16, "max_probes": 40,
                                  "num_requests": 100}})
    saved, seen = {}, {}
    for jobs in (1, 2, 3):
        trace = tmp_path / f"trace{jobs}"
        trace.mkdir()
        calls = []
        res = capacity_search(cfg, PDRun(*caps, str(trace)), out_dir=tmp_path / f"out{jobs}",
                              progress=calls.append, jobs=jobs)
        saved[jobs] = (tmp_path / f"out{jobs}" / "capacity.json").read_text()
        seen[jobs] = [n.name for n in trace.iterdir()]
        assert [c.summary["prefill_replicas"] for c in calls] == [p.summary["prefill_replicas"] for p in res.probes]
    assert saved[1] == saved[2] == saved[3]
    detail = json.loads(saved[1])["disaggregation"]
    assert (detail["prefill_replicas"], detail["decode_replicas"]) == (math.ceil(12 / caps[0]), math.ceil(12 / caps[1]))
    assert len(seen[1]) == len(json.loads(saved[1])["probes"])  # in process: the sequential path only
    for jobs in (2, 3):
        assert str(os.getpid()) not in {n.split("-")[0] for n in seen[jobs]}
        assert {n.split("-", 1)[1] for n in seen[1]} <= {n.split("-", 1)[1] for n in seen[jobs]}
