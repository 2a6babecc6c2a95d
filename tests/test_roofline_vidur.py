"""The H100/A100 profiles reproduce real per-operator GPU timings (Vidur subset in tests/data/vidur)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwprofiles import load_profile
from sim.config import ParallelConfig
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel, single_request_shape

DATA = Path(__file__).parent / "data"
MODELS = {"Llama-2-7b-hf": "llama-2-7b", "CodeLlama-34b-Instruct-hf": str(DATA / "models" / "codellama-34b-instruct.json")}
OPS = {"qkv_proj": "attn_pre_proj", "o_proj": "attn_post_proj", "gate_up_proj": "mlp_up_proj", "down_proj": "mlp_down_proj"}


# Per-kernel GEMM parameters of the H100 fitted on these Vidur timings (benchmarks/fit_vidur_profiles.py):
# isolated eager-mode PyTorch kernels, each with its launch floor. The shipped h100-sxm profile carries
# the end-to-end values fitted on real vLLM v0.15.1 runs instead (CUDA graphs hide the per-kernel floor,
# decode GEMVs stream at ~97% of peak; docs/validation.md), so this test pins the per-kernel set: it checks
# the roofline's functional form against per-operator measurements. The A100 profile still is per-kernel.
PER_KERNEL = {"h100": {"gemm_compute_efficiency": 0.754, "gemm_half_tokens": 226.0,
                       "memory_efficiency": 0.858, "gemm_kernel_s": 3.56e-6}, "a100": {}}


@pytest.mark.parametrize("gpu,profile", [("h100", "h100-sxm"), ("a100", "a100-sxm-80gb")])
def test_gemm_times_match_measured(gpu, profile):
    hw = load_profile(profile).with_parameters(**PER_KERNEL[gpu]) if PER_KERNEL[gpu] else load_profile(profile)
    d = pd.read_csv(DATA / "vidur" / f"{gpu}_mlp_subset.csv")
    errors = []
    for (model, tp), rows in d.groupby(["model", "num_tensor_parallel_workers"]):
        spec = load_model(MODELS[model])
        cm = RooflineCostModel(spec, hw, ParallelConfig(tp=int(tp)))
        for _, r in rows.iterrows():
            bd = cm.breakdown(single_request_shape(int(r.num_tokens), 0))
            for ours, theirs in OPS.items():
                predicted = bd[ours] / spec.num_layers
                measured = r[f"time_stats.{theirs}.median"] * 1e-3
                errors.append(predicted / measured - 1)
    errors = np.array(errors)
    assert len(errors) == 4 * len(d)
    assert np.median(np.abs(errors)) < 0.12  # whole-dataset fit: 8% (H100), 6% (A100)
    assert abs(np.median(errors)) < 0.08  # no systematic bias
    assert np.percentile(np.abs(errors), 90) < 0.35


def test_large_allreduce_bandwidth_matches_measured():
    hw = load_profile("h100-sxm")
    d = pd.read_csv(DATA / "vidur" / "h100_dgx__all_reduce_subset.csv")
    big = d[d["size"] >= 16 * 2**20]
    e = hw.efficiency.communication_efficiency.value
    n = big["num_workers"].to_numpy(dtype=float)
    nccl_latency = 29.5e-6  # Vidur's data is NCCL; the profile's allreduce_latency_s is vLLM's custom all-reduce
    predicted = nccl_latency + 2 * (n - 1) / n * big["size"].to_numpy(dtype=float) / (450e9 * e)
    measured = big["time_stats.all_reduce.median"].to_numpy(dtype=float) * 1e-3
    assert np.median(np.abs(predicted / measured - 1)) < 0.08
