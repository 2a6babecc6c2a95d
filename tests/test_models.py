"""Model architectures: exact parameter accounting, KV bytes, layer structure, config parsing, catalog."""
from __future__ import annotations

import copy
import json

import pytest

from sim.deploy.models import (
    CATALOG_DIR,
    LinearOp,
    UnsupportedModelError,
    catalog,
    dtype_bytes,
    list_models,
    load_model,
    resolve_name,
    spec_from_config,
)
from sim.deploy.models.hf_config import SUPPORTED_MODEL_TYPES, read_config_file
from sim.deploy.models.spec import pp_partition
from sim.errors import ConfigError, SimctlError, UnknownNameError


def cfg(name: str) -> dict:
    """A copy of a bundled config.json."""
    return copy.deepcopy(read_config_file(catalog()[name].path))


# ----------------------------------------------------------------------------------- exact counts

ISSUE_KNOWN = {
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "mixtral-8x7b": 46_702_792_704,
    "deepseek-v3": 671_026_404_352,
    "qwen2.5-7b": 7_615_616_512,
}


@pytest.mark.parametrize("name,expected", sorted(ISSUE_KNOWN.items()))
def test_known_exact_counts_from_the_issue(name, expected):
    assert load_model(name).total_params() == expected


PUBLISHED = sorted(n for n, e in catalog().items() if e.published_params is not None)


def test_published_counts_cover_every_family():
    from tests.test_models_families import NEW_REFERENCE
    from tests.test_models_hybrid_moe import REFERENCE as HYBRID_MOE
    families = {load_model(n).model_type for n in PUBLISHED}
    assert len(PUBLISHED) >= 15
    # issue #12's families are pinned to transformers' own counts instead (tests/test_models_families.py)
    pinned = {load_model(n).model_type for n in (*NEW_REFERENCE, *HYBRID_MOE) if n in catalog()}
    aliases = {"qwen3_vl_text", "qwen3_vl_moe_text"}  # Qwen3-VL language models, pinned via their wrappers
    aliases |= {"gemma4_text"}  # Gemma 4's text model: the gemma4_unified_text blocks (tests/test_models_hybrid_moe.py)
    assert families | pinned | aliases == set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("name", PUBLISHED)
def test_total_equals_published_exact_count(name):
    e = catalog()[name]
    assert e.published_source, "every published count cites where it comes from"
    assert load_model(name).total_params() == e.published_params


def test_active_params_moe():
    mixtral = load_model("mixtral-8x7b")
    assert mixtral.active_params() == 12_879_925_248  # ≈ 12.9B
    v3 = load_model("deepseek-v3")
    assert v3.active_params() == 37_552_282_624  # ≈ 37.6B incl. embeddings and lm_head
    assert round(load_model("qwen3-30b-a3b").active_params() / 1e9, 1) == 3.4  # "A3B" (3.3B per the card)
    assert round(load_model("qwen3-235b-a22b").active_params() / 1e9) == 22
    assert round(load_model("deepseek-v2").active_params() / 1e9) == 21
    # OpenAI's gpt-oss convention leaves out the input embedding: 3.61B and 5.13B
    assert round(load_model("gpt-oss-20b").active_params(include_embeddings=False) / 1e9, 2) == 3.61
    assert round(load_model("gpt-oss-120b").active_params(include_embeddings=False) / 1e9, 2) == 5.13


def test_active_equals_total_for_dense():
    for n in ("llama-3.1-8b", "qwen3-8b", "gemma-2-9b", "opt-125m"):
        m = load_model(n)
        assert m.active_params() == m.total_params()
    # tied: the shared table stays (it is the LM head); learned positions go
    assert load_model("llama-3.2-1b").active_params(include_embeddings=False) == load_model("llama-3.2-1b").total_params()
    gpt2 = load_model("gpt2")
    assert gpt2.total_params() - gpt2.active_params(include_embeddings=False) == 1024 * 768


@pytest.mark.parametrize("name", list_models())
def test_breakdown_sums_to_total(name):
    m = load_model(name)
    b = m.param_breakdown()
    assert set(b) == {"embeddings", "attention", "mlp", "experts", "shared_experts", "router", "per_layer_inputs", "norms",
                      "lm_head"}
    assert sum(b.values()) == m.total_params()
    split = m.layer_split()
    assert split["dense_layers"] + split["moe_layers"] + split["other"] == m.total_params()
    assert sum(g.params for g in m.layer_groups()) == split["dense_layers"] + split["moe_layers"]
    assert 0 < m.active_params() <= m.total_params()


def test_deepseek_v3_details():
    m = load_model("deepseek-v3")
    assert [(g.kind, g.num_layers) for g in m.layer_groups()] == [("dense", 3), ("moe", 58)]
    assert m.layer_groups()[0].layer_indices == (0, 1, 2)
    # e_score_correction_bias is a buffer in transformers, so not a parameter; it is in the checkpoint
    assert m.buffer_params() == 58 * 256
    assert m.checkpoint_params() == 671_026_404_352 + 14_848
    assert m.num_mtp_layers == 1
    moe = m.layer_groups()[1]
    experts = [o for o in moe.linears if o.group == "experts"]
    assert {o.name for o in experts} == {"experts.gate_proj", "experts.up_proj", "experts.down_proj"}
    assert all(o.num_instances == 256 and o.active_instances == 8 for o in experts)
    assert moe.op("experts.down_proj").in_features == 2048
    assert moe.op("shared_experts.gate_proj").out_features == 2048
    assert moe.op("router").tp == "replicated" and moe.op("router").out_features == 256
    dense = m.layer_groups()[0]
    assert dense.op("gate_proj").out_features == 18432
    # MLA projections
    assert dense.op("q_a_proj").out_features == 1536 and dense.op("q_a_proj").tp == "replicated"
    assert dense.op("q_b_proj").out_features == 128 * 192
    assert dense.op("kv_a_proj_with_mqa").out_features == 512 + 64
    assert dense.op("kv_b_proj").in_features == 512 and dense.op("kv_b_proj").out_features == 128 * 256
    assert dense.op("o_proj").in_features == 128 * 128 and dense.op("o_proj").tp == "row"


def test_deepseek_v2_lite_has_plain_q_proj():
    m = load_model("deepseek-v2-lite")
    g = m.layer_groups()[0]
    assert m.mla.q_lora_rank is None
    assert g.op("q_proj").out_features == 16 * 192
    with pytest.raises(KeyError):
        g.op("q_a_proj")
    assert [(g.kind, g.num_layers) for g in m.layer_groups()] == [("dense", 1), ("moe", 26)]
    assert m.buffer_params() == 0  # V2 has no score-correction bias
    moe = m.layer_groups()[1]
    assert moe.op("shared_experts.down_proj").in_features == 2 * 1408  # 2 shared experts, fused into one MLP


def test_llama_linears():
    m = load_model("llama-3-8b")
    (g,) = m.layer_groups()
    assert (g.kind, g.num_layers) == ("dense", 32)
    shapes = {o.name: (o.in_features, o.out_features, o.tp) for o in g.linears}
    assert shapes == {
        "q_proj": (4096, 4096, "column"), "k_proj": (4096, 1024, "column"), "v_proj": (4096, 1024, "column"),
        "o_proj": (4096, 4096, "row"), "gate_proj": (4096, 14336, "column"), "up_proj": (4096, 14336, "column"),
        "down_proj": (14336, 4096, "row"),
    }
    assert not any(o.bias for o in g.linears)
    assert m.lm_head_op() == LinearOp("lm_head", 4096, 128256, "lm_head", "column")
    # dense model: linear FLOPs = 2 x (all parameters except the embedding table and norms)
    b = m.param_breakdown()
    assert m.linear_flops_per_token() == 2 * (m.total_params() - b["embeddings"] - b["norms"])


def test_qwen2_qkv_bias_and_qwen3_qk_norm():
    (g,) = load_model("qwen2.5-7b").layer_groups()
    assert [o.bias for o in g.linears[:4]] == [True, True, True, False]  # q, k, v biased; o not
    q3 = load_model("qwen3-8b")
    (g3,) = q3.layer_groups()
    assert not any(o.bias for o in g3.linears)
    assert dict(g3.extra_params)["norms"] == 2 * 4096 + 2 * 128  # two RMSNorms + q_norm + k_norm
    assert q3.head_dim == 128 and q3.q_size == 4096


def test_phi3_fused_and_gpt2_plain():
    (g,) = load_model("phi-3-mini-4k").layer_groups()
    assert [o.name for o in g.linears] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert g.op("qkv_proj").out_features == 3 * 3072 and g.op("gate_up_proj").out_features == 2 * 8192
    (g2,) = load_model("gpt2").layer_groups()
    assert [o.name for o in g2.linears] == ["qkv_proj", "o_proj", "fc1", "fc2"]
    assert all(o.bias for o in g2.linears)
    assert dict(g2.extra_params)["norms"] == 2 * 2 * 768  # two LayerNorms with weight and bias


def test_gemma_norms_and_head_dim():
    g7 = load_model("gemma-7b")
    assert g7.head_dim == 256 and g7.q_size == 4096 != g7.hidden_size  # head_dim != hidden/heads
    assert g7.tie_word_embeddings and g7.param_breakdown()["lm_head"] == 0
    (g2,) = load_model("gemma-2-9b").layer_groups()
    assert dict(g2.extra_params)["norms"] == 4 * 3584  # pre/post attention and MLP norms
    (g3,) = load_model("gemma-3-1b").layer_groups()
    assert dict(g3.extra_params)["norms"] == 4 * 1152 + 2 * 256  # + QK-norm


def test_gpt_oss_biases_and_sinks():
    m = load_model("gpt-oss-20b")
    (g,) = m.layer_groups()
    assert g.kind == "moe" and g.num_layers == 24
    assert dict(g.extra_params)["attention"] == 64  # one sink logit per head
    assert all(o.bias for o in g.linears if o.group in ("attention", "router", "experts"))
    gu = g.op("experts.gate_up_proj")
    assert (gu.in_features, gu.out_features, gu.num_instances, gu.active_instances) == (2880, 5760, 32, 4)


def test_opt_learned_positions_offset_and_projections():
    m = load_model("opt-125m")
    b = m.param_breakdown()
    assert b["embeddings"] == 50272 * 768 + (2048 + 2) * 768  # OPT's learned positions have 2 extra rows
    assert b["lm_head"] == 0
    opt350 = load_model("opt-350m")
    assert opt350.word_embed_proj_dim == 512 and not opt350.final_norm
    assert opt350.param_breakdown()["embeddings"] == 50272 * 512 + 2050 * 1024 + 2 * 512 * 1024
    assert opt350.lm_head_op().in_features == 512


def test_tied_embeddings_llama_3_2():
    m = load_model("llama-3.2-1b")
    assert m.tie_word_embeddings
    assert m.param_breakdown()["lm_head"] == 0
    assert m.total_params() == 1_235_814_400


def test_qwen2_moe_shared_expert_gate():
    m = load_model("qwen1.5-moe-a2.7b")
    (g,) = m.layer_groups()
    assert g.op("shared_expert_gate").out_features == 1
    assert g.op("shared_experts.gate_proj").out_features == 5632
    assert g.op("experts.gate_proj").num_instances == 60


def test_qwen_moe_layer_kinds():
    c = cfg("qwen3-30b-a3b")
    c["mlp_only_layers"] = [0, 1]
    m = spec_from_config(c, name="x")
    assert [(g.kind, g.num_layers) for g in m.layer_groups()] == [("dense", 2), ("moe", 46)]
    assert m.layer_groups()[0].op("down_proj").in_features == 6144
    c = cfg("qwen3-30b-a3b")
    c["decoder_sparse_step"] = 2  # layers 1, 3, 5, ... are MoE
    m = spec_from_config(c, name="x")
    assert m.kinds[:4] == ("dense", "moe", "dense", "moe")


# ----------------------------------------------------------------------------------- KV cache / attention


def test_kv_bytes_per_token():
    assert load_model("deepseek-v3").kv_cache_bytes_per_token("bf16") == 70_272
    assert load_model("llama-2-7b").kv_cache_bytes_per_token("bf16") == 524_288
    assert load_model("llama-2-7b").kv_cache_bytes_per_token("fp8") == 262_144
    assert load_model("llama-2-7b").kv_cache_bytes_per_token(1) == 262_144
    assert load_model("llama-3.1-8b").kv_cache_bytes_per_token() == 131_072  # GQA: 8 kv heads
    assert load_model("deepseek-v3").kv_elements_per_token_per_layer() == 576
    assert load_model("gemma-2b").kv_elements_per_token_per_layer() == 2 * 1 * 256  # MQA
    with pytest.raises(UnknownNameError):
        dtype_bytes("fp7")


def test_mla_attention_forms():
    m = load_model("deepseek-v3")
    pre, dec = m.attention_dims("prefill"), m.attention_dims("decode")
    assert (pre.form, pre.num_q_heads, pre.num_kv_heads, pre.qk_head_dim, pre.v_head_dim) == ("expanded", 128, 128, 192, 128)
    assert (dec.form, dec.num_q_heads, dec.num_kv_heads, dec.qk_head_dim, dec.v_head_dim) == ("absorbed", 128, 1, 576, 512)
    assert dec.kv_elements_per_token == m.kv_elements_per_token_per_layer()
    assert (m.attn_qk_dim, m.attn_v_dim, m.attn_qk_dim_decode, m.attn_v_dim_decode) == (192, 128, 576, 512)
    assert pre.flops_per_pair == 2 * 128 * (192 + 128)
    assert m.mla_kv_up_proj_flops_per_ctx_token() == 2 * m.layer_groups()[0].op("kv_b_proj").params
    llama = load_model("llama-3-8b")
    assert llama.attention_dims("prefill") == llama.attention_dims("decode")
    assert llama.attention_dims().num_kv_heads == 8 and llama.mla_kv_up_proj_flops_per_ctx_token() == 0


def test_sliding_windows():
    mistral = load_model("mistral-7b")
    assert mistral.windows == (4096,) * 32
    assert load_model("mistral-7b-v0.3").num_sliding_layers == 0
    g2 = load_model("gemma-2-2b")
    assert g2.windows[:4] == (4096, None, 4096, None) and g2.num_sliding_layers == 13
    oss = load_model("gpt-oss-120b")
    assert oss.sliding_window == 128 and oss.num_sliding_layers == 18
    g3 = load_model("gemma-3-1b")
    assert g3.windows[:6] == (512,) * 5 + (None,)
    assert load_model("qwen2.5-7b").num_sliding_layers == 0  # use_sliding_window: false
    c = cfg("qwen2.5-7b")
    c.update(use_sliding_window=True, sliding_window=4096, max_window_layers=20)
    q = spec_from_config(c, name="x")
    assert q.windows[19] is None and q.windows[20] == 4096 and q.num_sliding_layers == 8
    # KV for a long sequence: sliding layers keep only their window
    per_layer = g2.kv_elements_per_token_per_layer() * 2
    assert g2.kv_cache_bytes_for_tokens(10_000) == per_layer * (13 * 10_000 + 13 * 4096)
    assert g2.kv_cache_bytes_for_tokens(100) == 100 * g2.kv_cache_bytes_per_token()


# ----------------------------------------------------------------------------------- sharding


def test_params_per_gpu():
    m = load_model("llama-3.1-70b")
    assert m.params_per_gpu() == m.total_params()
    tp8 = m.params_per_gpu(tp=8)
    norms = m.param_breakdown()["norms"]
    assert tp8 == round((m.total_params() - norms) / 8 + norms)
    pp2 = m.params_per_gpu(pp=2)
    assert m.total_params() / 2 < pp2 < m.total_params() / 2 * 1.05
    tied = load_model("llama-3.2-1b")
    assert tied.params_per_gpu() == tied.total_params()
    assert tied.params_per_gpu(pp=2) > tied.total_params() / 2  # the last stage holds its own copy of the head
    assert pp_partition(61, 4) == [15, 15, 16, 15] and pp_partition(32, 3) == [11, 11, 10]  # as vLLM
    v3 = load_model("deepseek-v3")
    # experts split 8 ways either by TP (intermediate dim) or by EP (whole experts): same share
    assert v3.params_per_gpu(tp=8, ep=8) == v3.params_per_gpu(tp=8)
    # replicated ops (router, q_a_proj, kv_a_proj_with_mqa) and norms stay whole on every GPU
    replicated = sum(g.num_layers * o.params for g, o in v3.all_linears() if o.tp == "replicated")
    norms = v3.param_breakdown()["norms"]
    assert v3.params_per_gpu(tp=8) == round((v3.total_params() - replicated - norms) / 8 + replicated + norms)


# ----------------------------------------------------------------------------------- config parsing


def test_rope_parameters_layout_is_accepted():
    old = cfg("llama-3.1-8b")
    new = copy.deepcopy(old)
    scaling = new.pop("rope_scaling")
    new["rope_parameters"] = {"rope_theta": new.pop("rope_theta"), **scaling}
    a, b = spec_from_config(old, name="x"), spec_from_config(new, name="x")
    assert a.total_params() == b.total_params()
    assert a.rope_theta == b.rope_theta == 500000.0
    assert b.rope_scaling["rope_type"] == "llama3"
    # per-layer-type layout (transformers 5 Gemma-style)
    g = cfg("gemma-3-1b")
    g.pop("rope_theta")
    g["rope_parameters"] = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    assert spec_from_config(g, name="x").rope_theta == 1e6


def test_defaults_like_transformers():
    c = cfg("llama-7b")
    assert "num_key_value_heads" not in c and "tie_word_embeddings" in c
    c.pop("tie_word_embeddings")
    m = spec_from_config(c, name="x")
    assert m.num_kv_heads == 32 and not m.tie_word_embeddings


def test_missing_key_names_file_and_key(tmp_path):
    c = cfg("llama-3.1-8b")
    del c["intermediate_size"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(c))
    with pytest.raises(ConfigError, match=r"config\.json: missing required key 'intermediate_size'"):
        load_model(str(p))


def test_invalid_value_names_file_and_key(tmp_path):
    c = cfg("mixtral-8x7b")
    c["num_local_experts"] = "eight"
    p = tmp_path / "mixtral.json"
    p.write_text(json.dumps(c))
    with pytest.raises(ConfigError, match=r"mixtral\.json: num_local_experts: expected an integer"):
        load_model(p)
    c["num_local_experts"] = 0
    p.write_text(json.dumps(c))
    with pytest.raises(ConfigError, match=r"num_local_experts: must be ≥ 1, got 0"):
        load_model(p)
    c = cfg("llama-3-8b")
    c["num_key_value_heads"] = 5
    with pytest.raises(ConfigError, match="must divide num_attention_heads"):
        spec_from_config(c, name="x", source="x.json")


def test_unknown_model_type_lists_supported(tmp_path):
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "mamba", "hidden_size": 8}))
    with pytest.raises(UnsupportedModelError) as ei:
        load_model(str(tmp_path))  # a directory holding config.json
    msg = str(ei.value)
    assert "mamba" in msg and "llama" in msg and "deepseek_v3" in msg and "gpt_oss" in msg
    assert isinstance(ei.value, SimctlError)
    p.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ConfigError, match="missing required key 'model_type'"):
        load_model(str(p))


def test_bad_json_and_missing_paths(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{ not json")
    with pytest.raises(ConfigError, match=r"broken\.json: invalid JSON at line 1"):
        load_model(str(p))
    with pytest.raises(ConfigError, match="no such file"):
        load_model(str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="has no config.json"):
        load_model(str(tmp_path))


def test_load_by_path_matches_catalog(tmp_path):
    d = tmp_path / "my-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg("qwen3-8b")))
    m = load_model(str(d))
    assert m.name == "my-model" and m.total_params() == 8_190_735_360
    assert load_model(str(d / "config.json")).name == "my-model"
    m2 = load_model(str(catalog()["qwen3-8b"].path))
    assert m2.total_params() == 8_190_735_360


# ----------------------------------------------------------------------------------- names and catalog


def test_names_and_aliases():
    assert load_model("meta-llama/Llama-3.1-8B").name == "llama-3.1-8b"
    assert load_model("META-LLAMA/llama-3.1-8b").name == "llama-3.1-8b"
    assert load_model("Llama-3.1-8B").name == "llama-3.1-8b"
    assert load_model("meta-llama/Llama-3.1-8B-Instruct").name == "llama-3.1-8b"
    assert load_model("deepseek-ai/DeepSeek-V3").total_params() == 671_026_404_352
    assert resolve_name("nope") is None
    assert load_model("llama-3.1-8b") is load_model("meta-llama/Llama-3.1-8B")  # cached


def test_unknown_names_suggest():
    with pytest.raises(UnknownNameError, match=r"did you mean: llama-3\.1-8b"):
        load_model("llama-3.1-8")
    with pytest.raises(UnknownNameError, match=r"did you mean: meta-llama/Llama-3\.1-8B.*config\.json"):
        load_model("meta-llama/Llama-3.1-8X")
    with pytest.raises(ConfigError):
        load_model("")


def test_catalog_integrity():
    cat = catalog()
    assert len(cat) >= 20
    keys: dict[str, str] = {}
    for name, e in cat.items():
        assert name == name.lower() and " " not in name
        assert e.path.is_file() and e.path.parent == CATALOG_DIR
        assert e.source.startswith("https://huggingface.co/" + e.hf_repo)
        for k in (name, e.hf_repo, *e.aliases):
            assert keys.setdefault(k.lower(), name) == name, f"{k} is ambiguous"
        m = load_model(name)
        assert m.name == name and m.hf_repo == e.hf_repo
    # every shipped config is listed
    files = {p.name for p in CATALOG_DIR.glob("*.json")} - {"index.json"}
    assert files == {e.file for e in cat.values()}


def test_catalog_spans_all_required_families():
    types = {load_model(n).model_type for n in list_models()}
    # gemma4_text has no bundled config of its own: it is gemma-4-12b's text model under the plain Gemma 4 name,
    # counted == transformers in tests/test_models_hybrid_moe.py
    assert types | {"gemma4_text"} == set(SUPPORTED_MODEL_TYPES)
    names = set(list_models())
    for must in ("llama-7b", "llama-2-7b", "llama-3-8b", "llama-3.1-8b", "llama-3.2-1b", "mistral-7b", "mixtral-8x7b",
                 "qwen2-7b", "qwen2.5-7b", "qwen3-8b", "qwen3-30b-a3b", "deepseek-v2", "deepseek-v2-lite",
                 "deepseek-v3", "gemma-7b", "gemma-2-9b", "phi-3-mini-4k", "gpt-oss-20b", "opt-125m", "gpt2"):
        assert must in names
