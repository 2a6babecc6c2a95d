"""Declarative family entries: a model family is a recombination of shared blocks.

Each :class:`Family` names which blocks a ``model_type`` uses and which ``config.json`` keys size
them; :func:`build` turns an entry plus a config into :class:`ModelSpec` fields. The blocks are the
ones :class:`~sim.deploy.models.spec.ModelSpec` counts and prices:

* token mixer: GQA softmax attention (optional per-head or full-width QK-norm, output gate, biases),
  or a per-layer pattern of GQA and Gated DeltaNet linear attention (``mixers``);
* MLP: dense gated, or MoE (routed experts, optional shared experts sized by a count or a width,
  optional sigmoid shared-expert gate, optional ``e_score_correction_bias`` buffer), with the MoE
  layers chosen by ``first_k_dense_replace``, an interleave step, or every layer;
* attention windows: sliding window or Llama 4's chunked local attention with NoPE global layers;
* tying, norms, rope (partial rotary factor, ``rope_parameters``).

Key renames between transformers 4.x and 5.x (``num_experts`` vs ``num_local_experts``,
``torch_dtype`` vs ``dtype``, ``rope_theta`` vs ``rope_parameters``) are handled by listing every
spelling in ``aliases``. Adding a family is one entry in :data:`FAMILIES`.

Families whose layers are laid out by a per-layer pattern of different blocks have a small builder of their
own, built from the same blocks: :func:`build_nemotron_h` (Nemotron-H and Nemotron-3-Nano: Mamba-2 / attention /
MLP / MoE single-block layers), :func:`build_granite_hybrid` (Granite 4.0-H: Mamba-2 or attention, then MoE +
shared MLP), :func:`build_falcon_h1` (Falcon-H1: attention and Mamba-2 in parallel in every layer) and
:func:`build_gemma4` (Gemma 4: sliding and full-attention layers of different head geometry).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sim.deploy.models.spec import LinearAttentionSpec, MoESpec
from sim.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """Which blocks a ``model_type`` is built from and which config keys size them."""

    family: str
    # attention block
    qk_norm: Literal["none", "head", "full"] = "none"
    qk_norm_key: str | None = None  # config flag that switches the QK-norm on (GLM-4.5: use_qk_norm)
    qk_norm_default: bool = True
    qkv_bias_key: str | None = "attention_bias"  # key giving q/k/v bias (default false)
    o_bias_follows_qkv: bool = True  # o_proj bias = the same key (False: GLM-4.5, o_proj never biased)
    output_gate: bool = False  # Qwen3-Next gated attention
    output_gate_key: str | None = None  # config flag for the gate (Qwen3.5: attn_output_gate, default on)
    # MLP block
    mlp: Literal["dense", "moe"] = "dense"
    dense_width_key: str = "intermediate_size"
    num_experts_keys: tuple[str, ...] = ("num_experts", "num_local_experts", "n_routed_experts")
    expert_width_key: str = "moe_intermediate_size"
    moe_layers: Literal["all", "first_k_dense", "interleave", "sparse_step"] = "all"
    shared: Literal["none", "count", "width", "expert_width"] = "none"
    shared_gate: bool = False  # sigmoid Linear(H, 1) gate on the shared expert (Qwen)
    score_correction_bias: bool = False  # e_score_correction_bias buffer (not a parameter)
    fused_experts: bool = False  # experts stored as one gate_up tensor (Llama 4)
    # other blocks
    mixers: Literal["none", "full_attention_interval"] = "none"
    # config key naming the linear-attention state's dtype, read as vLLM's per-model hook reads it
    # (Qwen3.5: mamba_ssm_dtype → mamba_ssm_cache_dtype; absent: the model dtype)
    ssm_dtype_key: str | None = None
    windows: Literal["none", "chunked_nope"] = "none"
    tie_default: bool = False


#: The declarative families. Values checked against transformers 5.25 on the meta device.
FAMILIES: dict[str, Family] = {
    "olmo2": Family("OLMo-2", qk_norm="full"),
    "granite": Family("Granite", qkv_bias_key="attention_bias"),
    "minimax_m2": Family("MiniMax-M2", qk_norm="full", mlp="moe", expert_width_key="intermediate_size",
                         score_correction_bias=True),
    "glm4_moe": Family("GLM-4.5", qk_norm="head", qk_norm_key="use_qk_norm", qk_norm_default=False,
                       o_bias_follows_qkv=False, mlp="moe", moe_layers="first_k_dense", shared="count",
                       score_correction_bias=True),
    "qwen3_next": Family("Qwen3-Next", qk_norm="head", output_gate=True, mlp="moe", moe_layers="sparse_step",
                         shared="width", shared_gate=True, mixers="full_attention_interval"),
    # Qwen3.5-MoE: the Qwen3-Next blocks (transformers splits in_proj_qkvz / in_proj_ba into four GEMMs of the
    # same total size)
    "qwen3_5_moe_text": Family("Qwen3.5-MoE", qk_norm="head", output_gate=True, output_gate_key="attn_output_gate",
                               mlp="moe", moe_layers="sparse_step", shared="width", shared_gate=True,
                               mixers="full_attention_interval", ssm_dtype_key="mamba_ssm_dtype"),
    "llama4_text": Family("Llama-4", mlp="moe", dense_width_key="intermediate_size_mlp",
                          expert_width_key="intermediate_size", moe_layers="interleave", shared="expert_width",
                          fused_experts=True, windows="chunked_nope"),
}


def _moe_kinds(entry: Family, c: Any, L: int, E: int) -> tuple[str, ...]:
    if entry.moe_layers == "all":
        return ("moe",) * L
    if entry.moe_layers == "first_k_dense":
        k = c.int("first_k_dense_replace", 0, minimum=0)
        return tuple("moe" if i >= k else "dense" for i in range(L))
    if entry.moe_layers == "interleave":
        # Llama 4: moe_layers = list(range(step - 1, L, step)) unless given explicitly
        step = c.int("interleave_moe_layer_step", 1)
        explicit = c.int_list("moe_layers")
        moe = set(explicit) if explicit else set(range(step - 1, L, step))
        return tuple("moe" if i in moe else "dense" for i in range(L))
    step = c.int("decoder_sparse_step", 1)
    only = set(c.int_list("mlp_only_layers"))
    return tuple("moe" if (i not in only and E > 0 and (i + 1) % step == 0) else "dense" for i in range(L))


def _mixers(c: Any, L: int) -> tuple[str, ...]:
    types = c.raw("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != L:
            raise c._err("layer_types", f"expected a list of {L} layer types, got {types!r}")
        out = []
        for t in types:
            if t == "linear_attention":
                out.append("linear_attention")
            elif t == "full_attention":
                out.append("attention")
            else:
                raise c._err("layer_types", f"layer type {t!r} is not supported (linear_attention, full_attention)")
        return tuple(out)
    n = c.int("full_attention_interval", 4)
    return tuple("attention" if (i + 1) % n == 0 else "linear_attention" for i in range(L))


def build(entry: Family, c: Any, base: dict[str, Any]) -> dict[str, Any]:
    """ModelSpec fields for a config ``c`` (an ``hf_config._Cfg``) of a declarative family."""
    d = dict(base)
    L = d["num_layers"]
    bias = c.bool(entry.qkv_bias_key, False) if entry.qkv_bias_key else False
    qk_on = c.bool(entry.qk_norm_key, entry.qk_norm_default) if entry.qk_norm_key else True
    d.update(family=entry.family, tie_word_embeddings=c.bool("tie_word_embeddings", entry.tie_default),
             qkv_bias=bias, o_bias=bias and entry.o_bias_follows_qkv,
             qk_norm=qk_on and entry.qk_norm == "head", qk_norm_full=qk_on and entry.qk_norm == "full",
             attn_output_gate=entry.output_gate and (c.bool(entry.output_gate_key, True) if entry.output_gate_key else True),
             mlp_bias=c.bool("mlp_bias", False))
    if entry.mlp == "dense":
        d["intermediate_size"] = c.int(entry.dense_width_key)
    else:
        E = c.int(entry.num_experts_keys[0], aliases=entry.num_experts_keys[1:])
        kinds = _moe_kinds(entry, c, L, E)
        I_e = c.int(entry.expert_width_key)
        if entry.shared == "count":
            n_sh = c.int("n_shared_experts", 0, minimum=0)
            sh_w = n_sh * I_e
        elif entry.shared == "width":
            sh_w = c.int("shared_expert_intermediate_size", 0, minimum=0)
            n_sh = 1 if sh_w else 0
        elif entry.shared == "expert_width":
            n_sh, sh_w = 1, I_e
        else:
            n_sh, sh_w = 0, 0
        d.update(intermediate_size=c.int(entry.dense_width_key) if "dense" in kinds else 0, layer_kinds=kinds,
                 moe=MoESpec(num_experts=E, top_k=c.int("num_experts_per_tok"), expert_intermediate_size=I_e,
                             num_shared_experts=n_sh, shared_intermediate_size=sh_w,
                             shared_expert_gate=entry.shared_gate and bool(sh_w),
                             score_correction_bias=entry.score_correction_bias,
                             fused_gate_up=entry.fused_experts,
                             norm_topk_prob=c.bool("norm_topk_prob", False),
                             scoring_func=c.str("scoring_func", "softmax") or "softmax",
                             routed_scaling_factor=c.float("routed_scaling_factor", 1.0) or 1.0))
    if entry.mixers == "full_attention_interval":
        mixers = _mixers(c, L)
        d["layer_mixers"] = mixers if "linear_attention" in mixers else ()
        d["linear_attention"] = LinearAttentionSpec(
            num_k_heads=c.int("linear_num_key_heads"), num_v_heads=c.int("linear_num_value_heads"),
            k_head_dim=c.int("linear_key_head_dim"), v_head_dim=c.int("linear_value_head_dim"),
            conv_kernel=c.int("linear_conv_kernel_dim"),
            ssm_state_dtype=_state_dtype(c, entry.ssm_dtype_key, None) if entry.ssm_dtype_key else None)
        if d["linear_attention"].num_v_heads % d["linear_attention"].num_k_heads:
            raise c._err("linear_num_value_heads", "must be a multiple of linear_num_key_heads")
    if entry.windows == "chunked_nope":
        # Llama 4: layers whose no_rope_layers flag is 0 are global NoPE attention; the others use
        # chunked local attention over attention_chunk_size tokens (a window of at most that size)
        chunk = c.int("attention_chunk_size", 8192)  # transformers default
        flags = c.int_list("no_rope_layers")
        if not flags:
            interval = c.int("no_rope_layer_interval", 4)
            flags = [int((i + 1) % interval != 0) for i in range(L)]
        if len(flags) != L:
            raise ConfigError(f"{c.source}: no_rope_layers: expected {L} entries, got {len(flags)}")
        d["no_rope_layers"] = tuple(i for i, f in enumerate(flags) if not f)
        if chunk:
            w = tuple(chunk if f else None for f in flags)
            d["layer_windows"] = w if any(x is not None for x in w) else ()
            d["sliding_window"] = chunk
    return d


#: Nemotron-H block letters (``hybrid_override_pattern``) and their transformers 5 names (``layers_block_type``)
_NEMOTRON_BLOCKS = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe",
                    "mamba": "mamba", "linear_attention": "mamba", "attention": "attention",
                    "full_attention": "attention", "mlp": "mlp", "moe": "moe"}


def _state_dtype(c: Any, key: str, default: str | None) -> str | None:
    """A recurrent-state dtype from config key ``key`` (``default`` when absent), checked to be one simctl
    knows the width of."""
    from sim.deploy.models.spec import DTYPE_BYTES

    value = c.str(key, default)
    if value is not None and str(value).lower() not in DTYPE_BYTES:
        raise c._err(key, f"unknown dtype {value!r} (known: {', '.join(sorted(DTYPE_BYTES))})")
    return value


def build_nemotron_h(c: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Nemotron-H and Nemotron-3-Nano: every layer is one norm + ONE block (Mamba-2, attention, a squared-ReLU
    MLP, or a squared-ReLU MoE with one shared expert), laid out by ``hybrid_override_pattern`` (4.x) or
    ``layers_block_type`` (5.x).

    The MoE block (``NemotronHMoE``): a sigmoid router ``Linear(H, n_routed_experts)`` without bias (plus the
    ``e_score_correction_bias`` buffer), ``n_routed_experts`` experts of ``up_proj`` H → moe_intermediate_size
    and ``down_proj`` back (no gate), and one shared expert of the same shape with
    ``moe_shared_expert_intermediate_size`` (transformers builds one shared MLP whatever ``n_shared_experts``
    says). ``moe_latent_size`` (experts in a smaller latent width, Nemotron-3-Super) is refused."""
    from sim.deploy.models.spec import MambaSpec

    pattern = c.raw("layers_block_type")
    key = "layers_block_type"
    if pattern is None:
        pattern, key = c.str("hybrid_override_pattern"), "hybrid_override_pattern"
    if not pattern:
        raise ConfigError(f"{c.source}: missing required key 'hybrid_override_pattern' (needed for model_type 'nemotron_h')")
    blocks = []
    for b in pattern:
        if b not in _NEMOTRON_BLOCKS:
            raise c._err(key, f"unknown block {b!r} (known: M, *, -, E)")
        blocks.append(_NEMOTRON_BLOCKS[b])
    L = len(blocks)
    d = dict(base)
    moe = None
    if "moe" in blocks:
        if c.has("moe_latent_size"):
            raise c._err("moe_latent_size", "latent MoE projections (Nemotron-3-Super) are not supported yet; "
                         "Nemotron-3-Nano's full-width experts are")
        E = c.int("n_routed_experts", aliases=("num_local_experts",))
        moe = MoESpec(num_experts=E, top_k=c.int("num_experts_per_tok"),
                      expert_intermediate_size=c.int("moe_intermediate_size"),
                      num_shared_experts=1, shared_intermediate_size=c.int("moe_shared_expert_intermediate_size"),
                      score_correction_bias=True, norm_topk_prob=c.bool("norm_topk_prob", True),
                      scoring_func="sigmoid", n_group=c.opt_int("n_group"), topk_group=c.opt_int("topk_group"),
                      routed_scaling_factor=c.float("routed_scaling_factor", 1.0) or 1.0)
    d.update(
        family="Nemotron-3" if moe is not None else "Nemotron-H", num_layers=L,
        head_dim=c.int("head_dim", base["head_dim"], aliases=("attention_head_dim",)),
        intermediate_size=c.int("intermediate_size") if "mlp" in blocks else 0, mlp_kind="plain",
        mlp_bias=c.bool("mlp_bias", False),
        hidden_act=c.str("mlp_hidden_act", "relu2") or "relu2",
        qkv_bias=c.bool("attention_bias", False), o_bias=c.bool("attention_bias", False),
        tie_word_embeddings=c.bool("tie_word_embeddings", False), norms_per_layer=1, moe=moe,
        layer_mixers=tuple({"mamba": "mamba", "attention": "attention"}.get(b, "none") for b in blocks),
        layer_kinds=tuple({"mlp": "dense", "moe": "moe"}.get(b, "none") for b in blocks),
        mamba=MambaSpec(num_heads=c.int("mamba_num_heads"), head_dim=c.int("mamba_head_dim"),
                        state_size=c.int("ssm_state_size"), n_groups=c.int("n_groups", aliases=("mamba_n_groups",)),
                        conv_kernel=c.int("conv_kernel"), conv_bias=c.bool("use_conv_bias", True),
                        bias=c.bool("use_bias", False),
                        # vLLM's NemotronHForCausalLMConfig hook: the config's value, float32 when absent
                        ssm_state_dtype=_state_dtype(c, "mamba_ssm_cache_dtype", "float32")),
    )
    return d


def _mamba_heads(c: Any, inner: int) -> tuple[int, int]:
    """(heads, head_dim) of a Granite 4.0-H / Falcon-H1 Mamba-2 mixer: ``mamba_d_head`` may be ``"auto"``
    (inner // heads, as the transformers configs resolve it) and must tile the inner width exactly."""
    heads = c.int("mamba_n_heads", 128)  # transformers default of both configs
    raw = c.raw("mamba_d_head", "auto")
    hd = inner // heads if raw == "auto" else c.int("mamba_d_head")
    if hd * heads != inner:
        raise c._err("mamba_d_head", f"mamba_n_heads × mamba_d_head ({heads} × {hd}) must equal the Mamba inner "
                     f"width ({inner})")
    return heads, hd


def build_granite_hybrid(c: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Granite 4.0-H (``granitemoehybrid``): every layer is a token mixer (Mamba-2 or GQA attention, by
    ``layer_types``) followed by a MoE block and a shared gated MLP that every token passes through.

    ``GraniteMoeHybridDecoderLayer``: two RMSNorms; the mixer; ``block_sparse_moe`` (router ``Linear(H, E)``
    without bias, E experts with a fused ``gate_up_proj`` H → 2·intermediate_size and ``down_proj``) when
    ``num_local_experts`` > 0; ``shared_mlp`` (``input_linear`` H → 2·shared_intermediate_size,
    ``output_linear`` back). With no experts (Granite-4.0-H-1B, -H-Micro) the shared MLP is the layer's dense
    MLP. The Mamba inner width is ``mamba_expand · H``; attention has no rotary embedding when
    ``position_embedding_type`` is ``nope`` (no parameters either way)."""
    from sim.deploy.models.spec import MambaSpec

    d = dict(base)
    L = d["num_layers"]
    H = d["hidden_size"]
    types = c.raw("layer_types")
    if types is None:
        mixers = ("mamba",) * L  # transformers default: every layer Mamba
    else:
        if not isinstance(types, list) or len(types) != L:
            raise c._err("layer_types", f"expected a list of {L} layer types, got {types!r}")
        names = {"mamba": "mamba", "linear_attention": "mamba", "attention": "attention", "full_attention": "attention"}
        bad = [t for t in types if t not in names]
        if bad:
            raise c._err("layer_types", f"layer type {bad[0]!r} is not supported (mamba, attention)")
        mixers = tuple(names[t] for t in types)
    inner = c.int("mamba_expand", 2) * H
    heads, hd = _mamba_heads(c, inner)
    E = c.int("num_local_experts", 8, minimum=0)  # transformers default 8
    S = c.int("shared_intermediate_size", 1024)  # transformers default
    ab = c.bool("attention_bias", False)
    d.update(family="Granite-4.0-H", qkv_bias=ab, o_bias=ab, tie_word_embeddings=c.bool("tie_word_embeddings", False),
             layer_mixers=mixers if "mamba" in mixers else (),
             mamba=MambaSpec(num_heads=heads, head_dim=hd, state_size=c.int("mamba_d_state", 256),
                             n_groups=c.int("mamba_n_groups", 1), conv_kernel=c.int("mamba_d_conv", 4),
                             conv_bias=c.bool("mamba_conv_bias", True), bias=c.bool("mamba_proj_bias", False)))
    if E:
        d.update(intermediate_size=0, layer_kinds=("moe",) * L,
                 moe=MoESpec(num_experts=E, top_k=c.int("num_experts_per_tok", 2),
                             expert_intermediate_size=c.int("intermediate_size"), num_shared_experts=1,
                             shared_intermediate_size=S, fused_gate_up=True, norm_topk_prob=True))
    else:
        d.update(intermediate_size=S)
    if c.str("position_embedding_type") == "nope":
        d["position_embedding"] = "none"
    return d


def build_falcon_h1(c: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Falcon-H1 (``falcon_h1``): a parallel hybrid. Every layer runs GQA attention and a Mamba-2 mixer side
    by side on the same normed input, then a gated MLP (``FalconH1DecoderLayer``: ``input_layernorm``,
    ``self_attn`` + ``mamba``, ``pre_ff_layernorm``, ``feed_forward``).

    The Mamba inner width is ``mamba_d_ssm`` (``mamba_expand · H`` when null); its gated RMSNorm exists only
    with ``mamba_rms_norm``; ``in_proj`` takes ``mamba_proj_bias``, ``out_proj`` ``projectors_bias``. The µP
    multipliers scale activations and add no parameters."""
    from sim.deploy.models.spec import MambaSpec

    d = dict(base)
    L = d["num_layers"]
    H = d["hidden_size"]
    inner = c.int("mamba_d_ssm", None) or c.int("mamba_expand", 2) * H
    heads, hd = _mamba_heads(c, inner)
    ab = c.bool("attention_bias", False)
    d.update(family="Falcon-H1", intermediate_size=c.int("intermediate_size"), qkv_bias=ab, o_bias=ab,
             mlp_bias=c.bool("mlp_bias", False), tie_word_embeddings=c.bool("tie_word_embeddings", False),
             layer_mixers=("attention_mamba",) * L,
             mamba=MambaSpec(num_heads=heads, head_dim=hd, state_size=c.int("mamba_d_state", 256),
                             n_groups=c.int("mamba_n_groups", 1), conv_kernel=c.int("mamba_d_conv", 4),
                             conv_bias=c.bool("mamba_conv_bias", True), bias=c.bool("mamba_proj_bias", False),
                             out_bias=c.bool("projectors_bias", False), gated_norm=c.bool("mamba_rms_norm", False)))
    return d


def build_gemma4(c: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Gemma 4 text (``gemma4_text``, ``gemma4_unified_text``): Gemma 3's layer (4 RMSNorms, per-head QK-norm,
    GeGLU MLP, tied embeddings) with two attention geometries laid out by ``layer_types``:
    ``sliding_attention`` layers use ``head_dim`` × ``num_key_value_heads`` over a ``sliding_window``;
    ``full_attention`` layers use ``global_head_dim`` × ``num_global_key_value_heads`` and, with
    ``attention_k_eq_v``, no ``v_proj``. The value RMSNorm has no weight; ``layer_scalar`` is a buffer.

    With ``enable_moe_block`` (26B-A4B) every layer runs the dense MLP and, beside it on the same input, a
    routed MoE block (``num_experts`` experts of ``moe_intermediate_size``, ``top_k_experts`` per token;
    experts stored as one gate/up tensor) whose outputs are summed: simctl prices the dense MLP as an
    always-on shared expert. The block adds three RMSNorms per layer and the router's two scale vectors
    (``Gemma4TextRouter.scale``, ``per_expert_scale``); its own input norm has no weight.

    E2B/E4B add per-layer input embeddings (``hidden_size_per_layer_input`` P > 0: a second token table of
    ``vocab_size_per_layer_input`` × layers·P, a projection of the hidden state to layers·P and its norm,
    and in every layer a gate H → P, a projection P → H and a norm) and cross-layer KV sharing: the last
    ``num_kv_shared_layers`` layers have no k/v projections and no cache of their own — each attends over
    the cache of the last earlier layer of its attention type (transformers' ``kv_sharing_modes``) — and
    with ``use_double_wide_mlp`` their MLPs are twice as wide."""
    from sim.deploy.models.spec import GlobalAttentionSpec

    d = dict(base)
    L = d["num_layers"]
    types = c.raw("layer_types")
    if not isinstance(types, list) or len(types) != L:
        raise c._err("layer_types", f"expected a list of {L} layer types, got {types!r}")
    bad = [t for t in types if t not in ("sliding_attention", "full_attention")]
    if bad:
        raise c._err("layer_types", f"layer type {bad[0]!r} is not supported (sliding_attention, full_attention)")
    sw = c.int("sliding_window", 512)  # Gemma4TextConfig default
    ab = c.bool("attention_bias", False)
    d.update(family="Gemma-4", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", True), qkv_bias=ab, o_bias=ab,
             hidden_act=c.str("hidden_activation") or c.str("hidden_act", "gelu_pytorch_tanh"),
             norms_per_layer=4, qk_norm=True, sliding_window=sw,
             layer_windows=tuple(sw if t == "sliding_attention" else None for t in types),
             layer_mixers=tuple("attention" if t == "sliding_attention" else "global_attention" for t in types),
             global_attention=GlobalAttentionSpec(
                 head_dim=c.int("global_head_dim", d["head_dim"]),
                 num_kv_heads=c.int("num_global_key_value_heads", d["num_kv_heads"]),
                 k_eq_v=c.bool("attention_k_eq_v", False)))
    if "full_attention" not in types:
        d.update(layer_mixers=(), global_attention=None)
    P = c.int("hidden_size_per_layer_input", 0, minimum=0)
    if P:
        d.update(per_layer_input_size=P, per_layer_input_vocab=c.int("vocab_size_per_layer_input", 262_144, minimum=1))
    n_shared = c.int("num_kv_shared_layers", 0, minimum=0)
    if n_shared:
        if n_shared >= L:
            raise c._err("num_kv_shared_layers", f"{n_shared} of {L} layers leaves none to hold a KV cache")
        first = L - n_shared
        missing = sorted(set(types[first:]) - set(types[:first]))
        if missing:
            raise c._err("num_kv_shared_layers", f"no earlier {missing[0]} layer holds a cache for the shared ones")
        d.update(kv_shared=tuple(i >= first for i in range(L)),
                 double_wide_shared_mlp=c.bool("use_double_wide_mlp", False))
    if c.bool("enable_moe_block", False):
        E = c.int("num_experts", minimum=1)
        d.update(layer_kinds=("moe",) * L, norms_per_layer=7,
                 moe=MoESpec(num_experts=E, top_k=c.int("top_k_experts", minimum=1),
                             expert_intermediate_size=c.int("moe_intermediate_size", minimum=1),
                             num_shared_experts=1, shared_intermediate_size=d["intermediate_size"],
                             fused_gate_up=True, norm_topk_prob=True, router_scales=True))
    return d
