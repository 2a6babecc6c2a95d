"""Parameter counts of every catalog model equal Hugging Face ``transformers``' own, category by category.

The reference numbers below were produced by instantiating each bundled config.json with
``transformers`` (see the comment on ``HF_REFERENCE``); the test needs neither torch nor transformers.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from sim.deploy.models import list_models, load_model

# Reference counts from Hugging Face transformers 5.23: AutoModelForCausalLM.from_config(<catalog config>)
# on the meta device; total = model.num_parameters(), split of named_parameters() by category.
# Regenerate with: python -m sim.deploy.models.verify_hf --json out.json  (needs torch + transformers).
HF_REFERENCE: dict[str, tuple[int, dict[str, int]]] = {
    "llama-7b": (6738415616, {"embeddings": 131072000, "attention": 2147483648, "mlp": 4328521728, "norms": 266240, "lm_head": 131072000}),
    "llama-2-7b": (6738415616, {"embeddings": 131072000, "attention": 2147483648, "mlp": 4328521728, "norms": 266240, "lm_head": 131072000}),
    "llama-2-13b": (13015864320, {"embeddings": 163840000, "attention": 4194304000, "mlp": 8493465600, "norms": 414720, "lm_head": 163840000}),
    "llama-2-70b": (68976648192, {"embeddings": 262144000, "attention": 12079595520, "mlp": 56371445760, "norms": 1318912, "lm_head": 262144000}),
    "llama-3-8b": (8030261248, {"embeddings": 525336576, "attention": 1342177280, "mlp": 5637144576, "norms": 266240, "lm_head": 525336576}),
    "llama-3-70b": (70553706496, {"embeddings": 1050673152, "attention": 12079595520, "mlp": 56371445760, "norms": 1318912, "lm_head": 1050673152}),
    "llama-3.1-8b": (8030261248, {"embeddings": 525336576, "attention": 1342177280, "mlp": 5637144576, "norms": 266240, "lm_head": 525336576}),
    "llama-3.1-70b": (70553706496, {"embeddings": 1050673152, "attention": 12079595520, "mlp": 56371445760, "norms": 1318912, "lm_head": 1050673152}),
    "llama-3.1-405b": (405853388800, {"embeddings": 2101346304, "attention": 71873593344, "mlp": 329772957696, "norms": 4145152, "lm_head": 2101346304}),
    "llama-3.2-1b": (1235814400, {"embeddings": 262668288, "attention": 167772160, "mlp": 805306368, "norms": 67584}),
    "llama-3.2-3b": (3212749824, {"embeddings": 394002432, "attention": 704643072, "mlp": 2113929216, "norms": 175104}),
    "llama-3.3-70b": (70553706496, {"embeddings": 1050673152, "attention": 12079595520, "mlp": 56371445760, "norms": 1318912, "lm_head": 1050673152}),
    "mistral-7b": (7241732096, {"embeddings": 131072000, "attention": 1342177280, "mlp": 5637144576, "norms": 266240, "lm_head": 131072000}),
    "mistral-7b-v0.3": (7248023552, {"embeddings": 134217728, "attention": 1342177280, "mlp": 5637144576, "norms": 266240, "lm_head": 134217728}),
    "mixtral-8x7b": (46702792704, {"embeddings": 131072000, "attention": 1342177280, "router": 1048576, "experts": 45097156608, "norms": 266240, "lm_head": 131072000}),
    "mixtral-8x22b": (140620634112, {"embeddings": 196608000, "attention": 4932501504, "router": 2752512, "experts": 135291469824, "norms": 694272, "lm_head": 196608000}),
    "qwen2-7b": (7615616512, {"embeddings": 544997376, "attention": 822212608, "mlp": 5703204864, "norms": 204288, "lm_head": 544997376}),
    "qwen2.5-0.5b": (494032768, {"embeddings": 136134656, "attention": 44067840, "mlp": 313786368, "norms": 43904}),
    "qwen2.5-1.5b": (1543714304, {"embeddings": 233373696, "attention": 154198016, "mlp": 1156055040, "norms": 87552}),
    "qwen2.5-3b": (3085938688, {"embeddings": 311164928, "attention": 339830784, "mlp": 2434793472, "norms": 149504}),
    "qwen2.5-7b": (7615616512, {"embeddings": 544997376, "attention": 822212608, "mlp": 5703204864, "norms": 204288, "lm_head": 544997376}),
    "qwen2.5-14b": (14770033664, {"embeddings": 778567680, "attention": 3020242944, "mlp": 10192158720, "norms": 496640, "lm_head": 778567680}),
    "qwen2.5-32b": (32763876352, {"embeddings": 778567680, "attention": 4026990592, "mlp": 27179089920, "norms": 660480, "lm_head": 778567680}),
    "qwen2.5-72b": (72706203648, {"embeddings": 1245708288, "attention": 12080414720, "mlp": 58133053440, "norms": 1318912, "lm_head": 1245708288}),
    "qwen1.5-moe-a2.7b": (14315784192, {"embeddings": 311164928, "attention": 402800640, "router": 2949120, "experts": 12457082880, "shared_experts": 830521344, "norms": 100352, "lm_head": 311164928}),
    "qwen3-0.6b": (596049920, {"embeddings": 155582464, "attention": 176160768, "norms": 65536, "mlp": 264241152}),
    "qwen3-8b": (8190735360, {"embeddings": 622329856, "attention": 1509949440, "norms": 308224, "mlp": 5435817984, "lm_head": 622329856}),
    "qwen3-32b": (32762123264, {"embeddings": 777912320, "attention": 6039797760, "norms": 676864, "mlp": 25165824000, "lm_head": 777912320}),
    "qwen3-30b-a3b": (30532122624, {"embeddings": 311164928, "attention": 905969664, "norms": 210944, "experts": 28991029248, "router": 12582912, "lm_head": 311164928}),
    "qwen3-235b-a22b": (235093634560, {"embeddings": 622329856, "attention": 6702497792, "norms": 798208, "experts": 227096395776, "router": 49283072, "lm_head": 622329856}),
    "deepseek-v2-lite": (15706484224, {"embeddings": 209715200, "attention": 371589120, "norms": 126464, "mlp": 67239936, "experts": 14394851328, "router": 3407872, "shared_experts": 449839104, "lm_head": 209715200}),
    "deepseek-v2": (235741434880, {"embeddings": 524288000, "attention": 8953528320, "norms": 742400, "mlp": 188743680, "experts": 222717542400, "router": 48332800, "shared_experts": 2783969280, "lm_head": 524288000}),
    "deepseek-v3": (671026404352, {"embeddings": 926679040, "attention": 11413422080, "norms": 1006592, "mlp": 1189085184, "experts": 653908770816, "router": 106430464, "shared_experts": 2554331136, "lm_head": 926679040}),
    "deepseek-r1": (671026404352, {"embeddings": 926679040, "attention": 11413422080, "norms": 1006592, "mlp": 1189085184, "experts": 653908770816, "router": 106430464, "shared_experts": 2554331136, "lm_head": 926679040}),
    "gemma-2b": (2506172416, {"embeddings": 524288000, "attention": 169869312, "mlp": 1811939328, "norms": 75776}),
    "gemma-7b": (8537680896, {"embeddings": 786432000, "attention": 1409286144, "mlp": 6341787648, "norms": 175104}),
    "gemma-2-2b": (2614341888, {"embeddings": 589824000, "attention": 368050176, "mlp": 1656225792, "norms": 241920}),
    "gemma-2-9b": (9241705984, {"embeddings": 917504000, "attention": 1849688064, "mlp": 6473908224, "norms": 605696}),
    "gemma-2-27b": (27227128320, {"embeddings": 1179648000, "attention": 2604662784, "mlp": 23441965056, "norms": 852480}),
    "gemma-3-1b": (999885952, {"embeddings": 301989888, "attention": 76677120, "norms": 134272, "mlp": 621084672}),
    "phi-3-mini-4k": (3821079552, {"embeddings": 98500608, "attention": 1207959552, "mlp": 2415919104, "norms": 199680, "lm_head": 98500608}),
    "phi-3-medium-4k": (13960238080, {"embeddings": 164167680, "attention": 2621440000, "mlp": 11010048000, "norms": 414720, "lm_head": 164167680}),
    "gpt-oss-20b": (20914757184, {"embeddings": 579133440, "attention": 637203456, "router": 2212608, "experts": 19116933120, "norms": 141120, "lm_head": 579133440}),
    "gpt-oss-120b": (116829156672, {"embeddings": 579133440, "attention": 955805184, "router": 13275648, "experts": 114701598720, "norms": 210240, "lm_head": 579133440}),
    "opt-125m": (125239296, {"embeddings": 40183296, "norms": 38400, "attention": 28348416, "mlp": 56669184}),
    "opt-350m": (331196416, {"embeddings": 28887040, "attention": 100761600, "norms": 98304, "mlp": 201449472}),
    "opt-1.3b": (1315758080, {"embeddings": 107155456, "norms": 200704, "attention": 402849792, "mlp": 805552128}),
    "opt-6.7b": (6658473984, {"embeddings": 214310912, "norms": 532480, "attention": 2148007936, "mlp": 4295622656}),
    "opt-13b": (12853473280, {"embeddings": 267888640, "norms": 829440, "attention": 4195123200, "mlp": 8389632000}),
    "opt-30b": (29974540288, {"embeddings": 375044096, "norms": 1390592, "attention": 9866379264, "mlp": 19731726336}),
    "opt-66b": (65719701504, {"embeddings": 482199552, "norms": 2377728, "attention": 21745631232, "mlp": 43489492992}),
    "gpt2": (124439808, {"embeddings": 39383808, "norms": 38400, "attention": 28348416, "mlp": 56669184}),
    "gpt2-medium": (354823168, {"embeddings": 52511744, "norms": 100352, "attention": 100761600, "mlp": 201449472}),
    "gpt2-large": (774030080, {"embeddings": 65639680, "norms": 186880, "attention": 236113920, "mlp": 472089600}),
    "codellama-34b": (33743970304, {"embeddings": 262144000, "attention": 7247757312, "mlp": 25971130368, "norms": 794624, "lm_head": 262144000}),
    "gpt2-xl": (1557611200, {"embeddings": 82049600, "norms": 310400, "attention": 491827200, "mlp": 983424000}),
    # families added for issue 12, counted with transformers 5.25.0 (torch 2.13.0 CPU) on the meta device;
    # multimodal wrappers with AutoModelForImageTextToText, kimi_k2 as deepseek_v3 (its architectures entry)
    "qwen3-next-80b-a3b": (79674391296, {"embeddings": 311164928, "attention": 1541015808, "norms": 209408, "router": 50331648, "experts": 77309411328, "shared_experts": 151093248, "lm_head": 311164928}), 
    "qwen3-vl-235b-a22b": (235669608176, {"vision": 575973616, "embeddings": 622329856, "attention": 6702497792, "norms": 798208, "experts": 227096395776, "router": 49283072, "lm_head": 622329856}), 
    "kimi-k2-instruct": (1026408209408, {"embeddings": 1174405120, "attention": 6168444928, "norms": 1006592, "mlp": 396361728, "experts": 1014686023680, "router": 165150720, "shared_experts": 2642411520, "lm_head": 1174405120}), 
    "glm-4.7-flash": (29943390976, {"embeddings": 317194240, "attention": 1022623744, "norms": 254720, "mlp": 62914560, "experts": 27783069696, "router": 6029312, "shared_experts": 434110464, "lm_head": 317194240}), 
    "glm-4.5-air": (106852245504, {"embeddings": 620756992, "attention": 5017047040, "mlp": 134479872, "norms": 380928, "experts": 99656663040, "router": 23592960, "shared_experts": 778567680, "lm_head": 620756992}), 
    "minimax-m2": (228689748992, {"embeddings": 614596608, "attention": 2730491904, "norms": 828416, "router": 48758784, "experts": 224680476672, "lm_head": 614596608}), 
    "olmo-2-13b": (13716198400, {"embeddings": 513802240, "attention": 4194304000, "norms": 824320, "mlp": 8493465600, "lm_head": 513802240}), 
    "llama-4-scout": (107769861120, {"embeddings": 1034485760, "attention": 3019898880, "experts": 96636764160, "router": 3932160, "shared_experts": 6039797760, "norms": 496640, "lm_head": 1034485760}), 
    "deepseek-v3.2-exp": (671877929216, {"embeddings": 926679040, "attention": 12264931328, "norms": 1022208, "mlp": 1189085184, "experts": 653908770816, "router": 106430464, "shared_experts": 2554331136, "lm_head": 926679040}), 
    "qwen3.5-397b-a17b": (396802360816, {"vision": 456010480, "embeddings": 1017118720, "attention": 6883497600, "norms": 509056, "router": 125829120, "experts": 386547056640, "shared_experts": 755220480, "lm_head": 1017118720}),
    "kimi-k2-thinking": (1026408209408, {"embeddings": 1174405120, "attention": 6168444928, "norms": 1006592, "mlp": 396361728, "experts": 1014686023680, "router": 165150720, "shared_experts": 2642411520, "lm_head": 1174405120}),
}


def test_reference_covers_the_whole_catalog():
    assert set(HF_REFERENCE) == set(list_models())


@pytest.mark.parametrize("name", sorted(HF_REFERENCE))
def test_total_and_breakdown_match_transformers(name):
    total, breakdown = HF_REFERENCE[name]
    spec = load_model(name)
    assert spec.total_params() == total
    assert {k: v for k, v in spec.param_breakdown().items() if v} == breakdown


#: the same model saved by transformers 4.x (the catalog file) and re-saved by transformers 5.25
#: (``num_local_experts`` for ``num_experts``, ``dtype`` for ``torch_dtype``, ``rope_parameters`` for
#: ``rope_theta``): one count, the transformers one
TRANSFORMERS5_QWEN3_MOE = Path(__file__).parent / "data" / "models" / "qwen3-30b-a3b-transformers5.json"


def test_transformers_4_and_5_layouts_give_the_same_count():
    from sim.deploy.models.hf_config import read_config_file

    v5 = read_config_file(TRANSFORMERS5_QWEN3_MOE)
    assert "num_experts" not in v5 and v5["num_local_experts"] == 128 and "rope_parameters" in v5 and "dtype" in v5
    old, new = load_model("qwen3-30b-a3b"), load_model(str(TRANSFORMERS5_QWEN3_MOE))
    assert new.total_params() == old.total_params() == HF_REFERENCE["qwen3-30b-a3b"][0]
    assert new.active_params() == old.active_params()
    assert new.rope_theta == old.rope_theta == 1_000_000 and new.torch_dtype == "bfloat16"
    assert new.kv_cache_bytes_per_token() == old.kv_cache_bytes_per_token()


NEW_FAMILIES = {"qwen3-next-80b-a3b": "qwen3_next", "qwen3-vl-235b-a22b": "qwen3_vl_moe_text",
                "kimi-k2-instruct": "kimi_k2", "glm-4.7-flash": "glm4_moe_lite", "glm-4.5-air": "glm4_moe",
                "minimax-m2": "minimax_m2", "olmo-2-13b": "olmo2", "llama-4-scout": "llama4_text",
                "deepseek-v3.2-exp": "deepseek_v32", "qwen3.5-397b-a17b": "qwen3_5_moe_text",
                "kimi-k2-thinking": "kimi_k2"}


def test_new_families_are_pinned():
    for name, mt in NEW_FAMILIES.items():
        assert name in HF_REFERENCE and load_model(name).model_type == mt


@pytest.mark.parametrize("name", ["olmo-2-13b", "qwen3-next-80b-a3b"])
def test_live_recount_with_transformers(name):
    """Recount on the meta device when transformers is installed (the optional [hf] extra)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from sim.deploy.models import catalog
    from sim.deploy.models.hf_config import read_config_file
    from sim.deploy.models.verify_hf import hf_counts

    assert hf_counts(read_config_file(catalog()[name].path))["total"] == load_model(name).total_params()
