"""Build a :class:`~sim.deploy.models.spec.ModelSpec` from a Hugging Face ``config.json``.

One parser per ``model_type``; each reads exactly the keys the ``transformers`` implementation of
that family uses to size its tensors, with the same defaults. Errors name the file and the key.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sim.deploy.models.spec import IndexerSpec, MLASpec, ModelSpec, MoESpec
from sim.errors import ConfigError, SimctlError, suggest

_MISSING = object()


class UnsupportedModelError(SimctlError):
    """The config's ``model_type`` is not one simctl knows how to count."""


class _Cfg:
    """Typed access to a config dict; every error names the source file and the key."""

    def __init__(self, data: dict, source: str) -> None:
        self.data = data
        self.source = source

    def _err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {msg}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        v = self.data.get(key)
        return default if v is None else v

    def int(self, key: str, default: Any = _MISSING, *, minimum: int = 1, aliases: tuple[str, ...] = ()) -> int:
        for k in (key, *aliases):
            if self.data.get(k) is not None:
                key = k
                break
        else:
            if default is _MISSING:
                mt = self.data.get("model_type", "?")
                raise ConfigError(f"{self.source}: missing required key '{key}' (needed for model_type '{mt}')")
            return default
        v = self.data[key]
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise self._err(key, f"expected an integer, got {v!r}")
        if v < minimum:
            raise self._err(key, f"must be ≥ {minimum}, got {v}")
        return v

    def opt_int(self, key: str, *, minimum: int = 1) -> int | None:
        return self.int(key, None, minimum=minimum) if self.has(key) else None

    def bool(self, key: str, default: bool) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self._err(key, f"expected true or false, got {v!r}")
        return v

    def float(self, key: str, default: float | None = None) -> float | None:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._err(key, f"expected a number, got {v!r}")
        return float(v)

    def str(self, key: str, default: str | None = None) -> str | None:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            raise self._err(key, f"expected a string, got {v!r}")
        return v

    def int_list(self, key: str) -> list[int]:
        v = self.data.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise self._err(key, f"expected a list of integers, got {v!r}")
        return v


# ---------------------------------------------------------------------------------- helpers


def _rope(c: _Cfg) -> dict[str, Any]:
    """rope_theta / rope_scaling from either the classic keys or the newer ``rope_parameters``."""
    theta = c.float("rope_theta")
    scaling = c.raw("rope_scaling")
    params = c.raw("rope_parameters")
    if isinstance(params, dict):
        # transformers ≥ 5: {"rope_type": ..., "rope_theta": ...} or one such dict per layer type
        flat = params
        if params and all(isinstance(v, dict) for v in params.values()):
            flat = params.get("full_attention") or next(iter(params.values()))
        if theta is None and isinstance(flat.get("rope_theta"), (int, float)):
            theta = float(flat["rope_theta"])
        if scaling is None:
            rest = {k: v for k, v in flat.items() if k != "rope_theta"}
            if rest and rest.get("rope_type", rest.get("type")) not in (None, "default"):
                scaling = rest
    elif params is not None:
        raise c._err("rope_parameters", f"expected a mapping, got {params!r}")
    if scaling is not None and not isinstance(scaling, dict):
        raise c._err("rope_scaling", f"expected a mapping or null, got {scaling!r}")
    prf = c.float("partial_rotary_factor", 1.0)
    return {"rope_theta": theta, "rope_scaling": scaling, "partial_rotary_factor": prf}


def _windows_from_layer_types(c: _Cfg, L: int, window: int | None) -> tuple[int | None, ...] | None:
    types = c.raw("layer_types")
    if types is None:
        return None
    if not isinstance(types, list) or len(types) != L:
        raise c._err("layer_types", f"expected a list of {L} layer types, got {types!r}")
    out: list[int | None] = []
    for t in types:
        if t == "sliding_attention":
            if window is None:
                raise ConfigError(f"{c.source}: layer_types has sliding_attention layers but sliding_window is not set")
            out.append(window)
        elif t in ("full_attention", "attention"):
            out.append(None)
        else:
            raise c._err("layer_types", f"layer type {t!r} is not supported (only full_attention, sliding_attention)")
    return tuple(out)


def _norm_windows(w: tuple[int | None, ...]) -> tuple[int | None, ...]:
    return () if all(x is None for x in w) else w


def _base(c: _Cfg, *, heads_key: str = "num_attention_heads") -> dict[str, Any]:
    """Llama-style keys shared by most families."""
    H = c.int("hidden_size")
    nh = c.int(heads_key)
    kv = c.int("num_key_value_heads", nh)
    if nh % kv:
        raise c._err("num_key_value_heads", f"must divide num_attention_heads ({nh}), got {kv}")
    hd = c.int("head_dim", None)
    if hd is None:
        if H % nh:
            raise ConfigError(f"{c.source}: hidden_size ({H}) is not divisible by num_attention_heads ({nh}); set head_dim")
        hd = H // nh
    return dict(
        hidden_size=H,
        num_layers=c.int("num_hidden_layers"),
        vocab_size=c.int("vocab_size"),
        num_attention_heads=nh,
        num_kv_heads=kv,
        head_dim=hd,
        max_position_embeddings=c.int("max_position_embeddings", 2048),
        hidden_act=c.str("hidden_act", "silu") or "silu",
        torch_dtype=c.str("torch_dtype") or c.str("dtype"),
        **_rope(c),
    )


# ---------------------------------------------------------------------------------- families


def _llama(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    ab = c.bool("attention_bias", False)
    d.update(family="Llama", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", False),
             qkv_bias=ab, o_bias=ab, mlp_bias=c.bool("mlp_bias", False))
    return d


def _mistral(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    sw = c.opt_int("sliding_window")
    d.update(family="Mistral", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", False), sliding_window=sw,
             layer_windows=_norm_windows((sw,) * d["num_layers"]))
    return d


def _mixtral(c: _Cfg) -> dict[str, Any]:
    d = _mistral(c)
    E = c.int("num_local_experts")
    d.update(family="Mixtral", intermediate_size=0,
             moe=MoESpec(num_experts=E, top_k=c.int("num_experts_per_tok"),
                         expert_intermediate_size=c.int("intermediate_size")),
             layer_kinds=("moe",) * d["num_layers"])
    return d


def _qwen_windows(c: _Cfg, L: int) -> tuple[int | None, ...]:
    sw = c.opt_int("sliding_window") if c.bool("use_sliding_window", False) else None
    w = _windows_from_layer_types(c, L, sw) if sw is not None else None
    if w is None:
        mwl = c.int("max_window_layers", L, minimum=0)
        w = tuple(sw if (sw is not None and i >= mwl) else None for i in range(L))
    return _norm_windows(w)


def _qwen2(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    w = _qwen_windows(c, d["num_layers"])
    d.update(family="Qwen2", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", False), qkv_bias=True, o_bias=False,
             layer_windows=w, sliding_window=next((x for x in w if x), None))
    return d


def _qwen_moe_kinds(c: _Cfg, L: int) -> tuple[str, ...]:
    E = c.int("num_experts", 0, minimum=0, aliases=("num_local_experts",))  # 4.x / 5.x spelling
    step = c.int("decoder_sparse_step", 1)
    only = set(c.int_list("mlp_only_layers"))
    return tuple("moe" if (i not in only and E > 0 and (i + 1) % step == 0) else "dense" for i in range(L))


def _qwen2_moe(c: _Cfg) -> dict[str, Any]:
    d = _qwen2(c)
    kinds = _qwen_moe_kinds(c, d["num_layers"])
    shared = c.int("shared_expert_intermediate_size", 0, minimum=0)
    d.update(family="Qwen2-MoE", intermediate_size=c.int("intermediate_size", 0, minimum=0) if "dense" in kinds else 0,
             moe=MoESpec(num_experts=c.int("num_experts"), top_k=c.int("num_experts_per_tok"),
                         expert_intermediate_size=c.int("moe_intermediate_size"),
                         num_shared_experts=1 if shared else 0, shared_intermediate_size=shared,
                         shared_expert_gate=bool(shared), norm_topk_prob=c.bool("norm_topk_prob", False)),
             layer_kinds=kinds)
    return d


def _qwen3(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    ab = c.bool("attention_bias", False)
    w = _qwen_windows(c, d["num_layers"])
    d.update(family="Qwen3", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", False), qkv_bias=ab, o_bias=ab, qk_norm=True,
             layer_windows=w, sliding_window=next((x for x in w if x), None))
    return d


def _qwen3_moe(c: _Cfg) -> dict[str, Any]:
    d = _qwen3(c)
    kinds = _qwen_moe_kinds(c, d["num_layers"])
    d.update(family="Qwen3-MoE", intermediate_size=c.int("intermediate_size", 0, minimum=0) if "dense" in kinds else 0,
             moe=MoESpec(num_experts=c.int("num_experts", aliases=("num_local_experts",)), top_k=c.int("num_experts_per_tok"),
                         expert_intermediate_size=c.int("moe_intermediate_size"),
                         norm_topk_prob=c.bool("norm_topk_prob", False)),
             layer_kinds=kinds)
    return d


def _deepseek(c: _Cfg, v3: bool) -> dict[str, Any]:
    d = _base(c)
    if c.bool("attention_bias", False):
        raise ConfigError(f"{c.source}: attention_bias: true is not supported for DeepSeek MLA models")
    q_lora = c.opt_int("q_lora_rank")
    mla = MLASpec(q_lora_rank=q_lora, kv_lora_rank=c.int("kv_lora_rank"),
                  qk_nope_head_dim=c.int("qk_nope_head_dim"), qk_rope_head_dim=c.int("qk_rope_head_dim"),
                  v_head_dim=c.int("v_head_dim"))
    L = d["num_layers"]
    E = c.opt_int("n_routed_experts")
    first_k = c.int("first_k_dense_replace", 0, minimum=0)
    freq = c.int("moe_layer_freq", 1)
    kinds = tuple("moe" if (E and i >= first_k and i % freq == 0) else "dense" for i in range(L))
    moe = None
    if E:
        moe_I = c.int("moe_intermediate_size")
        n_shared = c.int("n_shared_experts", 0, minimum=0)
        topk_method = c.str("topk_method", "noaux_tc" if v3 else "greedy")
        moe = MoESpec(num_experts=E, top_k=c.int("num_experts_per_tok"), expert_intermediate_size=moe_I,
                      num_shared_experts=n_shared, shared_intermediate_size=moe_I * n_shared,
                      score_correction_bias=v3 or topk_method == "noaux_tc",
                      norm_topk_prob=c.bool("norm_topk_prob", v3),
                      scoring_func=c.str("scoring_func", "sigmoid" if v3 else "softmax") or "softmax",
                      n_group=c.opt_int("n_group"), topk_group=c.opt_int("topk_group"),
                      routed_scaling_factor=c.float("routed_scaling_factor", 1.0) or 1.0)
    indexer = None
    if c.has("index_n_heads"):  # DeepSeek-V3.2 sparse attention
        if q_lora is None:
            raise ConfigError(f"{c.source}: index_n_heads needs q_lora_rank (the indexer reads the q latent)")
        indexer = IndexerSpec(num_heads=c.int("index_n_heads"), head_dim=c.int("index_head_dim"),
                              topk=c.int("index_topk"))
        d["indexer"] = indexer
    d.update(family="DeepSeek-V3" if v3 else "DeepSeek-V2", attention="mla", mla=mla, moe=moe,
             num_kv_heads=d["num_attention_heads"], head_dim=mla.qk_head_dim,
             intermediate_size=c.int("intermediate_size") if "dense" in kinds else 0,
             tie_word_embeddings=c.bool("tie_word_embeddings", False), layer_kinds=kinds,
             num_mtp_layers=c.int("num_nextn_predict_layers", 0, minimum=0))
    return d


def _gemma(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    ab = c.bool("attention_bias", False)
    act = c.str("hidden_activation") or c.str("hidden_act", "gelu_pytorch_tanh")
    d.update(family="Gemma", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", True), qkv_bias=ab, o_bias=ab, hidden_act=act)
    return d


def _gemma2(c: _Cfg) -> dict[str, Any]:
    d = _gemma(c)
    L = d["num_layers"]
    sw = c.opt_int("sliding_window")
    w = _windows_from_layer_types(c, L, sw)
    if w is None:
        w = tuple(sw if i % 2 == 0 else None for i in range(L))  # HF Gemma2: even layers slide
    d.update(family="Gemma-2", norms_per_layer=4, sliding_window=sw, layer_windows=_norm_windows(w))
    return d


def _gemma3_text(c: _Cfg) -> dict[str, Any]:
    d = _gemma(c)
    L = d["num_layers"]
    sw = c.opt_int("sliding_window")
    w = _windows_from_layer_types(c, L, sw)
    if w is None:
        pattern = c.int("sliding_window_pattern", 6)
        w = tuple(sw if (i + 1) % pattern else None for i in range(L))
    d.update(family="Gemma-3", norms_per_layer=4, qk_norm=True, sliding_window=sw, layer_windows=_norm_windows(w))
    return d


def _phi3(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    sw = c.opt_int("sliding_window")
    d.update(family="Phi-3", intermediate_size=c.int("intermediate_size"),
             tie_word_embeddings=c.bool("tie_word_embeddings", False), fused_qkv=True, fused_gate_up=True,
             sliding_window=sw, layer_windows=_norm_windows((sw,) * d["num_layers"]))
    return d


def _gpt_oss(c: _Cfg) -> dict[str, Any]:
    d = _base(c)
    L = d["num_layers"]
    sw = c.opt_int("sliding_window")
    w = _windows_from_layer_types(c, L, sw)
    if w is None:
        w = tuple(sw if i % 2 == 0 else None for i in range(L))
    ab = c.bool("attention_bias", True)
    d.update(family="GPT-OSS", intermediate_size=0, tie_word_embeddings=c.bool("tie_word_embeddings", False),
             qkv_bias=ab, o_bias=ab, attention_sinks=True, sliding_window=sw, layer_windows=_norm_windows(w),
             moe=MoESpec(num_experts=c.int("num_local_experts"),
                         top_k=c.int("num_experts_per_tok", aliases=("experts_per_token",)),
                         expert_intermediate_size=c.int("intermediate_size"), router_bias=True, expert_bias=True,
                         fused_gate_up=True),
             layer_kinds=("moe",) * L)
    return d


def _opt(c: _Cfg) -> dict[str, Any]:
    H = c.int("hidden_size")
    nh = c.int("num_attention_heads")
    if H % nh:
        raise ConfigError(f"{c.source}: hidden_size ({H}) is not divisible by num_attention_heads ({nh})")
    bias = c.bool("enable_bias", True)
    affine = c.bool("layer_norm_elementwise_affine", True)
    pre = c.bool("do_layer_norm_before", True)
    proj = c.int("word_embed_proj_dim", H)
    maxpos = c.int("max_position_embeddings", 2048)
    return dict(
        family="OPT", hidden_size=H, num_layers=c.int("num_hidden_layers"), vocab_size=c.int("vocab_size"),
        num_attention_heads=nh, num_kv_heads=nh, head_dim=H // nh, intermediate_size=c.int("ffn_dim"),
        max_position_embeddings=maxpos, tie_word_embeddings=c.bool("tie_word_embeddings", True),
        qkv_bias=bias, o_bias=bias, mlp_kind="plain", mlp_bias=bias,
        hidden_act=c.str("activation_function", "relu"), norm="layernorm", norm_bias=affine,
        norms_per_layer=2 if affine else 0,
        final_norm=affine and pre and not c.bool("_remove_final_layer_norm", False),
        position_embedding="learned", learned_position_rows=maxpos + 2,  # OPTLearnedPositionalEmbedding offset 2
        word_embed_proj_dim=proj if proj != H else None, torch_dtype=c.str("torch_dtype"),
    )


def _gpt2(c: _Cfg) -> dict[str, Any]:
    H = c.int("n_embd", aliases=("hidden_size",))
    nh = c.int("n_head", aliases=("num_attention_heads",))
    if H % nh:
        raise ConfigError(f"{c.source}: n_embd ({H}) is not divisible by n_head ({nh})")
    npos = c.int("n_positions", aliases=("n_ctx", "max_position_embeddings"))
    return dict(
        family="GPT-2", hidden_size=H, num_layers=c.int("n_layer", aliases=("num_hidden_layers",)),
        vocab_size=c.int("vocab_size"), num_attention_heads=nh, num_kv_heads=nh, head_dim=H // nh,
        intermediate_size=c.int("n_inner", 4 * H), max_position_embeddings=npos,
        tie_word_embeddings=c.bool("tie_word_embeddings", True), qkv_bias=True, o_bias=True, fused_qkv=True,
        mlp_kind="plain", mlp_bias=True, hidden_act=c.str("activation_function", "gelu_new"),
        norm="layernorm", norm_bias=True, position_embedding="learned", learned_position_rows=npos,
        torch_dtype=c.str("torch_dtype"),
    )


PARSERS: dict[str, Callable[[_Cfg], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _mistral,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "deepseek_v2": lambda c: _deepseek(c, v3=False),
    "deepseek_v3": lambda c: _deepseek(c, v3=True),
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3_text": _gemma3_text,
    "phi3": _phi3,
    "gpt_oss": _gpt_oss,
    "opt": _opt,
    "gpt2": _gpt2,
    # families whose transformers class is one of the above blocks under another name
    "kimi_k2": lambda c: {**_deepseek(c, v3=True), "family": "Kimi-K2"},  # DeepseekV3ForCausalLM
    "deepseek_v32": lambda c: {**_deepseek(c, v3=True), "family": "DeepSeek-V3.2"},
    "glm4_moe_lite": lambda c: {**_deepseek(c, v3=True), "family": "GLM-4.7-Flash"},  # DeepSeek-V3 blocks
    # language models of multimodal wrappers (Qwen3-VL's text model is Qwen3 with multimodal rope)
    "qwen3_vl_text": lambda c: {**_qwen3(c), "family": "Qwen3-VL"},
    "qwen3_vl_moe_text": lambda c: {**_qwen3_moe(c), "family": "Qwen3-VL-MoE"},
}


def _declarative(model_type: str) -> Callable[[_Cfg], dict[str, Any]]:
    def parse(c: _Cfg) -> dict[str, Any]:
        from sim.deploy.models.families import FAMILIES, build
        return build(FAMILIES[model_type], c, _base(c))
    return parse


def _nemotron_h(c: _Cfg) -> dict[str, Any]:
    from sim.deploy.models.families import build_nemotron_h
    return build_nemotron_h(c, _base(c) | {"num_layers": 0})


def _granite_hybrid(c: _Cfg) -> dict[str, Any]:
    from sim.deploy.models.families import build_granite_hybrid
    return build_granite_hybrid(c, _base(c))


def _falcon_h1(c: _Cfg) -> dict[str, Any]:
    from sim.deploy.models.families import build_falcon_h1
    return build_falcon_h1(c, _base(c))


def _gemma4(c: _Cfg) -> dict[str, Any]:
    from sim.deploy.models.families import build_gemma4
    return build_gemma4(c, _base(c))


def _register_declarative() -> None:
    from sim.deploy.models.families import FAMILIES
    for mt in FAMILIES:
        PARSERS.setdefault(mt, _declarative(mt))
    PARSERS.setdefault("nemotron_h", _nemotron_h)
    PARSERS.setdefault("granitemoehybrid", _granite_hybrid)
    PARSERS.setdefault("falcon_h1", _falcon_h1)
    PARSERS.setdefault("gemma4_text", _gemma4)
    PARSERS.setdefault("gemma4_unified_text", _gemma4)


_register_declarative()

#: multimodal wrappers: the language model is read from ``text_config``; model_type of the wrapper
#: -> model_type its text_config defaults to when it names none
WRAPPERS: dict[str, str] = {
    "llama4": "llama4_text",
    "qwen3_vl": "qwen3_vl_text",
    "qwen3_vl_moe": "qwen3_vl_moe_text",
    "qwen3_5_moe": "qwen3_5_moe_text",
    "gemma3": "gemma3_text",
    "gemma4": "gemma4_text",
    "gemma4_unified": "gemma4_unified_text",
    "mistral3": "mistral",
}

#: transformers' defaults for text-config keys that real wrapper configs leave out (Gemma 3's
#: text_config omits vocab_size and, for the 4B, the head counts; values of Gemma3TextConfig)
TEXT_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131_072, "sliding_window": 4096},
}

#: model_type values accepted (for error messages and docs)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(PARSERS))


def spec_from_config(data: dict, *, name: str, source: str = "<config>", hf_repo: str | None = None) -> ModelSpec:
    """Parse a config dict (the contents of a HF ``config.json``) into a :class:`ModelSpec`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object at the top level")
    mt = data.get("model_type")
    multimodal = None
    if mt in WRAPPERS and isinstance(data.get("text_config"), dict):
        # the language model is what simctl counts and prices; the wrapper's own keys (tie, dtype) are
        # inherited when the text config does not set them
        text = dict(data["text_config"])
        text.setdefault("model_type", WRAPPERS[mt])
        for k, v in TEXT_CONFIG_DEFAULTS.get(text["model_type"], {}).items():
            text.setdefault(k, v)
        for k in ("tie_word_embeddings", "torch_dtype", "dtype"):
            if k in data and k not in text:
                text[k] = data[k]
        vis = data.get("vision_config")
        multimodal = {"wrapper": mt, "vision_config": vis if isinstance(vis, dict) else None}
        if "mm_tokens_per_image" in data:  # Gemma 3: LM tokens per image (sizes its projector's pooling)
            multimodal["mm_tokens_per_image"] = data["mm_tokens_per_image"]
        data, mt = text, text["model_type"]
    if mt is None:
        raise ConfigError(f"{source}: missing required key 'model_type' "
                          f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if mt not in PARSERS:
        text = data.get("text_config")
        if isinstance(text, dict) and text.get("model_type") in PARSERS:
            raise UnsupportedModelError(
                f"{source}: model_type '{mt}' is a multimodal wrapper; point simctl at a text-only config "
                f"(its text_config has model_type '{text['model_type']}')")
        raise UnsupportedModelError(
            f"{source}: model_type '{mt}' is not supported{suggest(str(mt), PARSERS)}. "
            f"Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}; multimodal wrappers: {', '.join(sorted(WRAPPERS))}")
    c = _Cfg(data, source)
    fields = PARSERS[mt](c)
    try:
        if multimodal is not None:
            fields["multimodal"] = multimodal
        return ModelSpec(name=name, model_type=mt, source=source, hf_repo=hf_repo,
                         **fields)
    except TypeError as exc:  # pragma: no cover - a parser bug, not a user error
        raise RuntimeError(f"parser for {mt} produced bad fields: {exc}") from exc


def read_config_file(path: str | Path) -> dict:
    """Read a ``config.json`` (or a directory holding one); errors name the file."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
        if not p.is_file():
            raise ConfigError(f"{path}: directory has no config.json")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object at the top level")
    return data
