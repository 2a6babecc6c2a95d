"""Fit the roofline's GEMM / element-wise / communication parameters to Vidur's measured GPU timings.

    python benchmarks/fit_vidur_profiles.py [--data DIR] [--gpu h100|a100]

DIR holds microsoft/vidur ``data/profiling`` CSVs (MIT licence): ``<gpu>__<model>__mlp.csv`` (ms per op per
layer per TP rank by token count) and ``network__<gpu>_dgx__{all_reduce,send_recv}.csv`` (ms by message
bytes and GPU count). The bundled profiles were fitted on the full files (a checkout of microsoft/vidur's
``data/profiling/``; the numbers in docs/cost-model.md); the default, ``tests/data/vidur``, holds the subsets
the tests use, whose fits land close to, not exactly on, the full-data values.

The model fitted is the one ``sim/deploy/roofline.py`` evaluates (docs/cost-model.md):

* GEMM (M tokens, K×N weights per rank, bf16):
  ``t = max(2MKN·(M + n_half)/(M·peak·e), bytes/(bw·e_mem)) + t_kernel``.
  ``e_mem`` and ``t_kernel`` come from the weight-streaming GEMMs (M ≤ 16, relative least squares of
  ``t = bytes/(bw·e_mem) + t_kernel``); ``e`` and ``n_half`` then from all GEMMs (least squares in log time).
* element-wise kernels (RMSNorm, rotary, SiLU·mul): ``t = bytes/(bw·e_ew) + t_ew``.
* all-reduce within a node: ``t = latency + 2(n−1)/n · bytes/(e_comm · link)``; send/recv
  ``t = latency + bytes/(e · link)``.

Prints the values in the profile YAML's units; paste them into ``hwprofiles/<gpu>.yaml``.
"""
from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

SUBSET = Path(__file__).resolve().parents[1] / "tests" / "data" / "vidur"
#: datasheet peaks the fits are relative to: dense bf16 FLOP/s, HBM bytes/s, NVLink bytes/s per direction
PEAKS = {"h100": (989.4e12, 3.35e12, 450e9), "a100": (312e12, 2.039e12, 300e9)}


def _mlp_frames(data: Path, gpu: str) -> pd.DataFrame:
    files = sorted(glob.glob(str(data / f"{gpu}__*__mlp.csv"))) or [str(data / f"{gpu}_mlp_subset.csv")]
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def _layer_shape(r: pd.Series) -> tuple[int, int, int, int, int, int, int]:
    """(tp, hidden, intermediate, heads, kv heads, head dim, gate factor) of one Vidur profiling row."""
    h, nh = int(r.n_embd), int(r.n_head)
    return (int(r.num_tensor_parallel_workers), h, int(r.n_expanded_embd), nh, int(r.n_kv_head), h // nh,
            2 if r.use_gated_mlp else 1)


def gemm_rows(d: pd.DataFrame) -> pd.DataFrame:
    """One row per measured GEMM: M, K, N (per rank) and seconds."""
    rows = []
    for _, r in d.iterrows():
        tp, h, inter, nh, nkv, hd, g = _layer_shape(r)
        shapes = {"attn_pre_proj": (h, (nh + 2 * nkv) * hd // tp), "attn_post_proj": (nh * hd // tp, h),
                  "mlp_up_proj": (h, g * inter // tp), "mlp_down_proj": (inter // tp, h)}
        for op, (k, n) in shapes.items():
            t = r.get(f"time_stats.{op}.median")
            if pd.notna(t) and t > 0:
                rows.append((op, tp, int(r.num_tokens), k, n, t * 1e-3))
    return pd.DataFrame(rows, columns=["op", "tp", "m", "k", "n", "t"])


def elementwise_rows(d: pd.DataFrame) -> pd.DataFrame:
    """One row per measured norm / rotary / activation kernel: bytes moved and seconds."""
    rows = []
    for _, r in d.iterrows():
        tp, h, inter, nh, nkv, hd, g = _layer_shape(r)
        m = int(r.num_tokens)
        per_tok = {"input_layernorm": 2 * h * 2, "post_attention_layernorm": 2 * h * 2,
                   "attn_rope": 2 * 2 * (nh + nkv) * hd / tp, "mlp_act": (g * inter / tp + inter / tp) * 2}
        for op, b in per_tok.items():
            t = r.get(f"time_stats.{op}.median")
            if pd.notna(t) and t > 0:
                rows.append((op, m * b, t * 1e-3))
    return pd.DataFrame(rows, columns=["op", "bytes", "t"])


def fit_gemm(g: pd.DataFrame, peak: float, bw: float) -> dict[str, float]:
    """Memory efficiency and kernel floor from M ≤ 16, then compute efficiency and n_half from all."""
    m, k, n, t = (g[c].to_numpy(dtype=float) for c in ("m", "k", "n", "t"))
    flops = 2 * m * k * n
    nbytes = 2 * (k * n + m * k + m * n)
    small = m <= 16
    a = np.vstack([nbytes[small], np.ones(small.sum())]).T
    w = 1 / t[small]
    (slope, t_kernel), *_ = np.linalg.lstsq(a * w[:, None], t[small] * w, rcond=None)
    e_mem = 1 / (slope * bw)
    t_mem = nbytes / (bw * e_mem)

    def model(x: np.ndarray) -> np.ndarray:
        e, half = x
        return np.maximum(flops * (m + half) / (m * peak * e), t_mem) + t_kernel

    res = least_squares(lambda x: np.log(model(x)) - np.log(t), [0.75, 100.0], bounds=([0.05, 0.0], [1.0, 5000.0]))
    err = np.abs(model(res.x) / t - 1)
    return {"gemm_compute_efficiency": res.x[0], "gemm_half_tokens": res.x[1], "memory_efficiency": e_mem,
            "gemm_kernel_s": t_kernel, "gemm_median_abs_error": float(np.median(err)), "gemm_points": len(t)}


def fit_elementwise(e: pd.DataFrame, bw: float) -> dict[str, float]:
    """Bandwidth fraction and per-kernel floor of the small kernels."""
    b, t = e["bytes"].to_numpy(dtype=float), e["t"].to_numpy(dtype=float)
    res = least_squares(lambda x: np.log(b / (bw * x[0]) + x[1]) - np.log(t), [0.5, 3e-6], bounds=([0.01, 0], [1, 1e-4]))
    err = np.abs(np.exp(res.fun) - 1)
    return {"elementwise_efficiency": res.x[0], "elementwise_kernel_s": res.x[1],
            "elementwise_median_abs_error": float(np.median(err))}


def fit_allreduce(d: pd.DataFrame, link: float) -> dict[str, float]:
    """Latency + ring bandwidth term, GPUs within one node."""
    n = d["num_workers"].to_numpy(dtype=float)
    s = d["size"].to_numpy(dtype=float)
    t = d["time_stats.all_reduce.median"].to_numpy(dtype=float) * 1e-3
    res = least_squares(lambda x: np.log(x[0] + 2 * (n - 1) / n * s / (link * x[1])) - np.log(t), [1e-5, 0.7],
                        bounds=([0, 0.01], [1e-3, 1.5]))
    err = np.abs(np.exp(res.fun) - 1)
    return {"allreduce_latency_s_nccl": res.x[0], "communication_efficiency": res.x[1],
            "allreduce_median_abs_error": float(np.median(err))}


def _network(data: Path, gpu: str) -> pd.DataFrame | None:
    full = data / f"network__{gpu}_dgx__all_reduce.csv"
    if full.is_file():
        d = pd.read_csv(full)
        return d[(d["rank"] == 0) & (d["num_workers"] == d["devices_per_node"])]
    sub = data / f"{gpu}_dgx__all_reduce_subset.csv"
    return pd.read_csv(sub) if sub.is_file() else None


def fit(data: Path, gpu: str) -> dict[str, float]:
    """All fitted parameters of one GPU."""
    peak, bw, link = PEAKS[gpu]
    d = _mlp_frames(data, gpu)
    out = fit_gemm(gemm_rows(d), peak, bw)
    out.update(fit_elementwise(elementwise_rows(d), bw))
    net = _network(data, gpu)
    if net is not None:
        out.update(fit_allreduce(net, link))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SUBSET, help="directory of Vidur profiling CSVs (default: the test subsets)")
    ap.add_argument("--gpu", choices=sorted(PEAKS), action="append")
    args = ap.parse_args()
    for gpu in args.gpu or sorted(PEAKS):
        print(f"# {gpu} (data: {args.data})")
        for k, v in fit(args.data, gpu).items():
            print(f"{k}: {v:.4g}")


if __name__ == "__main__":
    main()
