"""simctl calibrate: the least-squares fitter, uncertainty, measurement loading, profile writing.

The fitter is exercised against a stand-in simulator (a closed-form latency model) so these tests are
fast and independent of the engine; tests/test_calibrate_sim.py repeats the recovery check with the
real simulator on a tiny replay.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.errors import ConfigError
from sim.fidelity import calibrate as cal

DATA = Path(__file__).parent / "data" / "calibration"


@dataclass(frozen=True)
class ToyProfile:
    """Minimal stand-in with the HardwareProfile calibration surface."""

    step_overhead_s: float = 0.004
    prefill_s_per_token: float = 2e-5
    decode_s_per_token: float = 0.006
    name: str = "toy"

    def tunable_parameters(self) -> dict[str, float]:
        return {"step_overhead_s": self.step_overhead_s, "prefill_s_per_token": self.prefill_s_per_token,
                "decode_s_per_token": self.decode_s_per_token}

    def with_parameters(self, **kw) -> "ToyProfile":
        return replace(self, **kw)

    def to_yaml(self) -> str:
        return yaml.safe_dump({"name": self.name, **self.tunable_parameters()})


def toy_replay(profile: ToyProfile, case: cal.ReplayCase) -> pd.DataFrame:
    """Closed-form latencies: TTFT = overhead + prefill; E2E = TTFT + (n − 1)·(overhead + decode)."""
    m = case.measured
    ttft = profile.step_overhead_s + profile.prefill_s_per_token * m["input_tokens"]
    e2e = ttft + (m["output_tokens"] - 1) * (profile.step_overhead_s + profile.decode_s_per_token)
    return pd.DataFrame({"arrival_s": m["arrival_s"], "input_tokens": m["input_tokens"],
                         "output_tokens": m["output_tokens"], "ttft_s": ttft, "e2el_s": e2e})


def _synthetic_case(truth: ToyProfile, n: int = 200, seed: int = 0) -> cal.ReplayCase:
    rng = np.random.default_rng(seed)
    base = pd.DataFrame({"arrival_s": np.sort(rng.uniform(0, 20, n)),
                         "input_tokens": rng.integers(50, 3000, n), "output_tokens": rng.integers(2, 300, n)})
    case = cal.ReplayCase("synthetic", None, base)
    measured = toy_replay(truth, case)
    return cal.ReplayCase("synthetic", None, measured)


def test_fitter_recovers_known_parameters():
    truth = ToyProfile(step_overhead_s=0.0035, prefill_s_per_token=3.1e-5, decode_s_per_token=0.0052)
    case = _synthetic_case(truth)
    start = ToyProfile()  # every parameter perturbed by 12-55 %
    fit = cal.fit_profile(start, [case], replay=toy_replay)
    for k, v in truth.tunable_parameters().items():
        assert fit.parameters[k] == pytest.approx(v, rel=0.02), k
    assert fit.rms_rel_error < 1e-3 < fit.initial_rms_rel_error
    assert fit.success


def test_fit_subset_and_uncertainty_shrinks_with_data():
    truth = ToyProfile(step_overhead_s=0.003)
    noisy = _synthetic_case(truth)
    rng = np.random.default_rng(1)
    noisy.measured["e2el_s"] *= 1 + 0.02 * rng.standard_normal(len(noisy.measured))
    fit = cal.fit_profile(ToyProfile(), [noisy], parameters=["step_overhead_s"], replay=toy_replay)
    assert list(fit.parameters) == ["step_overhead_s"]
    assert fit.parameters["step_overhead_s"] == pytest.approx(0.003, rel=0.1)
    assert np.isfinite(fit.stderr["step_overhead_s"]) and fit.stderr["step_overhead_s"] > 0
    d = fit.to_dict()
    json.dumps(d)
    assert set(d["metrics"]["synthetic"]) == set(cal.OBJECTIVE_METRICS)


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match="unknown tunable parameter.*step_overhead_s"):
        cal.fit_profile(ToyProfile(), [_synthetic_case(ToyProfile())], parameters=["step_overhead"],
                        replay=toy_replay)


def test_scored_rows_only_count():
    truth = ToyProfile()
    case = _synthetic_case(truth)
    m = case.measured.copy()
    m["scored"] = m["arrival_s"] >= 10
    m.loc[~m["scored"], "ttft_s"] *= 100  # warm-up rows are wrong on purpose
    fit = cal.fit_profile(truth, [cal.ReplayCase("s", None, m)], replay=toy_replay, max_nfev=3)
    assert fit.initial_rms_rel_error < 1e-9


def test_default_bounds():
    assert cal.default_bounds("gemm_efficiency", 0.7) == (0.01, 1.0)
    lo, hi = cal.default_bounds("step_overhead_s", 0.004)
    assert lo == 0.0 and hi >= 0.05


def test_load_measurements_csv_and_vllm_json(tmp_path):
    m = cal.load_measurements(DATA / "roleplay_first300.csv")
    assert len(m) == 300 and m["arrival_s"].iloc[0] == 0.0
    assert list(m.columns[:5]) == ["arrival_s", "input_tokens", "output_tokens", "ttft_s", "e2el_s"]
    p = tmp_path / "v.json"
    p.write_text(json.dumps({"ttfts": [0.1, 0.2], "itls": [[0.01], [0.02]], "input_lens": [5, 6],
                             "output_lens": [2, 2], "errors": ["", ""], "start_times": [10.0, 10.5]}))
    v = cal.load_measurements(p)
    assert v["arrival_s"].tolist() == [0.0, 0.5] and v["e2el_s"].tolist() == pytest.approx([0.11, 0.22])
    p.write_text(json.dumps({"ttfts": [0.1], "itls": [[0.01]], "input_lens": [5], "output_lens": [2],
                             "errors": [""]}))
    with pytest.raises(ConfigError, match="no arrival times"):
        cal.load_measurements(p)
    p.write_text(json.dumps({"mean_ttft_ms": 3.0}))
    with pytest.raises(ConfigError, match="no per-request data"):
        cal.load_measurements(p)


def test_request_specs_shared_prompts():
    m = pd.DataFrame({"arrival_s": [0.0, 1.0, 2.0, 3.0], "input_tokens": [500, 510, 500, 300],
                      "output_tokens": [10, 10, 10, 0], "prompt_id": [0, 1, 0, -1],
                      "prefix_group": [0, 0, 0, -1], "prefix_tokens": [100, 100, 100, 100]})
    specs = cal.request_specs(m, "t")
    assert specs[0].prompt_segments == specs[2].prompt_segments  # same prompt: whole prompt shared
    assert specs[0].prompt_segments[0] == specs[1].prompt_segments[0]  # same group: system prompt shared
    assert specs[0].prompt_segments[1] != specs[1].prompt_segments[1]
    assert sum(n for _, n in specs[1].prompt_segments) == 510
    assert specs[3].prompt_segments == () and specs[3].max_output_tokens == 1


def test_calibration_note_and_yaml():
    fitted = {"step_overhead_s": 0.0042}
    prof, note = cal.calibrated_profile(ToyProfile(), fitted, on="unit test", stderr={"step_overhead_s": 1e-4},
                                        rms_rel_error=0.03, name="toy-fit")
    assert prof.step_overhead_s == 0.0042
    entry = note["parameters"]["step_overhead_s"]
    assert entry["calibrated"] is True and entry["stderr"] == 1e-4
    assert "unit test" in entry["basis"] and "±1σ" in entry["basis"]
    text = cal.profile_yaml(prof, note)
    assert text.startswith("# Calibrated by simctl calibrate (replay)")
    data = yaml.safe_load(text)
    assert data["step_overhead_s"] == 0.0042 and data["name"] == "toy-fit"


def test_calibrated_hardware_profile_round_trips_through_yaml(tmp_path):
    from hwprofiles import load_profile
    from sim.deploy.hardware import HardwareProfile
    base = load_profile("h100-sxm")
    fitted = {"per_iteration_s": 0.0031, "memory_efficiency": 0.83}
    prof, note = cal.calibrated_profile(base, fitted, on="2 runs", stderr={"per_iteration_s": 2e-4},
                                        rms_rel_error=0.04, name="h100-sxm-fit")
    text = cal.profile_yaml(prof, note)
    path = tmp_path / "fit.yaml"
    path.write_text(text)
    back = load_profile(str(path))
    assert back.name == "h100-sxm-fit" and back.aliases == ()
    assert back.tunable_parameters() == pytest.approx({**base.tunable_parameters(), **fitted})
    for k in fitted:
        assert back.parameter(k).status == "calibrated" and "2 runs" in back.parameter(k).basis
    assert "±1σ 0.0002" in back.parameter("per_iteration_s").basis
    assert back.parameter("gemm_kernel_s") == base.parameter("gemm_kernel_s")
    assert HardwareProfile.from_yaml_text(back.to_yaml()) .tunable_parameters() == back.tunable_parameters()
