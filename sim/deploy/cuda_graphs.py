"""CUDA-graph capture sizes, padding and eager launch cost (SGLang's ``cuda_graph_runner.py``).

An engine that replays CUDA graphs for decode captures one graph per batch size in a fixed list. A
decode batch of ``b`` requests runs the graph of the smallest captured size ``≥ b``: the GPU does the
work of the *padded* batch (the extra rows are dummy requests of one token). A batch larger than the
largest captured size, and every prefill (extend) batch, runs eagerly: the host issues each kernel
through PyTorch, so the step cannot be shorter than the time the host needs to issue them.

Model (:class:`GraphAwareCostModel`, wrapping any cost model):

* **decode, ``b ≤ max(capture)``**: priced as the padded shape (``b_pad − b`` extra decode rows whose KV
  context is one token: SGLang fills the padded slots' sequence length with 1);
* **prefill, mixed, or decode above the largest captured size**: ``max(gpu, L × eager_layer_host_s)``
  — the host runs ahead of the GPU while the GPU is the slower side and the GPU waits on the host
  otherwise (no overlap beyond the launch queue is assumed lost or gained).

SGLang v0.4 (``python/sglang/srt/model_executor/cuda_graph_runner.py``, ``CudaGraphRunner.__init__``,
the release DataCrunch's H200 benchmark ran, December 2024 – January 2025)::

    capture_bs = [1, 2, 4] + [i * 8 for i in range(1, 21)]          # 1, 2, 4, 8, 16, ..., 160
    capture_bs = [bs for bs in capture_bs
                  if bs <= req_to_token_pool.size and bs <= server_args.cuda_graph_max_bs]

and ``server_args.py`` (same release): ``cuda_graph_max_bs`` unset → 8 on GPUs with < 25 GB, else 160.
``can_run`` is ``batch_size <= max(capture_bs)``; replay pads with ``bisect_left(capture_bs, bs)``.

The eager host cost per layer is the one sourced figure: a Llama-3.1-8B decode step on an H100 SXM
takes 8.4 ms eager and 5.1 ms replayed as a CUDA graph (cloudai.pt, "CUDA Graphs + torch.compile:
1.65x LLM Decode Speedup", 2026). The eager step is host-bound (it is longer than the GPU's 5.1 ms),
so the host needs 8.4 ms to issue one forward pass of 32 layers: 8.4 ms / 32 = 0.2625 ms per layer
(LM head and sampler included in that share; status *assumed*: one measurement, another model and
host CPU).
"""
from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from typing import Any

from sim.deploy.step_cost import BatchShape, StepCost
from sim.errors import ConfigError

#: SGLang v0.4 ``cuda_graph_runner.py``: the batch sizes captured with padding on
SGLANG_V04_CAPTURE_BS: tuple[int, ...] = (1, 2, 4) + tuple(i * 8 for i in range(1, 21))
#: SGLang v0.4 ``server_args.py``: ``cuda_graph_max_bs`` default on GPUs with ≥ 25 GB (8 below)
SGLANG_V04_CUDA_GRAPH_MAX_BS = 160
SGLANG_V04_SMALL_GPU_BYTES, SGLANG_V04_SMALL_GPU_MAX_BS = 25_000 * 2**20, 8
#: host seconds to issue one decoder layer's kernels eagerly: 8.4 ms eager decode step / 32 layers
#: (Llama-3.1-8B, H100 SXM; cloudai.pt "CUDA Graphs + torch.compile: 1.65x LLM Decode Speedup")
EAGER_LAYER_HOST_S = 8.4e-3 / 32


def sglang_capture_sizes(cuda_graph_max_bs: int, max_running_requests: int) -> tuple[int, ...]:
    """SGLang v0.4's captured batch sizes: its fixed list cut at ``cuda_graph_max_bs`` and at the request
    pool (``max_running_requests``). Empty with ``cuda_graph_max_bs`` 0 (``--disable-cuda-graph``)."""
    return tuple(b for b in SGLANG_V04_CAPTURE_BS if b <= cuda_graph_max_bs and b <= max_running_requests)


@dataclass(frozen=True)
class CudaGraphPlan:
    """Which decode batch sizes replay a CUDA graph, and the host cost of a step that does not."""

    capture_sizes: tuple[int, ...]  # ascending; empty: every step runs eagerly
    num_layers: int  # decoder layers one GPU issues per forward pass (after pipeline splitting)
    eager_layer_host_s: float = EAGER_LAYER_HOST_S

    def __post_init__(self) -> None:
        if list(self.capture_sizes) != sorted(set(self.capture_sizes)) or any(b < 1 for b in self.capture_sizes):
            raise ValueError(f"capture sizes must be ascending positive integers, got {self.capture_sizes}")

    @property
    def max_bs(self) -> int:
        """Largest decode batch that replays a graph (0: none)."""
        return self.capture_sizes[-1] if self.capture_sizes else 0

    def padded_size(self, batch_size: int) -> int | None:
        """The captured size a decode batch of ``batch_size`` replays (None: above the largest, eager)."""
        if batch_size > self.max_bs:
            return None
        return self.capture_sizes[bisect.bisect_left(self.capture_sizes, batch_size)]

    @property
    def eager_host_s(self) -> float:
        """Host seconds to issue one eager forward pass."""
        return self.num_layers * self.eager_layer_host_s


def padded_decode_shape(shape: BatchShape, padded_size: int) -> BatchShape:
    """``shape`` plus ``padded_size − num_seqs`` dummy decode rows with a one-token KV context."""
    pad = padded_size - shape.num_seqs
    if pad <= 0:
        return shape
    return dataclasses.replace(shape, num_seqs=shape.num_seqs + pad, num_tokens=shape.num_tokens + pad,
                               num_decode_seqs=shape.num_decode_seqs + pad, sum_new_sq=shape.sum_new_sq + pad,
                               sum_ctx_x_new=shape.sum_ctx_x_new + pad, sum_kv_tokens=shape.sum_kv_tokens + pad,
                               sum_decode_kv_tokens=shape.sum_decode_kv_tokens + pad)


class GraphAwareCostModel:
    """Wraps a cost model: decode batches are priced at their padded graph size, eager steps are bounded
    below by the host's issue time. Everything else (``group_step``, ``describe``, …) is the wrapped
    model's (DP-attention groups are priced without the graph plan)."""

    def __init__(self, base: Any, plan: CudaGraphPlan) -> None:
        self.base = base
        self.plan = plan
        self._host_s = plan.eager_host_s

    def __getattr__(self, name: str) -> Any:  # delegate the rest of the cost-model surface
        if name in ("base", "plan", "_host_s") or name.startswith("__"):  # not set yet (unpickling, copy)
            raise AttributeError(name)
        return getattr(self.base, name)

    def is_graph_step(self, shape: BatchShape) -> bool:
        """True when ``shape`` replays a CUDA graph: every request decodes (drafts verified included) and
        the batch fits the largest captured size."""
        return (shape.num_prefill_tokens == 0 and shape.num_decode_seqs == shape.num_seqs
                and 0 < shape.num_seqs <= self.plan.max_bs)

    def step(self, shape: BatchShape, breakdown: bool = False, **kwargs: Any) -> StepCost:
        """Price ``shape``: padded if it replays a graph, else ``max(gpu, host issue time)``."""
        # the CostModel protocol is step(shape); the roofline's keywords pass through only when given
        price = self.base.step if not breakdown and not kwargs else (
            lambda s: self.base.step(s, breakdown=breakdown, **kwargs))
        if shape.num_tokens <= 0:
            return price(shape)
        if self.is_graph_step(shape):
            return price(padded_decode_shape(shape, self.plan.padded_size(shape.num_seqs)))
        cost = price(shape)
        host = self._host_s
        t = cost.time_s
        if host <= t:
            return cost
        # the GPU waits on the host: stretch the step, keep the work (MFU/MBU fall accordingly)
        f = t / host
        bd = cost.breakdown
        if breakdown:
            bd = dict(bd)
            bd["eager_launch"] = host - t
        return StepCost(time_s=host, flops=cost.flops, bytes_moved=cost.bytes_moved, mfu=cost.mfu * f,
                        mbu=cost.mbu * f, prefill_time_s=cost.prefill_time_s / f if t > 0 else 0.0, breakdown=bd)

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Seconds per operator of :meth:`step` (they sum to its time)."""
        return self.step(shape, breakdown=True).breakdown


def sglang_graph_plan(policy_options: dict[str, Any], hardware: Any, max_running_requests: int, num_layers: int,
                      where: str) -> CudaGraphPlan | None:
    """The :class:`CudaGraphPlan` of ``engine.policy_options`` of policy ``sglang`` (None when
    ``cuda_graph_max_bs`` is not given: graphs not modelled). ``cuda_graph_max_bs: default`` takes
    SGLang v0.4's default for the GPU's memory. ``where`` names the file for errors."""
    if policy_options.get("cuda_graph_max_bs") is None:
        if policy_options.get("eager_layer_host_s") is not None:
            raise ConfigError(f"{where}: engine.policy_options.eager_layer_host_s needs cuda_graph_max_bs "
                              f"(the CUDA-graph model is off without it)")
        return None
    max_bs = policy_options["cuda_graph_max_bs"]
    if max_bs == "default":
        max_bs = (SGLANG_V04_SMALL_GPU_MAX_BS if hardware.memory_bytes < SGLANG_V04_SMALL_GPU_BYTES
                  else SGLANG_V04_CUDA_GRAPH_MAX_BS)
    if not isinstance(max_bs, int) or isinstance(max_bs, bool) or max_bs < 0:
        raise ConfigError(f"{where}: engine.policy_options.cuda_graph_max_bs must be an integer ≥ 0 "
                          f"(0: no CUDA graphs) or 'default', got {policy_options['cuda_graph_max_bs']!r}")
    host = policy_options.get("eager_layer_host_s")
    host = EAGER_LAYER_HOST_S if host is None else host
    if isinstance(host, bool) or not isinstance(host, (int, float)) or not host >= 0:
        raise ConfigError(f"{where}: engine.policy_options.eager_layer_host_s must be a number ≥ 0 (seconds), "
                          f"got {host!r}")
    return CudaGraphPlan(sglang_capture_sizes(max_bs, max_running_requests), num_layers, float(host))
