"""The roofline's per-operator shape models against real per-operator GPU timings (Vidur subset in
tests/data/vidur: Llama-2-7B and CodeLlama-34B on H100 / A100, TP 1/2/4/8, 1-4096 tokens).

Each test reports the median |error| per operator, as the roofline's breakdown names them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwprofiles import load_profile
from sim.config import ParallelConfig
from sim.deploy.collectives import interpolate_curve, measured_curve
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel, single_request_shape

DATA = Path(__file__).parent / "data"
MODELS = {"Llama-2-7b-hf": "llama-2-7b", "CodeLlama-34b-Instruct-hf": str(DATA / "models" / "codellama-34b-instruct.json")}
GEMMS = {"qkv_proj": "attn_pre_proj", "o_proj": "attn_post_proj", "gate_up_proj": "mlp_up_proj", "down_proj": "mlp_down_proj"}
# our element-wise lines -> Vidur's kernels (vLLM fuses the residual add into the RMSNorm: 2 fused kernels per
# layer against Vidur's 2 norms + 1 add)
ELEMENTWISE = {"rotary": ("attn_rope",), "activation": ("mlp_act",),
               "norm": ("input_layernorm", "post_attention_layernorm", "add")}

# Per-kernel GEMM parameters of the H100 fitted on these Vidur timings (benchmarks/fit_vidur_profiles.py, tile/wave
# model): isolated eager-mode PyTorch kernels, each with its launch floor and imperfect compute/memory overlap. The
# shipped h100-sxm profile carries the end-to-end values fitted on real vLLM v0.15.1 runs instead (CUDA graphs hide
# the per-kernel floor, weight streaming and MMA overlap; docs/validation.md), so this test pins the per-kernel
# set: it checks the functional form against per-operator measurements. The A100 profile is per-kernel.
PER_KERNEL = {"h100": {"memory_efficiency": 0.951, "gemm_kernel_s": 5.07e-6, "gemm_overlap_exponent": 1.81},
              "a100": {}}


def _errors(gpu: str, profile: str) -> pd.DataFrame:
    hw = load_profile(profile).with_parameters(**PER_KERNEL[gpu]) if PER_KERNEL[gpu] else load_profile(profile)
    d = pd.read_csv(DATA / "vidur" / f"{gpu}_mlp_subset.csv")
    rows = []
    for (model, tp), group in d.groupby(["model", "num_tensor_parallel_workers"]):
        spec = load_model(MODELS[model])
        cm = RooflineCostModel(spec, hw, ParallelConfig(tp=int(tp)))
        for _, r in group.iterrows():
            bd = cm.breakdown(single_request_shape(int(r.num_tokens), 0))
            for ours, theirs in {**{k: (v,) for k, v in GEMMS.items()}, **ELEMENTWISE}.items():
                measured = sum(r[f"time_stats.{op}.median"] for op in theirs) * 1e-3
                rows.append((ours, int(tp), int(r.num_tokens), bd[ours] / spec.num_layers / measured - 1))
    return pd.DataFrame(rows, columns=["op", "tp", "tokens", "err"])


@pytest.fixture(scope="module", params=[("h100", "h100-sxm"), ("a100", "a100-sxm-80gb")], ids=["h100", "a100"])
def errors(request):
    return request.param[0], _errors(*request.param)


def test_gemm_median_error_per_operator(errors):
    gpu, e = errors
    g = e[e.op.isin(GEMMS)]
    per_op = g.groupby("op").err.apply(lambda s: float(np.median(np.abs(s))))
    assert len(per_op) == 4
    assert (per_op < 0.12).all(), per_op.to_dict()  # full-data fit: 7.2% (H100), 6.5% (A100) over all GEMMs
    assert float(np.median(np.abs(g.err))) < 0.10
    assert abs(float(np.median(g.err))) < 0.06  # no systematic bias


def test_narrow_gemms_at_high_tp_are_not_too_fast(errors):
    """TP8, 65-256 tokens: the old row-ramp model was 15% (per-kernel set) to 55% (replay set) too fast here;
    the tile/wave model with split-K keeps every TP degree and token bucket within ±15% (median)."""
    gpu, e = errors
    g = e[e.op.isin(GEMMS)].copy()
    g["bucket"] = pd.cut(g.tokens, [0, 16, 64, 256, 1024, 4096])
    bias = g.groupby(["tp", "bucket"], observed=True).err.median()
    assert (bias.abs() < 0.15).all(), bias.unstack().round(2).to_string()
    assert abs(bias.loc[(8, pd.Interval(64, 256))]) < 0.12


def test_elementwise_median_error_per_operator(errors):
    """Each element-wise kernel is its own breakdown line, with a floor growing with its row width."""
    gpu, e = errors
    per_op = e[e.op.isin(ELEMENTWISE)].groupby("op").err.apply(lambda s: float(np.median(np.abs(s))))
    # measured (full subset): rotary 11% / 11%, activation 26% / 17%, norm 26% / 26% (H100 / A100); one shared
    # bandwidth fraction for all three kernels, so the activation (best vectorised) is priced slow and the
    # norm (a row reduction, and here fused add+norm against Vidur's separate norm and add kernels) fast
    assert per_op["rotary"] < 0.15 and per_op["activation"] < 0.30 and per_op["norm"] < 0.30


def test_elementwise_floor_grows_with_row_width():
    """At one token the activation of a 22,016-wide MLP row takes longer than a 1,376-wide one (Vidur H100:
    12 µs vs 2 µs), and so does the model's."""
    hw = load_profile("h100-sxm")
    one = single_request_shape(1, 0)
    wide = RooflineCostModel(load_model("llama-2-7b"), hw).breakdown(one)["activation"]
    narrow = RooflineCostModel(load_model("llama-2-7b"), hw, ParallelConfig(tp=8)).breakdown(one)["activation"]
    assert wide > narrow * 1.5


@pytest.mark.parametrize("gpu,profile,link", [("h100", "h100-sxm", 450e9), ("a100", "a100-sxm-80gb", 300e9)])
def test_nccl_allreduce_curve_matches_the_measured_subset(gpu, profile, link):
    """The packaged NCCL curve (25 size bins per GPU count) reproduces Vidur's measured medians above vLLM's
    8 MiB custom all-reduce limit, where it is used."""
    d = pd.read_csv(DATA / "vidur" / f"{gpu}_dgx__all_reduce_subset.csv")
    big = d[d["size"] > 8 * 2**20]
    curve = measured_curve(load_profile(profile).interconnect.allreduce_measurements)
    pred = np.array([interpolate_curve(*curve[int(n)], float(s)) for n, s in zip(big.num_workers, big["size"])])
    meas = big["time_stats.all_reduce.median"].to_numpy(dtype=float) * 1e-3
    assert np.median(np.abs(pred / meas - 1)) < 0.06
    # and the ring formula with the fitted efficiency agrees at large sizes (NCCL latency 29.5 µs, Vidur fit)
    e = load_profile(profile).efficiency.communication_efficiency.value
    n = big["num_workers"].to_numpy(dtype=float)
    ring = (29.5e-6 if gpu == "h100" else 41.7e-6) + 2 * (n - 1) / n * big["size"].to_numpy(dtype=float) / (link * e)
    assert np.median(np.abs(ring / meas - 1)) < 0.12
