"""Hostile input never ends in a traceback, a hang or silent nonsense.

Two parts:

- the corpus in ``tests/data/hostile/`` (written by its ``make_corpus.py``: encodings, YAML tricks,
  booleans and non-finite numbers where numbers go, sizes that would cost time before anything runs,
  nonsense that used to run, broken traces, ``--set`` abuse, output paths), each run through the
  ``simctl run`` entry point in-process under a time limit: it must either run (exit 0) or be refused
  with exit 2 and one ``error:`` line naming the key or file;
- hypothesis mutations of a valid experiment (one leaf replaced by a hostile value) through the
  loader: valid, or refused by a :class:`sim.errors.SimctlError` naming the mutated key.
"""
from __future__ import annotations

import copy
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.config import parse_experiment
from sim.errors import SimctlError
from sim.outpaths import safe_name

CORPUS = Path(__file__).parent / "data" / "hostile"
CASES = json.loads((CORPUS / "cases.json").read_text())
TIME_LIMIT_S = 20


class _Timeout(Exception):
    pass


def _run_cli(argv: list[str]) -> int:
    """``simctl`` in-process; the exit code. Any exception other than SystemExit is a traceback."""
    def alarm(signum: int, frame: Any) -> None:
        raise _Timeout(f"no answer within {TIME_LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return 0


@pytest.mark.parametrize("case", CASES, ids=[f"{c['cls']}-{c['name']}" for c in CASES])
def test_corpus_case(case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{here}", str(CORPUS)) for a in case["args"]]
    if "--out" not in args and case["expect"] != "default-out":
        args += ["--out", str(tmp_path / "out")]
    t0 = time.perf_counter()
    code = _run_cli(["run", str(CORPUS / case["file"]), "--no-report", *args])
    assert time.perf_counter() - t0 < TIME_LIMIT_S
    err = capsys.readouterr().err
    if case["expect"] == "refuse":
        assert code == 2, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines and lines[0].startswith("error: "), err
        assert "Traceback" not in err
        assert case["needle"] in err, err
    else:
        assert code == 0, err
    if case["expect"] == "default-out":  # the name became one safe directory inside results/
        made = [p for p in (tmp_path / "results").iterdir()]
        assert len(made) == 1 and made[0].is_dir()
        assert made[0].resolve().parent == (tmp_path / "results").resolve()
        assert (made[0] / "summary.json").is_file()


def test_corpus_is_current() -> None:
    """Every corpus file is listed (rerun make_corpus.py after editing it)."""
    listed = {c["file"] for c in CASES}
    on_disk = {p.name for p in CORPUS.glob("*.yaml")}
    assert listed == on_disk


@pytest.mark.parametrize("name,want", [("../../etc", "etc"), ("/tmp/abs", "tmp_abs"), ("~", "experiment"), ("", "experiment"),
                                       (".", "experiment"), ("..", "experiment"), ("a/b", "a_b"),
                                       ("quickstart", "quickstart"), ("llama70b-sweep", "llama70b-sweep")])
def test_safe_name(name: str, want: str) -> None:
    assert safe_name(name) == want
    long = safe_name("x" * 500)
    assert len(long) <= 100 and long != safe_name("x" * 499)


# ---- hypothesis: one hostile leaf anywhere in a valid experiment ------------------------------------

VALID = {"name": "fuzz", "seed": 1, "model": "llama-3.1-8b", "hardware": "h100-sxm",
         "parallel": {"tp": 1, "pp": 1}, "precision": {"weights": "bf16", "kv_cache": "auto"},
         "engine": {"policy": "vllm", "max_num_seqs": 64, "max_num_batched_tokens": 4096, "block_size": 16,
                    "gpu_memory_utilization": 0.9, "max_model_len": 4096, "enable_chunked_prefill": True},
         "replicas": 1, "router": "round-robin", "warmup_s": 0.5, "max_duration_s": 100.0,
         "workload": {"num_requests": 10, "max_concurrency": 4,
                      "arrival": {"process": "gamma", "rate": 4.0, "burstiness": 0.5},
                      "input_tokens": {"dist": "lognormal", "mean": 200.0, "std": 50.0, "max": 1000},
                      "output_tokens": {"dist": "uniform", "low": 4, "high": 12},
                      "prefix": {"num_groups": 2, "prefix_tokens": 32}},
         "slo": {"ttft_ms": {"p99": 500.0}, "tpot_ms": {"mean": 50.0}},
         "cost": {"gpu_hour_usd": 2.5}}

HOSTILE = [True, False, float("inf"), float("-inf"), float("nan"), 1e30, -1, 0, 2 ** 70, -(2 ** 70),
           "", "x" * 10_000, [], {}, None, [1, 2], {"a": 1}, "1e3", 0.5]


def _leaves(d: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(d, dict):
        return [p for k, v in d.items() for p in _leaves(v, (*path, k))]
    return [path]


LEAVES = _leaves(VALID)


def _set(d: dict, path: tuple, value: Any) -> dict:
    d = copy.deepcopy(d)
    cur = d
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return d


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(LEAVES), st.sampled_from(HOSTILE))
def test_one_hostile_leaf_is_refused_or_valid(path: tuple, value: Any) -> None:
    data = _set(VALID, path, value)
    try:
        cfg = parse_experiment(data, "fuzz.yaml")
    except SimctlError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.yaml") or "fuzz.yaml" in msg
        assert any(str(k) in msg for k in path), (path, value, msg)
        return
    # accepted: then the value meant something the schema allows — never a boolean read as a
    # number, never a non-finite number
    got: Any = cfg.to_dict()
    for k in path:
        got = got.get(k) if isinstance(got, dict) else None
    if isinstance(value, float) and not math.isfinite(value):
        pytest.fail(f"{'.'.join(path)} = {value} accepted")
    if isinstance(value, bool) and isinstance(got, (int, float)) and not isinstance(got, bool):
        pytest.fail(f"{'.'.join(path)} = {value} accepted as the number {got}")


@pytest.mark.parametrize("argv,needle", [
    (["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--batch", "100000000"], "priced steps"),
    (["estimate", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--prompt", "1000000000"], "--prompt"),
    (["sweep", str(CORPUS / "000_encoding_utf16_bom.yaml"), "--jobs", "0"], "--jobs"),
    (["calibrate", "--microbench", "x.csv", "--base-profile", "h100-sxm", "--out", "/proc/nope/p.yaml"], "--out"),
])
def test_other_commands_refuse_in_time(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    assert _run_cli(argv) == 2
    assert time.perf_counter() - t0 < TIME_LIMIT_S
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err, err
