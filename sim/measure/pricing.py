"""What a deployment costs: $/hour, $ per million tokens at the measured throughput, and a comparison
with a few public API prices.

```yaml
cost:
  gpu_hour_usd: 2.49            # override the hardware profile's usd_per_gpu_hour
  api_prices:                   # add to / override the shipped table (USD per 1M tokens)
    my-provider/llama-3.1-8b: {input_usd_per_mtok: 0.05, output_usd_per_mtok: 0.08, as_of: 2026-11, source: "..."}
  replace_api_prices: false     # true: compare only against api_prices
```

Formulas (docs/metrics.md#cost): ``cost_per_hour_usd = num_gpus × gpu_hour_usd``;
``usd_per_million_output_tokens = cost_per_hour_usd / (output_throughput × 3600) × 10⁶`` (all of the
cost charged to output tokens; likewise for input and for all tokens). For each API price,
``api_usd_per_hour`` is what the same traffic (the measured input and output token rates) would cost
per hour on that API, and ``self_hosted_vs_api`` = cost_per_hour_usd / api_usd_per_hour (< 1: self-hosting
is cheaper *at this load*; it assumes the GPUs are paid for every hour and the load is steady).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from sim.config import Frozen, format_validation_error

__all__ = ["APIPrice", "CostConfig", "API_PRICES", "API_PRICES_AS_OF", "gpu_hour_price", "cost_summary"]


class _Frozen(Frozen):
    """The shared config base (sim.config.Frozen)."""


class APIPrice(_Frozen):
    """List price of one hosted model API, USD per million tokens."""

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    as_of: str = Field("", description="when the price was read (YYYY-MM)")
    source: str = Field("", description="where it was read")


class CostConfig(_Frozen):
    """The ``cost:`` section (module docstring)."""

    gpu_hour_usd: float | None = Field(None, gt=0, description="$ per GPU-hour; default: the hardware profile's")
    api_prices: dict[str, APIPrice] = Field(default_factory=dict, description="extra or overriding API prices")
    replace_api_prices: bool = Field(False, description="compare only against api_prices, not the shipped table")


# A small, DATED snapshot of public list prices (standard tier, USD per 1M tokens). Prices change
# often: treat these as examples, not quotes, and put current ones in `cost.api_prices`.
API_PRICES_AS_OF = "2025-03"
API_PRICES: dict[str, APIPrice] = {
    "openai/gpt-4o": APIPrice(input_usd_per_mtok=2.50, output_usd_per_mtok=10.00, as_of="2025-03",
                              source="https://openai.com/api/pricing/"),
    "openai/gpt-4o-mini": APIPrice(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60, as_of="2025-03",
                                   source="https://openai.com/api/pricing/"),
    "aws-bedrock/llama-3.1-8b-instruct": APIPrice(
        input_usd_per_mtok=0.22, output_usd_per_mtok=0.22, as_of="2025-03",
        source="https://aws.amazon.com/bedrock/pricing/ (Meta Llama 3.1 8B Instruct, on-demand, us-east-1)"),
    "aws-bedrock/llama-3.1-70b-instruct": APIPrice(
        input_usd_per_mtok=0.72, output_usd_per_mtok=0.72, as_of="2025-03",
        source="https://aws.amazon.com/bedrock/pricing/ (Meta Llama 3.1 70B Instruct, on-demand, us-east-1)"),
    "together/llama-3.1-8b-instruct-turbo": APIPrice(
        input_usd_per_mtok=0.18, output_usd_per_mtok=0.18, as_of="2025-03",
        source="https://www.together.ai/pricing (Meta Llama 3.1 8B Instruct Turbo, serverless)"),
    "together/llama-3.1-70b-instruct-turbo": APIPrice(
        input_usd_per_mtok=0.88, output_usd_per_mtok=0.88, as_of="2025-03",
        source="https://www.together.ai/pricing (Meta Llama 3.1 70B Instruct Turbo, serverless)"),
}


def gpu_hour_price(hardware: Any, cost: CostConfig | None = None) -> tuple[float | None, str]:
    """$ per GPU-hour and where it came from: ``cost.gpu_hour_usd``, else the hardware profile's
    ``usd_per_gpu_hour``; ``(None, "")`` when neither says."""
    if cost is not None and cost.gpu_hour_usd is not None:
        return float(cost.gpu_hour_usd), "cost.gpu_hour_usd"
    price = getattr(hardware, "usd_per_gpu_hour", None)
    if price is None and isinstance(hardware, dict):
        price = hardware.get("usd_per_gpu_hour")
    if price is not None:
        name = getattr(hardware, "name", None) or (hardware.get("name") if isinstance(hardware, dict) else "")
        src = getattr(hardware, "price_source", "") or ""
        return float(price), f"hardware profile {name}" + (f" ({src})" if src else "")
    return None, ""


def _per_million(cost_per_hour: float | None, tokens_per_s: float | None) -> float | None:
    if cost_per_hour is None or not tokens_per_s:
        return None
    return cost_per_hour / (tokens_per_s * 3600.0) * 1e6


def cost_summary(summary: dict[str, Any], *, num_gpus: int, hardware: Any = None, cost: Any = None,
                 model_name: str = "") -> dict[str, Any]:
    """Cost keys for a summary that already holds the throughput keys (docs/metrics.md#cost)."""
    if cost is not None and not isinstance(cost, CostConfig):
        from pydantic import ValidationError

        try:
            cost = CostConfig.model_validate(cost)
        except ValidationError as exc:
            raise format_validation_error(exc, CostConfig, "<cost>", ("cost",)) from None
    price, source = gpu_hour_price(hardware, cost)
    per_hour = price * num_gpus if price is not None else None
    out: dict[str, Any] = {
        "num_gpus": int(num_gpus),
        "gpu_hour_usd": price,
        "gpu_hour_usd_source": source or None,
        "cost_per_hour_usd": per_hour,
        "usd_per_million_output_tokens": _per_million(per_hour, summary.get("output_throughput")),
        "usd_per_million_input_tokens": _per_million(per_hour, _input_throughput(summary)),
        "usd_per_million_tokens": _per_million(per_hour, summary.get("total_token_throughput")),
    }
    table = {} if cost is not None and cost.replace_api_prices else dict(API_PRICES)
    if cost is not None:
        table.update(cost.api_prices)
    in_tps = _input_throughput(summary) or 0.0
    out_tps = summary.get("output_throughput") or 0.0
    comparison = {}
    for name, p in table.items():
        api_per_hour = (in_tps * p.input_usd_per_mtok + out_tps * p.output_usd_per_mtok) * 3600.0 / 1e6
        comparison[name] = {
            "input_usd_per_mtok": p.input_usd_per_mtok, "output_usd_per_mtok": p.output_usd_per_mtok,
            "api_usd_per_hour": api_per_hour if api_per_hour > 0 else None,
            "self_hosted_vs_api": (per_hour / api_per_hour) if per_hour is not None and api_per_hour > 0 else None,
            "as_of": p.as_of, "source": p.source,
        }
    out["api_price_comparison"] = comparison
    out["api_prices_as_of"] = API_PRICES_AS_OF
    return out


def _input_throughput(summary: dict[str, Any]) -> float | None:
    total, out = summary.get("total_token_throughput"), summary.get("output_throughput")
    if total is None or out is None:
        return None
    return total - out
