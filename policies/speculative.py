"""Speculative decoding inside a scheduler: draft tokens per request and the target's verdict.

vLLM V1 semantics (``vllm/v1/core/sched/scheduler.py``, ``vllm/v1/spec_decode/``; docs/speculative.md):

- a decoding request (its next token sampled, ``num_tokens − num_computed_tokens == 1``) carries up
  to ``k = num_speculative_tokens`` draft tokens, so it is scheduled for ``1 + k`` tokens — the last
  sampled token plus the drafts — and the token budget counts all of them;
- its KV slots are allocated for all ``1 + k`` positions (vLLM's lookahead slots), but only the
  sampled token's blocks are registered in the prefix cache: drafts may be rejected;
- after the verification pass the target accepts the first ``a`` drafts (``0 ≤ a ≤ k``) and samples one
  more token (the bonus/correction token), so ``a + 1`` tokens are emitted at the end of that one step
  and ``num_computed_tokens`` advances by ``1 + a``: the ``k − a`` rejected slots are rolled back and
  reused by the next step (the request keeps the blocks; they are freed with the rest when it ends);
- drafts never run past the request's end: ``k_i = min(k, max_output_tokens − num_output_tokens − 1)``.

The number accepted is drawn from per-position conditional acceptance rates α_i (position i is accepted
with probability α_i given positions < i were), one vectorised draw per step from the replica's own
random stream, so ``E[a + 1] = 1 + Σ_i Π_{j≤i} α_j``. Counters follow vLLM's spec-decode metrics
(``vllm/v1/spec_decode/metrics.py``): drafts, draft tokens, accepted tokens, accepted per position.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import ConfigError, TraceError

__all__ = ["Speculator", "acceptance_rate_for_length", "expected_acceptance_length", "spec_decode_counters"]


def expected_acceptance_length(rates: np.ndarray | list[float], k: int) -> float:
    """vLLM's mean acceptance length for conditional rates ``rates[:k]``: ``1 + Σ_i Π_{j≤i} α_j``."""
    a = np.asarray(rates, dtype=np.float64)[:k]
    return float(1.0 + np.cumprod(a).sum())


def acceptance_rate_for_length(length: np.ndarray | float, k: int) -> np.ndarray:
    """The constant conditional rate α with ``1 + α + α² + … + α^k`` = ``length`` (vectorised bisection).

    Lengths are clipped to ``[1, k + 1]`` (0 and 1 acceptance)."""
    target = np.clip(np.asarray(length, dtype=np.float64), 1.0, k + 1.0)
    lo, hi = np.zeros_like(target), np.ones_like(target)
    powers = np.arange(1, k + 1, dtype=np.float64)
    for _ in range(60):  # 2^-60: exact to double precision
        mid = 0.5 * (lo + hi)
        val = 1.0 + (mid[..., None] ** powers).sum(axis=-1)
        high = val > target
        hi = np.where(high, mid, hi)
        lo = np.where(high, lo, mid)
    return 0.5 * (lo + hi)


class Speculator:
    """Per-replica speculative-decoding state: the acceptance model, its RNG stream and vLLM's counters.

    ``cfg`` is a :class:`sim.speculative_config.SpeculativeConfig` (trace paths already resolved).
    """

    def __init__(self, cfg: Any, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.k = k = int(cfg.num_speculative_tokens)
        self.disable_by_batch_size = cfg.disable_by_batch_size
        self.rng = rng
        acc = cfg.acceptance
        self._default = self._rates(acc.rate, acc.per_position)
        self._by_class = {name: self._rates(c.rate, c.per_position) for name, c in acc.by_class.items()}
        self._concentration = acc.concentration
        self._trace = _load_trace(acc.trace, k) if acc.trace is not None else None
        self._per_request = (self._trace is not None or self._concentration is not None)
        self._request_rates: dict[int, np.ndarray] = {}
        # vLLM spec-decode counters
        self.num_drafts = 0  # (request, step) pairs that verified ≥ 1 draft token
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.accepted_per_position = np.zeros(k, dtype=np.int64)

    def _rates(self, rate: float | None, per_position: tuple[float, ...] | None) -> np.ndarray | None:
        if per_position is not None:
            return np.asarray(per_position[: self.k], dtype=np.float64)
        if rate is not None:
            return np.full(self.k, float(rate))
        return None

    # ------------------------------------------------------------------ scheduling side
    def num_lookahead(self, num_running: int) -> int:
        """Draft tokens per request for a step starting with ``num_running`` running requests (0 when
        speculation is disabled at that batch size)."""
        limit = self.disable_by_batch_size
        return 0 if limit is not None and num_running >= limit else self.k

    # ------------------------------------------------------------------ verification
    def rates_of(self, req: Any) -> np.ndarray:
        """Conditional acceptance rates of ``req``'s draft positions (drawn once per request)."""
        if not self._per_request:
            cls = self._by_class.get(req.spec.class_name) if self._by_class else None
            return self._default if cls is None else cls
        rid = req.request_id
        r = self._request_rates.get(rid)
        if r is None:
            cls = self._by_class.get(req.spec.class_name) if self._by_class else None
            if cls is not None:
                r = cls
            elif self._trace is not None:
                r = np.full(self.k, self._trace[rid % self._trace.size])
            else:
                m, kappa = float(self._default[0]), self._concentration
                a = self.rng.beta(kappa * m, kappa * (1.0 - m)) if 0.0 < m < 1.0 else m
                r = np.full(self.k, a)
            self._request_rates[rid] = r
        return r

    def accept(self, reqs: list[Any], num_drafts: list[int]) -> np.ndarray:
        """Draw how many drafts of each of ``reqs`` the target accepts (``num_drafts[i]`` proposed)."""
        n = len(reqs)
        d = np.asarray(num_drafts, dtype=np.int64)
        width = int(d.max())
        if not self._per_request and not self._by_class:
            rates = self._default[:width]
        else:
            rates = np.vstack([self.rates_of(r)[:width] for r in reqs])
        ok = self.rng.random((n, width)) < rates
        ok &= np.arange(width) < d[:, None]  # positions past a request's drafts do not exist
        accepted = np.cumprod(ok, axis=1).sum(axis=1)  # the first rejection ends the run
        self.num_drafts += n
        self.num_draft_tokens += int(d.sum())
        self.num_accepted_tokens += int(accepted.sum())
        counts = np.bincount(accepted, minlength=self.k + 1)
        self.accepted_per_position += np.cumsum(counts[::-1])[::-1][1:self.k + 1]
        return accepted

    def verified_tokens(self, out: Any) -> list[int]:
        """Tokens each request of ``out`` (a SchedulerOutput) really computed: its scheduled tokens
        minus its rejected drafts, in ``out.num_scheduled_tokens`` order (one draw for the step)."""
        drafts = out.num_draft_tokens
        reqs = [r for r in out.scheduled if r.request_id in drafts]
        proposed = [drafts[r.request_id] for r in reqs]
        accepted = self.accept(reqs, proposed).tolist()
        rejected = {r.request_id: d - a for r, d, a in zip(reqs, proposed, accepted)}
        return [n - rejected.get(rid, 0) for rid, n in out.num_scheduled_tokens.items()]

    def forget(self, req: Any) -> None:
        """Drop a finished request's per-request rates."""
        if self._request_rates:
            self._request_rates.pop(req.request_id, None)


def _load_trace(path: str, k: int) -> np.ndarray:
    """Per-request conditional acceptance rates from a CSV trace (``acceptance_rate`` in [0, 1], or
    ``acceptance_length`` in [1, k + 1] converted with :func:`acceptance_rate_for_length`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"engine.speculative.acceptance.trace: no such file: {p}")
    try:
        df = pd.read_csv(p)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise TraceError(f"{p}: not a readable CSV ({exc})") from None
    if "acceptance_rate" in df.columns:
        col, vals = "acceptance_rate", df["acceptance_rate"]
    elif "acceptance_length" in df.columns:
        col, vals = "acceptance_length", df["acceptance_length"]
    else:
        raise TraceError(f"{p}: needs a column 'acceptance_rate' or 'acceptance_length' "
                         f"(got {', '.join(map(str, df.columns))})")
    arr = pd.to_numeric(vals, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if arr.size == 0:
        raise TraceError(f"{p}: no rows")
    if bad.size:
        raise TraceError(f"{p}: row {int(bad[0]) + 2}, column {col}: not a number")
    lo, hi = (0.0, 1.0) if col == "acceptance_rate" else (1.0, float("inf"))
    out = np.flatnonzero((arr < lo) | (arr > hi))
    if out.size:
        raise TraceError(f"{p}: row {int(out[0]) + 2}, column {col}: {arr[out[0]]} outside [{lo}, {hi}]")
    return arr if col == "acceptance_rate" else acceptance_rate_for_length(arr, k)


def spec_decode_counters(speculators: list[Speculator]) -> dict[str, Any]:
    """vLLM's spec-decode counters summed over replicas (``EngineOutput.stats["spec_decode"]``)."""
    per_pos = np.zeros(speculators[0].k, dtype=np.int64)
    for s in speculators:
        per_pos += s.accepted_per_position
    return {"num_speculative_tokens": speculators[0].k,
            "num_drafts": sum(s.num_drafts for s in speculators),
            "num_draft_tokens": sum(s.num_draft_tokens for s in speculators),
            "num_accepted_tokens": sum(s.num_accepted_tokens for s in speculators),
            "num_accepted_tokens_per_pos": per_pos.tolist()}
