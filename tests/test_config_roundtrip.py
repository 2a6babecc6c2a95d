"""Config round trips never change results.

``cfg.to_dict()`` is what ``config.yaml`` saves, what ``--set`` edits and what every sweep point is
built from. The property: for any valid experiment, re-parsing its dict — directly, after a ``--set``
of an unchanged value, or as the single point of a one-value sweep — simulates to a byte-identical
``summary.json``. (The bug this guards against: a closed-loop think time whose default ``min`` was
pinned to 1 s by the dump, so ``--set seed=0`` ran a different workload.)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sim
from sim.config import load_experiment, parse_experiment, with_overrides
from sim.errors import SimctlError
from sim.plan.sweep import plan_sweep
from sim.runs.storage import to_jsonable

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

rates = st.sampled_from([2.0, 8.0, 40.0])
tokens = st.one_of(
    st.integers(1, 300),
    st.builds(lambda m, s, mx: {"dist": "lognormal", "mean": m, "std": s, "max": mx},
              st.sampled_from([50, 200]), st.sampled_from([20, 150]), st.sampled_from([400, 1000])),
    st.builds(lambda lo, w: {"dist": "uniform", "low": lo, "high": lo + w}, st.integers(1, 50), st.integers(0, 200)),
    st.builds(lambda m, s: {"dist": "normal", "mean": m, "std": s}, st.sampled_from([30, 100]), st.sampled_from([5, 40])),
    st.builds(lambda m: {"dist": "exponential", "mean": m, "max": 500}, st.sampled_from([20, 80])),
    st.builds(lambda a: {"dist": "zipf", "a": a, "max": 300}, st.sampled_from([1.2, 2.5])),
)
think = st.one_of(st.sampled_from([0, 0.05, 1.5]),
                  st.builds(lambda m: {"dist": "exponential", "mean": m}, st.sampled_from([0.05, 0.5])),
                  st.builds(lambda lo, hi: {"dist": "uniform", "low": lo, "high": hi}, st.just(0), st.sampled_from([1, 2])),
                  st.builds(lambda m: {"dist": "normal", "mean": m, "std": 0.1}, st.sampled_from([0.2, 0.6])))
arrivals = st.one_of(
    st.builds(lambda r: {"process": "poisson", "rate": r}, rates),
    st.builds(lambda r, b: {"process": "gamma", "rate": r, "burstiness": b}, rates, st.sampled_from([0.5, 2.0])),
    st.builds(lambda r: {"process": "constant", "rate": r}, rates),
    st.builds(lambda c, t: {"process": "closed", "clients": c, "think_time_s": t}, st.integers(1, 4), think),
    st.just({"process": "offline"}),
)


@st.composite
def experiments(draw: Any) -> dict[str, Any]:
    """A small valid-looking experiment touching every section of the schema."""
    workload: dict[str, Any] = {"num_requests": draw(st.integers(3, 10)), "arrival": draw(arrivals),
                                "input_tokens": draw(tokens), "output_tokens": draw(tokens)}
    if draw(st.booleans()):
        workload["prefix"] = {"num_groups": draw(st.integers(1, 3)), "prefix_tokens": draw(st.sampled_from([16, 64]))}
    if draw(st.booleans()) and workload["arrival"]["process"] == "poisson":
        workload["conversation"] = {"turns": draw(st.integers(1, 3)), "think_time_s": draw(think)}
    if draw(st.booleans()):
        workload["max_concurrency"] = draw(st.integers(1, 4))
    exp: dict[str, Any] = {
        "name": draw(st.sampled_from(["rt", "round trip", "a/b"])), "seed": draw(st.integers(0, 3)),
        "model": "opt-125m", "hardware": draw(st.sampled_from(["h100-sxm", "a100-sxm-80gb", "l4"])),
        "parallel": {"tp": draw(st.sampled_from([1, 2]))},
        "precision": {"weights": draw(st.sampled_from(["bf16", "fp8"])), "kv_cache": draw(st.sampled_from(["auto", "fp8"]))},
        "engine": {"policy": draw(st.sampled_from(["vllm", "vllm-v0", "sarathi", "orca", "static", "sglang"])),
                   "max_num_seqs": draw(st.integers(1, 32)),
                   "enable_prefix_caching": draw(st.booleans()),
                   "block_size": draw(st.sampled_from([16, 32])),
                   "async_scheduling": draw(st.sampled_from([None, True, False]))},
        "replicas": draw(st.integers(1, 2)),
        "router": draw(st.sampled_from(["round-robin", "least-outstanding-requests", "random"])),
        "warmup_s": draw(st.sampled_from([0.0, 0.1])),
        "workload": workload,
    }
    if draw(st.booleans()):
        exp["max_duration_s"] = draw(st.sampled_from([5.0, 60.0]))
    if draw(st.booleans()):
        exp["slo"] = {"ttft_ms": {"p99": draw(st.sampled_from([50, 500]))}, "tpot_ms": {"mean": 50}}
    if draw(st.booleans()):
        exp["cost"] = {"gpu_hour_usd": draw(st.sampled_from([2.0, 4.5]))}
    if draw(st.booleans()):
        exp["engine"]["speculative"] = {"method": draw(st.sampled_from(["ngram", "eagle3", "mtp"])),
                                        "num_speculative_tokens": draw(st.integers(1, 3)),
                                        "acceptance": draw(st.sampled_from([{"rate": 0.6},
                                                                            {"per_position": [0.9, 0.6, 0.3]}]))}
    return exp


def _outcome(cfg: Any) -> bytes:
    """summary.json's bytes, or the error a run ends with (both sides must agree either way)."""
    try:
        res = sim.run(cfg)
    except SimctlError as exc:
        return f"error: {exc}".encode()
    return json.dumps(to_jsonable(res.summary), indent=2).encode()


def _check_round_trips(cfg: Any) -> None:
    want = _outcome(cfg)
    reparsed = parse_experiment(cfg.to_dict(), "<round trip>", cfg.base_dir)
    assert reparsed.to_dict() == cfg.to_dict()
    assert _outcome(reparsed) == want
    unchanged = with_overrides(cfg, {"seed": cfg.seed})  # `--set seed=<same>`
    assert _outcome(unchanged) == want
    one_point = cfg.model_copy(update={"sweep": None})
    one_point = parse_experiment({**one_point.to_dict(), "sweep": {"grid": {"seed": [cfg.seed]}}}, "<sweep>", cfg.base_dir)
    (task,) = plan_sweep(one_point).tasks
    assert task.config is not None
    assert _outcome(task.config) == want


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiments())
@example({"name": "closed-think", "model": "opt-125m", "hardware": "h100-sxm",
          "workload": {"num_requests": 8, "arrival": {"process": "closed", "clients": 2,
                                                      "think_time_s": {"dist": "exponential", "mean": 0.5}},
                       "input_tokens": 64, "output_tokens": 8}})
def test_round_trip_simulates_identically(exp: dict[str, Any]) -> None:
    try:
        cfg = parse_experiment(exp, "<generated>", EXPERIMENTS)
    except SimctlError:
        return  # an invalid combination: refused cleanly, nothing to round-trip
    _check_round_trips(cfg)


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_dump_and_reparse_to_the_same_dict(path: Path) -> None:
    cfg = load_experiment(path)
    again = parse_experiment(cfg.to_dict(), "<round trip>", cfg.base_dir)
    assert again.to_dict() == cfg.to_dict()
    assert again == cfg


def test_closed_loop_example_set_seed_keeps_throughput() -> None:
    """The issue's reproduction, shortened: --set of an unchanged value must not change the run."""
    cfg = load_experiment(EXPERIMENTS / "closed_loop_sweep.yaml")
    cfg = with_overrides(cfg, {"workload.num_requests": 40})
    assert cfg.to_dict()["workload"]["arrival"]["think_time_s"]["min"] == 0
    a, b = sim.run(cfg), sim.run(with_overrides(cfg, {"seed": 0}))
    assert a.summary["request_throughput"] == b.summary["request_throughput"]
