"""Parameter counts of every catalog model equal Hugging Face ``transformers``' own, category by category.

The reference numbers below were produced by instantiating each bundled config.json with
``transformers`` (see the comment on ``HF_REFERENCE``); the test needs neither torch nor transformers.
"""
from __future__ import annotations

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
}


def test_reference_covers_the_whole_catalog():
    from tests.test_models_families import NEW_REFERENCE  # issue #12's families, pinned there
    from tests.test_models_hybrid_moe import REFERENCE as HYBRID_MOE  # its follow-up (Nemotron-3, Granite 4, Falcon-H1)
    assert set(HF_REFERENCE) | ((set(NEW_REFERENCE) | set(HYBRID_MOE)) & set(list_models())) == set(list_models())


@pytest.mark.parametrize("name", sorted(HF_REFERENCE))
def test_total_and_breakdown_match_transformers(name):
    total, breakdown = HF_REFERENCE[name]
    spec = load_model(name)
    assert spec.total_params() == total
    assert {k: v for k, v in spec.param_breakdown().items() if v} == breakdown
