"""Issue #12 leftovers: Nemotron-3-Nano (Mamba-2 + attention + MoE), Granite 4.0-H (Mamba-2 + attention, MoE +
shared MLP on every layer), Falcon-H1 (attention and Mamba-2 side by side in every layer) and Gemma 4 (sliding
and full-attention layers of different head widths and KV-head counts).

Counts equal transformers' ``num_parameters()`` on the meta device; the memory plan and the roofline are
checked against per-block values computed by hand from each ``config.json``.
"""
from __future__ import annotations

import math

import pytest

from hwprofiles import load_profile
from sim.config import EngineConfig, ParallelConfig, PrecisionConfig
from sim.deploy.memory_plan import plan_memory
from sim.deploy.models import catalog, load_model, spec_from_config
from sim.deploy.models.hf_config import read_config_file
from sim.errors import ConfigError

# Reference counts from Hugging Face transformers 5.25.0 (torch 2.13 CPU) on the meta device:
# AutoModelForCausalLM.from_config(config) -> (num_parameters(), split of named_parameters() by category).
# Regenerate: python -m sim.deploy.models.verify_hf NAME... --json out.json
REFERENCE: dict[str, tuple[int, dict[str, int]]] = {
    "nemotron-3-nano-30b-a3b": (31577937344, {"embeddings": 352321536, "norms": 236672, "attention": 1031354688, "experts": 29374808064, "router": 7913472, "shared_experts": 458981376, "lm_head": 352321536}),
    "granite-4.0-h-small": (32207337984, {"embeddings": 411041792, "norms": 626688, "router": 11796480, "experts": 27179089920, "shared_experts": 754974720, "attention": 3849808384}),
    "granite-4.0-h-tiny": (6939037248, {"embeddings": 154140672, "norms": 235008, "router": 3932160, "experts": 6039797760, "shared_experts": 188743680, "attention": 552187968}),
    "granite-4.0-h-1b": (1461538368, {"embeddings": 154140672, "norms": 235008, "attention": 552187968, "mlp": 754974720}),
    "falcon-h1-7b": (7585654880, {"embeddings": 399510528, "mlp": 4982833152, "attention": 1803392096, "norms": 408576, "lm_head": 399510528}),
    # gemma4_unified wrapper built whole (AutoModelForImageTextToText): language model (whole model 11,959,730,176)
    "gemma-4-12b": (11907350272, {"embeddings": 1006632960, "attention": 2406481920, "norms": 769792, "mlp": 8493465600}),
    # Gemma4ForCausalLM of the text config: the dense MLP beside each layer's routed experts counts as
    # shared experts (verify_hf.hf_breakdown), the router's proj, scale and per_expert_scale as router
    "gemma-4-26b-a4b": (25233141760, {"embeddings": 738197504, "attention": 1110179840, "experts": 22837985280,
                                      "shared_experts": 535265280, "router": 10901760, "norms": 612096}),
    # per_layer_inputs: Gemma 4's per_layer_model_projection, per_layer_input_gate, per_layer_projection
    "gemma-4-e2b": (4628569344, {"embeddings": 2751463424, "attention": 278396928, "norms": 285952, "mlp": 1557135360,
                                 "per_layer_inputs": 41287680}),
    "gemma-4-e4b": (7463013376, {"embeddings": 3489660928, "attention": 587202560, "norms": 560128, "mlp": 3303014400,
                                 "per_layer_inputs": 82575360}),
}

H200 = load_profile("h200")
ENGINE = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=256, block_size=16, gpu_memory_utilization=0.9)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_total_and_breakdown_match_transformers(name):
    total, breakdown = REFERENCE[name]
    spec = load_model(name)
    assert spec.total_params() == total
    assert {k: v for k, v in spec.param_breakdown().items() if v} == breakdown


def test_live_recount_with_transformers_when_installed():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sim.deploy.models.verify_hf import hf_counts
    for name in ("granite-4.0-h-1b", "falcon-h1-7b", "gemma-4-12b", "gemma-4-26b-a4b", "gemma-4-e2b"):
        hf = hf_counts(read_config_file(catalog()[name].path))
        assert (hf["total"], hf["breakdown"]) == REFERENCE[name]


def test_counts_against_published_totals():
    # NVIDIA: 31.6B total, 3.2B active (3.6B with embeddings); IBM: H-Small 32B / 9B active, H-Tiny 7B / 1B
    # active, H-1B "1.5B"; TII: Falcon-H1-7B "7B" (7.59B in its model listing)
    nano = load_model("nemotron-3-nano-30b-a3b")
    assert round(nano.total_params() / 1e9, 1) == 31.6
    assert round(nano.active_params() / 1e9, 1) == 3.6
    assert round(nano.active_params(include_embeddings=False) / 1e9, 1) == 3.2
    small, tiny = load_model("granite-4.0-h-small"), load_model("granite-4.0-h-tiny")
    assert round(small.total_params() / 1e9) == 32 and round(small.active_params() / 1e9) == 9
    assert round(tiny.total_params() / 1e9) == 7 and round(tiny.active_params() / 1e9) == 1
    assert round(load_model("granite-4.0-h-1b").total_params() / 1e9, 1) == 1.5
    assert round(load_model("falcon-h1-7b").total_params() / 1e9, 2) == 7.59
    # Google: Gemma 4 26B A4B "25.2B total parameters", "3.8B active" (language model; the ~0.55B vision
    # encoder is not modelled)
    g4 = load_model("gemma-4-26b-a4b")
    assert round(g4.total_params() / 1e9, 1) == 25.2 and round(g4.active_params() / 1e9, 1) == 3.8
    # Google: E2B "2.3B effective" and E4B "4.5B effective" (the per-layer input table left out; cards and
    # listings round E4B to 4.4–4.5B), "5.1B" / "8B" with it and the ~0.45B vision + audio encoders
    for name, effective, whole in (("gemma-4-e2b", 2.3e9, 5.1e9), ("gemma-4-e4b", 4.5e9, 8.0e9)):
        s = load_model(name)
        table = s.per_layer_input_vocab * s.num_layers * s.per_layer_input_size
        assert abs((s.total_params() - table) / effective - 1) < 0.04, name
        assert abs((s.total_params() + 0.45e9) / whole - 1) < 0.02, name


# ----------------------------------------------------------------------------- blocks, by hand


def test_nemotron3_nano_layout_and_moe_block_by_hand():
    s = load_model("nemotron-3-nano-30b-a3b")
    assert (s.num_linear_attention_layers, s.num_attention_layers, s.num_moe_layers, s.num_layers) == (23, 6, 23, 52)
    assert s.model_class == "hybrid" and s.family == "Nemotron-3" and s.is_moe
    H, E, k, inter, shared = 2688, 128, 6, 1856, 3712
    moe = next(g for g in s.layer_groups() if g.kind == "moe")
    assert moe.mixer == "none" and moe.num_layers == 23
    # router Linear(H, E) without bias; experts and the shared expert are up/down (squared ReLU, no gate)
    assert moe.params_per_layer == H * E + E * 2 * H * inter + 2 * H * shared + H  # + its one RMSNorm
    assert s.buffer_params() == 23 * E  # e_score_correction_bias (a buffer, not a parameter)
    # a token visits 6 of the 128 experts
    assert s.total_params() - s.active_params() == 23 * (E - k) * 2 * H * inter
    assert moe.flops_per_token_per_layer == 2 * (H * E + k * 2 * H * inter + 2 * H * shared)
    heads, hd, N, g = 64, 64, 128, 8
    conv_dim = heads * hd + 2 * g * N
    mamba = next(x for x in s.layer_groups() if x.mixer == "mamba")
    assert mamba.params_per_layer == (H * (heads * hd + conv_dim + heads) + heads * hd * H + conv_dim * 5
                                      + 3 * heads + heads * hd + H)


def test_granite_hybrid_layer_by_hand():
    s = load_model("granite-4.0-h-tiny")
    assert (s.num_linear_attention_layers, s.num_attention_layers, s.num_moe_layers) == (36, 4, 40)
    assert [i for i, m in enumerate(s.mixers) if m == "attention"] == [5, 15, 25, 35]
    H, E, inter, shared = 1536, 64, 512, 1024
    heads, hd, N = 48, 64, 128
    inner, conv_dim = 2 * H, 2 * H + 2 * N
    assert heads * hd == inner
    moe_mlp = H * E + E * 3 * H * inter + 3 * H * shared  # router, experts (fused gate_up + down), shared MLP
    mamba = H * (inner + conv_dim + heads) + inner * H + conv_dim * 5 + 3 * heads + inner
    attn = H * 12 * 128 + 2 * H * 4 * 128 + 12 * 128 * H
    groups = {g.mixer: g for g in s.layer_groups()}
    assert groups["mamba"].params_per_layer == mamba + moe_mlp + 2 * H
    assert groups["attention"].params_per_layer == attn + moe_mlp + 2 * H
    assert s.tie_word_embeddings and s.param_breakdown()["lm_head"] == 0
    dense = load_model("granite-4.0-h-1b")  # num_local_experts 0: the shared MLP is the layer's MLP
    assert not dense.is_moe and dense.intermediate_size == 4096
    assert dense.total_params() == dense.active_params()


def test_falcon_h1_parallel_layer_by_hand():
    s = load_model("falcon-h1-7b")
    assert s.mixers == ("attention_mamba",) * 44
    assert s.num_attention_layers == s.num_linear_attention_layers == 44
    H, I = 3072, 12288
    heads, hd, N = 24, 128, 256
    inner, conv_dim = heads * hd, 3072 + 2 * N
    attn = H * 12 * 128 + 2 * H * 2 * 128 + 12 * 128 * H  # head_dim 128, not H / heads
    mamba = H * (inner + conv_dim + heads) + inner * H + conv_dim * 5 + 3 * heads + inner  # + gated RMSNorm
    (g,) = s.layer_groups()
    assert g.params_per_layer == attn + mamba + 3 * H * I + 2 * H


def test_falcon_h1_mamba_norm_and_projector_bias_follow_their_keys():
    c = read_config_file(catalog()["falcon-h1-7b"].path)
    base = spec_from_config(c, name="a")
    no_norm = spec_from_config({**c, "mamba_rms_norm": False}, name="b")
    assert base.total_params() - no_norm.total_params() == 44 * 3072
    biased = spec_from_config({**c, "projectors_bias": True}, name="c")
    assert biased.total_params() - base.total_params() == 44 * 3072  # out_proj bias only


def test_refusals_name_key_and_file():
    c = read_config_file(catalog()["nemotron-3-nano-30b-a3b"].path)
    with pytest.raises(ConfigError, match="nano.json: moe_latent_size.*not supported"):
        spec_from_config({**c, "moe_latent_size": 1024}, name="x", source="nano.json")
    g = read_config_file(catalog()["granite-4.0-h-tiny"].path)
    with pytest.raises(ConfigError, match="g.json: mamba_d_head"):
        spec_from_config({**g, "mamba_d_head": 60}, name="x", source="g.json")
    with pytest.raises(ConfigError, match="g.json: layer_types.*'conv'"):
        spec_from_config({**g, "layer_types": ["conv"] * 40}, name="x", source="g.json")


# ----------------------------------------------------------------------------- memory, by hand


def _state_bytes(heads, hd, N, groups, ssm_bytes=2, conv_kernel=4):
    """One Mamba-2 layer's state page as vLLM keeps it: the SSM state in ``ssm_bytes`` per element, the
    conv window in the model dtype (bf16), whatever the KV-cache dtype."""
    conv_dim = heads * hd + 2 * groups * N
    return heads * hd * N * ssm_bytes + conv_dim * (conv_kernel - 1) * 2


@pytest.mark.parametrize("name, mamba_layers, attn_layers, kv_heads, state", [
    # Nemotron-3-Nano: 23 Mamba layers of 64 heads x 64 x 128 (8 groups), the SSM state in float32 (its
    # config's mamba_ssm_cache_dtype, which vLLM's NemotronH hook applies); 6 attention layers, 2 KV heads
    ("nemotron-3-nano-30b-a3b", 23, 6, 2, _state_bytes(64, 64, 128, 8, ssm_bytes=4)),
    # Granite-4.0-H-Small: 36 Mamba layers of 128 x 64 x 128 (1 group); 4 attention layers, 8 KV heads
    ("granite-4.0-h-small", 36, 4, 8, _state_bytes(128, 64, 128, 1)),
    # Falcon-H1-7B: every layer holds both a KV cache (2 KV heads) and a Mamba state (24 x 128 x 256)
    ("falcon-h1-7b", 44, 44, 2, _state_bytes(24, 128, 256, 1)),
])
def test_memory_plan_groups_on_one_h200(name, mamba_layers, attn_layers, kv_heads, state):
    s = load_model(name)
    plan = plan_memory(s, H200, ParallelConfig(), PrecisionConfig(), ENGINE, 32768)
    assert plan.block_bytes == 16 * attn_layers * 2 * kv_heads * 128 * 2
    assert plan.state_bytes_per_seq == mamba_layers * state == s.state_bytes_per_sequence()
    per_seq_32k = 32768 // 16 * plan.block_bytes + plan.state_bytes_per_seq
    assert plan.max_concurrent_seqs(32768) == int(plan.kv_cache_bytes // per_seq_32k)
    assert plan.num_kv_blocks == math.floor((plan.kv_cache_bytes - 256 * plan.state_bytes_per_seq) / plan.block_bytes)
    # a sequence's recurrent state does not grow with context; only the attention layers' KV does
    assert s.kv_cache_bytes_for_tokens(32768) - s.kv_cache_bytes_for_tokens(4096) == \
        attn_layers * 2 * kv_heads * 128 * 2 * (32768 - 4096)


def test_recurrent_state_dtype_follows_vllm_not_the_kv_cache_dtype():
    """vLLM keeps the Mamba / Gated-DeltaNet state in its mamba cache dtypes: the conv window in the model
    dtype, the SSM state in the model dtype unless a per-model hook sets it (NemotronH: the config's
    mamba_ssm_cache_dtype, float32 when absent; Qwen3.5: the config's mamba_ssm_dtype). An fp8 KV cache
    halves the attention blocks and leaves the state as it is."""
    import json

    from sim.deploy.models import CATALOG_DIR

    g = load_model("granite-4.0-h-small")
    bf16 = plan_memory(g, H200, ParallelConfig(), PrecisionConfig(), ENGINE, 8192)
    fp8 = plan_memory(g, H200, ParallelConfig(), PrecisionConfig(kv_cache="fp8"), ENGINE, 8192)
    assert fp8.block_bytes * 2 == bf16.block_bytes
    assert fp8.state_bytes_per_seq == bf16.state_bytes_per_seq == 36 * _state_bytes(128, 64, 128, 1)
    nh = json.loads((CATALOG_DIR / "nemotron-h-8b.json").read_text())
    assert "mamba_ssm_cache_dtype" not in nh
    heads, hd, N, conv = 128, 64, 128, (128 * 64 + 2 * 8 * 128) * 3
    for cfg, ssm_bytes in ((nh, 4), ({**nh, "mamba_ssm_cache_dtype": "bfloat16"}, 2),
                           ({**nh, "mamba_ssm_cache_dtype": "float32"}, 4)):
        assert spec_from_config(cfg, name="n").state_bytes_per_sequence() == 24 * (heads * hd * N * ssm_bytes + conv * 2)
    with pytest.raises(ConfigError, match="nh.json: .*mamba_ssm_cache_dtype.*unknown dtype 'float33'"):
        spec_from_config({**nh, "mamba_ssm_cache_dtype": "float33"}, name="x", source="nh.json")
    q = json.loads((CATALOG_DIR / "qwen3.5-397b-a17b.json").read_text())
    auto = spec_from_config(q, name="q")
    la = auto.linear_attention
    assert la.ssm_state_dtype is None
    text = dict(q["text_config"], mamba_ssm_dtype="float32")
    fp32 = spec_from_config({**q, "text_config": text}, name="q32")
    extra = fp32.state_bytes_per_sequence() - auto.state_bytes_per_sequence()
    assert extra == auto.num_linear_attention_layers * la.num_v_heads * la.k_head_dim * la.v_head_dim * 2


def test_nemotron3_nano_state_bytes_by_hand():
    s = load_model("nemotron-3-nano-30b-a3b")
    # 64 x 64 x 128 = 524,288 SSM elements in float32 + (4096 + 2 x 8 x 128) x 3 = 18,432 conv elements in
    # bf16, 23 layers (vLLM: mamba_ssm_cache_dtype from the config, the conv state in the model dtype)
    assert s.state_bytes_per_sequence() == 23 * (524_288 * 4 + 18_432 * 2) == 49_082_368
    assert s.kv_cache_bytes_per_token("bf16") == 6 * 2 * 2 * 128 * 2 == 6144


# ----------------------------------------------------------------------------- cost, by hand


def _roofline(model, tp=1):
    from sim.deploy.roofline import RooflineCostModel
    return RooflineCostModel(model, H200, ParallelConfig(tp=tp), PrecisionConfig())


def _decode(ctx: int, n: int):
    from sim.deploy.step_cost import BatchShapeBuilder
    b = BatchShapeBuilder()
    for _ in range(n):
        b.add(1, ctx)
    return b.build()


@pytest.mark.parametrize("name, mamba_layers, attn_layers, heads, hd, N, state", [
    ("nemotron-3-nano-30b-a3b", 23, 6, 64, 64, 128, _state_bytes(64, 64, 128, 8, ssm_bytes=4)),
    ("granite-4.0-h-tiny", 36, 4, 48, 64, 128, _state_bytes(48, 64, 128, 1)),
    ("falcon-h1-7b", 44, 44, 24, 128, 256, _state_bytes(24, 128, 256, 1)),
])
def test_mamba_cost_per_token_and_state_traffic(name, mamba_layers, attn_layers, heads, hd, N, state):
    cm = _roofline(load_model(name))
    assert cm._linear_layers == mamba_layers and cm._full_attn_layers == attn_layers
    # per head a hd x N state: decay + rank-1 update x·Bᵀ + read-out by C = 3 products of 2 FLOPs per element
    assert cm._linear_flops_per_token == 6 * heads * hd * N
    assert cm._linear_state_bytes_seq == state
    short, long = _decode(1000, 8), _decode(30000, 8)
    b_s, b_l = cm._attention(short)[2], cm._attention(long)[2]
    # only the attention layers read more KV as the context grows; Mamba layers move 2 x state per sequence
    assert b_l - b_s == pytest.approx(attn_layers * 8 * 29000 * cm.kv_bytes_per_token_layer)
    mamba_flops = mamba_layers * 8 * 6 * heads * hd * N
    mamba_bytes = mamba_layers * 2 * 8 * state
    _, f_0, b_0 = cm._attention(_decode(0, 8))
    # at context 0 each decode token reads its own key/value (1 pair), writes its K/V and reads/writes q/o
    attn_only_bytes_0 = attn_layers * 8 * (cm.qo_bytes_per_token_layer + 2 * cm.kv_bytes_per_token_layer)
    assert b_0 == pytest.approx(mamba_bytes + attn_only_bytes_0)
    assert f_0 - mamba_flops == pytest.approx(attn_layers * 8 * cm.attn_flops_per_pair)


def test_nemotron3_gemm_flops_per_token_by_hand():
    s = load_model("nemotron-3-nano-30b-a3b")
    # 2 FLOPs per weight a token uses in a GEMM: everything active except the embedding lookup, the norms and
    # the Mamba layers' conv taps (+ bias) and dt_bias / A_log / D (element-wise, not GEMMs); no biases
    conv_dim = 64 * 64 + 2 * 8 * 128
    non_gemm = 2688 * 131072 + s.param_breakdown()["norms"] + 23 * (conv_dim * 5 + 3 * 64)
    assert s.linear_flops_per_token() == 2 * (s.active_params() - non_gemm)
    assert _roofline(s).gemm_flops_per_token == s.linear_flops_per_token(include_lm_head=False)


def test_tensor_parallel_splits_mamba_heads_and_state():
    s = load_model("nemotron-3-nano-30b-a3b")
    p1 = plan_memory(s, H200, ParallelConfig(tp=1), PrecisionConfig(), ENGINE, 8192)
    p2 = plan_memory(s, H200, ParallelConfig(tp=2), PrecisionConfig(), ENGINE, 8192)
    assert p2.state_bytes_per_seq * 2 == p1.state_bytes_per_seq
    assert _roofline(s, tp=2)._linear_flops_per_token * 2 == _roofline(s)._linear_flops_per_token


# ----------------------------------------------------------------------------- Gemma 4


G4 = {"H": 3840, "nh": 16, "hd": 256, "kv": 8, "ghd": 512, "gkv": 1, "inter": 15360, "vocab": 262144}


def test_gemma4_two_attention_geometries_by_hand():
    s = load_model("gemma-4-12b")
    g = G4
    assert s.model_class == "multimodal" and s.family == "Gemma-4" and s.vision_params() is None
    assert [i for i, m in enumerate(s.mixers) if m == "global_attention"] == list(range(5, 48, 6))
    assert all((w is None) == (m == "global_attention") for w, m in zip(s.windows, s.mixers))
    H = g["H"]
    local = H * g["nh"] * g["hd"] * 2 + H * g["kv"] * g["hd"] * 2 + 2 * g["hd"]  # q, o, k, v, q/k norms
    glob = H * g["nh"] * g["ghd"] * 2 + H * g["gkv"] * g["ghd"] + 2 * g["ghd"]  # K = V: no v_proj
    mlp = 3 * H * g["inter"] + 4 * H  # GeGLU + 4 RMSNorms per layer
    groups = {x.mixer: x for x in s.layer_groups()}
    assert groups["attention"].params_per_layer == local + mlp and groups["attention"].num_layers == 40
    assert groups["global_attention"].params_per_layer == glob + mlp and groups["global_attention"].num_layers == 8
    assert s.total_params() == g["vocab"] * H + 40 * (local + mlp) + 8 * (glob + mlp) + H  # tied, final norm


def test_gemma4_kv_cache_per_layer_group_by_hand():
    s = load_model("gemma-4-12b")
    local, glob = 2 * 8 * 256, 2 * 1 * 512  # K and V elements per token per layer
    assert s.kv_cache_bytes_per_token("bf16") == (40 * local + 8 * glob) * 2 == 344_064
    n = 32768
    assert s.kv_cache_bytes_for_tokens(n) == (40 * local * 1024 + 8 * glob * n) * 2  # sliding layers keep 1024
    plan = plan_memory(s, H200, ParallelConfig(), PrecisionConfig(), ENGINE, n)
    assert plan.block_bytes == 16 * (40 * local + 8 * glob) * 2
    # TP=2 splits the 8 local KV heads; the one global KV head is replicated on both ranks
    plan2 = plan_memory(s, H200, ParallelConfig(tp=2), PrecisionConfig(), ENGINE, n)
    assert plan2.block_bytes == 16 * (40 * 2 * 4 * 256 + 8 * 2 * 1 * 512) * 2
    # PP=2: each stage holds 24 layers (20 sliding + 4 full)
    plan_pp = plan_memory(s, H200, ParallelConfig(pp=2), PrecisionConfig(), ENGINE, n)
    assert plan_pp.block_bytes == 16 * (20 * local + 4 * glob) * 2


def test_gemma4_attention_cost_by_hand():
    cm = _roofline(load_model("gemma-4-12b"))
    assert cm._full_attn_layers == 8 and cm._window_layers == ((1024, 40),)
    local_kv, glob_kv = 2 * 8 * 256 * 2, 2 * 1 * 512 * 2  # bytes per token per layer
    assert cm.kv_bytes_per_token_layer == local_kv
    short, long = _decode(1000, 8), _decode(30000, 8)
    _, f_s, b_s = cm._attention(short)
    _, f_l, b_l = cm._attention(long)
    # global layers read every cached token at their width; sliding layers at most their 1024-token window
    window_growth = 40 * (8 * 1024 - 8 * 1001) * local_kv
    assert b_l - b_s == pytest.approx(8 * 8 * 29000 * glob_kv + window_growth)
    # FLOPs per (query, key) pair: 2 · heads · (qk + v) = 2 · 16 · 1024 globally, 2 · 16 · 512 locally
    pair_local, pair_global = 2 * 16 * 512, 2 * 16 * 1024
    assert cm.attn_flops_per_pair == pair_local
    assert f_l - f_s == pytest.approx(8 * 8 * 29000 * pair_global + 40 * (8 * 1024 - 8 * 1001) * pair_local)


def test_gemma4_text_and_unified_text_count_alike_and_refusals():
    c = read_config_file(catalog()["gemma-4-12b"].path)
    text = dict(c["text_config"], model_type="gemma4_text")
    assert spec_from_config(text, name="t").total_params() == REFERENCE["gemma-4-12b"][0]  # transformers: same
    # KV sharing needs an earlier layer of every shared type to hold the cache
    for value, what in ((48, "leaves none"), (2, "no earlier sliding_attention")):
        with pytest.raises(ConfigError, match=f"g4.json: num_kv_shared_layers: .*{what}"):
            spec_from_config({**text, "layer_types": ["full_attention"] * 46 + ["sliding_attention"] * 2,
                              "num_kv_shared_layers": value}, name="x", source="g4.json")


def test_gemma4_runs_end_to_end_with_both_kv_widths():
    from sim.config import parse_experiment
    from sim.runs.runner import run
    exp = {"name": "g4", "seed": 0, "model": "gemma-4-12b", "hardware": "h100-sxm", "parallel": {"tp": 1},
           "engine": {"policy": "vllm", "max_num_seqs": 32, "max_num_batched_tokens": 8192,
                      "enable_prefix_caching": False, "max_model_len": 32768},
           "workload": {"num_requests": 60, "arrival": {"process": "poisson", "rate": 2.0},
                        "input_tokens": {"dist": "lognormal", "mean": 6000, "std": 3000, "max": 30000},
                        "output_tokens": 64}}
    res = run(parse_experiment(exp))
    assert (res.requests["status"] == "completed").all() and len(res.requests) == 60
    # a 32k-token request of this model needs 2,048 blocks of 16 tokens at (40 × 4096 + 8 × 1024) × 2 B each
    model = load_model("gemma-4-12b")
    plan = plan_memory(model, load_profile("h100-sxm"), ParallelConfig(), PrecisionConfig(),
                       EngineConfig(max_num_batched_tokens=8192, max_num_seqs=32, enable_prefix_caching=False),
                       32768)
    assert plan.block_bytes == 16 * (40 * 4096 + 8 * 1024) * 2


def test_gemma4_moe_block_by_hand():
    """Gemma 4 26B-A4B: every layer runs the dense GeGLU MLP and, beside it, 128 routed experts (top 8)
    summed into one output (transformers' Gemma4TextDecoderLayer); three more RMSNorms per layer and the
    router's scale vectors; 5 of the 30 layers are full attention with 2 KV heads and K = V."""
    s = load_model("gemma-4-26b-a4b")
    H, E, k, I_e, I, V = 2816, 128, 8, 704, 2112, 262144
    assert s.family == "Gemma-4" and s.is_moe and s.num_moe_layers == 30
    assert [i for i, m in enumerate(s.mixers) if m == "global_attention"] == [5, 11, 17, 23, 29]
    m = s.moe
    assert (m.num_experts, m.top_k, m.expert_intermediate_size, m.shared_intermediate_size) == (E, k, I_e, I)
    local = H * 16 * 256 * 2 + H * 8 * 256 * 2 + 2 * 256  # q, o, k, v, q/k norms
    glob = H * 16 * 512 * 2 + H * 2 * 512 + 2 * 512  # K = V: no v_proj
    experts = E * 3 * H * I_e
    per_layer = experts + 3 * H * I + (H * E + H + E) + 7 * H  # experts, dense MLP, router, 7 RMSNorms
    groups = {g.mixer: g for g in s.layer_groups()}
    assert groups["attention"].params_per_layer == local + per_layer and groups["attention"].num_layers == 25
    assert groups["global_attention"].params_per_layer == glob + per_layer
    assert s.total_params() == V * H + 25 * local + 5 * glob + 30 * per_layer + H == REFERENCE["gemma-4-26b-a4b"][0]
    # active: everything but the 120 experts a token does not visit
    assert s.active_params() == s.total_params() - 30 * (E - k) * 3 * H * I_e


def _serve(model: str, hardware: str, parallel: dict, num_requests: int, rate: float, max_num_seqs: int):
    """A short Poisson run of ``model`` (1,500 ± 800 in, 64 out); every request must complete."""
    from sim.config import parse_experiment
    from sim.runs.runner import run
    exp = {"name": "g4", "seed": 0, "model": model, "hardware": hardware, "parallel": parallel,
           "engine": {"policy": "vllm", "max_num_seqs": max_num_seqs, "max_model_len": 8192},
           "workload": {"num_requests": num_requests, "arrival": {"process": "poisson", "rate": rate},
                        "input_tokens": {"dist": "lognormal", "mean": 1500, "std": 800, "max": 6000},
                        "output_tokens": 64}}
    res = run(parse_experiment(exp))
    assert (res.requests["status"] == "completed").all() and len(res.requests) == num_requests
    return res.summary


def test_gemma4_moe_runs_with_expert_parallelism():
    """The MoE Gemma 4 serves in simctl run, on one H100 and with its experts split over two (EP2)."""
    for parallel in ({"tp": 1}, {"tp": 2, "ep": 2}):
        assert 0 < _serve("gemma-4-26b-a4b", "h100-sxm", parallel, 40, 4.0, 32)["mean_tpot_ms"] < 50


def test_gemma4_per_layer_inputs_and_kv_sharing_by_hand():
    """Gemma 4 E2B (transformers' Gemma4TextModel / Gemma4TextDecoderLayer): a per-layer input table of
    35 × 256 per token, its projection from the hidden state and norm; per layer a gate H → 256, a
    projection 256 → H and a fifth RMSNorm. The last 20 layers reuse the cache of layers 13 (sliding) and
    14 (full): no k/v projections, no k norm, no KV of their own, and MLPs twice as wide."""
    s = load_model("gemma-4-e2b")
    H, P, L, V, I = 1536, 256, 35, 262144, 6144
    assert s.kv_shared == tuple(i >= 15 for i in range(L)) and s.double_wide_shared_mlp
    assert [i for i, m in enumerate(s.mixers) if m == "global_attention"] == list(range(4, 35, 5))
    ple = H * P * 3 + H  # model projection slice, gate, projection; post_per_layer_input_norm
    mlp = lambda width: 3 * H * width + 4 * H  # GeGLU + 4 RMSNorms
    q_o = H * 8 * 256 * 2
    local = q_o + H * 1 * 256 * 2 + 2 * 256  # q, o, k, v, q/k norms (1 KV head)
    glob = H * 8 * 512 * 2 + H * 1 * 512 * 2 + 2 * 512  # no K = V on E2B: v_proj at the global width
    shared_local, shared_glob = q_o + 256, H * 8 * 512 * 2 + 512  # q, o and the q norm only
    groups = {(g.mixer, g.kv_shared): g for g in s.layer_groups()}
    assert {k: g.num_layers for k, g in groups.items()} == {("attention", False): 12, ("attention", True): 16,
                                                            ("global_attention", False): 3, ("global_attention", True): 4}
    assert groups[("attention", False)].params_per_layer == local + mlp(I) + ple
    assert groups[("attention", True)].params_per_layer == shared_local + mlp(2 * I) + ple
    assert groups[("global_attention", True)].params_per_layer == shared_glob + mlp(2 * I) + ple
    tables = V * H + V * L * P
    total = tables + 12 * (local + mlp(I)) + 3 * (glob + mlp(I)) + 16 * (shared_local + mlp(2 * I)) \
        + 4 * (shared_glob + mlp(2 * I)) + L * ple + H + P  # final norm, per_layer_projection_norm
    assert s.total_params() == total == REFERENCE["gemma-4-e2b"][0]
    # KV: only the 15 layers before the shared ones store a cache (12 sliding, 3 full, one KV head each)
    assert s.kv_cache_bytes_per_token("bf16") == (12 * 2 * 256 + 3 * 2 * 512) * 2 == 18_432
    n = 32768
    assert s.kv_cache_bytes_for_tokens(n) == (12 * 2 * 256 * 512 + 3 * 2 * 512 * n) * 2  # windows of 512
    plan = plan_memory(s, load_profile("l4"), ParallelConfig(), PrecisionConfig(),
                       EngineConfig(max_num_batched_tokens=8192, max_num_seqs=64), n)
    assert plan.block_bytes == 16 * 18_432
    assert s.params_per_gpu(1) == s.total_params()


def test_gemma4_e4b_serves_on_one_l4():
    """E4B on one L4 (24 GB): weights of 7.46 B parameters in bf16 plus KV for its 24 cache-holding layers."""
    assert 0 < _serve("gemma-4-e4b", "l4", {"tp": 1}, 30, 1.0, 16)["mean_tpot_ms"] < 200
