"""Gemma 3's vision tower (SigLIP + Gemma3MultiModalProjector): exact parameters, encoder FLOPs per image
and image requests in ``simctl run``.

Independent values: transformers 5.25.0's whole-model counts of the Gemma 3 wrappers (meta device,
AutoModelForImageTextToText; pinned in tests/test_models_families.py) minus their language models, and the
encoder FLOPs of one 896×896 image written out GEMM by GEMM from config.json.
"""
from __future__ import annotations

import pytest

from hwprofiles import load_profile
from sim.config import ParallelConfig, PrecisionConfig, parse_experiment
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel
from sim.deploy.step_cost import BatchShapeBuilder
from sim.deploy.vision_cost import model_vision_tower, vision_weight_bytes_per_gpu
from sim.errors import ConfigError
from sim.runs.runner import run
from tests.test_models_families import NEW_REFERENCE

H, INTER, DEPTH, PATCH, SIDE = 1152, 4304, 27, 14, 896 // 14  # vision_config of both Gemma 3 wrappers


def _hand_params(text_hidden: int) -> int:
    patch_embed = 3 * PATCH * PATCH * H + H  # Conv2d with bias
    positions = SIDE * SIDE * H  # 4096 learned positions
    block = (2 * 2 * H  # layer_norm1/2, weight + bias
             + 4 * (H * H + H)  # q, k, v, out_proj with bias
             + (H * INTER + INTER) + (INTER * H + H))  # fc1, fc2 with bias
    post_layernorm = 2 * H
    projector = H + H * text_hidden  # mm_soft_emb_norm (RMSNorm weight) + mm_input_projection_weight
    return patch_embed + positions + DEPTH * block + post_layernorm + projector


@pytest.mark.parametrize("name, text_hidden", [("gemma-3-4b", 2560), ("gemma-3-27b", 5376)])
def test_tower_params_equal_transformers(name, text_hidden):
    spec = load_model(name)
    lm, _, whole = NEW_REFERENCE[name]
    assert spec.vision_params() == _hand_params(text_hidden) == whole - lm
    assert spec.whole_model_params() == whole


def _hand_flops_gemma3_4b() -> int:
    patches = SIDE * SIDE  # 4096: every image is resized to 896 × 896
    patch_embed = 2 * patches * (3 * PATCH * PATCH) * H
    qkv = 2 * patches * H * 3 * H
    out = 2 * patches * H * H
    fc1 = 2 * patches * H * INTER
    fc2 = 2 * patches * INTER * H
    attention = 2 * (2 * patches * patches * H)  # QKᵀ and PV, bidirectional over the image's patches
    projector = 2 * 256 * H * 2560  # after the 4 × 4 average pool: 256 tokens
    return patch_embed + DEPTH * (qkv + out + fc1 + fc2 + attention) + projector


def test_encoder_flops_per_image_by_hand():
    tower = model_vision_tower(load_model("gemma-3-4b"))
    assert tower.fixed_tokens_per_image == 256 and tower.merge == 4  # 64 × 64 patches pooled to 16 × 16
    assert tower.flops_per_image(256) == _hand_flops_gemma3_4b()
    shape = BatchShapeBuilder()
    shape.add(300, 0)
    shape.add_images(2, 256)
    rf = RooflineCostModel(load_model("gemma-3-4b"), load_profile("h100-sxm"), ParallelConfig(tp=1), PrecisionConfig())
    t, flops, _ = rf.vision.price(shape.build())
    assert flops == pytest.approx(2 * _hand_flops_gemma3_4b(), rel=1e-12)
    assert t > flops / load_profile("h100-sxm").peak_flops("bf16")


def test_tower_weights_sharded_except_patch_embedding_positions_norms_and_projector():
    model = load_model("gemma-3-27b")
    tower = model_vision_tower(model)
    assert vision_weight_bytes_per_gpu(model, 1) == 2 * tower.params()
    sharded = DEPTH * (4 * H * H + 2 * H * INTER)  # vLLM's SigLIP uses column/row-parallel linears
    assert vision_weight_bytes_per_gpu(model, 2) == 2 * (tower.params() - sharded / 2)


def _exp(workload: dict) -> dict:
    return {"name": "g3", "seed": 0, "model": "gemma-3-4b", "hardware": "h100-sxm", "parallel": {"tp": 1},
            "engine": {"policy": "vllm", "max_num_seqs": 8, "max_num_batched_tokens": 8192,
                       "enable_prefix_caching": False, "max_model_len": 8192},
            "workload": {"num_requests": 1, "arrival": {"process": "poisson", "rate": 1.0},
                         "output_tokens": 4, **workload}}


def test_image_request_ttft_grows_by_exactly_the_encoder_time():
    with_images = run(parse_experiment(_exp({"input_tokens": 100, "images_per_request": 1, "image_tokens": 256})))
    text_only = run(parse_experiment(_exp({"input_tokens": 356})))
    r1, r0 = with_images.requests.iloc[0], text_only.requests.iloc[0]
    assert r1["num_prompt_tokens"] == r0["num_prompt_tokens"] == 356
    rf = RooflineCostModel(load_model("gemma-3-4b"), load_profile("h100-sxm"), ParallelConfig(tp=1), PrecisionConfig())
    b = BatchShapeBuilder()
    b.add_images(1, 256)
    assert r1["ttft_s"] - r0["ttft_s"] == pytest.approx(rf.vision.price(b.build())[0], rel=1e-9, abs=1e-12)
    assert r1["tpot_s"] == pytest.approx(r0["tpot_s"], rel=1e-12)


def test_image_tokens_other_than_mm_tokens_per_image_are_refused():
    cfg = parse_experiment(_exp({"input_tokens": 100, "images_per_request": 1, "image_tokens": 300}), source="g.yaml")
    with pytest.raises(ConfigError, match=r"workload.image_tokens: model gemma-3-4b turns every image into 256 tokens"):
        run(cfg)
