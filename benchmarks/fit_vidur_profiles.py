"""Fit the roofline's GEMM / element-wise / communication parameters to Vidur's measured GPU timings.

    python benchmarks/fit_vidur_profiles.py [--data DIR] [--gpu h100|a100]

DIR holds microsoft/vidur ``data/profiling`` CSVs (MIT licence): ``<gpu>__<model>__mlp.csv`` (ms per op per
layer per TP rank by token count) and ``network__<gpu>_dgx__{all_reduce,send_recv}.csv`` (ms by message
bytes and GPU count). The bundled profiles were fitted on the full files (a checkout of microsoft/vidur's
``data/profiling/``; the numbers in docs/cost-model.md); the default, ``tests/data/vidur``, holds the subsets
the tests use, whose fits land close to, not exactly on, the full-data values.

The model fitted is the one ``sim/deploy/roofline.py`` evaluates (docs/cost-model.md):

* GEMM (M tokens, K×N weights per rank, bf16), the tile/wave model of ``sim/deploy/kernel_shapes.py``:
  ``t = (t_c^p + t_m^p)^(1/p) + t_kernel`` with ``t_c`` = waves × tile time at efficiency ``e`` and
  ``t_m = bytes/(bw·e_mem)``; ``e``, ``e_mem``, ``t_kernel`` and ``p`` by least squares in log time.
* element-wise kernels (RMSNorm, rotary, SiLU·mul): ``t = bytes/(bw·e_ew) + t_ew + row_bytes·SMs/bw``.
* all-reduce within a node: ``t = latency + 2(n−1)/n · bytes/(e_comm · link)``; send/recv
  ``t = latency + bytes/(e · link)``.

Prints the values in the profile YAML's units; paste them into ``hwprofiles/<gpu>.yaml``.
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sim.deploy.kernel_shapes import gemm_shape  # noqa: E402

SUBSET = Path(__file__).resolve().parents[1] / "tests" / "data" / "vidur"
#: datasheet peaks the fits are relative to: dense bf16 FLOP/s, HBM bytes/s, NVLink bytes/s per direction
PEAKS = {"h100": (989.4e12, 3.35e12, 450e9), "a100": (312e12, 2.039e12, 300e9)}
#: streaming multiprocessors (Hopper whitepaper: H100 SXM5 132; Ampere whitepaper: A100 108)
SMS = {"h100": 132, "a100": 108}


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
                rows.append((op, m, m * b, t * 1e-3))
    return pd.DataFrame(rows, columns=["op", "m", "bytes", "t"])


def tile_compute_work(g: pd.DataFrame, peak: float, sms: int) -> np.ndarray:
    """Seconds of compute of each GEMM at efficiency 1 under the tile/wave model (sim/deploy/kernel_shapes.py)."""
    return np.array([gemm_shape(n, k, 1.0, peak, 1.0, sms).compute_s(m)
                     for m, k, n in zip(g["m"].to_numpy(float), g["k"].to_numpy(float), g["n"].to_numpy(float))])


def fit_gemm(g: pd.DataFrame, peak: float, bw: float, sms: int) -> dict[str, float]:
    """Tile/wave model: compute efficiency, weight-streaming efficiency, kernel floor and overlap exponent,
    least squares in log time over all GEMMs."""
    m, k, n, t = (g[c].to_numpy(dtype=float) for c in ("m", "k", "n", "t"))
    nbytes = 2 * (k * n + m * k + m * n)
    work = tile_compute_work(g, peak, sms)

    def model(x: np.ndarray) -> np.ndarray:
        e, e_mem, t_kernel, p = x
        tc, tm = work / e, nbytes / (bw * e_mem)
        return (tc ** p + tm ** p) ** (1 / p) + t_kernel

    res = least_squares(lambda x: np.log(model(x)) - np.log(t), [0.7, 0.85, 3e-6, 2.0],
                        bounds=([0.05, 0.3, 0.0, 1.0], [1.0, 1.0, 3e-5, 20.0]))
    err = model(res.x) / t - 1
    return {"gemm_compute_efficiency": res.x[0], "memory_efficiency": res.x[1], "gemm_kernel_s": res.x[2],
            "gemm_overlap_exponent": res.x[3], "gemm_median_abs_error": float(np.median(np.abs(err))),
            "gemm_points": len(t)}


def fit_elementwise(e: pd.DataFrame, bw: float, sms: int) -> dict[str, float]:
    """Bandwidth fraction and per-kernel floor of the small kernels, with the row-width floor
    ``row_bytes · SMs / bw`` (one row per SM at few tokens; sim/deploy/kernel_shapes.py)."""
    b, t = e["bytes"].to_numpy(dtype=float), e["t"].to_numpy(dtype=float)
    row = (b / e["m"].to_numpy(dtype=float)) * sms / bw
    res = least_squares(lambda x: np.log(b / (bw * x[0]) + x[1] + row) - np.log(t), [0.5, 3e-6],
                        bounds=([0.01, 0], [1, 1e-4]))
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
    out = fit_gemm(gemm_rows(d), peak, bw, SMS[gpu])
    out.update(fit_elementwise(elementwise_rows(d), bw, SMS[gpu]))
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
