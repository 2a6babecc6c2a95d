"""CUDA-graph capture sizes, padding and the eager host floor (sim/deploy/cuda_graphs.py), against
hand-computed values and SGLang v0.4's ``cuda_graph_runner.py`` list."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sim.config import load_experiment, with_overrides
from sim.deploy.cuda_graphs import (
    EAGER_LAYER_HOST_S,
    CudaGraphPlan,
    GraphAwareCostModel,
    padded_decode_shape,
    sglang_capture_sizes,
)
from sim.deploy.deployment import build_deployment
from sim.deploy.roofline import (
    RooflineCostModel,
    single_request_shape,
    uniform_batch_shape,
)
from sim.deploy.step_cost import ConstantCostModel
from sim.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "experiments" / "sglang_h200_llama70b.yaml"
V04 = (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 136, 144, 152, 160)


def test_capture_sizes_are_sglang_v04s_list_cut_at_the_limits():
    assert sglang_capture_sizes(160, 4096) == V04  # [1, 2, 4] + [i * 8 for i in range(1, 21)]
    assert sglang_capture_sizes(512, 4096) == V04  # v0.4 never captures above its fixed list
    assert sglang_capture_sizes(100, 4096) == V04[:V04.index(96) + 1]  # largest ≤ 100 is 96
    assert sglang_capture_sizes(160, 50) == V04[:V04.index(48) + 1]  # the request pool caps it
    assert sglang_capture_sizes(0, 4096) == ()  # --disable-cuda-graph


def test_padding_rounds_up_to_the_next_captured_size():
    plan = CudaGraphPlan(V04, num_layers=80)
    assert [plan.padded_size(b) for b in (1, 2, 3, 5, 8, 9, 50, 56, 57, 159, 160)] == \
        [1, 2, 4, 8, 8, 16, 56, 56, 64, 160, 160]
    assert plan.padded_size(161) is None and plan.max_bs == 160
    assert CudaGraphPlan((), num_layers=80).padded_size(1) is None


def test_padded_shape_adds_one_token_decode_rows():
    s = uniform_batch_shape(50, 1, 800)
    p = padded_decode_shape(s, 56)
    assert (p.num_seqs, p.num_tokens, p.num_decode_seqs) == (56, 56, 56)
    assert p.sum_decode_kv_tokens == 50 * 801 + 6 and p.sum_kv_tokens == 50 * 801 + 6
    assert p.num_prefill_tokens == 0 and padded_decode_shape(s, 50) is s


def test_graph_step_prices_the_padded_batch():
    base = ConstantCostModel(step_time_s=0.010, per_token_s=1e-4)
    cm = GraphAwareCostModel(base, CudaGraphPlan(V04, num_layers=80))
    # 50 decodes replay the 56 graph: 10 ms + 56 × 0.1 ms = 15.6 ms (the unpadded batch would be 15.0)
    assert cm.step(uniform_batch_shape(50, 1, 800)).time_s == pytest.approx(0.0156, abs=1e-15)
    assert cm.step(uniform_batch_shape(56, 1, 800)).time_s == pytest.approx(0.0156, abs=1e-15)
    # stepwise: 57..64 all cost the 64 graph
    assert {round(cm.step(uniform_batch_shape(b, 1, 800)).time_s, 12) for b in range(57, 65)} == {0.0164}


def test_step_jumps_at_the_capture_limit_by_the_host_time_the_gpu_cannot_hide():
    host = 80 * EAGER_LAYER_HOST_S  # 80 layers × 0.2625 ms = 21 ms
    assert host == pytest.approx(0.021, abs=1e-15)
    base = ConstantCostModel(step_time_s=0.010)
    cm = GraphAwareCostModel(base, CudaGraphPlan(V04, num_layers=80))
    at, above = cm.step(uniform_batch_shape(160, 1, 800)).time_s, cm.step(uniform_batch_shape(161, 1, 800)).time_s
    assert at == pytest.approx(0.010) and above == pytest.approx(0.021)
    assert above - at == pytest.approx(host - 0.010, abs=1e-15)  # max(gpu, host) − gpu
    # a GPU step longer than the host's issue time hides it: no jump
    slow = GraphAwareCostModel(ConstantCostModel(step_time_s=0.030), CudaGraphPlan(V04, num_layers=80))
    assert slow.step(uniform_batch_shape(161, 1, 800)).time_s == pytest.approx(0.030)


def test_prefill_is_eager_and_floored_by_the_host():
    cm = GraphAwareCostModel(ConstantCostModel(step_time_s=0.005), CudaGraphPlan(V04, num_layers=80))
    c = cm.step(single_request_shape(16))
    assert c.time_s == pytest.approx(0.021)
    # mixed batches (a decode plus a prefill chunk) are eager too
    assert not cm.is_graph_step(dataclasses.replace(uniform_batch_shape(4, 1, 100), num_prefill_tokens=1))


def test_roofline_integration_breakdown_and_utilisation():
    dep = build_deployment(load_experiment(EXAMPLE))
    cm = dep.cost_model
    assert isinstance(cm, GraphAwareCostModel) and cm.plan.capture_sizes == V04
    base = cm.base
    s50 = uniform_batch_shape(50, 1, 800)
    assert cm.step(s50).time_s == base.step(padded_decode_shape(s50, 56)).time_s > base.step(s50).time_s
    # a 16-token prefill: the GPU needs ~14 ms, the host 21 ms to issue 80 layers
    short = single_request_shape(16)
    gpu = base.step(short)
    c = cm.step(short, breakdown=True)
    assert gpu.time_s < 0.021 and c.time_s == pytest.approx(0.021)
    assert sum(c.breakdown.values()) == pytest.approx(c.time_s, rel=1e-12)
    assert c.breakdown["eager_launch"] == pytest.approx(0.021 - gpu.time_s)
    assert c.mfu == pytest.approx(gpu.mfu * gpu.time_s / 0.021) and c.flops == gpu.flops
    # a long prefill is GPU-bound: identical to the roofline's price
    assert cm.step(single_request_shape(4096)).time_s == base.step(single_request_shape(4096)).time_s
    assert cm.describe() == base.describe()  # the rest of the surface is delegated


def test_off_without_the_option_and_for_other_policies():
    cfg = load_experiment(EXAMPLE)
    off = with_overrides(cfg, {"engine.policy_options": {}})
    assert isinstance(build_deployment(off).cost_model, RooflineCostModel)
    disabled = build_deployment(with_overrides(cfg, {"engine.policy_options": {"cuda_graph_max_bs": 0}})).cost_model
    assert disabled.plan.capture_sizes == () and not disabled.is_graph_step(uniform_batch_shape(1, 1, 10))


@pytest.mark.parametrize("opts, key", [({"cuda_graph_max_bs": -1}, "cuda_graph_max_bs"),
                                       ({"cuda_graph_max_bs": "big"}, "cuda_graph_max_bs"),
                                       ({"cuda_graph_max_bs": True}, "cuda_graph_max_bs"),
                                       ({"cuda_graph_max_bs": 160, "eager_layer_host_s": -1e-3}, "eager_layer_host_s"),
                                       ({"eager_layer_host_s": 1e-4}, "eager_layer_host_s")])
def test_bad_options_name_the_key_and_the_file(opts, key):
    cfg = with_overrides(load_experiment(EXAMPLE), {"engine.policy_options": opts})
    with pytest.raises(ConfigError, match=key) as e:
        build_deployment(cfg)
    assert cfg.name in str(e.value)


def test_wrapper_pickles_and_copies():
    import copy
    import pickle
    cm = build_deployment(load_experiment(EXAMPLE)).cost_model
    s = uniform_batch_shape(50, 1, 800)
    for clone in (pickle.loads(pickle.dumps(cm)), copy.deepcopy(cm)):
        assert clone.step(s).time_s == cm.step(s).time_s and clone.plan == cm.plan
