"""The API-server output path as one FIFO server (sim/engine/output_server.py): hand-computed delays,
an M/D/1 (Pollaczek–Khinchine) oracle, the cited defaults, invariants and vectorisation."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.config import EngineConfig
from sim.deploy.step_cost import ConstantCostModel
from sim.engine.output_server import OutputServerSpec, client_times, emissions_per_iteration
from sim.engine.request import RequestSpec
from sim.engine.simulator import ReplicaSetup, simulate
from workloads.base import OpenLoopWorkload

D = 0.1
CPU_CSV = Path("/work/shared/data/gpu_profiles/a100__cpu_overheads.csv")


def setup(server=None, **engine):
    engine.setdefault("max_num_batched_tokens", 2048)
    engine.setdefault("async_scheduling", False)
    return ReplicaSetup(EngineConfig(**engine), 1000, 4096, ConstantCostModel(D), output_server=server)


def run(specs, su):
    return simulate(OpenLoopWorkload(specs), su, seed_seq=np.random.SeedSequence(0))


def lindley_reference(end, service):
    """The recursion written out step by step (the oracle for the vectorised form)."""
    d, prev = np.empty_like(end), -np.inf
    for k in range(len(end)):
        prev = d[k] = max(prev, end[k]) + service[k]
        
    return d


def test_idle_single_request_is_delayed_by_one_chunk_of_service():
    a = 2.5e-3
    base = run([RequestSpec(1.0, 100, 5)], setup())
    out = run([RequestSpec(1.0, 100, 5)], setup(OutputServerSpec(a, 7e-3)))
    r, r0 = out.requests.iloc[0], base.requests.iloc[0]
    # one chunk of one token per step; the server is idle when each arrives (a < D): delay = a exactly
    assert r.ttft_s == pytest.approx(D + a)
    assert r.e2el_s == pytest.approx(5 * D + a)
    assert r.tpot_s == pytest.approx(D)
    assert r.first_token_s == pytest.approx(r0.first_token_s + a)
    np.testing.assert_allclose(out.timeline.iteration_end_s[0], base.timeline.iteration_end_s[0] + a)
    # the engine itself is unchanged (separate process: no back-pressure)
    pd.testing.assert_frame_equal(out.iterations, base.iterations)


def test_batch_of_requests_pays_per_chunk_and_queues_when_service_exceeds_the_step():
    a = 0.03  # 4 chunks per step = 0.12 s of service > D = 0.1 s: the server falls behind
    specs = [RequestSpec(0.0, 10, 6) for _ in range(4)]
    base = run(specs, setup())
    out = run(specs, setup(OutputServerSpec(a, 0.0)))
    ends = base.timeline.iteration_end_s[0]
    assert len(ends) == 6
    expected = ends[0] + 4 * a + 4 * a * np.arange(6)  # busy from the first step on
    np.testing.assert_allclose(out.timeline.iteration_end_s[0], expected)
    np.testing.assert_allclose(out.requests.e2el_s, expected[-1])
    np.testing.assert_allclose(out.requests.tpot_s, 4 * a)  # the server, not the GPU, sets the ITL


def test_vectorised_recursion_matches_the_step_by_step_one():
    rng = np.random.default_rng(1)
    end = np.cumsum(rng.exponential(0.01, 5000))
    chunks = rng.integers(0, 200, 5000)
    tokens = chunks + rng.integers(0, 3, 5000) * (chunks > 0)
    spec = OutputServerSpec(4e-5, 1e-5)
    service = spec.per_chunk_s * chunks + spec.per_token_s * (tokens - chunks)
    np.testing.assert_allclose(client_times(end, chunks, tokens, spec), lindley_reference(end, service),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.8])
def test_md1_queue_matches_pollaczek_khinchine(rho):
    # Poisson step outputs, deterministic service S: mean sojourn = S + rho S / (2 (1 - rho))
    s = 1e-3
    n = 400_000
    rng = np.random.default_rng(7)
    end = np.cumsum(rng.exponential(s / rho, n))
    ones = np.ones(n)
    sojourn = client_times(end, ones, ones, OutputServerSpec(s, 0.0)) - end
    expected = s + rho * s / (2.0 * (1.0 - rho))
    assert sojourn[n // 10:].mean() == pytest.approx(expected, rel=0.04)


def test_emission_counts_from_runs_and_speculative_bursts():
    # request A emits at iterations 0-3, request B at 2-2 and 4-5; B's iteration 4 burst carries 2 extra tokens
    runs = np.array([0, 3, 2, 2, 4, 5])
    chunks, tokens = emissions_per_iteration(7, runs, np.array([4, 2]))
    np.testing.assert_array_equal(chunks, [1, 1, 2, 1, 1, 1, 0])
    np.testing.assert_array_equal(tokens, [1, 1, 2, 1, 3, 1, 0])
    spec = OutputServerSpec(1e-3, 5e-3)
    end = np.arange(1.0, 8.0)
    np.testing.assert_allclose(client_times(end, chunks, tokens, spec) - end,
                               [1e-3, 1e-3, 2e-3, 1e-3, 1e-3 + 1e-2, 1e-3, 0.0])


def test_invariants_on_a_loaded_run():
    rng = np.random.default_rng(3)
    specs = [RequestSpec(float(t), int(p), int(o)) for t, p, o in
             zip(np.cumsum(rng.exponential(0.05, 300)), rng.integers(20, 400, 300), rng.integers(1, 40, 300))]
    spec = OutputServerSpec(1e-3, 1e-3)
    base = run(specs, setup())
    out = run(specs, setup(spec))
    again = run(specs, setup(spec))
    pd.testing.assert_frame_equal(out.requests, again.requests)  # same seed, same result
    ends, client = base.timeline.iteration_end_s[0], out.timeline.iteration_end_s[0]
    assert np.all(client >= ends) and np.all(np.diff(client) >= 0)  # never early, FIFO order
    assert (out.requests.status == "completed").all() and out.requests.request_id.is_unique
    delay = out.requests.e2el_s - base.requests.e2el_s
    assert (delay >= spec.per_chunk_s - 1e-12).all()
    assert (out.requests.ttft_s >= base.requests.ttft_s).all()
    pd.testing.assert_frame_equal(out.iterations, base.iterations)


def test_off_by_default_and_bit_identical_when_off():
    assert EngineConfig().output_server is False
    specs = [RequestSpec(0.1 * i, 50, 8) for i in range(20)]
    a, b = run(specs, setup()), run(specs, ReplicaSetup(setup().engine, 1000, 4096, ConstantCostModel(D)))
    pd.testing.assert_frame_equal(a.requests, b.requests)


def test_vectorised_no_per_token_python_loop():
    n = 2_000_000  # ~100 s of a busy engine at 50 us per step: a Python loop would take seconds
    end = np.cumsum(np.full(n, 5e-5))
    chunks = np.full(n, 256)
    t0 = time.perf_counter()
    client_times(end, chunks, chunks, OutputServerSpec(1.58e-5, 2e-5))
    emissions_per_iteration(n, np.column_stack([np.arange(0, n, 2), np.arange(1, n, 2)]).ravel())
    assert time.perf_counter() - t0 < 3.0


@pytest.mark.skipif(not CPU_CSV.exists(), reason="shared Vidur CPU-overhead profiles not present")
def test_per_chunk_default_is_the_median_vidur_output_processing_slope():
    from hwprofiles import load_profile
    df = pd.read_csv(CPU_CSV)
    slopes = [np.polyfit(g.batch_size, g.process_model_outputs_median, 1)[0] * 1e-3  # ms -> s per request
              for _, g in df.groupby(["model_name", "tensor_parallel_degree"])]
    for name in ("h100-sxm", "h200"):
        params = load_profile(name).tunable_parameters()
        assert params["output_per_chunk_s"] == pytest.approx(float(np.median(slopes)), rel=0.02)
        assert params["output_per_token_s"] == pytest.approx(2.0e-5)  # vllm-project/vllm#5206: 19-21 us


def test_disaggregated_runs_refuse_it():
    from sim.engine.disagg import PDSpec  # noqa: F401  (the engine refuses before building the pools)
    from sim.errors import ConfigError
    with pytest.raises(ConfigError, match="output_server"):
        simulate(OpenLoopWorkload([RequestSpec(0.0, 10, 2)]), setup(OutputServerSpec(1e-3, 0.0)),
                 disagg=object())


def test_experiment_key_turns_it_on_through_the_runner():
    from sim.api import run as run_experiment
    from sim.config import load_experiment, with_overrides
    from sim.engine.output_server import output_server_spec
    from sim.runs.runner import replica_setup  # noqa: F401  (the runner builds the spec from the profile)
    base = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
    cfg = with_overrides(base, {"engine.output_server": True, "workload.num_requests": 40})
    off = run_experiment(with_overrides(base, {"workload.num_requests": 40})).summary
    on = run_experiment(cfg).summary
    assert on["mean_ttft_ms"] > off["mean_ttft_ms"] and on["mean_e2el_ms"] > off["mean_e2el_ms"]
    assert on["completed"] == off["completed"]
    assert output_server_spec(type("D", (), {"engine": base.engine})()) is None  # off: no spec
