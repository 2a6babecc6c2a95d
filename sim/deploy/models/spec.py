"""Architecture description of a decoder-only transformer, with exact parameter accounting.

A :class:`ModelSpec` is a family-independent description built from a Hugging Face ``config.json``
by :mod:`sim.deploy.models.hf_config`. Everything the simulator needs is derived from it:

* :meth:`ModelSpec.layer_groups` — the linear layers (GEMMs) of each kind of decoder layer
  (``dense`` or ``moe``), with their shapes, tensor-parallel split and MoE fan-out; the roofline
  cost model prices these.
* :meth:`ModelSpec.total_params` / :meth:`ModelSpec.active_params` /
  :meth:`ModelSpec.param_breakdown` — counts equal to ``model.num_parameters()`` of the Hugging Face
  ``transformers`` implementation, to the parameter (buffers such as DeepSeek-V3's
  ``e_score_correction_bias`` are not parameters there; see :meth:`ModelSpec.buffer_params`).
* :meth:`ModelSpec.kv_elements_per_token_per_layer` / :meth:`ModelSpec.kv_cache_bytes_per_token`.
* :meth:`ModelSpec.attention_dims` — per-head attention dimensions for FLOP counting, in the
  *expanded* form (prefill) and, for MLA, the *weight-absorbed latent* form vLLM uses for decode.

Conventions
-----------
``LinearOp.params`` = ``num_instances · (in·out + out·bias)``. A token that passes through a linear
costs ``2 · in · out · active_instances`` FLOPs (``active_instances`` = top-k for routed experts).
Weights of all ``num_instances`` are resident in memory; a step reads the weights of the instances
its tokens actually hit.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

from sim.errors import unknown_name

Group = Literal["attention", "mlp", "experts", "shared_experts", "router", "per_layer_inputs", "lm_head"]
TPKind = Literal["column", "row", "replicated"]
LayerKind = Literal["dense", "moe", "none"]  # none: a mixer-only layer (Nemotron-H)
#: token mixer of a layer: softmax attention, Gated DeltaNet linear attention (Qwen3-Next), Mamba-2
#: (Nemotron-H, Granite 4.0-H), attention and Mamba-2 side by side in one layer (Falcon-H1), or no
#: mixer (Nemotron-H's MLP-only and MoE-only layers)
#: Gemma 4's full-attention layers use their own head geometry (``global_attention``)
Mixer = Literal["attention", "global_attention", "linear_attention", "mamba", "attention_mamba", "none"]
#: mixers that hold a softmax-attention KV cache / a fixed recurrent state per sequence
ATTENTION_MIXERS: frozenset[str] = frozenset({"attention", "global_attention", "attention_mamba"})
RECURRENT_MIXERS: frozenset[str] = frozenset({"linear_attention", "mamba", "attention_mamba"})

#: bytes per element of the dtypes the simulator knows
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4, "float32": 4,
    "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "auto": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1,
    "int4": 0.5, "fp4": 0.5,
    # block-scaled 4-bit formats, scales included (OCP MX spec; NVIDIA NVFP4): MXFP4 = E2M1 + one E8M0
    # scale per 32 elements; NVFP4 = E2M1 + one E4M3 scale per 16 elements
    "mxfp4": 0.5 + 1 / 32, "nvfp4": 0.5 + 1 / 16,
}


# vLLM keeps linear-attention / Mamba state in its own dtypes, not the KV-cache dtype: the conv window in
# ``mamba_cache_dtype`` and the SSM matrix in ``mamba_ssm_cache_dtype``, both "auto" = the model dtype
# (bf16 for every checkpoint here, fp8-quantised ones included: vLLM's model dtype stays bf16), unless a
# per-model hook sets the SSM dtype (vllm/model_executor/models/config.py: NemotronH → float32)
STATE_MODEL_DTYPE = "bf16"


def dtype_bytes(dtype: str | float | int) -> float:
    """Bytes per element of ``dtype`` (a name like ``'bf16'`` or a number of bytes)."""
    if isinstance(dtype, (int, float)):
        return float(dtype)
    try:
        return DTYPE_BYTES[dtype.lower()]
    except KeyError:
        raise unknown_name("dtype", dtype, DTYPE_BYTES) from None


def pp_partition(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline stage as vLLM's ``get_pp_indices`` splits them: evenly, with the remainder
    given one layer each to the stages before the last (which also holds the LM head)."""
    if pp < 1 or pp > num_layers:
        raise ValueError(f"pp must be in [1, {num_layers}], got {pp}")
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    return sizes


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinearOp:
    """One linear layer (GEMM) of a decoder layer (or the LM head).

    ``tp`` is how vLLM shards it under tensor parallelism: ``column`` splits ``out_features``,
    ``row`` splits ``in_features`` (followed by an all-reduce), ``replicated`` is not split.
    Routed experts are one op with ``num_instances`` = number of experts and
    ``active_instances`` = experts each token is routed to (top-k).
    """

    name: str
    in_features: int
    out_features: int
    group: Group
    tp: TPKind
    num_instances: int = 1
    active_instances: int = 1
    bias: bool = False

    @property
    def params_per_instance(self) -> int:
        """Weights (+ bias) of one instance."""
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)

    @property
    def params(self) -> int:
        """Weights (+ biases) of all instances."""
        return self.num_instances * self.params_per_instance

    @property
    def active_params(self) -> int:
        """Parameters one token touches."""
        return self.active_instances * self.params_per_instance

    @property
    def flops_per_token(self) -> int:
        """Multiply-add FLOPs (2 per MAC) one token spends in this op (bias adds ignored)."""
        return 2 * self.in_features * self.out_features * self.active_instances


@dataclass(frozen=True, slots=True)
class LayerGroup:
    """``num_layers`` identical decoder layers of one ``kind``.

    ``linears`` are the GEMMs of one layer; ``extra_params`` are the non-GEMM parameters of one layer
    by breakdown category (``norms``: RMSNorm/LayerNorm weights incl. QK-norms and MLA's latent norms;
    ``attention``: e.g. GPT-OSS attention sinks).
    """

    num_layers: int
    kind: LayerKind
    linears: tuple[LinearOp, ...]
    extra_params: tuple[tuple[str, int], ...] = ()
    layer_indices: tuple[int, ...] = ()
    mixer: Mixer = "attention"
    kv_shared: bool = False  # Gemma 4 E2B/E4B: attends over an earlier layer's KV cache, stores none

    @property
    def params_per_layer(self) -> int:
        """All parameters of one layer."""
        return sum(op.params for op in self.linears) + sum(n for _, n in self.extra_params)

    @property
    def active_params_per_layer(self) -> int:
        """Parameters one token touches in one layer."""
        return sum(op.active_params for op in self.linears) + sum(n for _, n in self.extra_params)

    @property
    def params(self) -> int:
        """All parameters of the group."""
        return self.num_layers * self.params_per_layer

    @property
    def flops_per_token_per_layer(self) -> int:
        """GEMM FLOPs per token per layer (attention score/value products excluded)."""
        return sum(op.flops_per_token for op in self.linears)

    def op(self, name: str) -> LinearOp:
        """The linear named ``name`` (KeyError if absent)."""
        for o in self.linears:
            if o.name == name:
                return o
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3) dimensions."""

    q_lora_rank: int | None  # None: q_proj is a plain H → heads·qk_head_dim projection (V2-Lite)
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        """Per-head query/key dimension in the expanded form (nope + rope)."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim


class _RecurrentState:
    """The fixed per-sequence state of a linear-attention or Mamba layer, from the mixer's
    ``ssm_state_elements``, ``conv_dim``, ``conv_kernel`` and ``ssm_state_dtype``."""

    __slots__ = ()

    @property
    def conv_state_elements(self) -> int:
        """Elements of the convolution window one sequence keeps in one layer (last conv_kernel − 1 inputs)."""
        return self.conv_dim * (self.conv_kernel - 1)

    @property
    def state_elements(self) -> int:
        """Recurrent state elements one sequence keeps in one layer (SSM / delta-rule matrix + conv window)."""
        return self.ssm_state_elements + self.conv_state_elements

    @property
    def state_bytes(self) -> float:
        """Bytes of that state as vLLM keeps it: the conv window in STATE_MODEL_DTYPE, the matrix in
        ``ssm_state_dtype`` (None: the model dtype too)."""
        model = dtype_bytes(STATE_MODEL_DTYPE)
        ssm = dtype_bytes(self.ssm_state_dtype) if self.ssm_state_dtype else model
        return self.conv_state_elements * model + self.ssm_state_elements * ssm


@dataclass(frozen=True, slots=True)
class LinearAttentionSpec(_RecurrentState):
    """Gated DeltaNet linear attention (Qwen3-Next ``Qwen3NextGatedDeltaNet``).

    Per layer: ``in_proj_qkvz`` H → 2·key_dim + 2·value_dim, ``in_proj_ba`` H → 2·num_v_heads, a
    depthwise causal ``conv1d`` over the q/k/v channels (``conv_kernel`` taps, no bias), ``dt_bias``
    and ``A_log`` (one per value head), a gated RMSNorm over ``v_head_dim`` and ``out_proj``
    value_dim → H. The recurrent state per sequence is one ``k_head_dim × v_head_dim`` matrix per value
    head plus the last ``conv_kernel − 1`` inputs of the convolution: fixed, whatever the context.
    """

    num_k_heads: int
    num_v_heads: int
    k_head_dim: int
    v_head_dim: int
    conv_kernel: int
    ssm_state_dtype: str | None = None  # the recurrent matrix's dtype (None: vLLM's "auto", the model dtype)

    @property
    def key_dim(self) -> int:
        """Width of q (and of k)."""
        return self.num_k_heads * self.k_head_dim

    @property
    def value_dim(self) -> int:
        """Width of v (and of z, the output gate)."""
        return self.num_v_heads * self.v_head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal convolution (q, k and v)."""
        return 2 * self.key_dim + self.value_dim

    @property
    def ssm_state_elements(self) -> int:
        """Elements of the recurrent matrices one sequence keeps in one layer (one dk × dv per value head)."""
        return self.num_v_heads * self.k_head_dim * self.v_head_dim


@dataclass(frozen=True, slots=True)
class MambaSpec(_RecurrentState):
    """Mamba-2 mixer (Nemotron-H ``NemotronHMamba2Mixer``, Granite 4.0-H ``GraniteMoeHybridMambaLayer``,
    Falcon-H1 ``FalconH1Mixer``).

    ``in_proj`` H → intermediate + conv_dim + num_heads (z, x/B/C, dt), a depthwise ``conv1d`` over
    conv_dim = intermediate + 2·n_groups·state_size channels, ``dt_bias``, ``A_log``, ``D`` (one per
    head), a gated RMSNorm over intermediate (optional in Falcon-H1: ``mamba_rms_norm``), ``out_proj``
    intermediate → H. State per sequence: a head_dim × state_size matrix per head plus the last
    ``conv_kernel − 1`` conv inputs.
    """

    num_heads: int
    head_dim: int
    state_size: int
    n_groups: int
    conv_kernel: int
    conv_bias: bool
    bias: bool  # in_proj bias (and out_proj bias unless out_bias says otherwise)
    out_bias: bool | None = None  # Falcon-H1: out_proj bias is projectors_bias, in_proj's is mamba_proj_bias
    gated_norm: bool = True  # Falcon-H1: the gated RMSNorm exists only with mamba_rms_norm
    ssm_state_dtype: str | None = None  # the SSM state's dtype (None: vLLM's "auto", the model dtype)

    @property
    def intermediate(self) -> int:
        """Inner width (heads · head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the causal convolution (x, B and C)."""
        return self.intermediate + 2 * self.n_groups * self.state_size

    @property
    def ssm_state_elements(self) -> int:
        """Elements of the SSM state one sequence keeps in one layer (head_dim × state_size per head)."""
        return self.num_heads * self.head_dim * self.state_size


@dataclass(frozen=True, slots=True)
class GlobalAttentionSpec:
    """Gemma 4's full-attention layers: their own head width and KV-head count (``global_head_dim``,
    ``num_global_key_value_heads``), and with ``attention_k_eq_v`` no ``v_proj`` (the values are the keys).

    The sliding-window layers keep the model's ``head_dim`` / ``num_kv_heads``. The KV cache still holds K
    and V for these layers (simplification: vLLM's attention backends take a key and a value tensor; when they
    are one tensor simctl counts it twice, an upper bound)."""

    head_dim: int
    num_kv_heads: int
    k_eq_v: bool = False


@dataclass(frozen=True, slots=True)
class IndexerSpec:
    """DeepSeek-V3.2 sparse-attention lightning indexer (``DeepseekV32Indexer``).

    ``wq_b`` q_lora_rank → heads·head_dim, ``wk`` H → head_dim, a LayerNorm (weight + bias) on the
    key, ``weights_proj`` H → heads. It caches one ``head_dim`` key per token per layer and selects the
    ``topk`` tokens each query attends to.
    """

    num_heads: int
    head_dim: int
    topk: int


@dataclass(frozen=True, slots=True)
class MoESpec:
    """Mixture-of-experts block of the MoE layers."""

    num_experts: int  # routed experts
    top_k: int  # routed experts per token
    expert_intermediate_size: int
    num_shared_experts: int = 0  # DeepSeek: n_shared_experts; Qwen2-MoE: 1 (one wide shared expert)
    shared_intermediate_size: int = 0  # total intermediate width of the shared-expert MLP
    shared_expert_gate: bool = False  # Qwen2-MoE: sigmoid gate Linear(H, 1) on the shared expert
    router_bias: bool = False  # GPT-OSS
    expert_bias: bool = False  # GPT-OSS: biases on expert projections
    score_correction_bias: bool = False  # DeepSeek-V3 e_score_correction_bias (a buffer in HF)
    fused_gate_up: bool = False  # GPT-OSS stores experts' gate/up as one tensor
    norm_topk_prob: bool = True
    scoring_func: str = "softmax"
    n_group: int | None = None
    topk_group: int | None = None
    routed_scaling_factor: float = 1.0
    router_scales: bool = False  # Gemma 4: the router's per-channel input scale (H) and per-expert scale (E)


@dataclass(frozen=True, slots=True)
class AttentionDims:
    """Per-head dimensions attention computes with, for FLOP and traffic counting.

    FLOPs of one (query, key) pair in one layer = ``2 · num_q_heads · (qk_head_dim + v_head_dim)``
    (QKᵀ then PV). KV-cache elements per token per layer = ``num_kv_heads · (qk_head_dim + v_head_dim)``
    for MHA/GQA; for the MLA absorbed form key and value share one latent (see
    :attr:`kv_elements_per_token`).
    """

    form: Literal["mha", "expanded", "absorbed"]
    num_q_heads: int
    num_kv_heads: int
    qk_head_dim: int
    v_head_dim: int
    kv_elements_per_token: int  # elements one token's K/V occupy in this form (per layer)

    @property
    def flops_per_pair(self) -> int:
        """FLOPs of one (query, key) pair in one layer: 2·heads·(qk + v)."""
        return 2 * self.num_q_heads * (self.qk_head_dim + self.v_head_dim)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Family-independent description of a decoder-only transformer.

    Build it with :func:`sim.deploy.models.load_model`; the field layout is explained in
    ``docs/models.md``. All counts are per model (no tensor parallelism) unless stated.
    """

    name: str
    model_type: str  # HF config ``model_type`` (llama, mixtral, deepseek_v3, ...)
    family: str  # human family name (Llama, Mixtral, DeepSeek-V3, ...)
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int  # per-head q/k/v dim for MHA/GQA (may differ from hidden/heads, e.g. Gemma)
    intermediate_size: int  # dense MLP width (0 when no layer is dense)
    max_position_embeddings: int
    tie_word_embeddings: bool = False
    attention: Literal["mha", "mla"] = "mha"  # 'mha' covers MHA, GQA and MQA
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    layer_kinds: tuple[LayerKind, ...] = ()  # per layer; empty = all dense
    # attention details
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, Gemma-3)
    attention_sinks: bool = False  # GPT-OSS: one learned logit per head per layer
    fused_qkv: bool = False  # one qkv_proj GEMM (Phi-3, GPT-2)
    sliding_window: int | None = None
    layer_windows: tuple[int | None, ...] = ()  # per layer attention window (None = full); empty = all full
    # MLP details
    mlp_kind: Literal["gated", "plain"] = "gated"  # gated: act(gate)·up → down ; plain: act(fc1) → fc2
    mlp_bias: bool = False
    fused_gate_up: bool = False  # one gate_up_proj GEMM (Phi-3)
    hidden_act: str = "silu"
    # norms and embeddings
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_bias: bool = False  # LayerNorm with bias (OPT, GPT-2)
    norms_per_layer: int = 2  # Gemma-2/3: 4 (pre/post attention and MLP)
    final_norm: bool = True
    position_embedding: Literal["rope", "learned", "none"] = "rope"
    learned_position_rows: int = 0  # rows of the learned position table (OPT: max_pos + 2)
    word_embed_proj_dim: int | None = None  # OPT-350m: embeddings in a smaller dim, projected in/out
    # rope
    rope_theta: float | None = None
    rope_scaling: dict | None = field(default=None, compare=False, hash=False)
    partial_rotary_factor: float = 1.0
    # provenance
    torch_dtype: str | None = None
    hf_repo: str | None = None
    source: str | None = None  # file the spec was read from
    num_mtp_layers: int = 0  # DeepSeek-V3 multi-token-prediction layers (not part of the main model)
    # blocks added for 2025 families (defaults leave the older families untouched)
    qk_norm_full: bool = False  # OLMo-2, MiniMax-M2: RMSNorm over the whole q (heads·hd) and k (kv·hd) width
    attn_output_gate: bool = False  # Qwen3-Next: q_proj also emits a per-channel sigmoid gate (2× width)
    linear_attention: LinearAttentionSpec | None = None
    mamba: MambaSpec | None = None
    layer_mixers: tuple[Mixer, ...] = ()  # per layer; empty = all softmax attention
    indexer: IndexerSpec | None = None  # DeepSeek-V3.2 sparse-attention indexer
    no_rope_layers: tuple[int, ...] = ()  # Llama 4: layers without rotary embedding (global NoPE)
    multimodal: dict | None = field(default=None, compare=False, hash=False)  # wrapper info (see hf_config)
    global_attention: GlobalAttentionSpec | None = None  # Gemma 4: full-attention layers' own geometry
    # Gemma 4 E2B/E4B: per-layer input embeddings (a second table of num_layers × size per token, projected
    # from the hidden state too, gated into every layer) and cross-layer KV sharing (the last layers reuse
    # the KV cache of the last earlier layer of their attention type; with double_wide_shared_mlp their
    # MLPs are twice as wide)
    per_layer_input_size: int = 0
    per_layer_input_vocab: int = 0
    kv_shared: tuple[bool, ...] = ()  # per layer; empty = none shared
    double_wide_shared_mlp: bool = False

    # ---------------------------------------------------------------- shapes

    @property
    def q_size(self) -> int:
        """Output width of the query projection (heads · qk head dim)."""
        if self.mla is not None:
            return self.num_attention_heads * self.mla.qk_head_dim
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Output width of each of the key and value projections (MHA/GQA)."""
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        """True when at least one layer is a mixture-of-experts layer."""
        return self.moe is not None and "moe" in self.kinds

    @property
    def kinds(self) -> tuple[LayerKind, ...]:
        """Kind of every layer (``dense`` when not MoE)."""
        return self.layer_kinds or ("dense",) * self.num_layers

    @property
    def num_moe_layers(self) -> int:
        """Number of MoE layers."""
        return sum(1 for k in self.kinds if k == "moe")

    @property
    def num_dense_layers(self) -> int:
        """Number of dense (non-MoE) layers."""
        return self.num_layers - self.num_moe_layers

    @property
    def windows(self) -> tuple[int | None, ...]:
        """Attention window of every layer (None = full attention)."""
        return self.layer_windows or (None,) * self.num_layers

    @property
    def mixers(self) -> tuple[Mixer, ...]:
        """Token mixer of every layer (``attention`` unless the model is a linear-attention hybrid)."""
        return self.layer_mixers or ("attention",) * self.num_layers

    @property
    def layer_kv_shared(self) -> tuple[bool, ...]:
        """Per layer: does it attend over an earlier layer's KV cache instead of its own (Gemma 4 E2B/E4B)?"""
        return self.kv_shared or (False,) * self.num_layers

    def dense_mlp_width(self, kv_shared: bool = False) -> int:
        """Intermediate width of a dense MLP (Gemma 4 E2B: doubled on the KV-shared layers)."""
        return self.intermediate_size * (2 if kv_shared and self.double_wide_shared_mlp else 1)

    @property
    def num_attention_layers(self) -> int:
        """Layers with softmax attention (the ones holding a KV cache)."""
        return sum(1 for m in self.mixers if m in ATTENTION_MIXERS)

    @property
    def num_linear_attention_layers(self) -> int:
        """Layers with a recurrent mixer (Gated DeltaNet or Mamba-2: fixed state per sequence); Falcon-H1's
        parallel layers count here and in :attr:`num_attention_layers`."""
        return sum(1 for m in self.mixers if m in RECURRENT_MIXERS)

    @property
    def is_hybrid(self) -> bool:
        """True for linear-attention / softmax-attention hybrids."""
        return self.num_linear_attention_layers > 0

    @property
    def model_class(self) -> str:
        """``multimodal``, ``hybrid``, ``MoE`` or ``dense`` (what ``simctl model list`` shows)."""
        if self.multimodal:
            return "multimodal"
        if self.is_hybrid:
            return "hybrid"
        return "MoE" if self.is_moe else "dense"

    def vision_params(self) -> int | None:
        """Parameters of a multimodal wrapper's vision tower when simctl models it (Qwen3-VL), else None."""
        from sim.deploy.models.vision import vision_tower
        if not self.multimodal:
            return None
        t = vision_tower(self.multimodal["wrapper"], self.multimodal.get("vision_config"), text_hidden=self.hidden_size,
                         tokens_per_image=self.multimodal.get("mm_tokens_per_image"))
        return t.params() if t is not None else None

    def whole_model_params(self) -> int | None:
        """Language model + vision tower (multimodal wrappers whose tower is modelled); None otherwise."""
        v = self.vision_params()
        return None if v is None else self.total_params() + v

    @property
    def num_sliding_layers(self) -> int:
        """Layers with sliding-window attention."""
        return sum(1 for w in self.windows if w is not None)

    # ---------------------------------------------------------------- linears

    def _attention_ops(self, global_layer: bool = False, kv_shared: bool = False
                       ) -> tuple[list[LinearOp], list[tuple[str, int]]]:
        H, nh = self.hidden_size, self.num_attention_heads
        ops: list[LinearOp] = []
        extra: list[tuple[str, int]] = []
        if global_layer or kv_shared:  # Gemma 4: a full-attention layer at the global width; KV-shared layers
            ga = self.global_attention if global_layer else None
            hd = ga.head_dim if ga is not None else self.head_dim
            q, kv = nh * hd, (ga.num_kv_heads if ga is not None else self.num_kv_heads) * hd
            ops.append(LinearOp("q_proj", H, q, "attention", "column", bias=self.qkv_bias))
            if not kv_shared:  # a KV-shared layer has no k/v projections and no k norm (it reuses the cache)
                ops.append(LinearOp("k_proj", H, kv, "attention", "column", bias=self.qkv_bias))
                if ga is None or not ga.k_eq_v:
                    ops.append(LinearOp("v_proj", H, kv, "attention", "column", bias=self.qkv_bias))
            ops.append(LinearOp("o_proj", q, H, "attention", "row", bias=self.o_bias))
            if self.qk_norm:
                extra.append(("norms", hd if kv_shared else 2 * hd))
            return ops, extra
        if self.attention == "mla":
            m = self.mla
            assert m is not None
            if m.q_lora_rank is None:
                ops.append(LinearOp("q_proj", H, nh * m.qk_head_dim, "attention", "column"))
            else:
                ops.append(LinearOp("q_a_proj", H, m.q_lora_rank, "attention", "replicated"))
                ops.append(LinearOp("q_b_proj", m.q_lora_rank, nh * m.qk_head_dim, "attention", "column"))
                extra.append(("norms", m.q_lora_rank))  # q_a_layernorm
            ops.append(LinearOp("kv_a_proj_with_mqa", H, m.kv_lora_rank + m.qk_rope_head_dim, "attention", "replicated"))
            extra.append(("norms", m.kv_lora_rank))  # kv_a_layernorm
            ops.append(LinearOp("kv_b_proj", m.kv_lora_rank, nh * (m.qk_nope_head_dim + m.v_head_dim), "attention", "column"))
            ops.append(LinearOp("o_proj", nh * m.v_head_dim, H, "attention", "row", bias=self.o_bias))
        else:
            q, kv = self.q_size, self.kv_size
            if self.attn_output_gate:
                # Qwen3-Next: q_proj emits [q, gate] per head; o_proj reads q-width
                ops.append(LinearOp("q_proj", H, 2 * q, "attention", "column", bias=self.qkv_bias))
                ops.append(LinearOp("k_proj", H, kv, "attention", "column", bias=self.qkv_bias))
                ops.append(LinearOp("v_proj", H, kv, "attention", "column", bias=self.qkv_bias))
            elif self.fused_qkv:
                ops.append(LinearOp("qkv_proj", H, q + 2 * kv, "attention", "column", bias=self.qkv_bias))
            else:
                ops.append(LinearOp("q_proj", H, q, "attention", "column", bias=self.qkv_bias))
                ops.append(LinearOp("k_proj", H, kv, "attention", "column", bias=self.qkv_bias))
                ops.append(LinearOp("v_proj", H, kv, "attention", "column", bias=self.qkv_bias))
            ops.append(LinearOp("o_proj", q, H, "attention", "row", bias=self.o_bias))
            if self.qk_norm:
                extra.append(("norms", 2 * self.head_dim))  # q_norm, k_norm (per-head RMSNorm)
            if self.qk_norm_full:
                extra.append(("norms", q + kv))  # q_norm over heads·hd, k_norm over kv·hd
        if self.indexer is not None:
            ix = self.indexer
            assert self.mla is not None and self.mla.q_lora_rank is not None
            ops.append(LinearOp("indexer.wq_b", self.mla.q_lora_rank, ix.num_heads * ix.head_dim, "attention",
                                "replicated"))
            ops.append(LinearOp("indexer.wk", H, ix.head_dim, "attention", "replicated"))
            ops.append(LinearOp("indexer.weights_proj", H, ix.num_heads, "attention", "replicated"))
            extra.append(("norms", 2 * ix.head_dim))  # indexer k_norm: LayerNorm with bias
        if self.attention_sinks:
            extra.append(("attention", nh))
        return ops, extra

    def _mlp_ops(self, width: int, group: Group, prefix: str = "", *, bias: bool | None = None,
                 num_instances: int = 1, active_instances: int = 1, fused: bool | None = None) -> list[LinearOp]:
        H = self.hidden_size
        b = self.mlp_bias if bias is None else bias
        fused = self.fused_gate_up if fused is None else fused
        kw = dict(num_instances=num_instances, active_instances=active_instances, bias=b)
        if self.mlp_kind == "plain":
            return [LinearOp(prefix + "fc1", H, width, group, "column", **kw),
                    LinearOp(prefix + "fc2", width, H, group, "row", **kw)]
        if fused:
            up = [LinearOp(prefix + "gate_up_proj", H, 2 * width, group, "column", **kw)]
        else:
            up = [LinearOp(prefix + "gate_proj", H, width, group, "column", **kw),
                  LinearOp(prefix + "up_proj", H, width, group, "column", **kw)]
        return up + [LinearOp(prefix + "down_proj", width, H, group, "row", **kw)]

    def _linear_attention_ops(self) -> tuple[list[LinearOp], list[tuple[str, int]]]:
        la = self.linear_attention
        assert la is not None
        H = self.hidden_size
        ops = [LinearOp("in_proj_qkvz", H, 2 * la.key_dim + 2 * la.value_dim, "attention", "column"),
               LinearOp("in_proj_ba", H, 2 * la.num_v_heads, "attention", "column"),
               LinearOp("out_proj", la.value_dim, H, "attention", "row")]
        # depthwise conv1d weights, dt_bias and A_log (per value head); gated RMSNorm over v_head_dim
        extra = [("attention", la.conv_dim * la.conv_kernel + 2 * la.num_v_heads), ("norms", la.v_head_dim)]
        return ops, extra

    def _mamba_ops(self) -> tuple[list[LinearOp], list[tuple[str, int]]]:
        mb = self.mamba
        assert mb is not None
        H = self.hidden_size
        ops = [LinearOp("in_proj", H, mb.intermediate + mb.conv_dim + mb.num_heads, "attention", "column", bias=mb.bias),
               LinearOp("out_proj", mb.intermediate, H, "attention", "row",
                        bias=mb.bias if mb.out_bias is None else mb.out_bias)]
        conv = mb.conv_dim * mb.conv_kernel + (mb.conv_dim if mb.conv_bias else 0)
        return ops, [("attention", conv + 3 * mb.num_heads), ("norms", mb.intermediate if mb.gated_norm else 0)]

    def _layer(self, kind: LayerKind, mixer: Mixer = "attention", kv_shared: bool = False
               ) -> tuple[tuple[LinearOp, ...], tuple[tuple[str, int], ...]]:
        H = self.hidden_size
        if mixer == "attention":
            ops, extra = self._attention_ops(kv_shared=kv_shared)
        elif mixer == "global_attention":
            ops, extra = self._attention_ops(global_layer=True, kv_shared=kv_shared)
        elif mixer == "linear_attention":
            ops, extra = self._linear_attention_ops()
        elif mixer == "mamba":
            ops, extra = self._mamba_ops()
        elif mixer == "attention_mamba":  # Falcon-H1: both mixers read the same normed input
            ops, extra = self._attention_ops()
            mops, mextra = self._mamba_ops()
            ops, extra = ops + [replace(o, name="mamba." + o.name) for o in mops], extra + mextra
        else:
            ops, extra = [], []
        if kind == "none":
            pass
        elif kind == "dense":
            ops += self._mlp_ops(self.dense_mlp_width(kv_shared), "mlp")
        else:
            m = self.moe
            assert m is not None
            ops.append(LinearOp("router", H, m.num_experts, "router", "replicated", bias=m.router_bias))
            ops += self._mlp_ops(m.expert_intermediate_size, "experts", "experts.", bias=m.expert_bias,
                                 num_instances=m.num_experts, active_instances=m.top_k,
                                 fused=m.fused_gate_up)
            if m.shared_intermediate_size:
                ops += self._mlp_ops(m.shared_intermediate_size, "shared_experts", "shared_experts.", bias=False,
                                     fused=False)
                if m.shared_expert_gate:
                    ops.append(LinearOp("shared_expert_gate", H, 1, "shared_experts", "replicated"))
            if m.router_scales:
                extra.append(("router", H + m.num_experts))
        norm = H * (2 if self.norm_bias else 1)
        extra.append(("norms", self.norms_per_layer * norm))
        if self.per_layer_input_size:
            # Gemma 4: this layer's slice of per_layer_model_projection (H → num_layers·P, applied once), then
            # per_layer_input_gate (H → P), the product with the per-layer input, per_layer_projection
            # (P → H) and post_per_layer_input_norm
            P = self.per_layer_input_size
            ops += [LinearOp("per_layer_model_projection", H, P, "per_layer_inputs", "replicated"),
                    LinearOp("per_layer_input_gate", H, P, "per_layer_inputs", "replicated"),
                    LinearOp("per_layer_projection", P, H, "per_layer_inputs", "replicated")]
            extra.append(("norms", norm))
        return tuple(ops), tuple(extra)

    def layer_groups(self) -> tuple[LayerGroup, ...]:
        """The decoder layers grouped by kind, dense first (e.g. DeepSeek-V3: 3 dense, 58 MoE)."""
        return self._layer_groups

    @cached_property
    def _layer_groups(self) -> tuple[LayerGroup, ...]:
        out = []
        shared = self.layer_kv_shared
        for kind in ("dense", "moe", "none"):
            for mixer in ("attention", "global_attention", "linear_attention", "mamba", "attention_mamba", "none"):
                for kv_shared in (False, True):
                    idx = tuple(i for i, (k, m, sh) in enumerate(zip(self.kinds, self.mixers, shared))
                                if k == kind and m == mixer and sh == kv_shared)
                    if not idx:
                        continue
                    ops, extra = self._layer(kind, mixer, kv_shared)  # type: ignore[arg-type]
                    merged: dict[str, int] = {}
                    for k, n in extra:
                        merged[k] = merged.get(k, 0) + n
                    out.append(LayerGroup(len(idx), kind, ops, tuple(merged.items()), idx, mixer,  # type: ignore[arg-type]
                                          kv_shared))
        return tuple(out)

    def lm_head_op(self) -> LinearOp:
        """The output projection (vocab-parallel, i.e. column-sharded, in vLLM)."""
        return LinearOp("lm_head", self.word_embed_proj_dim or self.hidden_size, self.vocab_size, "lm_head", "column")

    def all_linears(self) -> Iterator[tuple[LayerGroup, LinearOp]]:
        """Every (layer group, linear) pair; the LM head is not included."""
        for g in self.layer_groups():
            for op in g.linears:
                yield g, op

    # ---------------------------------------------------------------- parameter counts

    def _embedding_params(self) -> dict[str, int]:
        H = self.hidden_size
        d = self.word_embed_proj_dim or H
        out = {"embed_tokens": self.vocab_size * d}
        if self.per_layer_input_size:  # Gemma 4's per-layer input table (embed_tokens_per_layer)
            out["embed_tokens_per_layer"] = self.per_layer_input_vocab * self.num_layers * self.per_layer_input_size
        if self.position_embedding == "learned":
            out["embed_positions"] = self.learned_position_rows * H
        if self.word_embed_proj_dim and self.word_embed_proj_dim != H:
            out["project_in"] = d * H  # OPT: Linear(proj_dim, H, bias=False)
            out["project_out"] = H * d
        return out

    def param_breakdown(self) -> dict[str, int]:
        """Parameters by category; the categories sum to :meth:`total_params`.

        Keys: ``embeddings`` (token + learned position tables + OPT's project_in/out), ``attention``,
        ``mlp`` (dense MLPs), ``experts`` (routed), ``shared_experts``, ``router``, ``per_layer_inputs``
        (Gemma 4's per-layer input projections and gates), ``norms`` (every RMSNorm/LayerNorm incl. the
        final one, QK-norms and MLA latent norms) and ``lm_head`` (0 when tied to the embeddings).
        A fresh dict each call.
        """
        return dict(self._breakdown)

    @cached_property
    def _breakdown(self) -> dict[str, int]:
        out = {k: 0 for k in ("embeddings", "attention", "mlp", "experts", "shared_experts", "router", "per_layer_inputs",
                              "norms", "lm_head")}
        out["embeddings"] = sum(self._embedding_params().values())
        for g in self.layer_groups():
            for op in g.linears:
                out[op.group] += g.num_layers * op.params
            for k, n in g.extra_params:
                out[k] += g.num_layers * n
        if self.final_norm:
            out["norms"] += self.hidden_size * (2 if self.norm_bias else 1)
        out["norms"] += self.per_layer_input_size  # Gemma 4: per_layer_projection_norm
        if not self.tie_word_embeddings:
            out["lm_head"] = self.lm_head_op().params
        return out

    def layer_split(self) -> dict[str, int]:
        """Parameters in dense layers, in MoE layers, and outside the decoder layers."""
        dense = sum(g.params for g in self.layer_groups() if g.kind != "moe")  # incl. mixer-only layers
        moe = sum(g.params for g in self.layer_groups() if g.kind == "moe")
        return {"dense_layers": dense, "moe_layers": moe, "other": self.total_params() - dense - moe}

    def total_params(self) -> int:
        """All parameters, as ``model.num_parameters()`` of the HF implementation (tied weights once)."""
        return sum(self.param_breakdown().values())

    def buffer_params(self) -> int:
        """Persistent non-parameter tensors stored in the checkpoint (DeepSeek-V3 ``e_score_correction_bias``)."""
        if self.moe is not None and self.moe.score_correction_bias:
            return self.num_moe_layers * self.moe.num_experts
        return 0

    def checkpoint_params(self) -> int:
        """Elements in the checkpoint: parameters + persistent buffers (without MTP layers)."""
        return self.total_params() + self.buffer_params()

    def non_embedding_params(self) -> int:
        """Parameters outside the embedding tables and the LM head."""
        b = self.param_breakdown()
        return self.total_params() - b["embeddings"] - b["lm_head"]

    def active_params(self, include_embeddings: bool = True) -> int:
        """Parameters one token uses: everything except the routed experts it is not sent to.

        By default the embedding tables and the LM head are counted (tied weights once), as in
        DeepSeek-V3's "37B activated". ``include_embeddings=False`` drops the input-side tables (token
        lookup, learned positions, OPT's project_in/out) but keeps the LM head GEMM, which is OpenAI's
        convention for gpt-oss ("3.6B / 5.1B active"); a tied table is kept, as the LM head uses it.
        """
        inactive = 0
        for g in self.layer_groups():
            for op in g.linears:
                inactive += g.num_layers * (op.params - op.active_params)
        if not include_embeddings:
            emb = self._embedding_params()
            inactive += sum(emb.values())
            if self.tie_word_embeddings:
                inactive -= emb["embed_tokens"]
        return self.total_params() - inactive

    def expert_params(self) -> int:
        """Parameters of all routed experts."""
        return self.param_breakdown()["experts"]

    # ---------------------------------------------------------------- FLOPs

    def linear_flops_per_token(self, include_lm_head: bool = True) -> int:
        """GEMM FLOPs of one token's forward pass (2 × active linear weights; no attention scores)."""
        f = sum(g.num_layers * g.flops_per_token_per_layer for g in self.layer_groups())
        return f + (self.lm_head_op().flops_per_token if include_lm_head else 0)

    # ---------------------------------------------------------------- attention / KV cache

    def attention_dims(self, form: Literal["prefill", "decode", "expanded", "absorbed"] = "prefill") -> AttentionDims:
        """Per-head attention dimensions.

        MHA/GQA: the same in both forms (``num_kv_heads`` KV heads of ``head_dim``).

        MLA (DeepSeek) has two computationally different but equivalent forms:

        * ``expanded`` (``prefill``): the latent ``c_kv`` (kv_lora_rank) of every key is up-projected by
          ``kv_b_proj`` into per-head ``k_nope`` (qk_nope_head_dim) and ``v`` (v_head_dim); attention
          is ordinary MHA with ``num_q_heads = num_kv_heads = heads``, ``qk_head_dim = nope + rope``,
          ``v_head_dim = v_head_dim``. Keys of cached context must be up-projected too:
          :meth:`mla_kv_up_proj_flops_per_ctx_token`.
        * ``absorbed`` (``decode``, vLLM's MLA decode kernels): ``W_UK`` is folded into the query and
          ``W_UV`` into the output, so all heads attend directly over the shared latent cache, MQA-like
          with 1 KV head: ``qk_head_dim = kv_lora_rank + qk_rope_head_dim`` (576 for V3) and
          ``v_head_dim = kv_lora_rank`` (512). The per-token absorption GEMMs cost the same as
          ``kv_b_proj`` on one token, which :meth:`layer_groups` already lists once per new token.
        """
        if self.attention != "mla":
            return AttentionDims("mha", self.num_attention_heads, self.num_kv_heads, self.head_dim,
                                 self.head_dim, 2 * self.num_kv_heads * self.head_dim)
        m = self.mla
        assert m is not None
        nh = self.num_attention_heads
        if form in ("prefill", "expanded"):
            return AttentionDims("expanded", nh, nh, m.qk_head_dim, m.v_head_dim,
                                 nh * (m.qk_head_dim + m.v_head_dim))
        return AttentionDims("absorbed", nh, 1, m.kv_lora_rank + m.qk_rope_head_dim, m.kv_lora_rank,
                             m.kv_lora_rank + m.qk_rope_head_dim)

    @property
    def attn_qk_dim(self) -> int:
        """Per-head q·k dimension, expanded (prefill) form."""
        return self.attention_dims("prefill").qk_head_dim

    @property
    def attn_v_dim(self) -> int:
        """Per-head value dimension, expanded (prefill) form."""
        return self.attention_dims("prefill").v_head_dim

    @property
    def attn_qk_dim_decode(self) -> int:
        """Per-head q·k dimension in the decode form (MLA: absorbed latent, kv_lora_rank + rope)."""
        return self.attention_dims("decode").qk_head_dim

    @property
    def attn_v_dim_decode(self) -> int:
        """Per-head value dimension in the decode form (MLA: kv_lora_rank)."""
        return self.attention_dims("decode").v_head_dim

    def mla_kv_up_proj_flops_per_ctx_token(self) -> int:
        """Expanded-form MLA only: FLOPs per layer to up-project one *cached* token's latent with
        ``kv_b_proj`` (needed when a chunked prefill attends to cached context). 0 for MHA."""
        if self.attention != "mla":
            return 0
        m = self.mla
        assert m is not None
        return 2 * m.kv_lora_rank * self.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim)

    def kv_elements_per_token_per_layer(self) -> int:
        """KV-cache elements one token stores in one layer.

        MHA/GQA: ``2 · num_kv_heads · head_dim``. MLA: ``kv_lora_rank + qk_rope_head_dim`` (the latent
        and the shared rope key, as vLLM caches it).
        """
        if self.attention == "mla":
            m = self.mla
            assert m is not None
            return m.kv_lora_rank + m.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def indexer_elements_per_token_per_layer(self) -> int:
        """DeepSeek-V3.2: elements of the indexer's own key cache per token per layer (0 otherwise)."""
        return self.indexer.head_dim if self.indexer is not None else 0

    def kv_cache_bytes_per_token(self, dtype: str | float = "bf16") -> int:
        """KV-cache bytes one token occupies across all softmax-attention layers (``dtype`` name or
        bytes/element), the V3.2 indexer's key cache included.

        Sliding-window layers are counted in full (an upper bound; see :meth:`kv_cache_bytes_for_tokens`);
        linear-attention layers hold no per-token cache (see :meth:`state_bytes_per_sequence`).
        """
        if self.global_attention is not None:
            return int(sum(self.layer_kv_elements()) * dtype_bytes(dtype))
        per_layer = self.kv_elements_per_token_per_layer() + self.indexer_elements_per_token_per_layer()
        return int(per_layer * self.num_attention_layers * dtype_bytes(dtype))

    def global_kv_elements_per_token_per_layer(self) -> int:
        """Gemma 4: KV elements one token stores in one full-attention layer (K and V at the global width)."""
        ga = self.global_attention
        return 2 * ga.num_kv_heads * ga.head_dim if ga is not None else self.kv_elements_per_token_per_layer()

    def layer_kv_elements(self) -> tuple[int, ...]:
        """KV-cache elements one token stores in each layer (0 for layers without softmax attention)."""
        local = self.kv_elements_per_token_per_layer() + self.indexer_elements_per_token_per_layer()
        glob = self.global_kv_elements_per_token_per_layer()
        shared = self.layer_kv_shared
        return tuple(0 if sh else glob if m == "global_attention" else local if m in ATTENTION_MIXERS else 0
                     for m, sh in zip(self.mixers, shared))

    def state_bytes_per_sequence(self) -> int:
        """Fixed recurrent state one sequence holds across the linear-attention layers (0 without any), in
        the state's own dtypes (vLLM's mamba cache dtypes, not the KV-cache dtype: see STATE_MODEL_DTYPE)."""
        spec = self.linear_attention or self.mamba
        if spec is None:
            return 0
        return int(spec.state_bytes * self.num_linear_attention_layers)

    def kv_cache_bytes_for_tokens(self, num_tokens: int, dtype: str | float = "bf16") -> int:
        """Cache bytes a sequence of ``num_tokens`` needs, per layer group as vLLM's hybrid KV-cache
        manager keeps them: full attention grows with the context, sliding-window / chunked layers keep
        at most their window, linear-attention layers a fixed state (:meth:`state_bytes_per_sequence`)."""
        b = dtype_bytes(dtype)
        kv = sum(e * b * (num_tokens if w is None else min(num_tokens, w))
                 for w, e in zip(self.windows, self.layer_kv_elements()) if e)
        return int(kv) + self.state_bytes_per_sequence()

    # ---------------------------------------------------------------- memory under parallelism

    def params_per_gpu(self, tp: int = 1, pp: int = 1, ep: int = 1) -> int:
        """Parameters resident on the most loaded GPU of a TP×PP replica (vLLM sharding).

        Column/row-parallel linears are split across ``tp``; replicated ones (routers, MLA down
        projections) and norms are not; embeddings and the LM head are vocab-parallel. Routed experts
        are split ``tp``-ways, or ``ep``-ways by expert when ``ep > 1`` (vLLM's expert parallelism then
        spans the TP group: pass ``ep = tp``). Layers are split over ``pp`` stages as vLLM does
        (:func:`pp_partition`); the first stage holds the embeddings and the last the LM head and final norm.
        """
        def shard(op: LinearOp) -> float:
            if op.group == "experts" and ep > 1:
                return op.params / ep
            if op.tp == "replicated":
                return op.params
            return op.params / tp

        per_layer: list[float] = []
        groups = {(g.kind, g.mixer, g.kv_shared): g for g in self.layer_groups()}
        for kind, mixer, sh in zip(self.kinds, self.mixers, self.layer_kv_shared):
            g = groups[(kind, mixer, sh)]
            per_layer.append(sum(shard(op) for op in g.linears) + sum(n for _, n in g.extra_params))
        emb = self._embedding_params()
        # the token tables are vocab-parallel (Gemma 4's per-layer input table too), the rest replicated
        first = sum(v / tp if k.startswith("embed_tokens") else v for k, v in emb.items()) + self.per_layer_input_size
        # a tied head shares the embedding table on a single stage; with pp > 1 the last stage holds a copy
        head = 0.0 if (self.tie_word_embeddings and pp == 1) else self.lm_head_op().params / tp
        final = self.hidden_size * (2 if self.norm_bias else 1) if self.final_norm else 0
        sizes = pp_partition(self.num_layers, pp)
        best = 0.0
        start = 0
        for s, n in enumerate(sizes):
            tot = sum(per_layer[start:start + n])
            start += n
            if s == 0:
                tot += first
            if s == pp - 1:
                tot += head + final
            best = max(best, tot)
        return int(round(best))

    # ---------------------------------------------------------------- misc

    def with_name(self, name: str) -> ModelSpec:
        """A copy under another name."""
        return replace(self, name=name)

    def summary(self) -> dict:
        """JSON-ready description: architecture, counts, breakdown, KV bytes (bf16)."""
        d = {
            "name": self.name,
            "hf_repo": self.hf_repo,
            "model_type": self.model_type,
            "family": self.family,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_dense_layers": self.num_dense_layers,
            "num_moe_layers": self.num_moe_layers,
            "vocab_size": self.vocab_size,
            "num_attention_heads": self.num_attention_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention": self.attention,
            "sliding_window": self.sliding_window,
            "num_sliding_layers": self.num_sliding_layers,
            "model_class": self.model_class,
            "num_attention_layers": self.num_attention_layers,
            "num_linear_attention_layers": self.num_linear_attention_layers,
            "state_bytes_per_sequence": self.state_bytes_per_sequence(),

            "total_params": self.total_params(),
            "active_params": self.active_params(),
            "buffer_params": self.buffer_params(),
            "breakdown": self.param_breakdown(),
            "layer_split": self.layer_split(),
            "kv_elements_per_token_per_layer": self.kv_elements_per_token_per_layer(),
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token("bf16"),
            "linear_flops_per_token": self.linear_flops_per_token(),
        }
        if self.multimodal:
            d["multimodal"] = {"wrapper": self.multimodal["wrapper"], "vision_params": self.vision_params(),
                               "whole_model_params": self.whole_model_params()}
        if self.mla is not None:
            d["mla"] = {"q_lora_rank": self.mla.q_lora_rank, "kv_lora_rank": self.mla.kv_lora_rank,
                        "qk_nope_head_dim": self.mla.qk_nope_head_dim, "qk_rope_head_dim": self.mla.qk_rope_head_dim,
                        "v_head_dim": self.mla.v_head_dim}
        if self.moe is not None:
            m = self.moe
            d["moe"] = {"num_experts": m.num_experts, "top_k": m.top_k,
                        "expert_intermediate_size": m.expert_intermediate_size,
                        "num_shared_experts": m.num_shared_experts,
                        "shared_intermediate_size": m.shared_intermediate_size}
        return d
