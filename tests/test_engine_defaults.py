"""Engine defaults against the code they reproduce (sim/deploy/engine_defaults.py).

vLLM v0.15.1, ``vllm/engine/arg_utils.py``:

* ``EngineArgs.get_batch_defaults``::

      if device_memory >= 70 * GiB_bytes and "a100" not in device_name:
          default_max_num_batched_tokens = {..., UsageContext.OPENAI_API_SERVER: 8192}
          default_max_num_seqs = {..., UsageContext.OPENAI_API_SERVER: 1024}
      else:
          default_max_num_batched_tokens = {..., UsageContext.OPENAI_API_SERVER: 2048}
          default_max_num_seqs = {..., UsageContext.OPENAI_API_SERVER: 256}

* ``EngineArgs._set_default_max_num_seqs_and_batched_tokens_args``::

      if orig_max_num_batched_tokens is None:
          if not self.enable_chunked_prefill:
              self.max_num_batched_tokens = max(model_config.max_model_len, self.max_num_batched_tokens)
          self.max_num_batched_tokens = min(self.max_num_seqs * model_config.max_model_len,
                                            self.max_num_batched_tokens)
      if orig_max_num_seqs is None:
          self.max_num_seqs = min(self.max_num_seqs, self.max_num_batched_tokens)

* ``EngineArgs._set_default_chunked_prefill_and_prefix_caching_args``::

      if self.enable_prefix_caching is None:
          self.enable_prefix_caching = model_config.is_prefix_caching_supported   # True for generative models

SGLang ``python/sglang/srt/server_args.py`` (``chunked_prefill_size`` by ``gpu_mem``: < 35 GiB 2048,
< 60 GiB 4096, < 90 GiB / < 160 GiB 8192, else 16384).
"""
from __future__ import annotations

import pytest
import yaml

from hwprofiles import load_profile
from sim.config import EngineConfig, parse_experiment
from sim.deploy.deployment import build_deployment
from sim.deploy.engine_defaults import (resolve_engine_defaults, sglang_chunked_prefill_size,
                                        sglang_max_running_requests, vllm_is_large_gpu)


def _resolve(hw: str, max_model_len: int = 8192, **engine):
    updates, notes = resolve_engine_defaults(EngineConfig(**engine), load_profile(hw), max_model_len)
    return updates, {n.key: n for n in notes}


@pytest.mark.parametrize("hw,large", [("h100-sxm", True), ("h200", True), ("b200", True), ("mi300x", True),
                                      ("a100-sxm-80gb", False), ("a100-sxm-40gb", False), ("l40s", False),
                                      ("l4", False)])
def test_large_gpu_rule(hw, large):
    """≥ 70 GiB and not an A100 (the A100-80GB has 79 GiB but is excluded by name)."""
    assert vllm_is_large_gpu(load_profile(hw)) is large


def test_vllm_h100_api_server_defaults():
    up, notes = _resolve("h100-sxm")
    assert up["max_num_batched_tokens"] == 8192
    assert up["max_num_seqs"] == 1024  # not the 256 simctl used to assume
    assert up["enable_prefix_caching"] is True
    assert set(notes) == {"max_num_batched_tokens", "max_num_seqs", "enable_prefix_caching"}


def test_vllm_a100_80gb_gets_small_defaults():
    """The A100-80GB has ≥ 70 GiB but vLLM checks the device name: 2048 tokens, 256 sequences."""
    up, _ = _resolve("a100-sxm-80gb")
    assert (up["max_num_batched_tokens"], up["max_num_seqs"]) == (2048, 256)


def test_vllm_chunked_prefill_off_budget():
    """Without chunked prefill the budget is max(max_model_len, the GPU's default), not max(.., 2048)."""
    up, _ = _resolve("h100-sxm", max_model_len=4096, enable_chunked_prefill=False)
    assert up["max_num_batched_tokens"] == 8192
    up, _ = _resolve("h100-sxm", max_model_len=32768, enable_chunked_prefill=False)
    assert up["max_num_batched_tokens"] == 32768
    up, _ = _resolve("l40s", max_model_len=1024, enable_chunked_prefill=False)
    assert up["max_num_batched_tokens"] == 2048


def test_vllm_caps():
    """A defaulted budget ≤ max_num_seqs × max_model_len; a defaulted max_num_seqs ≤ the budget."""
    up, _ = _resolve("h100-sxm", max_model_len=16, max_num_seqs=4)
    assert up["max_num_batched_tokens"] == 64 and "max_num_seqs" not in up
    up, _ = _resolve("h100-sxm", max_num_batched_tokens=512)
    assert up["max_num_seqs"] == 512


def test_explicit_settings_are_kept():
    up, notes = _resolve("h100-sxm", max_num_seqs=128, max_num_batched_tokens=2048, enable_prefix_caching=False)
    assert up == {} and notes == {}


def test_other_policies_keep_their_defaults():
    up, _ = _resolve("h100-sxm", policy="vllm-v0")
    assert up == {"max_num_batched_tokens": 8192, "max_num_seqs": 256, "enable_prefix_caching": False}
    up, _ = _resolve("h100-sxm", policy="sarathi")
    assert (up["max_num_seqs"], up["enable_prefix_caching"]) == (256, False)


@pytest.mark.parametrize("hw,size", [("l4", 2048), ("a10g", 2048), ("l40s", 4096), ("a100-sxm-40gb", 4096),
                                     ("h100-sxm", 8192), ("h200", 8192), ("b200", 16384), ("mi300x", 16384)])
def test_sglang_chunked_prefill_size(hw, size):
    assert sglang_chunked_prefill_size(load_profile(hw)) == size


def test_sglang_max_running_requests():
    # tp_worker.py: min(max_total_num_tokens // 2, req_to_token_pool size); pool = min(max(tok/ctx·512, 2048), 4096)
    assert sglang_max_running_requests(100_000, 4096) == min(50_000, min(max(int(100_000 / 4096 * 512), 2048), 4096))
    assert sglang_max_running_requests(3000, 4096) == 1500
    assert sglang_max_running_requests(10_000_000, 4096) == 4096


EXPERIMENT = """
name: defaults
model: llama-3.1-8b
hardware: {hw}
engine: {{policy: {policy}, max_model_len: 4096}}
workload:
  num_requests: 10
  arrival: {{process: poisson, rate: 1.0}}
  input_tokens: {{dist: fixed, value: 100}}
  output_tokens: {{dist: fixed, value: 10}}
"""


def test_deployment_records_what_it_assumed():
    dep = build_deployment(parse_experiment(yaml.safe_load(EXPERIMENT.format(hw="h100-sxm", policy="vllm")), "x.yaml"))
    assert (dep.engine.max_num_seqs, dep.engine.max_num_batched_tokens, dep.engine.enable_prefix_caching) == (1024, 8192, True)
    assert [r.key for r in dep.resolved_defaults] == ["max_num_batched_tokens", "max_num_seqs", "enable_prefix_caching"]
    assert "70 GiB" in dep.resolved_defaults[1].reason


def test_deployment_sglang_running_requests_follow_the_kv_pool():
    dep = build_deployment(parse_experiment(yaml.safe_load(EXPERIMENT.format(hw="h100-sxm", policy="sglang")), "x.yaml"))
    kv_tokens = dep.memory_plan.num_kv_blocks * dep.engine.block_size
    assert dep.engine.max_num_seqs == sglang_max_running_requests(kv_tokens, 4096)
    assert dep.engine.max_num_batched_tokens == 8192 and dep.engine.enable_prefix_caching is True
