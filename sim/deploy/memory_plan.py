"""Memory plan of one GPU: weights, activation peak, engine reserve, KV-cache blocks.

Follows vLLM V1's start-up profiling (``vllm/v1/worker/gpu_worker.py``, SEMANTICS.md §3)::

    budget        = capacity × gpu_memory_utilization
    num_kv_blocks = floor((budget − weights − activation_peak − non_torch) / block_bytes)
    block_bytes   = 2 × block_size × kv_heads_per_rank × head_dim × layers_on_gpu × kv_dtype_bytes
                    (MLA: block_size × (kv_lora_rank + rope_dim) × layers × bytes, no ×2)

Each term is computed from the architecture, never from per-model constants:

* **weights** — :meth:`ModelSpec.params_per_gpu` (vLLM's TP/PP/EP sharding: column/row-parallel
  linears split, vocab-parallel embeddings, replicated norms/routers; the most loaded pipeline stage)
  × bytes per weight. Quantised formats apply to the decoder linears only; embeddings, LM head and
  norms stay 16-bit, as in vLLM's fp8/int8/int4 checkpoints.
* **activation peak** — what vLLM's profile run measures: one forward pass of
  ``max_num_batched_tokens`` tokens, then the sampler on ``min(max_num_seqs, tokens)`` rows. The two
  happen one after the other, so the peak is the larger of (a) the layer's largest live set —
  residual stream + hidden states + the largest transient (QKV/attention output, or the MLP's
  gate_up + activation output; MoE: top-k copies of the expert intermediates) — and (b) the sampler's
  fp32 logit copies (:data:`SAMPLER_LOGIT_COPIES`) plus the kept hidden states. A fixed torch-allocated
  workspace (cuBLAS/attention workspaces) is added, from the hardware profile.
* **non-torch memory** — from the hardware profile: a base, plus communication buffers (NCCL and
  vLLM's custom all-reduce) when the replica spans more than one GPU, plus DeepEP's all-to-all buffers
  under DP attention + EP (:mod:`sim.deploy.deepep_buffers`; reported as ``all_to_all_buffer_bytes``).

CUDA-graph memory is *not* subtracted: vLLM v0.15 does not estimate it by default
(``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`` became the default only in v0.21); it lives in the
``1 − gpu_memory_utilization`` headroom.

Validation (tests/test_memory.py): H100-80GB, util 0.9, block 16, 2048 batched tokens, 128 seqs —
Llama-2-7B TP1 → 7,462 blocks measured by vLLM v0.15.1; CodeLlama-34B TP2 → 26,602.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sim.config import EngineConfig, ParallelConfig, PrecisionConfig
from sim.deploy.deepep_buffers import deepep_buffer_bytes
from sim.deploy.hardware import GIB, HardwareProfile
from sim.deploy.models.spec import ATTENTION_MIXERS, ModelSpec, dtype_bytes
from sim.deploy.vision_cost import vision_weight_bytes_per_gpu
from sim.errors import InfeasibleConfigError

#: fp32 copies of the (rows × vocab) logits alive at the sampler's peak in vLLM's profile run
#: (logits, softmax/log-softmax, sort values + int64 indices = 2 copies, top-p cumsum, masks, probs,
#: exponential noise...). Fitted to vLLM v0.11 H100 logs that are independent of the validation runs
#: (llm-d memory-profiling notes: Llama-3.1-8B 4.76 GiB and Qwen3-0.6B 5.56 GiB activation peaks at
#: 8192 tokens / 1024 seqs, where the sampler term dominates); see docs/cost-model.md.
SAMPLER_LOGIT_COPIES = 9.35
#: bytes of one activation element (bf16/fp16 activations, whatever the weight format)
ACTIVATION_BYTES = 2


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory plan of one replica (the most loaded GPU). All sizes in bytes."""

    capacity_bytes: int  # device memory as CUDA reports it
    gpu_memory_utilization: float
    budget_bytes: float  # capacity × utilization: what vLLM may use
    weights_bytes: float  # resident weights on this GPU
    activation_bytes: float  # profiled activation peak (forward or sampler, + workspace)
    non_torch_bytes: float  # CUDA/NCCL/custom all-reduce memory outside PyTorch
    kv_cache_bytes: float  # budget − weights − activation − non_torch (may be < 0 when infeasible)
    block_size: int  # tokens per KV block
    block_bytes: int  # bytes of one KV block on this GPU (all its layers)
    num_kv_blocks: int  # floor(kv_cache_bytes / block_bytes)
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    tp: int
    pp: int
    kv_dtype: str
    weights_dtype: str
    state_bytes_per_seq: int = 0  # linear-attention recurrent state of one sequence on this GPU (hybrids)
    state_reserve_bytes: float = 0.0  # state pages reserved for max_num_seqs sequences (hybrids)
    all_to_all_buffer_bytes: float = 0.0  # DeepEP NVLink + RDMA buffers + workspace (part of non_torch_bytes)

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds (num_kv_blocks × block_size)."""
        return self.num_kv_blocks * self.block_size

    @property
    def reserve_bytes(self) -> float:
        """Everything that is neither weights nor KV cache."""
        return self.activation_bytes + self.non_torch_bytes

    def blocks_per_sequence(self, context_tokens: int) -> int:
        """KV blocks one sequence of ``context_tokens`` tokens occupies."""
        return max(1, math.ceil(context_tokens / self.block_size))

    def max_concurrent_seqs(self, context_tokens: int) -> int:
        """Sequences of ``context_tokens`` tokens that fit in the KV cache at once (vLLM's
        "Maximum concurrency for N tokens per request", in whole blocks).

        Hybrid (linear-attention) models: each sequence needs its attention blocks plus one fixed
        recurrent state, all from the same cache memory (vLLM's hybrid KV-cache manager)."""
        if self.state_bytes_per_seq:
            per_seq = self.blocks_per_sequence(context_tokens) * self.block_bytes + self.state_bytes_per_seq
            return int(max(0.0, self.kv_cache_bytes) // per_seq)
        return self.num_kv_blocks // self.blocks_per_sequence(context_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with GiB conveniences and the max concurrency at max_model_len."""
        d = asdict(self)
        if not self.state_bytes_per_seq:  # only hybrids report their recurrent state
            d.pop("state_bytes_per_seq")
            d.pop("state_reserve_bytes")
        if not self.all_to_all_buffer_bytes:  # only DP-attention + EP layouts have DeepEP buffers
            d.pop("all_to_all_buffer_bytes")
        else:
            d["all_to_all_buffer_gib"] = round(self.all_to_all_buffer_bytes / GIB, 3)
        for k in ("budget_bytes", "weights_bytes", "activation_bytes", "non_torch_bytes", "kv_cache_bytes"):
            d[k.replace("_bytes", "_gib")] = round(d[k] / GIB, 3)
        d["capacity_gib"] = round(self.capacity_bytes / GIB, 3)
        d["kv_capacity_tokens"] = self.kv_capacity_tokens
        d["max_concurrent_seqs_at_max_model_len"] = self.max_concurrent_seqs(self.max_model_len)
        return d


def kv_block_bytes(model: ModelSpec, parallel: ParallelConfig, kv_dtype: str, block_size: int) -> int:
    """Bytes of one KV block on one GPU: ``block_size`` tokens of every softmax-attention layer of the most
    loaded pipeline stage (its attention layers taken in order, as :func:`layers_per_stage` counts them).

    GQA/MQA KV heads are split over TP ranks and replicated when TP exceeds them (vLLM); MLA's latent
    cache (with DeepSeek-V3.2's indexer keys in the same block) is not split by TP. Gemma 4's full-attention
    layers store KV at their own width (``global_head_dim`` × ``num_global_key_value_heads``), and its
    KV-shared layers (E2B/E4B) attend over another layer's cache and store none.
    """
    tp = parallel.tp
    if model.attention == "mla":
        local = model.kv_elements_per_token_per_layer() + model.indexer_elements_per_token_per_layer()
    else:
        local = 2 * max(1, model.num_kv_heads // tp) * model.head_dim
    ga = model.global_attention
    glob = 2 * max(1, ga.num_kv_heads // tp) * ga.head_dim if ga is not None else local
    per_layer = [0 if sh else glob if m == "global_attention" else local
                 for m, sh in zip(model.mixers, model.layer_kv_shared) if m in ATTENTION_MIXERS]
    n = layers_per_stage(len(per_layer), parallel.pp)
    worst = max((sum(per_layer[i:i + n]) for i in range(0, len(per_layer), n)), default=0)
    return int(block_size * worst * dtype_bytes(kv_dtype))


def state_bytes_per_seq(model: ModelSpec, parallel: ParallelConfig) -> int:
    """Recurrent state one sequence holds on one GPU across its stage's linear-attention layers.

    Gated DeltaNet heads are split over TP ranks as vLLM shards them (value heads and key heads with
    their q/k/v conv channels). The state is kept in vLLM's mamba cache dtypes, whatever the KV-cache
    dtype: the conv window in the model dtype, the SSM state in the model dtype or the one a model's
    vLLM hook sets (Nemotron-H: float32) — ``LinearAttentionSpec.state_bytes`` / ``MambaSpec.state_bytes``."""
    spec = model.linear_attention or model.mamba  # Gated DeltaNet or Mamba-2 (heads split over TP)
    if spec is None or model.num_linear_attention_layers == 0:
        return 0
    layers = layers_per_stage(model.num_linear_attention_layers, parallel.pp)
    return int(spec.state_bytes / parallel.tp * layers)


def layers_per_stage(num_layers: int, pp: int) -> int:
    """Decoder layers on the most loaded pipeline stage (vLLM splits evenly, remainder to the last)."""
    return -(-num_layers // pp)


def weights_bytes_per_gpu(model: ModelSpec, parallel: ParallelConfig, weights_dtype: str,
                          experts_dtype: str | None = None) -> float:
    """Resident weight bytes on the most loaded GPU.

    16-bit formats: every parameter at 2 bytes. Quantised formats (fp8/int8/int4): decoder linears at
    the quantised width, everything else (embeddings, LM head, norms, routers) at 2 bytes.
    """
    vision = vision_weight_bytes_per_gpu(model, parallel.tp)  # multimodal wrappers: the bf16 vision tower
    return vision + _lm_weights_bytes_per_gpu(model, parallel, weights_dtype, experts_dtype)


def _lm_weights_bytes_per_gpu(model: ModelSpec, parallel: ParallelConfig, weights_dtype: str,
                              experts_dtype: str | None) -> float:
    params = model.params_per_gpu(parallel.tp, parallel.pp, parallel.ep) + redundant_expert_params_per_gpu(model, parallel)
    wb = dtype_bytes(weights_dtype)
    if experts_dtype is not None and experts_dtype != weights_dtype:
        # routed experts in their own format, the other decoder linears in `weights_dtype`, the rest 16-bit
        experts = _linear_params_per_gpu(model, parallel, only_experts=True)
        others = _linear_params_per_gpu(model, parallel) - experts
        rest = params - experts - others
        return rest * max(wb, ACTIVATION_BYTES) + others * wb + experts * dtype_bytes(experts_dtype)
    if wb >= ACTIVATION_BYTES:
        return params * wb
    quantised = _linear_params_per_gpu(model, parallel)
    return (params - quantised) * ACTIVATION_BYTES + quantised * wb


def redundant_expert_params_per_gpu(model: ModelSpec, parallel: ParallelConfig) -> float:
    """Parameters of the redundant expert replicas (``parallel.moe.redundant_experts``) one GPU holds:
    the replicas are spread evenly over the EP group, on the most loaded pipeline stage's layers."""
    extra = parallel.moe.redundant_experts
    if not extra or model.moe is None:
        return 0.0
    per_expert = sum(g.num_layers * op.params / op.num_instances for g in model.layer_groups() for op in g.linears
                     if op.group == "experts")
    return per_expert * extra / parallel.ep * layers_per_stage(model.num_layers, parallel.pp) / model.num_layers


def _linear_params_per_gpu(model: ModelSpec, parallel: ParallelConfig, only_experts: bool = False) -> float:
    """Decoder-linear parameters (router excluded; ``only_experts``: routed experts only) on the most
    loaded stage's GPU."""
    tp, ep = parallel.tp, parallel.ep
    total = 0.0
    for g in model.layer_groups():
        per_layer = 0.0
        for op in g.linears:
            if op.group == "router" or (only_experts and op.group != "experts"):
                continue
            if op.group == "experts" and ep > 1:
                per_layer += op.params / ep * (1 + parallel.moe.redundant_experts / op.num_instances)
            elif op.tp == "replicated":
                per_layer += op.params
            else:
                per_layer += op.params / tp
        total += per_layer * g.num_layers
    return total * layers_per_stage(model.num_layers, parallel.pp) / model.num_layers


def activation_peak_bytes(model: ModelSpec, parallel: ParallelConfig, max_num_batched_tokens: int,
                          max_num_seqs: int, workspace_bytes: float = 0.0) -> float:
    """Profiled activation peak of one GPU (see the module docstring for the terms)."""
    T = max_num_batched_tokens
    h = model.hidden_size
    forward = T * ACTIVATION_BYTES * (2 * h + _largest_transient_per_token(model, parallel))
    rows = min(max_num_seqs, T)
    sampler = rows * model.vocab_size * 4 * SAMPLER_LOGIT_COPIES + T * h * ACTIVATION_BYTES
    return max(forward, sampler) + workspace_bytes


def _largest_transient_per_token(model: ModelSpec, parallel: ParallelConfig) -> float:
    """Elements per token of the largest short-lived tensor set inside one decoder layer on one GPU."""
    tp = parallel.tp
    if model.attention == "mla":
        kv = model.kv_elements_per_token_per_layer()  # the latent is not split by TP
    else:
        kv = 2 * max(1, model.num_kv_heads // tp) * model.head_dim
    largest = 2 * model.q_size / tp + kv  # QKV projection output + attention output
    gated = 3 if model.mlp_kind == "gated" else 2  # gate_up (2·I) + activation output (I)
    for g in model.layer_groups():
        if g.kind == "dense":
            largest = max(largest, gated * model.dense_mlp_width(g.kv_shared) / tp)
        elif g.kind == "moe" and model.moe is not None:
            m = model.moe
            width = m.expert_intermediate_size / (1 if parallel.ep > 1 else tp)
            # fused-MoE caches: top-k copies of (gate_up + activation) and of the hidden output, + router logits
            largest = max(largest, m.top_k * (gated * width + model.hidden_size) + m.num_experts)
    return largest


def non_torch_bytes(hw: HardwareProfile, parallel: ParallelConfig) -> float:
    """Memory outside PyTorch's allocator: base + communication buffers when the replica spans GPUs."""
    r = hw.memory_reserve
    extra = r.tp_communication_bytes.value if parallel.num_gpus > 1 else 0.0
    return r.non_torch_bytes.value + extra


def plan_memory(model: ModelSpec, hw: HardwareProfile, parallel: ParallelConfig, precision: PrecisionConfig,
                engine: EngineConfig, max_model_len: int) -> MemoryPlan:
    """Per-GPU memory plan and KV block count, as vLLM V1 computes it at start-up.

    Raises :class:`sim.errors.InfeasibleConfigError` when the weights and reserve do not fit, or the
    KV cache cannot hold one ``max_model_len`` sequence (vLLM refuses to start then too); the message
    gives needed vs available GiB and the smallest tensor-parallel degree that fits.
    """
    check_parallelism(model, parallel)
    plan = _plan(model, hw, parallel, precision, engine, max_model_len)
    need_blocks = plan.blocks_per_sequence(max_model_len)
    if plan.num_kv_blocks < need_blocks:
        needed = plan.weights_bytes + plan.reserve_bytes + need_blocks * plan.block_bytes
        fit = smallest_fitting_tp(model, hw, parallel, precision, engine, max_model_len)
        hint = (f"the smallest tensor-parallel degree that fits is tp={fit} ({fit * parallel.pp} GPUs)"
                if fit else "no tensor-parallel degree up to 64 fits on this GPU")
        raise InfeasibleConfigError(
            f"{model.name} does not fit on {hw.display_name} with tp={parallel.tp}, pp={parallel.pp}: each GPU needs "
            f"{needed / GIB:.2f} GiB (weights {plan.weights_bytes / GIB:.2f} + activations "
            f"{plan.activation_bytes / GIB:.2f} + reserve {plan.non_torch_bytes / GIB:.2f} + KV for one "
            f"{max_model_len}-token sequence {need_blocks * plan.block_bytes / GIB:.2f}) but "
            f"{plan.budget_bytes / GIB:.2f} GiB are available ({hw.memory_bytes / GIB:.2f} GiB × "
            f"gpu_memory_utilization {engine.gpu_memory_utilization}); {hint}")
    return plan


def _plan(model: ModelSpec, hw: HardwareProfile, parallel: ParallelConfig, precision: PrecisionConfig,
          engine: EngineConfig, max_model_len: int) -> MemoryPlan:
    budget = hw.memory_bytes * engine.gpu_memory_utilization
    weights = weights_bytes_per_gpu(model, parallel, precision.weights, precision.experts)
    mnbt = engine.max_num_batched_tokens or max(max_model_len, 2048)
    act = activation_peak_bytes(model, parallel, mnbt, engine.max_num_seqs,
                                hw.memory_reserve.activation_workspace_bytes.value)
    a2a = deepep_buffer_bytes(model, hw, parallel)
    nt = non_torch_bytes(hw, parallel) + a2a
    kv = budget - weights - act - nt
    block_bytes = kv_block_bytes(model, parallel, precision.kv_dtype, engine.block_size)
    state = state_bytes_per_seq(model, parallel)
    # hybrids: state pages for the engine's max_num_seqs running sequences come out of the same pool
    # before it is cut into attention blocks (simplification of vLLM's page-per-request allocation)
    reserve = float(state * engine.max_num_seqs)
    blocks = max(0, math.floor((kv - reserve) / block_bytes)) if block_bytes > 0 else 0
    return MemoryPlan(
        capacity_bytes=hw.memory_bytes, gpu_memory_utilization=engine.gpu_memory_utilization,
        budget_bytes=budget, weights_bytes=weights, activation_bytes=act, non_torch_bytes=nt,
        kv_cache_bytes=kv, block_size=engine.block_size, block_bytes=block_bytes, num_kv_blocks=blocks,
        max_model_len=max_model_len, max_num_batched_tokens=mnbt, max_num_seqs=engine.max_num_seqs,
        tp=parallel.tp, pp=parallel.pp, kv_dtype=precision.kv_dtype, weights_dtype=precision.weights,
        state_bytes_per_seq=state, state_reserve_bytes=reserve, all_to_all_buffer_bytes=a2a)


def check_parallelism(model: ModelSpec, parallel: ParallelConfig) -> None:
    """Reject splits vLLM refuses at start-up (``ModelConfig.verify_with_parallel_config``): attention
    heads must divide evenly over the TP ranks, KV heads must either divide evenly or be replicated a
    whole number of times (tp a multiple of them), and each pipeline stage needs at least one layer."""
    tp, pp = parallel.tp, parallel.pp
    heads = model.num_attention_heads
    if heads % tp:
        ok = [d for d in (1, 2, 4, 8, 16, 32, 64) if heads % d == 0]
        raise InfeasibleConfigError(
            f"parallel.tp = {tp}: {model.name}'s {heads} attention heads do not divide over {tp} GPUs "
            f"(vLLM refuses this split); valid tensor-parallel degrees: {', '.join(map(str, ok))}")
    kv = model.num_kv_heads
    if model.attention != "mla" and kv and (kv % tp if tp <= kv else tp % kv):
        raise InfeasibleConfigError(
            f"parallel.tp = {tp}: {model.name}'s {kv} KV heads can neither be split evenly over {tp} GPUs "
            f"nor replicated a whole number of times")
    if pp > model.num_layers:
        raise InfeasibleConfigError(
            f"parallel.pp = {pp} exceeds {model.name}'s {model.num_layers} layers (one layer per stage at least)")
    check_expert_parallelism(model, parallel)


def check_expert_parallelism(model: ModelSpec, parallel: ParallelConfig) -> None:
    """Reject DP/EP layouts vLLM refuses: data-parallel attention ranks and expert parallelism are for
    MoE models; with ``dp > 1`` the experts span the whole group (``ep = dp × tp``, vLLM
    ``--enable-expert-parallel``); without DP, EP spans the TP group (``ep = tp``); the physical
    experts (routed + redundant) must divide evenly over the EP ranks."""
    dp, tp, ep = parallel.dp, parallel.tp, parallel.ep
    m = model.moe
    if m is None:
        if dp > 1:
            raise InfeasibleConfigError(
                f"parallel.dp = {dp}: {model.name} is a dense model; data-parallel attention ranks serve MoE models "
                f"(for independent copies of a dense model use replicas: {dp})")
        if ep > 1:
            raise InfeasibleConfigError(f"parallel.ep = {ep}: {model.name} has no experts to spread (use parallel.ep: 1)")
        return
    want = dp * tp
    if ep > 1 and ep != want:
        raise InfeasibleConfigError(
            f"parallel.ep = {ep}: expert parallelism spans all dp × tp = {dp} × {tp} = {want} GPUs of the engine "
            f"(vLLM --enable-expert-parallel); valid values: 1 or {want}")
    if dp > 1 and ep == 1:
        raise InfeasibleConfigError(
            f"parallel.dp = {dp} with ep = 1: DP attention needs the experts spread over the group; set parallel.ep: {want}")
    physical = m.num_experts + parallel.moe.redundant_experts
    if ep > 1 and physical % ep:
        ok = [d for d in range(1, physical + 1) if physical % d == 0 and d <= 1024]
        raise InfeasibleConfigError(
            f"parallel.ep = {ep}: {model.name}'s {m.num_experts} routed experts + {parallel.moe.redundant_experts} redundant "
            f"= {physical} do not divide over {ep} GPUs; valid EP degrees: {', '.join(map(str, ok[-12:]))} "
            f"(or change parallel.moe.redundant_experts)")


def smallest_fitting_tp(model: ModelSpec, hw: HardwareProfile, parallel: ParallelConfig, precision: PrecisionConfig,
                        engine: EngineConfig, max_model_len: int, max_tp: int = 64) -> int | None:
    """Smallest power-of-two TP degree (same PP) whose plan holds one ``max_model_len`` sequence."""
    tp = 1
    while tp <= max_tp:
        if tp > 1 and model.num_attention_heads % tp:
            tp *= 2
            continue
        p = parallel.model_copy(update={"tp": tp, "ep": tp if parallel.ep > 1 else 1})
        plan = _plan(model, hw, p, precision, engine, max_model_len)
        if plan.num_kv_blocks >= plan.blocks_per_sequence(max_model_len):
            return tp
        tp *= 2
    return None
