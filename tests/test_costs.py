"""Cost keys: $/hour, $ per million tokens, API comparison, overrides."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from sim.config import parse_experiment
from sim.errors import ConfigError
from sim.measure.pricing import (
    API_PRICES,
    API_PRICES_AS_OF,
    CostConfig,
    cost_summary,
    gpu_hour_price,
)

SUMMARY = {"output_throughput": 1000.0, "total_token_throughput": 4000.0}  # 3000 input tok/s


def test_dollars_per_hour_and_per_million_tokens():
    hw = SimpleNamespace(name="h100-sxm", usd_per_gpu_hour=2.5, price_source="example")
    out = cost_summary(SUMMARY, num_gpus=4, hardware=hw)
    assert out["cost_per_hour_usd"] == 10.0
    # 10 $/h over 1000 tok/s × 3600 s = 3.6 M tokens/h → 2.777… $/M output tokens
    assert out["usd_per_million_output_tokens"] == pytest.approx(10.0 / 3.6)
    assert out["usd_per_million_input_tokens"] == pytest.approx(10.0 / (3000 * 3600) * 1e6)
    assert out["usd_per_million_tokens"] == pytest.approx(10.0 / 14.4)
    assert "h100-sxm" in out["gpu_hour_usd_source"]


def test_api_comparison_prices_the_same_traffic():
    cost = CostConfig(gpu_hour_usd=2.0, replace_api_prices=True,
                      api_prices={"x": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 4.0, "as_of": "2026-11"}})
    out = cost_summary(SUMMARY, num_gpus=1, cost=cost)
    row = out["api_price_comparison"]["x"]
    # 3000 in tok/s × 1 $/M + 1000 out tok/s × 4 $/M = 0.007 $/s = 25.2 $/h
    assert row["api_usd_per_hour"] == pytest.approx(25.2)
    assert row["self_hosted_vs_api"] == pytest.approx(2.0 / 25.2)
    assert set(out["api_price_comparison"]) == {"x"}


def test_shipped_table_is_dated_and_sourced():
    assert API_PRICES_AS_OF
    for name, price in API_PRICES.items():
        assert price.as_of and price.source.startswith("https://"), name
        assert 0 < price.input_usd_per_mtok <= price.output_usd_per_mtok * 1.0 + 1e-12 or \
            price.input_usd_per_mtok == price.output_usd_per_mtok


def test_override_beats_profile_and_unknown_price_gives_none():
    hw = SimpleNamespace(name="a100", usd_per_gpu_hour=1.0)
    assert gpu_hour_price(hw, CostConfig(gpu_hour_usd=3.0)) == (3.0, "cost.gpu_hour_usd")
    out = cost_summary(SUMMARY, num_gpus=2, hardware=SimpleNamespace(name="x", usd_per_gpu_hour=None))
    assert out["cost_per_hour_usd"] is None and out["usd_per_million_output_tokens"] is None


def test_cost_section_is_validated():
    with pytest.raises(ConfigError, match=r"x.yaml: cost.gpu_hour_usd"):
        parse_experiment({"model": "m", "hardware": "h", "cost": {"gpu_hour_usd": -1}}, "x.yaml")
    cfg = parse_experiment({"model": "m", "hardware": "h", "cost": {"gpu_hour_usd": 2}}, "x.yaml")
    assert isinstance(cfg.cost, CostConfig)
