"""calibrate says what the data does not determine, and never runs more simulations than allowed."""
from __future__ import annotations

import numpy as np
import pytest

from sim.fidelity import calibrate as cal
from tests.test_calibrate import ToyProfile, _synthetic_case, toy_replay


@pytest.mark.parametrize("cap", [2, 5, 9])
def test_max_evals_is_exact(cap: int) -> None:
    calls = [0]

    def counting(profile, case):
        calls[0] += 1
        return toy_replay(profile, case)

    fit = cal.fit_profile(ToyProfile(), [_synthetic_case(ToyProfile(step_overhead_s=0.0035))], replay=counting,
                          max_nfev=cap)
    assert calls[0] <= cap and fit.num_evaluations <= cap


def test_underdetermined_parameters_are_marked_assumed() -> None:
    truth = ToyProfile(step_overhead_s=0.0035)
    # one objective metric, three free parameters: more unknowns than independent residuals
    fit = cal.fit_profile(ToyProfile(), [_synthetic_case(truth)], replay=toy_replay,
                          metric_names=["mean_ttft_ms"], max_nfev=12)
    assert "underdetermined" in fit.message
    assert all(not np.isfinite(s) for s in fit.stderr.values())
    note = cal.calibration_note(fit.parameters, on="toy", stderr=fit.stderr)
    for entry in note["parameters"].values():
        assert entry["calibrated"] is False and entry["basis"].startswith("assumed")


def test_determined_parameter_keeps_calibrated_with_sigma() -> None:
    fit = cal.fit_profile(ToyProfile(), [_synthetic_case(ToyProfile(step_overhead_s=0.003))],
                          parameters=["step_overhead_s"], replay=toy_replay)
    note = cal.calibration_note(fit.parameters, on="toy", stderr=fit.stderr)
    e = note["parameters"]["step_overhead_s"]
    assert e["calibrated"] is True and "±1σ" in e["basis"]
