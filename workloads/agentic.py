"""Agentic sessions: presets built from published agentic trace statistics (docs/workloads.md,
"Agentic sessions"; docs/kv-tiers.md).

An agentic session is a multi-turn conversation (``workload.conversation``) whose turns are LLM calls
of an agent loop: turn 0's new message is the user's task (``first_input_tokens``), every later
turn's new message is a tool result (``input_tokens``), the think time between an answer and the
next call is the tool-call latency (``think_time_s``), and a turn may issue several tool calls at
once (``parallel_calls``): the calls' results go out as parallel requests that share the whole
history (a branch each), and the next turn's prompt holds the history plus every branch's result
and answer — a tree that joins again. Every prompt is the whole history so far plus the new message,
so the KV of a session's history is reused turn after turn: the traffic KV tiers and cache-aware
routers are for.

``workload.agentic_preset: NAME`` fills the keys a preset sets (shared system prompt, lengths, turns,
think times, parallel calls) wherever the file leaves them unset. Presets and their sources:

- ``codex-agent``: the synthetic agentic workload of vLLM × Mooncake ("Serving Agentic Workloads at
  Scale with vLLM x Mooncake", vLLM blog 2026-05-06; measurements.json VLLM-MOONCAKE-STORE-GB200):
  20K common tokens (system prompt + tools), 10K first input, 2,048 new tokens per turn, 900 output
  tokens, 30 turns per session. Tool latency is not published there; 2 s is the median tool
  execution time we assume for shell/file tools and is documented as an assumption.
- ``coding-agent``: SGLang HiCache's Novita coding-agent deployment ("SGLang HiCache", LMSYS blog
  2025-09-10; measurements.json SGL-HICACHE): dialogues above 25K tokens, about 8 turns per session.
  The per-turn split (4K first input, 3K per turn, 400 output) is chosen so that 8 turns reach
  ~25K tokens of context, matching the published statistics; parallel calls 1–2 per turn.
"""
from __future__ import annotations

import copy
from typing import Any

from workloads.registry import invalid

__all__ = ["AGENTIC_PRESETS", "apply_agentic_preset"]

AGENTIC_PRESETS: dict[str, dict[str, Any]] = {
    "codex-agent": {
        "prefix": {"num_groups": 1, "prefix_tokens": 20_000},
        "input_tokens": 2048,
        "output_tokens": 900,
        "conversation": {"turns": 30, "first_input_tokens": 10_000, "think_time_s": 2.0},
    },
    "coding-agent": {
        "prefix": {"num_groups": 1, "prefix_tokens": 2_000},
        "input_tokens": {"dist": "lognormal", "mean": 3000, "std": 1500, "min": 200, "max": 12000},
        "output_tokens": {"dist": "lognormal", "mean": 400, "std": 250, "min": 16, "max": 2000},
        "conversation": {"turns": {"dist": "uniform", "low": 5, "high": 11},
                         "first_input_tokens": 4000,
                         "think_time_s": {"dist": "lognormal", "mean": 3.0, "std": 2.0},
                         "parallel_calls": {"dist": "uniform", "low": 1, "high": 2}},
    },
}


def apply_agentic_preset(data: Any) -> Any:
    """Fill ``workload`` keys from ``agentic_preset`` where the file leaves them unset (a mapping in,
    a mapping out; ``conversation`` is merged key by key)."""
    if not isinstance(data, dict) or data.get("agentic_preset") is None:
        return data
    name = data["agentic_preset"]
    if name not in AGENTIC_PRESETS:
        raise invalid(f"agentic_preset: unknown preset {name!r}; known: {', '.join(sorted(AGENTIC_PRESETS))}")
    preset = copy.deepcopy(AGENTIC_PRESETS[name])
    out = dict(data)
    for key, val in preset.items():
        if key == "conversation" and isinstance(out.get("conversation"), dict):
            out["conversation"] = {**val, **out["conversation"]}
        elif out.get(key) is None:
            out[key] = val
    return out
