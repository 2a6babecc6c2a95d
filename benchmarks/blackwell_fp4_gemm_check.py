"""Published Blackwell NVFP4 GEMM timings against what the b200 profile's GEMM model predicts.

The GB200/GB300/B200 profiles carry efficiencies assumed from the fitted H100 profile. This script puts
the one set of per-kernel Blackwell NVFP4 GEMM timings found for DeepSeek-shaped linears next to the
model's prediction for the same shapes, to show in which regime and by how much the assumption is off.
Nothing here is fitted or written back into a profile (docs/expert-parallel.md says why).

Source: FlashInfer PR #2540 "feat: cute dsl mmfp4 for blackwell" (flashinfer-ai/flashinfer, 2026), the
benchmark table of ``mm_fp4`` (NVFP4 × NVFP4 → bf16, 128×4 scale layout) on an SM100 GPU; the cuDNN
backend's kernel times in ms. The retrieved rows reach m = 512 rows at most, so the compute-bound regime
(thousands of rows) is not covered; the table names no device (SM100: B200 assumed).

    python benchmarks/blackwell_fp4_gemm_check.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwprofiles import load_profile  # noqa: E402
from sim.deploy.kernel_shapes import gemm_shape  # noqa: E402
from sim.deploy.models.spec import dtype_bytes  # noqa: E402

#: (m, n, k, measured ms) — FlashInfer PR #2540, mm_fp4, cuDNN backend
MEASURED_MM_FP4: tuple[tuple[int, int, int, float], ...] = (
    (1, 1280, 8192, 0.011312),
    (4, 4608, 7168, 0.011744),
    (4, 7168, 4608, 0.009712),
    (4, 9216, 7168, 0.013488),
    (256, 1024, 7168, 0.008736),
    (256, 4608, 7168, 0.010560),
    (256, 7168, 2304, 0.006912),
    (256, 7168, 4608, 0.009184),
    (256, 9216, 7168, 0.012576),
    (512, 896, 5120, 0.007456),
)


def predicted_s(m: int, n: int, k: int, hw_name: str = "b200") -> float:
    """One NVFP4 GEMM as the roofline prices a dense GEMM: max(tile/wave compute at the FP4 peak, weight +
    activation bytes at the profile's memory efficiency) + the per-kernel time."""
    hw = load_profile(hw_name)
    e = hw.efficiency
    shape = gemm_shape(n, k, 1.0, hw.peak_flops("fp4"), e.gemm_compute_efficiency.value, int(hw.compute_units or 0))
    wb = dtype_bytes("nvfp4")
    moved = n * k * wb + m * (k * wb + n * 2)  # fp4 weights + fp4 input + bf16 output
    t_mem = moved / (hw.memory_bandwidth_bytes_per_s * e.memory_efficiency.value)
    return max(shape.compute_s(m), t_mem) + hw.overheads.gemm_kernel_s.value


def table() -> str:
    """Markdown: measured vs predicted per shape."""
    rows = ["| m | n | k | measured (µs) | b200 profile (µs) | measured / predicted | achieved TFLOP/s | achieved TB/s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    wb = dtype_bytes("nvfp4")
    for m, n, k, ms in MEASURED_MM_FP4:
        t = ms * 1e-3
        p = predicted_s(m, n, k)
        moved = n * k * wb + m * (k * wb + n * 2)
        rows.append(f"| {m} | {n} | {k} | {t * 1e6:.1f} | {p * 1e6:.1f} | {t / p:.2f} | "
                    f"{2 * m * n * k / t / 1e12:,.0f} | {moved / t / 1e12:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
