"""``engine.speculative``: speculative decoding and multi-token prediction (docs/speculative.md).

Names follow vLLM's ``--speculative-config`` where vLLM has one (``method``,
``num_speculative_tokens``, ``draft_tensor_parallel_size`` → ``draft_tp``, ``parallel_drafting``,
``disable_by_batch_size``). The acceptance model is simctl's: the target's verdict on a draft token is
not simulated from token ids, so it is drawn from per-position conditional acceptance rates.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.config_base import Frozen
from sim.limits import MAX_SPECULATIVE_TOKENS

__all__ = ["SpeculativeConfig", "AcceptanceConfig", "ClassAcceptance", "MODEL_DRAFTED_METHODS"]

#: methods whose drafts come from a neural drafter priced by the cost model (the others propose from
#: the request's own tokens on the CPU: n-gram / prompt lookup and suffix trees cost ~0 GPU time)
MODEL_DRAFTED_METHODS = ("eagle", "eagle3", "mtp", "draft_model")


class ClassAcceptance(Frozen):
    """Acceptance of one request class: a constant per-position ``rate`` or ``per_position`` rates."""

    rate: float | None = Field(None, ge=0.0, le=1.0, description="conditional acceptance rate α of every draft position")
    per_position: tuple[float, ...] | None = Field(
        None, min_length=1, description="conditional acceptance rate of draft position i given positions < i were accepted")

    @model_validator(mode="after")
    def _one_form(self) -> "ClassAcceptance":
        if (self.rate is None) == (self.per_position is None):
            raise ValueError("give exactly one of 'rate' or 'per_position'")
        if self.per_position is not None and any(not 0.0 <= a <= 1.0 for a in self.per_position):
            raise ValueError(f"per_position rates must lie in [0, 1], got {list(self.per_position)}")
        return self


class AcceptanceConfig(Frozen):
    """How many draft tokens the target accepts.

    Exactly one of ``rate`` (the same conditional rate α at every position), ``per_position``
    (α_1, α_2, ...: position i is accepted with probability α_i given 1..i−1 were) or ``trace`` (a CSV
    with one row per request, column ``acceptance_rate`` or ``acceptance_length``, replayed in request
    order). ``concentration`` draws each request's own rate from a Beta distribution with mean
    ``rate`` (κ = α+β; smaller = more spread between requests). ``by_class`` overrides the acceptance
    of requests of a workload class (e.g. code vs chat).
    """

    rate: float | None = Field(None, ge=0.0, le=1.0)
    per_position: tuple[float, ...] | None = Field(None, min_length=1)
    trace: str | None = Field(None, description="CSV of per-request acceptance (acceptance_rate or acceptance_length column)")
    concentration: float | None = Field(None, gt=0.0, description="per-request Beta(κ·rate, κ·(1−rate)) draw of the rate")
    by_class: dict[str, ClassAcceptance] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_form(self) -> "AcceptanceConfig":
        given = [k for k in ("rate", "per_position", "trace") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'rate', 'per_position' or 'trace'"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.per_position is not None and any(not 0.0 <= a <= 1.0 for a in self.per_position):
            raise ValueError(f"per_position rates must lie in [0, 1], got {list(self.per_position)}")
        if self.concentration is not None and self.rate is None:
            raise ValueError("'concentration' draws a per-request rate around 'rate': give 'rate'")
        return self


class SpeculativeConfig(Frozen):
    """Speculative decoding of one replica (``engine.speculative``)."""

    method: Literal["eagle", "eagle3", "mtp", "draft_model", "ngram", "suffix"]
    num_speculative_tokens: int = Field(ge=1, le=MAX_SPECULATIVE_TOKENS, description="draft tokens k proposed per request per step")
    draft_model: str | None = Field(None, description="draft_model method: a catalog model or a config.json path")
    draft_tp: int | None = Field(None, ge=1, description="tensor-parallel degree of the draft model (default: the target's)")
    draft_num_layers: int = Field(1, ge=1, description="decoder layers of an EAGLE/MTP head (EAGLE-3 and DeepSeek MTP: 1; P-EAGLE: 4)")
    draft_vocab_size: int | None = Field(None, ge=1, description="vocabulary of the head's LM head (EAGLE-3 heads: often 32000); default: the target's")
    # the weight formats of sim.config.Dtype (tests/test_speculative.py keeps the two lists equal)
    draft_weights: Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4"] | None = Field(
        None, description="weight format of the drafter's checkpoint (EAGLE heads and TensorRT-LLM's MTP layers ship in bf16); default: the target's")
    parallel_drafting: bool = Field(False, description="one drafter pass proposes all k tokens (P-EAGLE, vLLM's parallel_drafting) instead of k sequential passes")
    disable_by_batch_size: int | None = Field(None, ge=1, description="no speculation in a step that starts with at least this many running requests")
    acceptance: AcceptanceConfig

    @model_validator(mode="after")
    def _draft(self) -> "SpeculativeConfig":
        if self.method == "draft_model" and not self.draft_model:
            raise ValueError("method 'draft_model' needs 'draft_model' (a catalog model or config.json)")
        if self.method != "draft_model" and (self.draft_model is not None or self.draft_tp is not None):
            raise ValueError(f"'draft_model'/'draft_tp' apply to method 'draft_model', not '{self.method}'")
        if self.parallel_drafting and self.method not in MODEL_DRAFTED_METHODS:
            raise ValueError(f"'parallel_drafting' needs a model-based drafter, not '{self.method}'")
        pp = self.acceptance.per_position
        if pp is not None and len(pp) < self.num_speculative_tokens:
            raise ValueError(f"acceptance.per_position has {len(pp)} rates but num_speculative_tokens is "
                             f"{self.num_speculative_tokens}: give one rate per draft position")
        for name, cls in self.acceptance.by_class.items():
            if cls.per_position is not None and len(cls.per_position) < self.num_speculative_tokens:
                raise ValueError(f"acceptance.by_class.{name}.per_position has {len(cls.per_position)} rates "
                                 f"but num_speculative_tokens is {self.num_speculative_tokens}")
        return self

    @property
    def drafts_with_model(self) -> bool:
        """True when a neural drafter runs on the GPU (priced by the cost model)."""
        return self.method in MODEL_DRAFTED_METHODS
