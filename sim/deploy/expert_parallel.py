"""Expert parallelism: how a MoE layer's tokens reach their experts, and how uneven the load is.

With data-parallel attention (``parallel.dp > 1``) the routed experts of every MoE layer are spread
over ``ep = dp × tp`` GPUs. Each DP rank sends each of its tokens to the GPUs holding the token's
top-k experts (*dispatch*) and gathers the results back (*combine*), as DeepEP does:

* **low-latency kernels** (decode): one RDMA/NVLink write per (token, expert) pair — ``k`` copies of
  the hidden vector per token, the copies for experts on the token's own GPU stay local;
* **normal kernels** (prefill): one copy per destination *node* over RDMA, forwarded to the GPUs
  inside the node over NVLink, and one copy per distinct destination GPU inside the own node.

Bytes per copy: dispatch ``hidden × dispatch bytes`` (FP8 with one fp32 scale per 128 elements by
default), combine ``hidden × 2`` (bf16). A phase takes ``latency + max(RDMA bytes / (NIC bandwidth ×
e_rdma), NVLink bytes / (NVLink bandwidth × e_nvl))`` — the two fabrics run concurrently.

**Load imbalance.** The step waits for the busiest GPU of the EP group. GPU ``g`` receives ``L_g``
(token, expert) pairs with mean ``μ = N·k/ep`` over the group's ``N`` tokens. Two sources of spread:
the routing of this step's tokens (a sum of independent choices: variance ≈ ``μ(1 − 1/ep)``) and the
experts' unequal popularity (coefficient of variation ``cv`` across experts; a GPU holding ``m``
experts sees ``cv/√m`` of it). The busiest GPU carries the expected maximum of ``ep`` such loads,
``μ·(1 + z_ep·√(cv²/m + (1 − 1/ep)/μ))`` with ``z_ep`` the expected maximum of ``ep`` standard
normals (Blom's approximation), capped at the most a GPU can receive. EPLB rebalances placement on
the observed popularity, which leaves the per-step routing noise only. ``imbalance: none`` gives
every GPU exactly ``μ`` (the dense-equivalent oracle).

Sources of the kernel efficiencies (DeepEP README, H800 with ConnectX-7 400 Gb/s ≈ 50 GB/s per GPU
and ~160 GB/s usable NVLink; 128 tokens/batch for low-latency, 4,096 for normal, hidden 7168,
top-8, FP8 dispatch, BF16 combine): low-latency dispatch reaches 48 / 43 / 39 / 39 GB/s of RDMA at
EP 32 / 64 / 128 / 256 (combine 53 / 46 / 39 / 40): with ``(ep − 8)/ep`` of the copies off-node,
that is 0.72 ± 0.03 of the NIC's line rate; normal kernels reach 153–158 GB/s over NVLink
intra-node, 0.77 of H800's 200 GB/s per direction, and 43–58 GB/s on RDMA (0.9 of line rate used).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import ndtri

from sim.config import ParallelConfig
from sim.deploy.hardware import HardwareProfile
from sim.deploy.models.spec import ModelSpec

#: achieved fraction of the NIC line rate, DeepEP low-latency kernels (fit to the README table, EP ≥ 32)
LL_RDMA_EFFICIENCY = 0.72
#: achieved fraction of the NIC line rate, DeepEP normal kernels (43–58 GB/s of ~50 GB/s)
NORMAL_RDMA_EFFICIENCY = 0.9
#: achieved fraction of the NVLink per-direction bandwidth (normal kernels, 153–158 of 200 GB/s on H800)
NVLINK_EFFICIENCY = 0.77
#: SMs DeepEP's normal kernels occupy while they run (deep_ep.Buffer.num_sms default 20) of an H100/H800's
#: 132: under two-batch overlap the compute of the other micro-batch runs on the rest. The low-latency
#: kernels receive through a hook and occupy no SMs (DeepEP README).
NORMAL_KERNEL_SM_SHARE = 20 / 132
#: fixed cost of one dispatch or combine phase (kernel launch + completion signalling), assumed
PHASE_LATENCY_S = 10e-6
#: bytes per element of the dispatch payload, block scales included (fp8: one fp32 scale per 128)
DISPATCH_BYTES = {"bf16": 2.0, "fp8": 1.0 + 4.0 / 128, "nvfp4": 0.5 + 1.0 / 16}
COMBINE_BYTES = 2.0  # bf16


def expected_max_standard_normal(n: int) -> float:
    """Expected maximum of ``n`` independent standard normals (Blom 1958: Φ⁻¹((n − 0.375)/(n + 0.25)))."""
    if n <= 1:
        return 0.0
    return float(ndtri((n - 0.375) / (n + 0.25)))


@dataclass(frozen=True)
class AllToAllCost:
    """Seconds and bytes per GPU of one MoE layer's dispatch + combine."""

    time_s: float
    rdma_bytes: float
    nvlink_bytes: float
    combine_s: float = 0.0  # the combine phase's share of time_s (what a shared expert can hide under)


@dataclass(frozen=True)
class ExpertParallelPlan:
    """Batch-independent quantities of one MoE model's expert-parallel layout on one GPU type."""

    ep: int
    dp: int
    top_k: int
    num_experts: int
    experts_per_gpu: float  # physical expert slots per GPU (redundant replicas included)
    hidden: int
    domain: int  # GPUs of the EP group inside one NVLink domain
    nic_bytes_per_s: float
    nvlink_bytes_per_s: float
    dispatch_bytes: float
    mode: str  # "auto", "low_latency" or "normal"
    two_batch_overlap: bool
    shared_expert_overlap: bool
    z_ep: float
    load_cv: float
    imbalance: bool

    @classmethod
    def build(cls, model: ModelSpec, hw: HardwareProfile, parallel: ParallelConfig) -> ExpertParallelPlan:
        """The plan for ``model`` (which must be MoE) under ``parallel`` on ``hw``."""
        m = model.moe
        assert m is not None, "expert parallelism needs a MoE model"
        moe = parallel.moe
        ep = parallel.ep
        ic = hw.interconnect
        return cls(
            ep=ep, dp=parallel.dp, top_k=m.top_k, num_experts=m.num_experts,
            experts_per_gpu=(m.num_experts + moe.redundant_experts) / ep, hidden=model.hidden_size,
            domain=min(ep, ic.gpus_per_node), nic_bytes_per_s=ic.inter_node_bandwidth_bytes_per_s,
            nvlink_bytes_per_s=ic.intra_node_bandwidth_bytes_per_s,
            dispatch_bytes=DISPATCH_BYTES[moe.dispatch_dtype], mode=moe.all_to_all,
            two_batch_overlap=moe.two_batch_overlap, shared_expert_overlap=moe.shared_expert_overlap,
            z_ep=expected_max_standard_normal(ep),
            load_cv=0.0 if moe.eplb else moe.expert_load_cv, imbalance=moe.imbalance == "statistical")

    @property
    def uses_all_to_all(self) -> bool:
        """Tokens leave their DP rank (DP attention): without DP, EP spans the TP group, every rank holds
        every token and the outputs meet in the TP all-reduce instead."""
        return self.dp > 1

    # ------------------------------------------------------------------ load imbalance
    def busiest_gpu_factor(self, group_tokens: float) -> float:
        """Routed (token, expert) pairs on the busiest GPU over the mean, for ``group_tokens`` tokens."""
        if not self.imbalance or self.ep <= 1 or group_tokens <= 0:
            return 1.0
        mu = group_tokens * self.top_k / self.ep
        spread = math.sqrt(self.load_cv * self.load_cv / max(self.experts_per_gpu, 1.0) + (1.0 - 1.0 / self.ep) / mu)
        # no GPU can receive more than min(k, its experts) pairs per token
        cap = self.ep * min(self.top_k, self.experts_per_gpu) / self.top_k
        return min(1.0 + self.z_ep * spread, cap)

    def kernel_mode(self, decode_only: bool) -> str:
        """The DeepEP kernel family a step uses ("low_latency" or "normal")."""
        return self.mode if self.mode != "auto" else ("low_latency" if decode_only else "normal")

    def compute_share(self, decode_only: bool) -> float:
        """Fraction of the SMs left to compute while the all-to-all of the other micro-batch runs."""
        return 1.0 - NORMAL_KERNEL_SM_SHARE if self.kernel_mode(decode_only) == "normal" else 1.0

    # ------------------------------------------------------------------ all-to-all
    def all_to_all(self, tokens: float, decode_only: bool) -> AllToAllCost:
        """Dispatch + combine of one MoE layer for a rank sending ``tokens`` tokens."""
        if not self.uses_all_to_all or tokens <= 0:
            return AllToAllCost(0.0, 0.0, 0.0)
        mode = self.kernel_mode(decode_only)
        ep, d, k = self.ep, self.domain, self.top_k
        if mode == "low_latency":
            rdma_copies = k * (ep - d) / ep
            nvl_copies = k * (d - 1) / ep
            e_rdma = LL_RDMA_EFFICIENCY
        else:
            nodes = ep / d
            rdma_copies = (nodes - 1.0) * (1.0 - (1.0 - 1.0 / nodes) ** k) if nodes > 1 else 0.0
            # distinct GPUs of the own node hit, plus forwarding the copies received from other nodes
            nvl_copies = (d - 1) * (1.0 - (1.0 - 1.0 / ep) ** k) + rdma_copies * (d - 1) / d
            e_rdma = NORMAL_RDMA_EFFICIENCY
        total_s = 0.0
        rdma_b = nvl_b = 0.0
        phase_s = 0.0
        for width in (self.dispatch_bytes, COMBINE_BYTES):
            per_copy = tokens * self.hidden * width
            rb, nb = per_copy * rdma_copies, per_copy * nvl_copies
            t_r = rb / (self.nic_bytes_per_s * e_rdma) if rb else 0.0
            t_n = nb / (self.nvlink_bytes_per_s * NVLINK_EFFICIENCY) if nb else 0.0
            phase_s = PHASE_LATENCY_S + (t_r if t_r > t_n else t_n)
            total_s += phase_s
            rdma_b += rb
            nvl_b += nb
        return AllToAllCost(total_s, rdma_b, nvl_b, combine_s=phase_s)  # the loop ends on the combine

    def shared_expert_hidden_s(self, shared_s: float, combine_s: float, decode_only: bool) -> float:
        """Seconds of one MoE layer that running its shared expert under the combine saves.

        Sequentially the layer spends ``combine_s + shared_s``. Overlapped, the shared expert runs on the
        SMs the combine leaves free (all of them for the hook-based low-latency kernels, ``1 − 20/132``
        for normal kernels) while the combine is on the wire and on all SMs after it: it finishes at
        ``combine_s`` if its work fits in ``combine_s · share``, else at ``combine_s + shared_s −
        combine_s · share``. With ``share = 1`` that is ``max(combine_s, shared_s)``. The saving is never
        negative and never more than the combine itself."""
        if not self.shared_expert_overlap or shared_s <= 0.0 or combine_s <= 0.0:
            return 0.0
        share = self.compute_share(decode_only)
        overlapped = combine_s if shared_s <= combine_s * share else combine_s + shared_s - combine_s * share
        return combine_s + shared_s - overlapped


def dispatch_bytes_per_token(model: ModelSpec, ep: int, dispatch_dtype: str = "fp8") -> float:
    """Bytes one token puts on the wire per MoE layer with low-latency kernels: ``k`` copies of the hidden
    vector for dispatch plus ``k`` for combine, less the share bound for the token's own GPU."""
    m = model.moe
    assert m is not None
    own = 1.0 / ep
    return m.top_k * (1.0 - own) * model.hidden_size * (DISPATCH_BYTES[dispatch_dtype] + COMBINE_BYTES)

