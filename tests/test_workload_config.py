"""The ``workload:`` section: validation messages, dump/load round trips, describe(), and the example
experiments' workloads build from any working directory."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sim.config import load_experiment, parse_experiment, with_overrides
from sim.errors import ConfigError
from tests.test_workload_helpers import make
from workloads import WorkloadConfig, build_workload

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
BASE = {"model": "llama-3.1-8b", "hardware": "h100-sxm"}

ROUND_TRIP = [
    {"num_requests": 10, "arrival": {"process": "gamma", "rate": 3, "burstiness": 0.5},
     "input_tokens": {"dist": "normal", "mean": 300, "std": 50, "max": 400}, "output_tokens": {"dist": "exponential", "mean": 80}},
    {"duration_s": 30, "arrival": {"process": "closed", "clients": 3, "think_time_s": 1.5},
     "input_tokens": {"dataset": "azure-code"}, "output_tokens": {"dataset": "azure-code"}},
    {"arrival": {"process": "stages", "stages": [{"rate": 1, "duration_s": 5}, {"rate": 4, "duration_s": 5}]},
     "input_tokens": {"dist": "zipf", "a": 1.4, "max": 8000}, "output_tokens": 32,
     "prefix": {"num_groups": 3, "prefix_tokens": {"dist": "lognormal", "mu": 6, "sigma": 0.5}, "assignment": "zipf"},
     "conversation": {"turns": {"dist": "uniform", "low": 1, "high": 6}, "think_time_s": {"dist": "exponential", "mean": 5}}},
    {"num_requests": 40, "arrival": {"process": "poisson", "rate": 2},
     "classes": [{"name": "a", "input_tokens": 100, "output_tokens": 10, "weight": 2},
                 {"name": "b", "arrival": {"process": "constant", "rate": 1}, "input_tokens": {"dataset": "arxiv"}, "output_tokens": 200}]},
    {"scenario": "mlperf-server", "arrival": {"rate": 3}, "input_tokens": {"dataset": "sharegpt"}, "output_tokens": {"dataset": "sharegpt"}},
]


@pytest.mark.parametrize("raw", ROUND_TRIP)
def test_dump_and_reload_is_identity(raw):
    cfg = WorkloadConfig.model_validate(raw)
    dumped = cfg.model_dump(mode="json")
    json.dumps(dumped)
    again = WorkloadConfig.model_validate(dumped)
    assert again == cfg and again.model_dump(mode="json") == dumped
    exp = parse_experiment({**BASE, "workload": raw}, "x.yaml")
    assert with_overrides(exp, {"seed": 3}).workload == cfg  # the integrator's override path
    w = build_workload(cfg, np.random.SeedSequence(0), Path("."))
    json.dumps(w.describe())


@pytest.mark.parametrize("workload, needle", [
    ({"arrival": {"process": "poison", "rate": 1}, "num_requests": 1, "input_tokens": 1, "output_tokens": 1},
     "workload.arrival: unknown arrival process 'poison' (did you mean: poisson?)"),
    ({"arrival": {"process": "poisson", "rat": 1}, "num_requests": 1, "input_tokens": 1, "output_tokens": 1},
     "unknown key 'rat' for process poisson (did you mean: rate?)"),
    ({"arrival": {"process": "poisson", "rate": 0}, "num_requests": 1, "input_tokens": 1, "output_tokens": 1}, "workload.arrival.rate"),
    ({"arrival": {"process": "poisson", "rate": 1}, "input_tokens": 1, "output_tokens": 1}, "num_requests or duration_s"),
    ({"arrival": {"process": "poisson", "rate": 1}, "num_requests": 1, "output_tokens": 1}, "input_tokens is required"),
    ({"num_requests": 1, "input_tokens": 1, "output_tokens": 1}, "arrival is required"),
    ({"arrival": {"process": "offline"}, "duration_s": 5, "input_tokens": 1, "output_tokens": 1}, "offline needs num_requests"),
    ({"arrival": {"process": "poisson", "rate": 1}, "num_requests": 1, "input_tokens": 1, "output_tokens": 1, "prefx": {}},
     "workload.prefx: unknown key"),
    ({"arrival": {"process": "poisson", "rate": 1}, "num_requests": 1, "input_tokens": 1, "output_tokens": 1,
      "prefix": {"num_groups": 0, "prefix_tokens": 5}}, "workload.prefix.num_groups"),
    ({"arrival": {"process": "poisson", "rate": 1}, "num_requests": 1, "input_tokens": 1, "output_tokens": 1,
      "classes": [{"name": "x"}, {"name": "x"}]}, "duplicate class name"),
    ({"scenario": "mlperf-serverr", "arrival": {"rate": 1}, "input_tokens": 1, "output_tokens": 1}, "did you mean: mlperf-server"),
])
def test_errors_name_the_key_path_and_file(workload, needle):
    with pytest.raises(ConfigError) as exc:
        parse_experiment({**BASE, "workload": workload}, "exp.yaml")
    assert "exp.yaml: workload" in str(exc.value)
    assert needle in str(exc.value), str(exc.value)


def test_describe_reports_analytic_and_observed_means():
    w = make({"num_requests": 5000, "arrival": {"process": "poisson", "rate": 10},
              "input_tokens": {"dist": "lognormal", "mean": 400, "std": 100}, "output_tokens": 50})
    d = w.describe()
    cls = d["classes"][0]
    assert cls["input_tokens"]["mean"] == pytest.approx(400, rel=1e-3)
    assert d["mean_prompt_tokens"] == pytest.approx(400, rel=0.02)
    assert d["mean_rate"] == 10 and d["observed_rate"] == pytest.approx(10, rel=0.05)
    assert d["num_requests"] == 5000 and d["arrival"]["process"] == "poisson"


def test_joint_dataset_pairs():
    from workloads.datasets import load_dataset

    w = make({"num_requests": 300, "arrival": {"process": "poisson", "rate": 1},
              "input_tokens": {"dataset": "azure-conv"}, "output_tokens": {"dataset": "azure-conv"}})
    inp, out = load_dataset("azure-conv")
    pairs = set(zip(inp.tolist(), out.tolist()))
    assert all((s.num_prompt_tokens, s.max_output_tokens) in pairs for s in w.specs)
    assert w.describe()["classes"][0]["joint_dataset_pairs"] is True


EXAMPLES = {
    "poisson_chat.yaml": 1000,
    "azure_conv_replay.yaml": None,
    "azure_conv_replay_2x.yaml": None,
    "closed_loop_sweep.yaml": 400,
    "mlperf_server_llama2_70b.yaml": None,
    "shared_prefix.yaml": 800,
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_workloads_build_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths must resolve against the YAML's directory
    exp = load_experiment(EXPERIMENTS / name)
    w = build_workload(exp.workload, np.random.SeedSequence(exp.seed), Path(exp.base_dir), model_name=exp.model)
    d = w.describe()
    if EXAMPLES[name] is not None:
        assert d.get("num_requests", d.get("max_requests")) == EXAMPLES[name]
    if name.startswith("azure"):
        assert d["trace"]["rows"] == 19_366
        n = len(w.specs)
        assert 400 < n < 520  # requests in the first 120 s of the trace
        last = w.specs[-1].arrival_s
        assert last < (60 if "2x" in name else 120) and last > (55 if "2x" in name else 110)
    assert os.getcwd() == str(tmp_path)
