#!/usr/bin/env python3
"""Measure the GPU operators simctl's cost model prices, and write the CSV ``simctl calibrate --microbench`` reads.

    python benchmarks/gpu_profile.py --out h100_microbench.csv            # ~2-4 minutes
    python benchmarks/gpu_profile.py --out quick.csv --quick              # ~30 s
    simctl calibrate --microbench h100_microbench.csv --base-profile h100-sxm --out my-h100.yaml

Needs PyTorch with CUDA (or ROCm) on the machine being profiled; simctl itself never imports this file
(CI has no torch). Measures, in the chosen dtype (default bf16):

- ``gemm``: C[m×n] = A[m×k]·B[k×n] for the four GEMM shapes of a decoder layer (QKV, O, gate+up, down)
  at token counts m = 1 … 8192, so the small-m (memory-bound, launch-bound) end is covered;
- ``attn_prefill``: causal ``scaled_dot_product_attention`` over one sequence of length L;
- ``attn_decode``: one query token per sequence against a KV cache of ``context_len`` tokens, batched;
- ``allreduce``: ``torch.distributed.all_reduce`` (NCCL) of 1 KiB … 256 MiB over all visible GPUs (> 1 only);
- ``layer_prefill`` / ``layer_decode``: a whole Llama-style decoder layer (RMSNorm, QKV, SDPA, O, gated
  MLP), i.e. what one layer of one engine step costs including the small kernels in between
  (``m`` = tokens, ``n`` = hidden size, ``k`` = intermediate size);
- ``launch``: a 1-element add, the floor any kernel pays.

GEMM weights and decode KV caches are rotated over copies (``ROTATE_BYTES``) so they stream from HBM as in
a serving step rather than hitting L2.

Schema (one row per measurement; a column not meaningful for an op is 0):
``op, dtype, m, n, k, batch, num_heads, num_kv_heads, head_dim, query_len, context_len, num_gpus,
message_bytes, flops, bytes_moved, time_s, device, torch_version``.
``flops``/``bytes_moved`` are the ideal counts of the op (as the roofline model counts them), ``time_s`` the
median over repetitions measured with CUDA events.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

COLUMNS = ("op", "dtype", "m", "n", "k", "batch", "num_heads", "num_kv_heads", "head_dim", "query_len",
           "context_len", "num_gpus", "message_bytes", "flops", "bytes_moved", "time_s", "device", "torch_version")

# Llama-2-7B-like defaults; override with --hidden/--intermediate/--heads/--kv-heads.
DEFAULT_DIMS = dict(hidden=4096, intermediate=11008, heads=32, kv_heads=32, head_dim=128)


def _torch():
    try:
        import torch
    except ImportError:
        sys.exit("gpu_profile.py needs PyTorch: pip install torch (with CUDA), then run it on the GPU to profile")
    if not torch.cuda.is_available():
        sys.exit("no CUDA/ROCm device visible to PyTorch")
    return torch


def time_op(torch, fn, reps: int, warmup: int = 5) -> float:
    """Median wall time (s) of ``fn()`` over ``reps`` runs, each timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


# Operands are rotated over copies totalling at least this many bytes, so every timed call streams its
# weights / KV cache from HBM as a serving step does, instead of finding them in the (50 MB on H100) L2.
ROTATE_BYTES = 512 * 2 ** 20


class Rotating:
    """Several copies of a tensor made by ``make()``; :meth:`next` cycles through them."""

    def __init__(self, make, nbytes: int, max_copies: int = 16):
        self.copies = [make() for _ in range(max(1, min(max_copies, -(-ROTATE_BYTES // max(1, nbytes)))))]
        self.i = 0

    def next(self):
        self.i = (self.i + 1) % len(self.copies)
        return self.copies[self.i]


def sdpa_fn(torch):
    """``scaled_dot_product_attention`` with native GQA when this torch has it (≥ 2.5); older torch gets
    the KV heads expanded (an extra copy, so GQA timings from old torch overstate attention)."""
    import inspect

    import torch.nn.functional as F
    native = "enable_gqa" in inspect.signature(F.scaled_dot_product_attention).parameters

    def sdpa(q, k, v, causal):
        if k.shape[1] != q.shape[1]:
            if native:
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return sdpa


def row(**kw) -> dict:
    """A CSV row with every column (0 for the ones not given)."""
    return {c: kw.get(c, 0) for c in COLUMNS}


def profile_gemm(torch, dtype, dims, token_counts, reps, base):
    hidden, inter, heads, kvh, hd = (dims[k] for k in ("hidden", "intermediate", "heads", "kv_heads", "head_dim"))
    shapes = {"qkv": ((heads + 2 * kvh) * hd, hidden), "o": (hidden, heads * hd),
              "gate_up": (2 * inter, hidden), "down": (hidden, inter)}
    el = torch.finfo(dtype).bits // 8
    out = []
    for name, (n, k) in shapes.items():
        ws = Rotating(lambda: torch.randn(k, n, device="cuda", dtype=dtype), el * k * n)
        for m in token_counts:
            a = torch.randn(m, k, device="cuda", dtype=dtype)
            t = time_op(torch, lambda: torch.matmul(a, ws.next()), reps)
            out.append(row(op="gemm", m=m, n=n, k=k, flops=2 * m * n * k,
                           bytes_moved=el * (m * k + k * n + m * n), time_s=t, **base))
    return out


def profile_attention(torch, dtype, dims, reps, base, quick):
    heads, kvh, hd = dims["heads"], dims["kv_heads"], dims["head_dim"]
    el = torch.finfo(dtype).bits // 8
    out = []
    sdpa = sdpa_fn(torch)

    for L in ([512, 2048] if quick else [128, 256, 512, 1024, 2048, 4096, 8192]):
        q = torch.randn(1, heads, L, hd, device="cuda", dtype=dtype)
        k = torch.randn(1, kvh, L, hd, device="cuda", dtype=dtype)
        v = torch.randn_like(k)
        t = time_op(torch, lambda: sdpa(q, k, v, True), reps)
        pairs = L * (L + 1) // 2
        out.append(row(op="attn_prefill", batch=1, num_heads=heads, num_kv_heads=kvh, head_dim=hd,
                       query_len=L, context_len=L, flops=4 * heads * hd * pairs,
                       bytes_moved=el * hd * L * (2 * heads + 2 * kvh), time_s=t, **base))
    for b in ([8, 64] if quick else [1, 8, 32, 64, 128]):
        for ctx in ([1024] if quick else [256, 1024, 2048, 4096]):
            q = torch.randn(b, heads, 1, hd, device="cuda", dtype=dtype)
            kv = Rotating(lambda: torch.randn(2, b, kvh, ctx, hd, device="cuda", dtype=dtype), el * 2 * b * kvh * ctx * hd)

            def decode():
                c = kv.next()
                return sdpa(q, c[0], c[1], False)
            t = time_op(torch, decode, reps)
            out.append(row(op="attn_decode", batch=b, num_heads=heads, num_kv_heads=kvh, head_dim=hd,
                           query_len=1, context_len=ctx, flops=4 * b * heads * hd * ctx,
                           bytes_moved=el * b * hd * (2 * kvh * ctx + 2 * heads), time_s=t, **base))
    return out


class DecoderLayer:
    """A Llama-style decoder layer from plain torch ops (no fused kernels beyond SDPA)."""

    def __init__(self, torch, dtype, dims):
        self.torch = torch
        h, i = dims["hidden"], dims["intermediate"]
        self.heads, self.kvh, self.hd = dims["heads"], dims["kv_heads"], dims["head_dim"]
        mk = lambda *s: torch.randn(*s, device="cuda", dtype=dtype) * 0.02  # noqa: E731
        self.w_qkv = mk(h, (self.heads + 2 * self.kvh) * self.hd)
        self.w_o = mk(self.heads * self.hd, h)
        self.w_gu = mk(h, 2 * i)
        self.w_down = mk(i, h)
        self.sdpa = sdpa_fn(torch)
        self.n1 = torch.ones(h, device="cuda", dtype=dtype)
        self.n2 = torch.ones(h, device="cuda", dtype=dtype)

    def rms(self, x, w):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * self.torch.rsqrt(var + 1e-5)).to(x.dtype) * w

    def __call__(self, x, k_cache, v_cache, causal):
        import torch.nn.functional as F
        b, s, _ = x.shape
        y = self.rms(x, self.n1) @ self.w_qkv
        q, k, v = y.split([self.heads * self.hd, self.kvh * self.hd, self.kvh * self.hd], dim=-1)
        q = q.view(b, s, self.heads, self.hd).transpose(1, 2)
        k = k.view(b, s, self.kvh, self.hd).transpose(1, 2)
        v = v.view(b, s, self.kvh, self.hd).transpose(1, 2)
        if k_cache is not None:  # decode: write the new token's K/V into the cache's last slot, attend to all
            k_cache[:, :, -1:].copy_(k)
            v_cache[:, :, -1:].copy_(v)
            k, v = k_cache, v_cache
        a = self.sdpa(q, k, v, causal)
        x = x + a.transpose(1, 2).reshape(b, s, -1) @ self.w_o
        g, u = (self.rms(x, self.n2) @ self.w_gu).chunk(2, dim=-1)
        return x + (F.silu(g) * u) @ self.w_down


def layer_counts(dims, el, tokens, batch, context_len, prefill):
    """Ideal FLOPs and HBM bytes of one decoder layer step (weights read once; KV read for decode)."""
    h, i, heads, kvh, hd = (dims[k] for k in ("hidden", "intermediate", "heads", "kv_heads", "head_dim"))
    params = h * (heads + 2 * kvh) * hd + heads * hd * h + 3 * h * i
    if prefill:
        attn_flops = 4 * heads * hd * tokens * (tokens + 1) // 2
        kv_bytes = el * 2 * kvh * hd * tokens  # K/V written
    else:
        attn_flops = 4 * batch * heads * hd * context_len
        kv_bytes = el * 2 * batch * kvh * hd * context_len  # whole cache read
    return 2 * tokens * params + attn_flops, el * params + kv_bytes + el * 4 * tokens * h


def profile_layer(torch, dtype, dims, reps, base, quick):
    layer = DecoderLayer(torch, dtype, dims)
    h, kvh, hd = dims["hidden"], dims["kv_heads"], dims["head_dim"]
    el = torch.finfo(dtype).bits // 8
    out = []
    with torch.inference_mode():
        for L in ([512, 2048] if quick else [128, 512, 1024, 2048, 4096]):
            x = torch.randn(1, L, h, device="cuda", dtype=dtype)
            t = time_op(torch, lambda: layer(x, None, None, True), reps)
            flops, nbytes = layer_counts(dims, el, L, 1, L, True)
            out.append(row(op="layer_prefill", m=L, n=h, k=dims["intermediate"], batch=1,
                           num_heads=dims["heads"], num_kv_heads=kvh, head_dim=hd, query_len=L, context_len=L,
                           flops=flops, bytes_moved=nbytes, time_s=t, **base))
        for b in ([16, 64] if quick else [1, 8, 16, 32, 64, 128]):
            ctx = 1024
            x = torch.randn(b, 1, h, device="cuda", dtype=dtype)
            kc = torch.randn(b, kvh, ctx + 1, hd, device="cuda", dtype=dtype)
            vc = torch.randn_like(kc)
            t = time_op(torch, lambda: layer(x, kc, vc, False), reps)
            flops, nbytes = layer_counts(dims, el, b, b, ctx, False)
            out.append(row(op="layer_decode", m=b, n=h, k=dims["intermediate"], batch=b,
                           num_heads=dims["heads"], num_kv_heads=kvh, head_dim=hd, query_len=1, context_len=ctx,
                           flops=flops, bytes_moved=nbytes, time_s=t, **base))
    return out


def profile_launch(torch, reps, base):
    x = torch.zeros(1, device="cuda")
    t = time_op(torch, lambda: x.add_(1), reps * 4)
    return [row(op="launch", time_s=t, bytes_moved=8, **base)]


def _allreduce_worker(rank, world, dtype_name, sizes, reps, q):
    import torch
    import torch.distributed as dist
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    dtype = getattr(torch, dtype_name)
    el = torch.finfo(dtype).bits // 8
    rows = []
    for nbytes in sizes:
        t = torch.ones(max(1, nbytes // el), device="cuda", dtype=dtype)
        dist.barrier()
        med = time_op(torch, lambda: dist.all_reduce(t), reps)
        rows.append((nbytes, med))
    if rank == 0:
        q.put(rows)
    dist.destroy_process_group()


def profile_allreduce(torch, dtype_name, reps, base, quick):
    world = torch.cuda.device_count()
    if world < 2:
        return []
    import torch.multiprocessing as mp
    sizes = [2 ** p for p in range(10, 29, 3 if quick else 1)]  # 1 KiB … 256 MiB
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = mp.spawn(_allreduce_worker, args=(world, dtype_name, sizes, reps, q), nprocs=world, join=False)
    results = q.get()  # read before joining: a child cannot exit while its queue data is unread
    while not procs.join():
        pass
    return [row(op="allreduce", message_bytes=n, bytes_moved=n, time_s=t, **base) for n, t in results]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (~30 s)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per shape (default 30, quick 10)")
    for k, v in DEFAULT_DIMS.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=v, dest=k)
    p.add_argument("--skip", default="", help="comma-separated ops to skip (gemm,attn,layer,allreduce,launch)")
    args = p.parse_args(argv)
    torch = _torch()
    dtype_name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[args.dtype]
    dtype = getattr(torch, dtype_name)
    reps = args.reps or (10 if args.quick else 30)
    dims = {k: getattr(args, k) for k in DEFAULT_DIMS}
    skip = set(filter(None, args.skip.split(",")))
    base = {"dtype": args.dtype, "device": torch.cuda.get_device_name(0), "torch_version": torch.__version__,
            "num_gpus": 1}
    tokens = [1, 8, 64, 512, 2048, 8192] if args.quick else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    rows: list[dict] = []
    steps = [("launch", lambda: profile_launch(torch, reps, base)),
             ("gemm", lambda: profile_gemm(torch, dtype, dims, tokens, reps, base)),
             ("attn", lambda: profile_attention(torch, dtype, dims, reps, base, args.quick)),
             ("layer", lambda: profile_layer(torch, dtype, dims, reps, base, args.quick)),
             ("allreduce", lambda: profile_allreduce(torch, dtype_name, reps,
                                                     {**base, "num_gpus": torch.cuda.device_count()}, args.quick))]
    for name, fn in steps:
        if name in skip:
            continue
        print(f"profiling {name} ...", file=sys.stderr, flush=True)
        rows.extend(fn())
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {args.out} ({base['device']})", file=sys.stderr)


if __name__ == "__main__":
    main()
