"""Roofline cost model: the time of one engine iteration from per-operator FLOPs and bytes.

For every operator of the forward pass on one GPU (one tensor-parallel rank)::

    time = max(flops / (peak · eff_compute), bytes / (bandwidth · eff_memory)) + kernel floor

summed over the decoder layers, plus communication, the LM head and sampler, and fixed overheads.
Operators and their traffic (``n`` = tokens in the step, all per GPU):

* **GEMMs** (:meth:`ModelSpec.layer_groups`, q/k/v and gate/up fused as vLLM runs them): FLOPs
  ``2·in·out·n/tp``; bytes = weights (read once per iteration) + activations in/out. With the profile's
  SM count the compute time follows the tile/wave model of the per-GPU M, N, K and overlaps the memory time
  with exponent ``gemm_overlap_exponent`` (:mod:`sim.deploy.kernel_shapes`); without it, compute efficiency
  rises with the row count, ``eff(n) = e·n/(n + n_half)``.
* **MoE experts**: the expected number of distinct experts hit by ``n`` tokens with top-k routing,
  ``E·(1 − (1 − k/E)^n)``, is read from memory; compute is ``k`` experts per token, at the efficiency
  of the rows each touched expert receives.
* **attention**: FLOPs ``2·heads·(d_qk + d_v)`` per (query, key) pair — the causal pairs of the batch
  (:attr:`BatchShape.causal_pairs`); bytes = every scheduled request's KV (GQA/MLA aware, TP-sharded
  KV heads) + Q/O + the new K/V written. MLA decode runs in the weight-absorbed latent form. Prefill
  pairs run below peak on short sequences and on chunks too small to fill the GPU (FlashAttention's
  length ramp and SM occupancy, :mod:`sim.deploy.kernel_shapes`).
* **element-wise** (norms, rotary, activation, embedding gather, MoE routing), one breakdown line each:
  bytes plus a per-kernel floor that grows with the row width (:mod:`sim.deploy.kernel_shapes`).
* **TP all-reduce** after attention and after the MLP: vLLM's custom one-shot/two-shot all-reduce or NCCL
  (measured curve or ring) by message size (:mod:`sim.deploy.collectives`; expert parallelism spans the TP
  group, so MoE outputs meet in the same all-reduce).
  **PP**: one send/recv per stage boundary.
* **LM head** on one row per scheduled request, logits gathered across TP, then the sampler.
* **overheads**: per iteration, per scheduled request, per layer (launch gaps).

Pipeline stages are priced one after the other (the latency of one batch through all stages; vLLM's
overlap of several micro-batches is not modelled). Everything that does not depend on the batch is
computed in ``__init__``; :meth:`RooflineCostModel.step` is scalar arithmetic (benchmarks/bench_roofline.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.config import ParallelConfig, PrecisionConfig
from sim.deploy.collectives import AllReduce
from sim.deploy.expert_parallel import ExpertParallelPlan
from sim.deploy.hardware import HardwareProfile
from sim.deploy.kernel_shapes import ATTENTION_Q_TILE, attention_prefill_work, gemm_shape, overlap
from sim.deploy.models.spec import ATTENTION_MIXERS, LayerGroup, LinearOp, ModelSpec, dtype_bytes
from sim.deploy.step_cost import BatchShape, StepCost
from sim.deploy.vision_cost import VisionEncoderCost, model_vision_tower

ACT_BYTES = 2.0  # activations are bf16/fp16 whatever the weight format
LOGIT_BYTES = 4.0  # the sampler works on fp32 logits
SAMPLER_PASSES = 6.0  # fp32 logit reads/writes of vLLM's sampler (penalties, temperature, softmax, top-k/p, sample)
SAMPLER_KERNELS = 8
MOE_EXTRA_KERNELS = 3  # router softmax/top-k, token permute, combine


@dataclass(frozen=True, slots=True)
class _Gemm:
    """One (fused) GEMM of a layer group, per GPU, with everything batch-independent folded in."""

    name: str
    num_layers: int  # layers it occurs in (all pipeline stages)
    sec_per_token_compute: float  # flops_per_token / (peak · e_max)
    weight_read_s: float  # weight bytes / (bw · e_mem); for experts: of ONE expert
    act_s_per_token: float  # activation bytes per token / (bw · e_mem)
    flops_per_token: float
    weight_bytes: float  # for experts: of one expert on this GPU
    act_bytes_per_token: float
    num_experts: int = 0  # routed experts (0 = dense GEMM)
    experts_per_gpu: float = 0.0  # experts resident on this GPU
    top_k: int = 0
    n_out: float = 0.0  # output columns per GPU (of one instance / one expert)
    k_in: float = 0.0  # reduction length per GPU
    instances: float = 1.0  # batched copies run per token (dense GEMMs with num_instances > 1)
    group: str = ""  # LinearOp.group of its linears ("shared_experts", "attention", ...)


def _fuse(ops: tuple[LinearOp, ...]) -> list[tuple[str, list[LinearOp]]]:
    """Group adjacent linears that vLLM runs as one GEMM (QKV, gate+up): same input, group and split.

    Returns ``(name, linears)`` pairs; fused groups are named as vLLM names them (``qkv_proj``,
    ``gate_up_proj``, with their ``experts.``/``shared_experts.`` prefix)."""
    groups: list[list[LinearOp]] = []
    for op in ops:
        prev = groups[-1][-1] if groups else None
        if (prev is not None and prev.in_features == op.in_features and prev.group == op.group
                and prev.tp == op.tp == "column" and prev.num_instances == op.num_instances
                and prev.active_instances == op.active_instances):
            groups[-1].append(op)
        else:
            groups.append([op])
    named = []
    for group in groups:
        names = [o.name for o in group]
        base = [n.rsplit(".", 1)[-1] for n in names]
        prefix = names[0][: len(names[0]) - len(base[0])]
        fused = {("q_proj", "k_proj", "v_proj"): "qkv_proj", ("gate_proj", "up_proj"): "gate_up_proj"}.get(tuple(base))
        named.append((prefix + fused if fused else "+".join(names), group))
    return named


class RooflineCostModel:
    """Prices iterations of ``model`` on ``hw`` under ``parallel`` and ``precision`` (per GPU).

    Implements :class:`sim.deploy.step_cost.CostModel`. ``step(shape)`` is the hot path; ``step(shape, breakdown=True)``
    or :meth:`breakdown` also return seconds per operator (they sum to ``time_s``).
    """

    #: ``step(shape)`` depends on ``shape`` alone (its caches hold values, not state), so equal shapes
    #: may share one price (iteration leaping memoises decode steps: sim/engine/leap.py)
    step_is_pure = True

    def __init__(self, model: ModelSpec, hw: HardwareProfile, parallel: ParallelConfig | None = None,
                 precision: PrecisionConfig | None = None) -> None:
        parallel = parallel or ParallelConfig()
        precision = precision or PrecisionConfig()
        self.model, self.hw, self.parallel, self.precision = model, hw, parallel, precision
        tp, pp, ep = parallel.tp, parallel.pp, parallel.ep
        self.tp, self.pp, self.ep = tp, pp, ep
        eff, ovh = hw.efficiency, hw.overheads
        bw = hw.memory_bandwidth_bytes_per_s
        self.gemm_dtype, self.peak_flops = hw.resolve_compute_dtype(precision.compute_dtype)
        self.attention_peak_flops = hw.peak_flops(precision.attention)
        self.bandwidth = bw
        mem_bw = bw * eff.memory_efficiency.value
        gemm_flops = self.peak_flops * eff.gemm_compute_efficiency.value
        # gemm_half_tokens is measured with 16-bit weights. The ramp is set by the GEMM's ridge point (the
        # rows at which compute time equals weight-read time), so it moves with the weight width and the
        # compute peak: W4A16 reaches its ridge at 1/4 of the rows, W8A8 fp8 at the same rows as bf16.
        wb = dtype_bytes(precision.weights)
        self.n_half = (eff.gemm_half_tokens.value * min(1.0, wb / ACT_BYTES)
                       * self.peak_flops / hw.peak_flops("bf16"))
        # routed experts may use their own format (precision.experts): their own bytes, peak and ramp
        wbe = dtype_bytes(precision.experts or precision.weights)
        _, expert_peak = hw.resolve_compute_dtype(precision.expert_compute_dtype)
        expert_gemm_flops = expert_peak * eff.gemm_compute_efficiency.value
        self.n_half_experts = (eff.gemm_half_tokens.value * min(1.0, wbe / ACT_BYTES)
                               * expert_peak / hw.peak_flops("bf16"))
        self.gemm_kernel_s = ovh.gemm_kernel_s.value
        kvb = dtype_bytes(precision.kv_dtype)
        L = model.num_layers
        self.num_layers = L
        h = model.hidden_size

        # ---- GEMMs
        gemms: list[_Gemm] = []
        for g in model.layer_groups():
            for name, ops in _fuse(g.linears):
                routed = ops[0].group == "experts"
                gemms.append(self._gemm(g, name, ops, tp, ep, wbe if routed else wb,
                                        expert_gemm_flops if routed else gemm_flops, mem_bw))
        self.dense_gemms = tuple(x for x in gemms if not x.num_experts)
        self.expert_gemms = tuple(x for x in gemms if x.num_experts)
        # for the hot path: (layers, sec/token compute, weight s, act s/token, name)
        self._dense = tuple((x.num_layers, x.sec_per_token_compute, x.weight_read_s, x.act_s_per_token, x.name)
                            for x in self.dense_gemms)
        self._experts = tuple((x.num_layers, x.sec_per_token_compute, x.weight_read_s, x.act_s_per_token,
                               float(x.num_experts), x.experts_per_gpu, float(x.top_k), x.name, x.weight_bytes)
                              for x in self.expert_gemms)
        self.gemm_flops_per_token = sum(x.num_layers * x.flops_per_token for x in gemms)
        # shape-dependent GEMM efficiency (sim/deploy/kernel_shapes.py) when the profile knows its SM count;
        # otherwise the row ramp eff(n) = e·n/(n + n_half)
        self.sms = int(hw.compute_units or 0)
        self.gemm_overlap_p = eff.gemm_overlap_exponent.value
        e_gemm = eff.gemm_compute_efficiency.value
        if self.sms:
            self._dense_shapes = tuple(gemm_shape(x.n_out, x.k_in, x.instances, self.peak_flops, e_gemm, self.sms)
                                       for x in self.dense_gemms)
            self._expert_shapes = tuple(gemm_shape(x.n_out, x.k_in, 1.0, self.peak_flops, e_gemm, self.sms)
                                        for x in self.expert_gemms)
        else:
            self._dense_shapes = self._expert_shapes = ()
        # expert parallelism: the busiest GPU's share of routed tokens and, with DP attention, the
        # all-to-all that carries tokens between DP ranks and the GPUs of their experts
        self.dp = parallel.dp
        self.ep_plan = (ExpertParallelPlan.build(model, hw, parallel)
                        if model.moe is not None and ep > 1 else None)
        self._moe_layers = sum(g.num_layers for g in model.layer_groups() if g.kind == "moe")
        # shared-expert GEMMs (indices into the dense lists): priced apart when they overlap the combine
        self._shared_idx = tuple(i for i, x in enumerate(self.dense_gemms) if x.group == "shared_experts")
        self._shared_cache: dict[int, float] = {}
        self._dense_weight_bytes = sum(x.num_layers * x.weight_bytes for x in self.dense_gemms)
        self._act_bytes_per_token = sum(x.num_layers * x.act_bytes_per_token for x in gemms)

        # ---- attention (per layer, per GPU)
        heads_rank = model.num_attention_heads / tp
        pre = model.attention_dims("prefill")
        dec = model.attention_dims("decode")
        self.attn_flops_per_pair = 2.0 * heads_rank * (pre.qk_head_dim + pre.v_head_dim)
        self.attn_flops_per_pair_decode = 2.0 * heads_rank * (dec.qk_head_dim + dec.v_head_dim)
        self.is_mla = model.attention == "mla"
        if self.is_mla:
            kv_elems = model.kv_elements_per_token_per_layer()  # latent, not split by TP
            # expanded-form prefill up-projects the cached latent of its context with kv_b_proj
            self.mla_up_flops_per_ctx_token = model.mla_kv_up_proj_flops_per_ctx_token() / tp
        else:
            kv_elems = 2 * max(1, model.num_kv_heads // tp) * model.head_dim
            self.mla_up_flops_per_ctx_token = 0.0
        self.kv_bytes_per_token_layer = kv_elems * kvb
        self.qo_bytes_per_token_layer = 2.0 * model.q_size / tp * ACT_BYTES
        # Gemma 4: its full-attention layers (the non-windowed ones) have their own head width and KV heads:
        # (FLOPs-per-pair ratio to the sliding layers', KV bytes per token, q/o bytes per token) per layer
        ga = model.global_attention
        self._global_attn = None if ga is None else (
            ga.head_dim / model.head_dim, 2 * max(1, ga.num_kv_heads // tp) * ga.head_dim * kvb,
            2.0 * model.num_attention_heads * ga.head_dim / tp * ACT_BYTES)
        self._attn_c = 1.0 / (self.attention_peak_flops * eff.attention_compute_efficiency.value)
        self._attn_m = 1.0 / (bw * eff.attention_memory_efficiency.value)
        self.attention_kernel_s = ovh.attention_kernel_s.value
        self.attention_half_length = eff.attention_half_length.value
        self.heads_per_gpu = heads_rank
        # sliding-window layers: (count, window); full-attention layers counted separately
        windows: dict[int | None, int] = {}
        ix = model.indexer
        for w, mixer in zip(model.windows, model.mixers):
            if mixer not in ATTENTION_MIXERS:
                continue
            if ix is not None:
                # DeepSeek-V3.2 sparse attention: each query attends to at most index_topk selected keys
                w = ix.topk if w is None else min(w, ix.topk)
            windows[w] = windows.get(w, 0) + 1
        self._full_attn_layers = windows.pop(None, 0)
        self._window_layers = tuple(sorted(windows.items()))
        # V3.2 lightning indexer: scores every cached key with index_n_heads small heads (replicated over
        # TP like the latent cache): 2·heads·head_dim FLOPs per (query, key) pair, head_dim keys per token
        self._indexer_layers = model.num_attention_layers if ix is not None else 0
        self._indexer_flops_per_pair = 2.0 * ix.num_heads * ix.head_dim if ix is not None else 0.0
        self._indexer_bytes_per_token = ix.head_dim * kvb if ix is not None else 0.0
        # Gated DeltaNet linear attention (hybrids): per layer each sequence reads and writes its fixed
        # recurrent state once per step (decode: one token; chunked prefill: once per chunk), and each
        # token spends three dk×dv products per value head (k·S for the delta rule, the rank-1 state
        # update, q·S for the output); heads are split over TP
        # Mamba-2 (Nemotron-H) is priced the same way: per head a head_dim × d_state state, decayed,
        # updated by the rank-1 x·Bᵀ and read out by C (three head_dim × d_state products per token)
        la, mb = model.linear_attention, model.mamba
        self._linear_layers = model.num_linear_attention_layers
        if la is not None and self._linear_layers:
            self._linear_flops_per_token = 6.0 * la.num_v_heads / tp * la.k_head_dim * la.v_head_dim
        elif mb is not None and self._linear_layers:
            self._linear_flops_per_token = 6.0 * mb.num_heads / tp * mb.head_dim * mb.state_size
        else:
            self._linear_flops_per_token = 0.0
        # the state in its own dtypes, as the memory plan holds it (memory_plan.state_bytes_per_seq)
        recurrent = la if la is not None else mb
        self._linear_state_bytes_seq = recurrent.state_bytes / tp if recurrent is not None and self._linear_layers else 0.0

        # ---- element-wise (per layer, per GPU), one line per operator in the breakdown
        gated = 3 if model.mlp_kind == "gated" else 2
        # rotary touches q and k (not v); MLA: its latent as before
        rope_k = kv_elems if self.is_mla else max(1, model.num_kv_heads // tp) * model.head_dim
        # op -> [bytes per token (all layers), kernel launches, row floor seconds (all layers)]
        ops: dict[str, list[float]] = {}
        sms_bw = self.sms / bw if self.sms else 0.0

        def add(op: str, layers: int, row_bytes: float, kernels: int) -> None:
            acc = ops.setdefault(op, [0.0, 0.0, 0.0])
            acc[0] += layers * row_bytes * kernels
            acc[1] += layers * kernels
            acc[2] += layers * kernels * row_bytes * sms_bw  # one row per SM at few tokens

        for g in model.layer_groups():
            if g.kind == "moe" and model.moe is not None:
                m = model.moe
                width = m.top_k * m.expert_intermediate_size / (ep if ep > 1 else tp)
                width += m.shared_intermediate_size / tp
                ops.setdefault("moe_routing", [0.0, 0.0, 0.0])[1] += g.num_layers * MOE_EXTRA_KERNELS
            elif g.kind == "none":  # Nemotron-H mixer-only layers have no MLP
                width = 0.0
            else:
                width = model.dense_mlp_width(g.kv_shared) / tp
            add("norm", g.num_layers, ACT_BYTES * 4 * h, 2)  # 2 fused residual-add + RMSNorm
            if g.mixer == "global_attention" and ga is not None:  # Gemma 4: q and k at the global width
                add("rotary", g.num_layers, ACT_BYTES * 2 * (model.num_attention_heads * ga.head_dim / tp
                                                             + max(1, ga.num_kv_heads // tp) * ga.head_dim), 1)
            elif g.mixer in ATTENTION_MIXERS:
                add("rotary", g.num_layers, ACT_BYTES * 2 * (model.q_size / tp + rope_k), 1)  # q and k, in place
            if width:
                add("activation", g.num_layers, ACT_BYTES * gated * width, 1)
        # gather: read the row, write the hidden state (Gemma 4 E2B/E4B: and the per-layer input row)
        add("embedding", 1, 2 * (h + model.num_layers * model.per_layer_input_size) * ACT_BYTES, 1)
        ew_eff = bw * eff.elementwise_efficiency.value
        t_ew = ovh.elementwise_kernel_s.value
        self._elementwise = tuple((op, b / ew_eff, k * t_ew + floor) for op, (b, k, floor) in ops.items())
        self.elementwise_bytes_per_token = sum(b for b, _, _ in ops.values())
        self._ew_s_per_token = self.elementwise_bytes_per_token / ew_eff
        self._ew_fixed_s = sum(fixed for _, _, fixed in self._elementwise)

        # ---- communication
        ec = eff.communication_efficiency.value
        group = tp * pp
        link = hw.link_bandwidth_bytes_per_s(tp) * ec  # TP collectives stay within the TP group
        pp_link = hw.link_bandwidth_bytes_per_s(group) * ec  # stage boundaries cross nodes once tp·pp outgrows one
        self.allreduce_latency_s = ovh.allreduce_latency_s.value
        # one all-reduce after attention and one after the MLP/MoE block of every layer. Expert parallelism
        # spans the TP group here (vLLM --enable-expert-parallel without data-parallel attention): every
        # rank holds all tokens, computes its own experts and the outputs meet in the same all-reduce.
        # Each costs what vLLM's custom all-reduce or NCCL takes for n·h·2 bytes (sim/deploy/collectives.py).
        ic = hw.interconnect
        fabric = ic.intra_node.lower()
        custom = tp <= ic.gpus_per_node and (tp == 2 or "nvlink" in fabric or "xgmi" in fabric)
        self.allreduce = AllReduce(tp, self.allreduce_latency_s, link, custom_eligible=custom,
                                   curve_name=ic.allreduce_measurements)
        self.allreduce_bytes_per_token = h * ACT_BYTES
        if tp > 1:
            self._num_allreduce = 2 * L
            self._allreduce_s_per_token = 2.0 * (tp - 1) / tp * h * ACT_BYTES / link
        else:
            self._num_allreduce = 0
            self._allreduce_s_per_token = 0.0
        if pp > 1:
            self._pp_fixed_s = (pp - 1) * ovh.p2p_latency_s.value
            self._pp_s_per_token = (pp - 1) * h * ACT_BYTES / pp_link
        else:
            self._pp_fixed_s = self._pp_s_per_token = 0.0
        self._swap_bw = hw.pcie_bandwidth_bytes_per_s * ec

        # ---- LM head + sampler (rows = scheduled requests)
        head = model.lm_head_op()
        V = model.vocab_size
        self.lm_head_flops_per_row = 2.0 * head.in_features * V / tp
        self.lm_head_weight_bytes = head.in_features * V / tp * ACT_BYTES  # stays 16-bit
        self._head_c = self.lm_head_flops_per_row / (self.peak_flops * eff.gemm_compute_efficiency.value)
        self._head_shape = (gemm_shape(V / tp, head.in_features, 1.0, self.peak_flops, e_gemm, self.sms)
                            if self.sms else None)
        self._head_w = self.lm_head_weight_bytes / mem_bw
        self.lm_head_act_bytes_per_row = (head.in_features + V / tp) * ACT_BYTES
        self._head_a = self.lm_head_act_bytes_per_row / mem_bw
        self._gather_s_per_row = (V * ACT_BYTES * (tp - 1) / tp / link) if tp > 1 else 0.0
        self._gather_fixed_s = self.allreduce_latency_s if tp > 1 else 0.0
        self._sampler_s_per_row = V * LOGIT_BYTES * SAMPLER_PASSES / (bw * eff.elementwise_efficiency.value)
        self._sampler_fixed_s = SAMPLER_KERNELS * ovh.elementwise_kernel_s.value
        self.sampler_bytes_per_row = V * LOGIT_BYTES * SAMPLER_PASSES

        # ---- fixed overheads
        self.per_iteration_s = ovh.per_iteration_s.value
        self.per_request_s = ovh.per_request_s.value
        self._launch_s = ovh.launch_per_layer_s.value * L
        self._cache: dict[tuple[int, int | None], float] = {}
        # per token count: dense GEMM seconds and all-reduce seconds of a step (bounded by the token budget)
        self._dense_cache: dict[int, float] = {}
        # vision encoder of a multimodal wrapper (None: the model cannot take images)
        tower = model_vision_tower(model)
        self.vision = VisionEncoderCost(tower, self) if tower is not None else None
        self._allreduce_cache: dict[int, float] = {}

    # ------------------------------------------------------------------ construction helpers

    def _gemm(self, g: LayerGroup, name: str, ops: list[LinearOp], tp: int, ep: int, wb: float,
              gemm_flops: float, mem_bw: float) -> _Gemm:
        op0 = ops[0]
        out_features = sum(o.out_features for o in ops)
        in_f = op0.in_features
        bias = sum(o.out_features for o in ops if o.bias)
        wbytes = wb if op0.group != "router" else ACT_BYTES  # routers are kept 16-bit
        if op0.group == "experts":
            split = 1 if ep > 1 else tp  # EP: whole experts spread over ranks; else each expert TP-sliced
            per_expert_w = (in_f * out_features / split) * wbytes + bias / split * ACT_BYTES
            flops_tok = 2.0 * in_f * out_features * op0.active_instances / (ep if ep > 1 else tp)
            act_tok = op0.active_instances * (in_f + out_features) / (ep if ep > 1 else tp) * ACT_BYTES
            return _Gemm(name, g.num_layers, flops_tok / gemm_flops, per_expert_w / mem_bw, act_tok / mem_bw,
                         flops_tok, per_expert_w, act_tok, num_experts=op0.num_instances,
                         experts_per_gpu=op0.num_instances / ep, top_k=op0.active_instances,
                         n_out=out_features / split, k_in=in_f)
        if op0.tp == "replicated":
            k_in, k_out, split = in_f, out_features, 1
        elif op0.tp == "column":
            k_in, k_out, split = in_f, out_features / tp, tp
        else:  # row
            k_in, k_out, split = in_f / tp, out_features, tp
        w = in_f * out_features / split * wbytes * op0.num_instances + bias * ACT_BYTES / (split if op0.tp == "column" else 1)
        flops_tok = 2.0 * k_in * k_out * op0.active_instances
        act_tok = (k_in + k_out) * ACT_BYTES * op0.active_instances
        return _Gemm(name, g.num_layers, flops_tok / gemm_flops, w / mem_bw, act_tok / mem_bw, flops_tok, w, act_tok,
                     n_out=k_out, k_in=k_in, instances=op0.active_instances, group=op0.group)

    # ------------------------------------------------------------------ the hot path

    def step(self, shape: BatchShape, breakdown: bool = False, group_tokens: float | None = None,
             send_tokens: float | None = None, all_to_all: bool = True) -> StepCost:
        """Price one iteration. With ``breakdown=True`` the result carries seconds per operator.

        With data-parallel attention (:meth:`group_step`), ``group_tokens`` is the number of tokens of
        the whole DP group that reach the MoE layers (default: this step's own) and ``send_tokens`` the
        largest number any rank sends through the all-to-all (default: this step's own); ``all_to_all``
        False leaves the dispatch/combine out (priced by :meth:`group_step` under two-batch overlap)."""
        n = shape.num_tokens
        bd: dict[str, float] | None = {} if breakdown else None
        if n <= 0:  # no forward pass: at most a swap-only step
            if shape.swap_bytes <= 0:
                return StepCost(time_s=0.0)
            tsw = shape.swap_bytes / self._swap_bw
            t = tsw + self.per_iteration_s
            if bd is not None:
                bd["swap"], bd["overhead"] = tsw, self.per_iteration_s
            return StepCost(time_s=t, bytes_moved=float(shape.swap_bytes), mbu=shape.swap_bytes / (t * self.bandwidth),
                            breakdown=bd if bd is not None else {})
        # hot path: plain float arithmetic; `a if a > b else b` rather than max() (several times cheaper)
        nf = float(n)
        n_half = self.n_half
        kernel = self.gemm_kernel_s
        t = 0.0
        bytes_moved = 0.0
        shapes = self._dense_shapes
        p = self.gemm_overlap_p
        if shapes:  # tile/wave model of each GEMM's per-GPU M, N, K (sim/deploy/kernel_shapes.py)
            hit = self._dense_cache.get(n) if bd is None else None
            if hit is not None:  # the dense GEMMs depend on the token count only
                t += hit
            else:
                td = 0.0
                for (layers, c, w, a, name), gs in zip(self._dense, shapes):
                    tc = gs.compute_s(nf)
                    tm = w + a * nf
                    dt = layers * (((tc if tc > tm else tm) if p <= 0.0 else overlap(tc, tm, p)) + kernel)
                    td += dt
                    if bd is not None:
                        bd[name] = bd.get(name, 0.0) + dt
                self._dense_cache[n] = td
                t += td
        else:  # dense GEMMs: compute time c·(n + n_half), memory time W + a·n
            for layers, c, w, a, name in self._dense:
                tc = c * (nf + n_half)
                tm = w + a * nf
                dt = layers * ((tc if tc > tm else tm) + kernel)
                t += dt
                if bd is not None:
                    bd[name] = bd.get(name, 0.0) + dt
        bytes_moved += self._dense_weight_bytes
        # routed experts: `nm` tokens reach them (the whole DP group's with DP attention); the busiest
        # GPU of the EP group carries `imb` times its mean share and sets the layer's time
        nm = nf if group_tokens is None else float(group_tokens)
        plan = self.ep_plan
        n_half_e = self.n_half_experts
        imb = plan.busiest_gpu_factor(nm) if plan is not None else 1.0
        for i, (layers, c, w, a, E, e_gpu, k, name, w_bytes) in enumerate(self._experts):
            touched_frac = 1.0 - (1.0 - k / E) ** nm  # expected fraction of experts hit
            rows = nm * k / (E * touched_frac)  # tokens each touched expert processes
            touched = e_gpu * touched_frac
            tm = w * touched + a * nm * imb
            if shapes:  # one grouped GEMM over every touched expert's row tiles (the busiest GPU's rows)
                dt = layers * (overlap(self._expert_shapes[i].compute_s(rows * imb, touched), tm, p) + kernel)
            else:
                tc = c * nm * imb * (1.0 + n_half_e / rows)
                dt = layers * ((tc if tc > tm else tm) + kernel)
            t += dt
            bytes_moved += layers * touched * w_bytes
            if bd is not None:
                bd[name] = bd.get(name, 0.0) + dt
        bytes_moved += self._act_bytes_per_token * nf

        # attention
        ta, a_flops, a_bytes = self._attention(shape)
        t += ta
        if bd is not None:
            bd["attention"] = ta

        # element-wise kernels (norms, rotary, activation, embedding gather; MoE routing), one line each
        if bd is None:
            te = self._ew_s_per_token * nf + self._ew_fixed_s
        else:
            te = 0.0
            for op, s_tok, fixed in self._elementwise:
                bd[op] = s_tok * nf + fixed
                te += bd[op]
        t += te
        bytes_moved += self.elementwise_bytes_per_token * nf

        # communication
        tcomm = 0.0
        if self._num_allreduce:
            tar = self._allreduce_cache.get(n)
            if tar is None:
                tar = self._allreduce_cache[n] = self._num_allreduce * self.allreduce.time_s(
                    self.allreduce_bytes_per_token * nf)
            tcomm += tar
        if self.pp > 1:
            tcomm += self._pp_fixed_s + self._pp_s_per_token * nf
        t += tcomm
        if bd is not None and tcomm:
            bd["communication"] = tcomm
        if all_to_all and plan is not None and plan.uses_all_to_all:
            decode_only = shape.num_decode_seqs == shape.num_seqs
            a2a = plan.all_to_all(nf if send_tokens is None else float(send_tokens), decode_only=decode_only)
            ta2a = self._moe_layers * a2a.time_s
            if plan.shared_expert_overlap and self._shared_idx and self._moe_layers:
                # the shared expert runs while each layer's combine is on the wire (vLLM SharedFusedMoE)
                per_layer = self._shared_expert_s(n) / self._moe_layers
                ta2a -= self._moe_layers * plan.shared_expert_hidden_s(per_layer, a2a.combine_s, decode_only)
            t += ta2a
            if bd is not None:
                bd["all_to_all"] = ta2a

        # LM head, logits gather and sampler: one row per scheduled request
        rows = float(shape.num_seqs)
        # speculative decoding: every verified draft position needs logits too (rejection sampler)
        logit_rows = rows + shape.num_spec_tokens
        if rows > 0:
            tm = self._head_w + self._head_a * logit_rows
            if self._head_shape is not None:
                th = overlap(self._head_shape.compute_s(logit_rows), tm, p)
            else:
                tc = self._head_c * (logit_rows + n_half)
                th = tc if tc > tm else tm
            th += kernel + self._gather_fixed_s + self._gather_s_per_row * logit_rows
            ts = self._sampler_fixed_s + self._sampler_s_per_row * logit_rows
            t += th + ts
            bytes_moved += self.lm_head_weight_bytes + (self.lm_head_act_bytes_per_row + self.sampler_bytes_per_row) * logit_rows
            if bd is not None:
                bd["lm_head"] = th
                bd["sampler"] = ts

        # swap (host <-> device copies for swap preemption)
        if shape.swap_bytes:
            tsw = shape.swap_bytes / self._swap_bw
            t += tsw
            if bd is not None:
                bd["swap"] = tsw

        # vision encoder of the images whose first prefill chunk runs now (sim/deploy/vision_cost.py)
        tv = 0.0
        if shape.num_images:
            if self.vision is None:
                raise ValueError(f"model {self.model.name}: requests carry images but it has no modelled vision tower")
            tv, v_flops, v_bytes = self.vision.price(shape)
            t += tv
            bytes_moved += v_bytes * self.pp  # the encoder runs on the first stage; undo the /pp below
            if bd is not None:
                bd["vision_encoder"] = tv

        # fixed overheads
        tov = self.per_iteration_s + self.per_request_s * rows + self._launch_s
        t += tov
        if bd is not None:
            bd["overhead"] = tov

        flops = self.gemm_flops_per_token * nf + a_flops + self.lm_head_flops_per_row * logit_rows
        bytes_moved += a_bytes
        # per GPU: with pipeline parallelism each GPU holds 1/pp of the layers
        flops_gpu = flops / self.pp
        bytes_gpu = bytes_moved / self.pp
        if tv:
            flops_gpu += v_flops
        mfu = flops_gpu / (t * self.peak_flops)
        mbu = bytes_gpu / (t * self.bandwidth)
        prefill = t * shape.num_prefill_tokens / nf if not tv else (t - tv) * shape.num_prefill_tokens / nf + tv
        return StepCost(time_s=t, flops=flops_gpu, bytes_moved=bytes_gpu, mfu=mfu, mbu=mbu,
                        prefill_time_s=prefill, breakdown=bd if bd is not None else {})

    def _shared_expert_s(self, n: int) -> float:
        """Seconds of the shared-expert GEMMs of a step of ``n`` tokens, all layers (the same terms as the
        dense-GEMM loop of :meth:`step`, summed over the shared experts only)."""
        hit = self._shared_cache.get(n)
        if hit is not None:
            return hit
        nf = float(n)
        kernel, p = self.gemm_kernel_s, self.gemm_overlap_p
        total = 0.0
        for i in self._shared_idx:
            layers, c, w, a, _ = self._dense[i]
            tm = w + a * nf
            if self._dense_shapes:
                tc = self._dense_shapes[i].compute_s(nf)
                total += layers * (((tc if tc > tm else tm) if p <= 0.0 else overlap(tc, tm, p)) + kernel)
            else:
                tc = c * (nf + self.n_half)
                total += layers * ((tc if tc > tm else tm) + kernel)
        self._shared_cache[n] = total
        return total

    def group_step(self, shapes: list[BatchShape]) -> tuple[float, list[StepCost]]:
        """One synchronous step of a data-parallel attention group: every rank runs its own batch
        through attention, all ranks' tokens meet in the MoE layers, and the slowest rank sets the pace
        (idle ranks run a dummy batch, which is never the slowest). Returns (seconds, per-rank costs)."""
        total = float(sum(s.num_tokens for s in shapes))
        most = float(max((s.num_tokens for s in shapes), default=0))
        plan = self.ep_plan
        if plan is None or not plan.two_batch_overlap or not plan.uses_all_to_all:
            costs = [self.step(s, group_tokens=total, send_tokens=most) for s in shapes]
            return max((c.time_s for c in costs), default=0.0), costs
        # Two-batch overlap: each rank splits its batch in two micro-batches; while one computes, the
        # other's dispatch/combine is on the wire. The compute stream runs both halves (weights are read
        # twice, GEMMs see half the rows) on the SMs the communication kernels leave free; the step
        # takes the longer of the compute and communication streams.
        costs = []
        slowest = 0.0
        for s in shapes:
            half = s.scaled(0.5)
            c = self.step(half, group_tokens=total / 2, send_tokens=most / 2, all_to_all=False)
            decode_only = s.num_decode_seqs == s.num_seqs
            compute = (2.0 * c.time_s - self.per_iteration_s) / plan.compute_share(decode_only)
            comm = 2.0 * self._moe_layers * plan.all_to_all(most / 2, decode_only).time_s
            t_rank = compute if compute > comm else comm
            slowest = t_rank if t_rank > slowest else slowest
            costs.append(StepCost(time_s=t_rank, flops=2 * c.flops, bytes_moved=2 * c.bytes_moved,
                                  mfu=2 * c.flops / (t_rank * self.peak_flops),
                                  mbu=2 * c.bytes_moved / (t_rank * self.bandwidth),
                                  prefill_time_s=t_rank * s.num_prefill_tokens / max(1, s.num_tokens)))
        return slowest, costs

    def _attention(self, shape: BatchShape) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of attention over all layers."""
        if shape.num_tokens <= 0:
            return 0.0, 0.0, 0.0
        pairs = float(shape.causal_pairs)
        kv_tokens = float(shape.sum_kv_tokens)
        nf = float(shape.num_tokens)
        plain_dec_pairs = float(shape.sum_decode_kv_tokens)
        # speculative verification chunks (1 + k queries) run as decodes too: vLLM's attention backends
        # treat requests of up to 1 + num_speculative_tokens queries as decodes (MLA: absorbed form)
        dec_pairs = plain_dec_pairs + shape.sum_spec_pairs
        pre_pairs = pairs - dec_pairs
        if self.is_mla:
            # decode requests (1 new token) use the absorbed latent form: each decode query attends
            # to its ctx + 1 keys, summed exactly by the scheduler in sum_decode_kv_tokens
            pre_ctx = max(0.0, kv_tokens - plain_dec_pairs - shape.num_prefill_tokens - shape.sum_spec_kv_tokens)
            dec_flops = dec_pairs * self.attn_flops_per_pair_decode
            # the cached context's up-projection (kv_b_proj) is a plain GEMM, not FlashAttention work:
            # the prefill kernel-shape slowdown below must not apply to it
            up_flops = pre_ctx * self.mla_up_flops_per_ctx_token
            flops_layer = dec_flops + pre_pairs * self.attn_flops_per_pair + up_flops
        else:
            dec_flops = dec_pairs * self.attn_flops_per_pair
            up_flops = 0.0
            flops_layer = pairs * self.attn_flops_per_pair
        # prefill attention runs below its peak on short sequences and on chunks too small to fill the GPU,
        # beside the decodes of the same varlen kernel (sim/deploy/kernel_shapes.py); one-token prompts run
        # as one row each, like decodes
        chunks = shape.num_prefill_chunks
        if chunks and (self.attention_half_length > 0 or self.sms):
            fpp = self.attn_flops_per_pair
            one_row = shape.num_seqs - shape.num_decode_seqs - chunks
            spread, longest = attention_prefill_work(pre_pairs, shape.num_prefill_tokens - one_row,
                                                     shape.num_prefill_q_tiles, shape.sum_prefill_tile_keys2,
                                                     shape.max_prefill_keys2, shape.num_seqs - chunks,
                                                     self.heads_per_gpu, self.sms, self.attention_half_length)
            kernel = spread * fpp + dec_flops
            compute_flops_layer = up_flops + (kernel if kernel > longest * fpp else longest * fpp)
        else:
            compute_flops_layer = flops_layer
        bytes_layer = kv_tokens * self.kv_bytes_per_token_layer + nf * (self.qo_bytes_per_token_layer
                                                                        + self.kv_bytes_per_token_layer)
        t = 0.0
        flops = bytes_ = 0.0
        layers = self._full_attn_layers
        if layers and self._global_attn is not None:
            # Gemma 4's full-attention layers at their own width (the sliding layers below keep the model's)
            ratio, g_kv, g_qo = self._global_attn
            g_flops, g_compute = flops_layer * ratio, compute_flops_layer * ratio
            g_bytes = kv_tokens * g_kv + nf * (g_qo + g_kv)
            tc, tm = g_compute * self._attn_c, g_bytes * self._attn_m
            t += layers * ((tc if tc > tm else tm) + self.attention_kernel_s)
            flops += layers * g_flops
            bytes_ += layers * g_bytes
        elif layers:
            tc = compute_flops_layer * self._attn_c
            tm = bytes_layer * self._attn_m
            t += layers * ((tc if tc > tm else tm) + self.attention_kernel_s)
            flops += layers * flops_layer
            bytes_ += layers * bytes_layer
        if self._window_layers:
            # sliding-window layers: each query sees at most `window` keys, each request keeps at most
            # `window` tokens of KV (both bounds are monotone in the batch)
            seqs = float(shape.num_seqs)
            for window, count in self._window_layers:
                s_pairs = min(1.0, nf * window / pairs) if pairs > 0 else 1.0
                s_kv = min(1.0, seqs * window / kv_tokens) if kv_tokens > 0 else 1.0
                f = flops_layer * s_pairs
                b = kv_tokens * s_kv * self.kv_bytes_per_token_layer + nf * (self.qo_bytes_per_token_layer
                                                                              + self.kv_bytes_per_token_layer)
                tc = compute_flops_layer * s_pairs * self._attn_c
                tm = b * self._attn_m
                t += count * ((tc if tc > tm else tm) + self.attention_kernel_s)
                flops += count * f
                bytes_ += count * b
        if self._indexer_layers:
            f = pairs * self._indexer_flops_per_pair
            b = (kv_tokens + nf) * self._indexer_bytes_per_token
            tc, tm = f * self._attn_c, b * self._attn_m
            t += self._indexer_layers * ((tc if tc > tm else tm) + self.attention_kernel_s)
            flops += self._indexer_layers * f
            bytes_ += self._indexer_layers * b
        if self._linear_layers:
            f = nf * self._linear_flops_per_token
            b = 2.0 * float(shape.num_seqs) * self._linear_state_bytes_seq
            tc, tm = f * self._attn_c, b * self._attn_m
            t += self._linear_layers * ((tc if tc > tm else tm) + self.attention_kernel_s)
            flops += self._linear_layers * f
            bytes_ += self._linear_layers * b
        return t, flops, bytes_

    # ------------------------------------------------------------------ conveniences

    def breakdown(self, shape: BatchShape) -> dict[str, float]:
        """Seconds per operator group for ``shape`` (sums to ``step(shape).time_s``)."""
        return self.step(shape, breakdown=True).breakdown

    def prefill_time_s(self, num_prompt_tokens: int, chunk_size: int | None = None) -> float:
        """Time to prefill one prompt alone (Metron's per-request prefill deadline).

        ``chunk_size``: price it as chunked prefill in chunks of at most this many tokens (each chunk
        attends to the chunks before it); default: one iteration. Memoised.
        """
        key = (int(num_prompt_tokens), chunk_size)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        total = 0.0
        done = 0
        n = int(num_prompt_tokens)
        step = n if not chunk_size else int(chunk_size)
        while done < n:
            new = min(step, n - done)
            total += self.step(single_request_shape(new, done)).time_s
            done += new
        self._cache[key] = total
        return total

    def decode_step(self, batch_size: int, context_tokens: int) -> StepCost:
        """Cost of one decode iteration of ``batch_size`` requests each holding ``context_tokens``."""
        return self.step(uniform_batch_shape(batch_size, 1, context_tokens))

    def describe(self) -> dict[str, Any]:
        """Batch-independent quantities (for docs, ``simctl estimate --json`` and tests)."""
        return {
            "gemm_dtype": self.gemm_dtype, "peak_tflops": self.peak_flops / 1e12,
            "gemm_flops_per_token": self.gemm_flops_per_token,
            "dense_weight_bytes_per_gpu_all_stages": self._dense_weight_bytes,
            "lm_head_weight_bytes": self.lm_head_weight_bytes,
            "kv_bytes_per_token_per_layer": self.kv_bytes_per_token_layer,
            "attention_flops_per_pair_per_layer": self.attn_flops_per_pair,
            "gemms": [g.name for g in self.dense_gemms + self.expert_gemms],
            "allreduces_per_step": self._num_allreduce,
        }


def single_request_shape(num_new_tokens: int, num_context_tokens: int = 0) -> BatchShape:
    """The :class:`BatchShape` of one request scheduled for ``num_new_tokens`` on top of a cached context."""
    return uniform_batch_shape(1, num_new_tokens, num_context_tokens)


def uniform_batch_shape(num_seqs: int, num_new_tokens: int, num_context_tokens: int) -> BatchShape:
    """``num_seqs`` identical requests, each ``num_new_tokens`` new on top of ``num_context_tokens`` cached."""
    b, q, c = num_seqs, num_new_tokens, num_context_tokens
    decode = q == 1 and c > 0
    chunk = q > 1  # a prefill chunk in query tiles (one-token prompts run as one row, like decodes)
    tiles = -(-q // ATTENTION_Q_TILE)
    return BatchShape(num_seqs=b, num_tokens=b * q, num_decode_seqs=b if decode else 0,
                      sum_ctx_x_new=b * c * q, sum_new_sq=b * q * q, sum_kv_tokens=b * (c + q),
                      num_prefill_tokens=0 if decode else b * q,
                      num_prefill_chunks=b if chunk else 0, num_prefill_q_tiles=b * tiles if chunk else 0,
                      sum_prefill_tile_keys2=b * tiles * (2 * c + q + 1) if chunk else 0,
                      max_prefill_keys2=2 * c + q + 1 if chunk else 0,
                      sum_decode_kv_tokens=b * (c + 1) if decode else 0)
