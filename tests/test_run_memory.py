"""Memory of a run's results (issue 10): the containers that keep a million-request run small give
exactly the frames the plain constructions give."""
from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

from sim.config import parse_experiment
from sim.engine import simulator
from sim.engine.request import RECORD_COLUMNS, RequestStatus, to_record
from sim.runs.runner import run


def _experiment() -> dict:
    """Chat traffic with prefix caching and prompts over max_model_len (rejected rows as well as
    completed ones)."""
    return {
        "name": "mem", "seed": 3, "model": "llama-3.1-8b", "hardware": "h100-sxm",
        "engine": {"policy": "vllm", "max_num_seqs": 64, "max_num_batched_tokens": 2048, "max_model_len": 1200},
        "workload": {"num_requests": 400, "arrival": {"process": "poisson", "rate": 30.0},
                     "input_tokens": {"dist": "lognormal", "mean": 600, "std": 300, "max": 4096},
                     "output_tokens": {"dist": "lognormal", "mean": 200, "std": 100, "max": 2048}},
    }


def _captured_run(monkeypatch):
    seen: list = []
    real = simulator.records_frame

    def capture(requests):
        seen.extend(requests)
        return real(requests)

    monkeypatch.setattr(simulator, "records_frame", capture)
    return run(parse_experiment(_experiment())), seen


def test_records_frame_equals_from_records_of_row_dicts(monkeypatch):
    result, requests = _captured_run(monkeypatch)
    statuses = set(result.requests["status"])
    assert {"completed", "rejected"} <= statuses, statuses
    expected = pd.DataFrame.from_records([to_record(r) for r in requests], columns=list(RECORD_COLUMNS))
    pd.testing.assert_frame_equal(result.requests, expected, check_exact=True)
    assert list(result.requests.dtypes) == list(expected.dtypes)


def test_records_frame_in_blocks_equals_from_records(monkeypatch):
    """Blocks of 37 requests give the one-block frame; blocks that infer different dtypes (integer
    arrival times in the first block only) are inferred again over the whole column, as pandas would."""
    from sim.engine import request as request_mod

    _, requests = _captured_run(monkeypatch)
    monkeypatch.setattr(request_mod, "_RECORD_BLOCK", 37)
    for r in requests[:37]:
        r.arrival_s = int(r.arrival_s)
    for subset in (requests, requests[:37], requests[:74], []):
        expected = pd.DataFrame.from_records([to_record(r) for r in subset], columns=list(RECORD_COLUMNS))
        got = request_mod.records_frame(subset)
        if subset:
            pd.testing.assert_frame_equal(got, expected, check_exact=True)
            assert list(got.dtypes) == list(expected.dtypes)
        else:
            assert list(got.columns) == list(RECORD_COLUMNS) and len(got) == 0
    assert request_mod.records_frame(requests)["arrival_s"].dtype == np.float64


def test_ended_requests_drop_their_prefix_hashes(monkeypatch):
    _, requests = _captured_run(monkeypatch)
    ended = [r for r in requests if r.status in (RequestStatus.FINISHED, RequestStatus.REJECTED)]
    assert ended and all(r.block_hashes is None for r in ended)


def test_iteration_frame_views_the_typed_log_and_equals_a_copy():
    log = simulator._IterationLog()
    log.kind_code.update({"prefill": 0, "decode": 1})
    rng = np.random.default_rng(0)
    for i in range(50):
        for (name, code), app in zip(log.COLUMNS, log.appenders(), strict=True):
            app(int(rng.integers(0, 2)) if name == "kind" else int(rng.integers(0, 9)) if code == "q"
                else float(rng.random()))
    df = log.frame(2)
    copied = {"replica": np.full(50, 2, dtype=np.int64), "iteration": np.arange(50, dtype=np.int64)}
    for name, code in log.COLUMNS:
        values = np.array(array(code, log.columns[name]))
        copied[name] = np.array(["prefill", "decode"], dtype=object)[values] if name == "kind" else values
    pd.testing.assert_frame_equal(df, pd.DataFrame(copied, columns=df.columns), check_exact=True)
    # one copy of the log in memory: the frame's numeric columns are the log's buffers
    assert np.shares_memory(df["end_s"].to_numpy(), np.frombuffer(log.columns["end_s"]))
