"""DeepEP communication buffers: the device memory one GPU of a DP-attention + EP engine reserves for
its all-to-all before the KV cache is sized.

A ``deep_ep.Buffer`` holds an NVLink buffer (``cudaMalloc`` + CUDA IPC, ``num_nvl_bytes``), an RDMA
buffer (``nvshmem_malloc``, symmetric on every rank, ``num_rdma_bytes``) and a fixed 32 MiB workspace
(``NUM_WORKSPACE_BYTES`` in ``csrc/kernels/configs.cuh``, allocated by the ``Buffer`` constructor). vLLM
creates the buffer while the model is built, before its start-up memory profile, so all three sit in
the non-torch memory that is subtracted before the KV blocks (``vllm/v1/worker/gpu_worker.py``).

Sizes, as vLLM computes them (``vllm/distributed/device_communicators/all2all.py``):

* **normal (high-throughput) kernels** — ``DeepEPHTAll2AllManager``: ``num_nvl_bytes =
  VLLM_DEEPEP_BUFFER_SIZE_MB`` MiB (default 1024, ``vllm/envs.py``) and the same again as
  ``num_rdma_bytes`` when the EP group spans more than one node, else 0;
* **low-latency kernels** — ``DeepEPLLAll2AllManager``: ``num_nvl_bytes`` as above and ``num_rdma_bytes =
  Buffer.get_low_latency_rdma_size_hint(max_num_tokens_per_dp_rank, hidden, ep, num_experts)`` with
  ``max_num_tokens_per_dp_rank = VLLM_MOE_DP_CHUNK_SIZE`` (default 256; SGLang's
  ``SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK`` defaults to 128). The hint is DeepEP's
  ``LowLatencyLayout`` (``csrc/config.hpp``): double-buffered (odd/even) send, receive and signalling
  buffers, each sized for the larger of dispatch and combine::

      scales        = hidden / 128
      dispatch_msg  = 16 + max(2·hidden, hidden + 4·scales)      (int4 header + bf16 or fp8 + fp32 scales)
      combine_msg   = 4·scales + 2·hidden                        (bf16 + per-128 min/max)
      send          = max(T·dispatch_msg, E·T·combine_msg)
      recv          = max(E·T·dispatch_msg, E·T·combine_msg)
      signalling    = align128(4·E)
      total         = 2·(send + recv + signalling), rounded up to 128 bytes

  with ``T`` the dispatch tokens per rank and ``E`` the experts of the group (vLLM passes the global,
  physical count: routed + redundant). For DeepSeek-V3 (hidden 7168, 256 experts, T = 256) that is
  3.56 GiB — it grows with ``E·T``, not with the EP size;
* ``all_to_all: auto`` uses both families in one engine (SGLang's ``deepep_mode: auto``): one buffer
  sized for both, the larger NVLink and the larger RDMA size, as SGLang's ``DeepEPBuffer`` allocates it.

"More than one node" means the EP group outgrows the NVLink domain (``interconnect.gpus_per_node``,
72 on NVL72 profiles), the boundary the all-to-all cost model uses too.
"""
from __future__ import annotations

from sim.config import ParallelConfig
from sim.deploy.hardware import HardwareProfile
from sim.deploy.models.spec import ModelSpec

MIB = 1 << 20
#: fixed workspace every deep_ep.Buffer allocates (NUM_WORKSPACE_BYTES, csrc/kernels/configs.cuh)
WORKSPACE_BYTES = 32 * MIB
#: NUM_BUFFER_ALIGNMENT_BYTES (csrc/kernels/configs.cuh)
ALIGNMENT_BYTES = 128


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def low_latency_rdma_bytes(num_max_dispatch_tokens_per_rank: int, hidden: int, num_experts: int) -> int:
    """``deep_ep.Buffer.get_low_latency_rdma_size_hint`` (DeepEP ``csrc/config.hpp``, LowLatencyLayout).

    The EP size does not enter: every rank keeps a receive slot per (expert, token) of one rank."""
    t, e = num_max_dispatch_tokens_per_rank, num_experts
    scales = hidden // 128
    dispatch_msg = 16 + max(2 * hidden, hidden + 4 * scales)
    combine_msg = 4 * scales + 2 * hidden
    send = max(t * dispatch_msg, e * t * combine_msg)
    recv = max(e * t * dispatch_msg, e * t * combine_msg)
    signalling = _align(4 * e, 128)
    total = 2 * (send + recv + signalling)
    # DeepEP rounds with ((n + A) / A) * A, i.e. always adds up to one alignment unit
    return (total + ALIGNMENT_BYTES) // ALIGNMENT_BYTES * ALIGNMENT_BYTES


def spans_nodes(hw: HardwareProfile, parallel: ParallelConfig) -> bool:
    """True when the EP group needs the inter-node network (more GPUs than one NVLink domain)."""
    return parallel.ep > hw.interconnect.gpus_per_node


def deepep_buffer_bytes(model: ModelSpec, hw: HardwareProfile, parallel: ParallelConfig) -> float:
    """Bytes of DeepEP buffers on one GPU (0 when the layout has no all-to-all: no DP attention, or no EP)."""
    m = model.moe
    if m is None or parallel.dp <= 1 or parallel.ep <= 1:
        return 0.0
    moe = parallel.moe
    nvl = moe.deepep_buffer_mib * MIB
    rdma = 0
    if moe.all_to_all in ("normal", "auto") and spans_nodes(hw, parallel):
        rdma = nvl  # vLLM's high-throughput manager: the same VLLM_DEEPEP_BUFFER_SIZE_MB for RDMA
    if moe.all_to_all in ("low_latency", "auto"):
        experts = m.num_experts + moe.redundant_experts
        rdma = max(rdma, low_latency_rdma_bytes(moe.dispatch_tokens_per_rank, model.hidden_size, experts))
    return float(nvl + rdma + WORKSPACE_BYTES)
