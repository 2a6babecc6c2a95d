"""Issue #12: the 2025 families (Llama 4, Qwen3-Next, Qwen3-VL, Gemma 3, DeepSeek-V3.2, Kimi-K2, GLM-4.5/4.6,
MiniMax-M2, OLMo-2, phi-4, Granite 3, Mistral Small 3 / Ministral) count exactly like transformers, and
hybrid attention drives memory and cost.

The pinned counts need neither torch nor transformers; the live recount runs only where transformers is
installed (``pip install 'simctl[hf]'``).
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from hwprofiles import load_profile
from sim.config import EngineConfig, ParallelConfig, PrecisionConfig
from sim.deploy.memory_plan import plan_memory
from sim.deploy.models import UnsupportedModelError, catalog, load_model, spec_from_config
from sim.deploy.models.hf_config import read_config_file

DATA = Path(__file__).parent / "data" / "models" / "families"

# Reference counts from Hugging Face transformers 5.25.0 (torch 2.13 CPU) on the meta device:
# AutoModelForCausalLM.from_config(config) -> (num_parameters(), split of named_parameters() by category);
# multimodal wrappers are built whole with AutoModelForImageTextToText: the first number is the language
# model (decoder + LM head), the last the whole model (None for text-only models).
# Regenerate: python -m sim.deploy.models.verify_hf NAME... --json out.json
NEW_REFERENCE: dict[str, tuple[int, dict[str, int], int | None]] = {
    "nemotron-h-8b": (8100852736, {"embeddings": 536870912, "norms": 413696, "attention": 2798838784, "mlp": 4227858432, "lm_head": 536870912}, None),
    "nemotron-h-4b": (4489223040, {"embeddings": 402653184, "norms": 334848, "attention": 1871642496, "mlp": 1811939328, "lm_head": 402653184}, None),
    "qwen3-next-80b-a3b": (79674391296, {"embeddings": 311164928, "attention": 1541015808, "norms": 209408, "router": 50331648, "experts": 77309411328, "shared_experts": 151093248, "lm_head": 311164928}, None),
    "glm-4.5": (352797814784, {"embeddings": 775946240, "attention": 12542287872, "norms": 970752, "mlp": 566231040, "experts": 335963750400, "router": 72908800, "shared_experts": 2099773440, "lm_head": 775946240}, None),
    "glm-4.5-air": (106852245504, {"embeddings": 620756992, "attention": 5017047040, "mlp": 134479872, "norms": 380928, "experts": 99656663040, "router": 23592960, "shared_experts": 778567680, "lm_head": 620756992}, None),
    "glm-4.6": (352797814784, {"embeddings": 775946240, "attention": 12542287872, "norms": 970752, "mlp": 566231040, "experts": 335963750400, "router": 72908800, "shared_experts": 2099773440, "lm_head": 775946240}, None),
    "minimax-m2": (228689748992, {"embeddings": 614596608, "attention": 2730491904, "norms": 828416, "router": 48758784, "experts": 224680476672, "lm_head": 614596608}, None),
    "olmo-2-7b": (7298617344, {"embeddings": 411041792, "attention": 2147483648, "norms": 528384, "mlp": 4328521728, "lm_head": 411041792}, None),
    "olmo-2-13b": (13716198400, {"embeddings": 513802240, "attention": 4194304000, "norms": 824320, "mlp": 8493465600, "lm_head": 513802240}, None),
    "olmo-2-32b": (32234279936, {"embeddings": 513802240, "attention": 4026531840, "norms": 1053696, "mlp": 27179089920, "lm_head": 513802240}, None),
    "olmo-2-1b": (1484916736, {"embeddings": 205520896, "attention": 268435456, "norms": 133120, "mlp": 805306368, "lm_head": 205520896}, None),
    "kimi-k2": (1026408209408, {"embeddings": 1174405120, "attention": 6168444928, "norms": 1006592, "mlp": 396361728, "experts": 1014686023680, "router": 165150720, "shared_experts": 2642411520, "lm_head": 1174405120}, None),
    "deepseek-v3.2": (671877929216, {"embeddings": 926679040, "attention": 12264931328, "norms": 1022208, "mlp": 1189085184, "experts": 653908770816, "router": 106430464, "shared_experts": 2554331136, "lm_head": 926679040}, None),
    "phi-4": (14659507200, {"embeddings": 513802240, "attention": 2621440000, "mlp": 11010048000, "norms": 414720, "lm_head": 513802240}, None),
    "phi-4-mini": (3836021760, {"embeddings": 614596608, "attention": 805306368, "mlp": 2415919104, "norms": 199680}, None),
    "granite-3.1-8b": (8170848256, {"embeddings": 201338880, "attention": 1677721600, "mlp": 6291456000, "norms": 331776}, None),
    "granite-3.1-2b": (2533531648, {"embeddings": 100669440, "attention": 419430400, "mlp": 2013265920, "norms": 165888}, None),
    "mistral-small-3": (23572403200, {"embeddings": 671088640, "attention": 2097152000, "mlp": 20132659200, "norms": 414720, "lm_head": 671088640}, None),
    "ministral-8b": (8019808256, {"embeddings": 536870912, "attention": 1509949440, "mlp": 5435817984, "norms": 299008, "lm_head": 536870912}, None),
    "llama-4-scout": (107769861120, {"embeddings": 1034485760, "attention": 3019898880, "experts": 96636764160, "router": 3932160, "shared_experts": 6039797760, "norms": 496640, "lm_head": 1034485760}, 108641793536),
    "llama-4-maverick": (400711848960, {"embeddings": 1034485760, "attention": 3019898880, "mlp": 6039797760, "norms": 496640, "experts": 386547056640, "router": 15728640, "shared_experts": 3019898880, "lm_head": 1034485760}, 401583781376),
    "qwen3-vl-8b": (8190735360, {"embeddings": 622329856, "attention": 1509949440, "norms": 308224, "mlp": 5435817984, "lm_head": 622329856}, 8767123696),
    "qwen3-vl-4b": (4022468096, {"embeddings": 388956160, "attention": 943718400, "norms": 196096, "mlp": 2689597440}, 4437815808),
    "qwen3-vl-32b": (32762123264, {"embeddings": 777912320, "attention": 6039797760, "norms": 676864, "mlp": 25165824000, "lm_head": 777912320}, 33357390064),
    "qwen3-vl-30b-a3b": (30532122624, {"embeddings": 311164928, "attention": 905969664, "norms": 210944, "experts": 28991029248, "router": 12582912, "lm_head": 311164928}, 31070754032),
    "qwen3-vl-235b-a22b": (235093634560, {"embeddings": 622329856, "attention": 6702497792, "norms": 798208, "experts": 227096395776, "router": 49283072, "lm_head": 622329856}, 235670022896),
    "gemma-3-27b": (27009346304, {"embeddings": 1409630208, "attention": 4095737856, "norms": 1354496, "mlp": 21502623744}, 27432406640),
    "gemma-3-4b": (3880263168, {"embeddings": 671252480, "attention": 534773760, "norms": 368128, "mlp": 2673868800}, 4300079472),
    "glm-4.7-flash": (29943390976, {"embeddings": 317194240, "attention": 1022623744, "norms": 254720, "mlp": 62914560, "experts": 27783069696, "router": 6029312, "shared_experts": 434110464, "lm_head": 317194240}, None),
    "kimi-k2-thinking": (1026408209408, {"embeddings": 1174405120, "attention": 6168444928, "norms": 1006592, "mlp": 396361728, "experts": 1014686023680, "router": 165150720, "shared_experts": 2642411520, "lm_head": 1174405120}, None),
    "qwen3.5-397b-a17b": (396346350336, {"embeddings": 1017118720, "attention": 6883497600, "norms": 509056, "router": 125829120, "experts": 386547056640, "shared_experts": 755220480, "lm_head": 1017118720}, 396802360816),
    "qwen3-30b-a3b-tf4": (30532122624, {"embeddings": 311164928, "attention": 905969664, "norms": 210944, "experts": 28991029248, "router": 12582912, "lm_head": 311164928}, None),
    "qwen3-30b-a3b-tf5": (30532122624, {"embeddings": 311164928, "attention": 905969664, "norms": 210944, "experts": 28991029248, "router": 12582912, "lm_head": 311164928}, None),
}

TF_PAIR = ("qwen3-30b-a3b-tf4", "qwen3-30b-a3b-tf5")


def _load(name: str):
    return load_model(str(DATA / f"{name}.json")) if name in TF_PAIR else load_model(name)


@pytest.mark.parametrize("name", sorted(NEW_REFERENCE))
def test_total_and_breakdown_match_transformers(name):
    total, breakdown, _ = NEW_REFERENCE[name]
    spec = _load(name)
    assert spec.total_params() == total
    assert {k: v for k, v in spec.param_breakdown().items() if v} == breakdown


def test_at_least_twenty_new_configs_and_every_required_family():
    new = [n for n in NEW_REFERENCE if n not in TF_PAIR]
    assert len(new) >= 20
    types = {_load(n).model_type for n in new}
    for mt in ("llama4_text", "qwen3_next", "qwen3_vl_text", "qwen3_vl_moe_text", "gemma3_text", "deepseek_v32",
               "kimi_k2", "glm4_moe", "minimax_m2", "olmo2", "phi3", "granite", "mistral", "nemotron_h"):
        assert mt in types, mt


def test_transformers_4_and_5_layouts_give_the_same_model():
    a, b = (read_config_file(DATA / f"{n}.json") for n in TF_PAIR)
    assert "num_experts" in a and "num_local_experts" in b and "rope_parameters" in b and "dtype" in b
    sa, sb = _load(TF_PAIR[0]), _load(TF_PAIR[1])
    assert sa.total_params() == sb.total_params() == load_model("qwen3-30b-a3b").total_params()
    assert sa.active_params() == sb.active_params()
    assert sa.rope_theta == sb.rope_theta == 1_000_000.0
    assert sa.torch_dtype == sb.torch_dtype == "bfloat16"


def test_live_recount_with_transformers_when_installed():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sim.deploy.models.verify_hf import hf_counts
    for name in ("olmo-2-1b", "qwen3-vl-4b", "qwen3-30b-a3b-tf5"):
        path = DATA / f"{name}.json" if name in TF_PAIR else catalog()[name].path
        assert hf_counts(read_config_file(path))["total"] == NEW_REFERENCE[name][0]


# ----------------------------------------------------------------------------- blocks, by hand


def test_qwen3_next_gated_deltanet_layer_by_hand():
    s = load_model("qwen3-next-80b-a3b")
    assert s.num_attention_layers == 12 and s.num_linear_attention_layers == 36 and s.model_class == "hybrid"
    la = s.linear_attention
    H = 2048
    key_dim, value_dim = 16 * 128, 32 * 128
    conv_dim = 2 * key_dim + value_dim
    lin = next(g for g in s.layer_groups() if g.mixer == "linear_attention")
    att = next(g for g in s.layer_groups() if g.mixer == "attention")
    mixer = H * (2 * key_dim + 2 * value_dim) + H * 2 * 32 + value_dim * H + conv_dim * 4 + 2 * 32 + 128
    gated = H * 2 * 16 * 256 + 2 * H * 2 * 256 + 16 * 256 * H + 2 * 256  # q+gate, k, v, o, q/k norms
    assert lin.params_per_layer - att.params_per_layer == mixer - gated
    # recurrent state: a 128x128 matrix per value head + 3 conv taps of the q/k/v channels
    assert la.state_elements == 32 * 128 * 128 + conv_dim * 3


def test_active_parameters_of_moe_families():
    # routed experts a token does not visit are the only inactive weights
    s = load_model("llama-4-scout")
    m = s.moe
    per_expert = 3 * s.hidden_size * m.expert_intermediate_size
    assert s.total_params() - s.active_params() == s.num_moe_layers * (m.num_experts - m.top_k) * per_expert
    assert 17.0e9 < s.active_params() < 17.3e9  # "17B active"
    assert 3.0e9 < load_model("qwen3-next-80b-a3b").active_params() < 4.0e9  # "A3B"; NVIDIA card: 3.9B
    assert 31e9 < load_model("kimi-k2").active_params() < 33e9  # "32B activated"


def test_llama4_chunked_local_attention_and_nope_layers():
    s = load_model("llama-4-maverick")
    assert s.no_rope_layers == tuple(range(3, 48, 4))
    assert all((w is None) == (i in s.no_rope_layers) for i, w in enumerate(s.windows))
    assert s.num_moe_layers == 24 and s.kinds[:2] == ("dense", "moe")  # interleave step 2


def test_deepseek_v32_indexer_params_and_cache():
    v32, v3 = load_model("deepseek-v3.2"), load_model("deepseek-v3")
    H, q_lora = 7168, 1536
    per_layer = q_lora * 64 * 128 + H * 128 + H * 64 + 2 * 128
    assert v32.total_params() - v3.total_params() == 61 * per_layer
    assert v32.kv_cache_bytes_per_token("bf16") - v3.kv_cache_bytes_per_token("bf16") == 61 * 128 * 2


def test_multimodal_wrapper_reports_language_model_and_vision_config():
    s = load_model("qwen3-vl-8b")
    assert s.model_class == "multimodal" and s.multimodal["wrapper"] == "qwen3_vl"
    assert s.total_params() == load_model("qwen3-8b").total_params()  # Qwen3-VL's LM is Qwen3-8B's shape


def test_unknown_family_names_nearest_supported():
    with pytest.raises(UnsupportedModelError, match="qwen3_next"):
        spec_from_config({"model_type": "qwen3_nxt"}, name="x")


# ----------------------------------------------------------------------------- hybrid memory


H200 = load_profile("h200")
ENGINE = EngineConfig(max_num_batched_tokens=8192, max_num_seqs=256, block_size=16, gpu_memory_utilization=0.9)
FP8 = PrecisionConfig(weights="fp8")


def test_qwen3_next_on_one_h200_sequences_at_32k_from_group_sizes():
    s = load_model("qwen3-next-80b-a3b")
    plan = plan_memory(s, H200, ParallelConfig(), FP8, ENGINE, 32768)
    # full-attention group: 12 layers x 2 KV heads x 256 x (K+V) x 2 B per token
    attn_per_token = 12 * 2 * 256 * 2 * 2
    assert plan.block_bytes == 16 * attn_per_token
    # linear-attention group: 36 layers x (32 heads x 128 x 128 state + 8192 conv channels x 3 taps) x 2 B
    state = 36 * (32 * 128 * 128 + 8192 * 3) * 2
    assert plan.state_bytes_per_seq == state == 39_518_208
    per_seq_32k = 32768 // 16 * plan.block_bytes + state
    assert plan.max_concurrent_seqs(32768) == int(plan.kv_cache_bytes // per_seq_32k)
    assert plan.num_kv_blocks == math.floor((plan.kv_cache_bytes - 256 * state) / plan.block_bytes)


def test_hybrid_memory_per_sequence_grows_far_less_than_a_dense_gqa_model():
    hyb = load_model("qwen3-next-80b-a3b")
    dense = load_model("qwen2.5-72b")  # dense GQA model of similar size
    grow_h = hyb.kv_cache_bytes_for_tokens(32768) / hyb.kv_cache_bytes_for_tokens(4096)
    grow_d = dense.kv_cache_bytes_for_tokens(32768) / dense.kv_cache_bytes_for_tokens(4096)
    assert grow_d == 8.0 and grow_h < 6.5
    ph = plan_memory(hyb, H200, ParallelConfig(), FP8, ENGINE, 32768)
    pd = plan_memory(dense, H200, ParallelConfig(), FP8, ENGINE, 32768)
    assert ph.max_concurrent_seqs(32768) >= 10 * pd.max_concurrent_seqs(32768)


def test_sliding_and_chunked_layers_cap_their_cache():
    s = load_model("gemma-3-27b")
    per = s.kv_elements_per_token_per_layer() * 2
    full = sum(1 for w in s.windows if w is None)
    assert s.kv_cache_bytes_for_tokens(32768) == per * (full * 32768 + (62 - full) * 1024)


# ----------------------------------------------------------------------------- cost


def _roofline(model):
    from sim.deploy.roofline import RooflineCostModel
    return RooflineCostModel(model, H200, ParallelConfig(), FP8)


def test_linear_attention_decode_cost_does_not_grow_with_context():
    from sim.deploy.step_cost import BatchShapeBuilder

    def decode(ctx: int, n: int):
        b = BatchShapeBuilder()
        for _ in range(n):
            b.add(1, ctx)
        return b.build()
    cm = _roofline(load_model("qwen3-next-80b-a3b"))
    assert cm._linear_layers == 36
    state = (32 * 128 * 128 + 8192 * 3) * 2
    assert cm._linear_state_bytes_seq == state
    assert cm._linear_flops_per_token == 6 * 32 * 128 * 128
    short, long = decode(1000, 8), decode(30000, 8)
    t_s, _, b_s = cm._attention(short)
    t_l, _, b_l = cm._attention(long)
    # only the 12 full-attention layers read more KV; the 36 linear layers move 2 x state per sequence
    kv = cm.kv_bytes_per_token_layer
    assert b_l - b_s == pytest.approx(12 * 8 * 29000 * kv)


@pytest.mark.parametrize("name", ["qwen3-vl-4b", "qwen3-vl-8b", "qwen3-vl-32b", "qwen3-vl-30b-a3b",
                                  "qwen3-vl-235b-a22b"])
def test_qwen3_vl_whole_model_equals_transformers(name):
    spec = load_model(name)
    assert spec.whole_model_params() == NEW_REFERENCE[name][2]


def test_vision_encoder_flops_per_image_by_hand():
    from sim.deploy.models.vision import vision_tower
    spec = load_model("qwen3-vl-8b")
    t = vision_tower("qwen3_vl", spec.multimodal["vision_config"])
    h, inter, d = 1152, 4304, 27
    tokens = 256  # a 512x512 image: 32x32 patches of 16 px merged 2x2
    patches = 1024
    gemm = 2 * patches * (3 * 2 * 16 * 16 * h + d * (4 * h * h + 2 * h * inter))
    attn = 4 * h * patches * patches * d
    merger = 2 * tokens * (4 * h * 4 * h + 4 * h * 4096) * 4
    assert t.flops_per_image(tokens) == gemm + attn + merger


def test_nemotron_h_mamba2_blocks_by_hand():
    s = load_model("nemotron-h-8b")
    assert s.total_params() == 8_100_852_736  # also quoted in a public analysis of the checkpoint
    assert (s.num_attention_layers, s.num_linear_attention_layers, s.num_layers) == (4, 24, 52)
    H, heads, hd, N, g = 4096, 128, 64, 128, 8
    inter, conv_dim = heads * hd, heads * hd + 2 * g * N
    mamba = H * (inter + conv_dim + heads) + inter * H + conv_dim * 4 + conv_dim + 3 * heads + inter + H
    grp = next(x for x in s.layer_groups() if x.mixer == "mamba")
    assert grp.kind == "none" and grp.params_per_layer == mamba
    mlp = next(x for x in s.layer_groups() if x.mixer == "none")
    assert mlp.params_per_layer == 2 * H * 21504 + H  # up/down (squared ReLU) + its norm
    # state: 128 heads x 64 x 128 SSM (float32: vLLM's NemotronH hook, the config names no dtype) + 10240
    # conv channels x 3 taps (bf16, the model dtype), per Mamba layer
    assert s.mamba.ssm_state_dtype == "float32"
    assert s.state_bytes_per_sequence() == 24 * (heads * hd * N * 4 + conv_dim * 3 * 2)
    assert s.kv_cache_bytes_per_token("bf16") == 4 * 2 * 8 * 128 * 2  # only 4 attention layers


def test_nemotron_h_memory_and_cost_on_h200():
    s = load_model("nemotron-h-8b")
    plan = plan_memory(s, H200, ParallelConfig(), PrecisionConfig(), ENGINE, 8192)
    assert plan.block_bytes == 16 * 4 * 2 * 8 * 128 * 2
    assert plan.state_bytes_per_seq == s.state_bytes_per_sequence()
    cm = _roofline(s)
    assert cm._linear_layers == 24 and cm._full_attn_layers == 4
    assert cm._linear_flops_per_token == 6 * 128 * 64 * 128


def test_nemotron_moe_blocks_are_read():
    # Nemotron-3-Nano's 'E' blocks are read since issue #12's follow-up (tests/test_models_hybrid_moe.py)
    c = read_config_file(catalog()["nemotron-3-nano-30b-a3b"].path)
    s = spec_from_config(c, name="x", source="nano.json")
    assert s.num_moe_layers == c["hybrid_override_pattern"].count("E") == 23
