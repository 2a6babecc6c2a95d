"""Vision-encoder prefill cost (sim/deploy/vision_cost.py) and the image workload keys.

Independent values: the Qwen3-VL-8B tower's encoder FLOPs per image written out GEMM by GEMM from its
config.json (hand arithmetic, not the VisionTower formula), transformers' parameter count for the
tower (8,767,123,696 whole model − 8,190,735,360 language model, transformers 5.25.0, meta device, pinned
in tests/test_models_families.py), and the TTFT of one request on an idle replica.
"""
from __future__ import annotations

import pytest

from hwprofiles import load_profile
from sim.config import ParallelConfig, PrecisionConfig, parse_experiment
from sim.deploy.memory_plan import weights_bytes_per_gpu
from sim.deploy.models import load_model
from sim.deploy.roofline import RooflineCostModel, single_request_shape
from sim.deploy.step_cost import BatchShapeBuilder
from sim.deploy.vision_cost import model_vision_tower, vision_weight_bytes_per_gpu
from sim.errors import ConfigError
from sim.runs.runner import run


def _hand_flops_qwen3_vl_8b(tokens: int) -> float:
    # vision_config: depth 27, hidden 1152, intermediate 4304, out_hidden 4096, patch 16, temporal 2,
    # 3 channels, spatial_merge 2, deepstack_visual_indexes [8, 16, 24]
    patches = tokens * 4
    patch_embed = 2 * patches * (3 * 2 * 16 * 16) * 1152
    qkv = 2 * patches * 1152 * 3456
    proj = 2 * patches * 1152 * 1152
    fc1 = 2 * patches * 1152 * 4304
    fc2 = 2 * patches * 4304 * 1152
    attention = 2 * (2 * patches * patches * 1152)  # QKᵀ and PV over all 16 heads × 72 dims
    merger = 2 * tokens * 4608 * 4608 + 2 * tokens * 4608 * 4096  # main merger; 3 DeepStack mergers alike
    return patch_embed + 27 * (qkv + proj + fc1 + fc2 + attention) + 4 * merger


def test_encoder_flops_per_image_by_hand():
    tower = model_vision_tower(load_model("qwen3-vl-8b"))
    assert tower is not None
    for t in (64, 256, 1024):
        assert tower.flops_per_image(t) == _hand_flops_qwen3_vl_8b(t)
    # 256 tokens (a 512×512 image): 1024 patches → ≈ 1.06 TFLOP (≈ 2 × 0.46 B block weights × 1024
    # patches + 0.13 TFLOP of attention)
    assert _hand_flops_qwen3_vl_8b(256) == 1_058_097_070_080


def test_step_flops_sum_over_images_and_tower_params():
    model = load_model("qwen3-vl-8b")
    rf = RooflineCostModel(model, load_profile("h100-sxm"))
    b = BatchShapeBuilder()
    b.add(1000, 0)
    b.add_images(2, 256)
    b.add(500, 0)
    b.add_images(1, 64)
    shape = b.build()
    assert (shape.num_images, shape.sum_image_tokens, shape.sum_image_tokens_sq) == (3, 576, 2 * 256 ** 2 + 64 ** 2)
    t, flops, nbytes = rf.vision.price(shape)
    assert flops == pytest.approx(2 * _hand_flops_qwen3_vl_8b(256) + _hand_flops_qwen3_vl_8b(64), rel=1e-12)
    # at least the compute roofline at the bf16 peak, and at least one read of the tower's weights
    hw = load_profile("h100-sxm")
    assert t > flops / hw.peak_flops("bf16")
    tower = model_vision_tower(model)
    assert tower.params() == 8_767_123_696 - 8_190_735_360
    assert nbytes > 2 * tower.params() * 0.99  # bf16 weights (biases/norms aside) plus activations
    # the step's time and FLOPs grow by exactly the encoder's
    base = BatchShapeBuilder()
    base.add(1000, 0)
    base.add(500, 0)
    c0, c1 = rf.step(base.build()), rf.step(shape)
    assert c1.time_s == pytest.approx(c0.time_s + t, rel=1e-12)
    assert c1.flops == pytest.approx(c0.flops + flops, rel=1e-12)
    assert c1.prefill_time_s == pytest.approx(c0.prefill_time_s + t, rel=1e-12)
    assert "vision_encoder" in rf.breakdown(shape)


def test_tower_weights_in_memory_plan():
    model = load_model("qwen3-vl-8b")
    tower = model_vision_tower(model)
    p1 = ParallelConfig(tp=1)
    assert vision_weight_bytes_per_gpu(model, 1) == 2 * tower.params()
    lm = model.params_per_gpu(1, 1, 1) * 2
    assert weights_bytes_per_gpu(model, p1, "bf16") == lm + 2 * tower.params()
    # TP shards the block and merger linears, not the patch embedding / positions / norms
    h = 1152
    sharded = 27 * (4 * h * h + 2 * h * 4304) + 4 * (4608 * 4608 + 4608 * 4096)
    assert vision_weight_bytes_per_gpu(model, 2) == 2 * (tower.params() - sharded / 2)
    assert vision_weight_bytes_per_gpu(load_model("qwen3-8b"), 1) == 0.0


def _exp(model: str, workload: dict, **extra) -> dict:
    return {"name": "vis", "seed": 0, "model": model, "hardware": "h100-sxm", "parallel": {"tp": 1},
            "engine": {"policy": "vllm", "max_num_seqs": 8, "max_num_batched_tokens": 8192,
                       "enable_prefix_caching": False, "max_model_len": 8192},
            "workload": {"num_requests": 1, "arrival": {"process": "poisson", "rate": 1.0},
                         "output_tokens": 4, **workload}, **extra}


def test_idle_request_ttft_grows_by_exactly_the_encoder_time():
    with_images = run(parse_experiment(_exp("qwen3-vl-8b", {"input_tokens": 100, "images_per_request": 2,
                                                            "image_tokens": 256})))
    # the same prompt length (2 × 256 placeholders + 100 text tokens), no images
    text_only = run(parse_experiment(_exp("qwen3-vl-8b", {"input_tokens": 612})))
    r1, r0 = with_images.requests.iloc[0], text_only.requests.iloc[0]
    assert r1["num_prompt_tokens"] == r0["num_prompt_tokens"] == 612
    rf = RooflineCostModel(load_model("qwen3-vl-8b"), load_profile("h100-sxm"), ParallelConfig(tp=1), PrecisionConfig())
    b = BatchShapeBuilder()
    b.add_images(2, 256)
    encoder_s = rf.vision.price(b.build())[0]
    assert encoder_s > 0
    assert r1["ttft_s"] - r0["ttft_s"] == pytest.approx(encoder_s, rel=1e-9, abs=1e-12)
    # only the first prefill step pays it: TPOT is unchanged
    assert r1["tpot_s"] == pytest.approx(r0["tpot_s"], rel=1e-12)
    # the prefill-only step of the plain run is exactly the roofline's single-request prefill
    assert r0["ttft_s"] >= rf.step(single_request_shape(612)).time_s - 1e-12


def test_image_keys_validated_with_one_line_errors():
    with pytest.raises(ConfigError, match=r"workload.*image_tokens go together; set image_tokens"):
        parse_experiment(_exp("qwen3-vl-8b", {"input_tokens": 10, "images_per_request": 1}), source="x.yaml")
    with pytest.raises(ConfigError, match="image_tokens"):
        parse_experiment(_exp("qwen3-vl-8b", {"input_tokens": 10, "images_per_request": 1, "image_tokens": 0}),
                         source="x.yaml")
    with pytest.raises(ConfigError, match="conversation"):
        parse_experiment(_exp("qwen3-vl-8b", {"input_tokens": 10, "images_per_request": 1, "image_tokens": 8,
                                              "conversation": {"turns": 2}}), source="x.yaml")
    cfg = parse_experiment(_exp("qwen3-8b", {"input_tokens": 10, "images_per_request": 1, "image_tokens": 8}))
    with pytest.raises(ConfigError, match=r"images_per_request: model .* has no vision tower"):
        run(cfg)
    with pytest.raises(ConfigError) as exc:
        parse_experiment(_exp("qwen3-vl-8b", {"input_tokens": 10, "image_tokens": 8}), source="x.yaml")
    assert "\n" not in str(exc.value).strip() and "x.yaml" in str(exc.value) and "images_per_request" in str(exc.value)


def test_class_inherits_images_and_text_class_has_none():
    cfg = parse_experiment(_exp("qwen3-vl-8b", {
        "num_requests": 40, "images_per_request": {"dist": "uniform", "low": 1, "high": 3}, "image_tokens": 64,
        "classes": [{"name": "img", "input_tokens": 20}, {"name": "txt", "input_tokens": 20,
                                                          "images_per_request": None}]}))
    res = run(cfg)
    req = res.requests
    assert len(req) == 40 and (req["status"] == "completed").all()
    # every class inherits the top-level images (None on a class means "inherit")
    extra = req["num_prompt_tokens"] - 20
    assert set(extra.unique()) <= {64, 128, 192} and len(set(extra.unique())) > 1


def test_disaggregated_decode_does_not_encode_again():
    """With prefill/decode disaggregation the prefill instance runs the encoder; the decode instance
    receives the prompt's KV computed and encodes nothing."""
    from policies.base import StepBuilder
    from sim.engine.request import Request, RequestSpec
    spec = RequestSpec(arrival_s=0.0, num_prompt_tokens=612, max_output_tokens=4, num_images=2, image_tokens=256)
    decode = Request(0, spec, 0.0)
    decode.num_computed_tokens = decode.num_prompt_tokens  # KV handed over
    step = StepBuilder(8192, 0.0)
    step.add(decode, 1)
    assert step.shape.num_images == 0
    prefill = Request(1, spec, 0.0)
    step = StepBuilder(8192, 0.0)
    step.add(prefill, 612)
    assert (step.shape.num_images, step.shape.sum_image_tokens) == (2, 512) and not prefill.images_pending
