"""Hardware profiles: bundled files validate, names resolve, errors name the file and key, tunables round-trip."""
from __future__ import annotations

import pytest
import yaml

from hwprofiles import list_profiles, load_profile
from sim.deploy.hardware import (
    GIB,
    MEMORY_PARAMETERS,
    TIMING_PARAMETERS,
    HardwareProfile,
)
from sim.errors import ConfigError, UnknownNameError

REQUIRED = {"a100-sxm-40gb", "a100-sxm-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l40s", "l4", "a10g", "mi300x"}


def test_bundled_profiles_present_and_valid():
    names = set(list_profiles())
    assert REQUIRED <= names
    for n in names:
        p = load_profile(n)
        assert p.name == n and p.memory_bytes > 0 and p.peak_flops("bf16") > 0
        # a price with its source, or a stated absence that tells the user which key to set
        assert (p.usd_per_gpu_hour or 0) > 0 or "cost.gpu_hour_usd" in p.price_source, n


@pytest.mark.parametrize("alias,name", [("H100", "h100-sxm"), ("h100_sxm5", "h100-sxm"), ("A100-80GB", "a100-sxm-80gb"),
                                         ("A100-40GB", "a100-sxm-40gb"), ("MI300X", "mi300x"), ("L40S", "l40s")])
def test_aliases_case_insensitive(alias, name):
    assert load_profile(alias).name == name


def test_h100_datasheet_numbers():
    h = load_profile("h100-sxm")
    assert h.memory_bytes == 81080 * 2**20  # 79.18 GiB as CUDA reports it
    assert abs(h.memory_bytes / GIB - 79.18) < 0.01
    assert h.memory_bandwidth_bytes_per_s == 3.35e12
    assert h.peak_flops("bf16") == pytest.approx(989.4e12)
    assert h.peak_flops("fp8") == pytest.approx(1978.9e12)
    assert h.interconnect.intra_node_bandwidth_bytes_per_s == 450e9


def test_dtype_fallbacks():
    a100 = load_profile("a100-sxm-80gb")
    # Ampere has no fp8 tensor cores: fp8 weights run weight-only at the 16-bit rate
    assert a100.resolve_compute_dtype("fp8") == ("bf16", pytest.approx(312e12))
    assert a100.peak_flops("fp16") == a100.peak_flops("bf16")


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean.*h100"):
        load_profile("h100-sxn")


def test_every_profile_marks_calibration_status():
    for n in list_profiles():
        p = load_profile(n)
        for name in TIMING_PARAMETERS + MEMORY_PARAMETERS:
            t = p.parameter(name)
            assert t.status in ("calibrated", "assumed")
            assert t.basis, f"{n}: {name} has no basis"
    assert load_profile("h100-sxm").calibration_status == "partial"
    assert load_profile("mi300x").calibration_status == "uncalibrated"
    assert "uncalibrated" in load_profile("mi300x").calibration_note()


def test_tunables_flat_and_with_parameters_returns_new_profile():
    h = load_profile("h100-sxm")
    params = h.tunable_parameters()
    assert set(params) == set(TIMING_PARAMETERS) | set(MEMORY_PARAMETERS)
    assert set(h.tunable_parameters("timing")) == set(TIMING_PARAMETERS)
    h2 = h.with_parameters(per_iteration_s=0.002, memory_efficiency=0.9)
    assert h2.tunable_parameters()["per_iteration_s"] == 0.002
    assert h.tunable_parameters()["per_iteration_s"] == params["per_iteration_s"]  # original untouched
    assert h2.parameter("per_iteration_s").status == h.parameter("per_iteration_s").status
    h3 = h.with_parameters(basis="fit to run X", per_iteration_s=0.001)
    assert h3.parameter("per_iteration_s").status == "calibrated"
    assert h3.parameter("per_iteration_s").basis == "fit to run X"
    with pytest.raises(ConfigError, match="unknown hardware parameter 'per_iteration'.*did you mean"):
        h.with_parameters(per_iteration=1.0)
    with pytest.raises(ConfigError, match="memory_efficiency"):
        h.with_parameters(memory_efficiency=1.5)


def test_to_yaml_round_trips():
    for n in list_profiles():
        p = load_profile(n)
        back = HardwareProfile.from_yaml_text(p.to_yaml(), "<round trip>")
        assert back.to_dict() == p.to_dict()
        assert back.tunable_parameters() == p.tunable_parameters()


def _h100_data() -> dict:
    return yaml.safe_load(load_profile("h100-sxm").to_yaml())


def test_user_yaml_path_loads(tmp_path):
    data = _h100_data()
    data["name"] = "my-gpu"
    data["aliases"] = []
    f = tmp_path / "my-gpu.yaml"
    f.write_text(yaml.safe_dump(data))
    assert load_profile(str(f)).name == "my-gpu"


@pytest.mark.parametrize("mutate,key", [
    (lambda d: d["memory"].pop("capacity_bytes"), "memory.capacity_bytes: required key is missing"),
    (lambda d: d["memory"].__setitem__("capacity_bytes", -5), "memory.capacity_bytes"),
    (lambda d: d["peak_tflops"].__setitem__("bf17", 1.0), "peak_tflops"),
    (lambda d: d["efficiency"]["memory_efficiency"].__setitem__("value", 1.7), "efficiency"),
    (lambda d: d["efficiency"]["memory_efficiency"].__setitem__("status", "guessed"), "efficiency.memory_efficiency.status"),
    (lambda d: d["overheads"].__setitem__("per_iteration", 0.1), "overheads.per_iteration: unknown key (did you mean"),
    (lambda d: d.__setitem__("name", "Bad Name"), "name"),
])
def test_invalid_profile_errors_name_file_and_key(tmp_path, mutate, key):
    data = _h100_data()
    mutate(data)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_profile(str(f))
    msg = str(exc.value)
    assert str(f) in msg and key in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such hardware profile file"):
        load_profile(str(tmp_path / "nope.yaml"))
    f = tmp_path / "broken.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profile(str(f))


def test_bare_number_tunable_reads_as_assumed(tmp_path):
    data = _h100_data()
    data["overheads"]["per_iteration_s"] = 0.001
    p = HardwareProfile.from_dict(data, "x.yaml")
    assert p.parameter("per_iteration_s").value == 0.001
    assert p.parameter("per_iteration_s").status == "assumed"


@pytest.mark.parametrize("name,bw,bf16,sms", [("a40", 696e9, 149.7, 84), ("rtx-4090", 1008e9, 165.2, 128),
                                              ("rtx-5090", 1792e9, 209.5, 170), ("rtx-pro-6000", 1792e9, 500.0, 188),
                                              ("h20", 4.0e12, 148.0, None),
                                              ("mi325x", 6.0e12, 1307.4, 304), ("mi355x", 8.0e12, 2500.0, 256)])
def test_new_gpus_datasheet_numbers_and_assumed_status(name, bw, bf16, sms):
    """The GPUs of issue 18: datasheet numbers (sources in each file's header), every tunable assumed."""
    p = load_profile(name)
    assert p.memory_bandwidth_bytes_per_s == bw and p.peak_tflops["bf16"] == bf16 and p.compute_units == sms
    assert p.calibration_status == "uncalibrated"
    assert all(p.parameter(k).status == "assumed" for k in TIMING_PARAMETERS + MEMORY_PARAMETERS)
