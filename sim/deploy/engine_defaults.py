"""The serving engine's own defaults for the settings an experiment leaves out (``engine.*: null``).

A real engine fills several settings from the GPU it runs on; simctl must fill them the same way, or a
file that says nothing about ``max_num_seqs`` simulates a different server than ``vllm serve`` would start.
Every rule here cites the code it reproduces.

**vLLM V1** (policy ``vllm``; ``vllm/engine/arg_utils.py`` of v0.15.1, ``EngineArgs.get_batch_defaults``,
``_set_default_max_num_seqs_and_batched_tokens_args`` and ``_set_default_chunked_prefill_and_prefix_caching_args``;
the usage context is ``OPENAI_API_SERVER``, what ``vllm serve`` passes):

* ``device_memory >= 70 GiB and "a100" not in device_name`` (the A100 check is vllm-project/vllm#17885:
  a large budget lowered A100 throughput) → ``max_num_batched_tokens`` 8192 and ``max_num_seqs`` 1024;
  otherwise 2048 and 256;
* with chunked prefill off the budget is ``max(max_model_len, that default)``;
* a defaulted budget is capped at ``max_num_seqs × max_model_len``; a defaulted ``max_num_seqs`` at the
  budget;
* ``enable_prefix_caching`` defaults to ``model_config.is_prefix_caching_supported``: on for generative
  models.

**vLLM V0** (policy ``vllm-v0``): ``max_num_seqs`` 256, prefix caching off (``EngineArgs.__post_init__``
enabled it only under ``VLLM_USE_V1``); the budget is ``max(max_model_len, 2048)`` (2048 with chunked
prefill; ``vllm/config.py`` ``SchedulerConfig``).

**SGLang** (policy ``sglang``; ``python/sglang/srt/server_args.py`` ``_handle_gpu_memory_settings``):
``chunked_prefill_size`` by GPU memory — < 35 GiB: 2048, < 60 GiB: 4096, < 160 GiB: 8192, else 16384
(used as the token budget); ``max_running_requests`` unset → ``max_total_num_tokens // 2`` capped by the
request pool, ``min(max(max_total_num_tokens / context_len × 512, 2048), 4096)``
(``python/sglang/srt/managers/tp_worker.py``, ``model_runner.py``), resolved by
:func:`sglang_max_running_requests` once the KV pool is sized; the radix (prefix) cache is on
(``disable_radix_cache = False``).

The other policies (``orca``, ``static``, ``sarathi``) keep simctl's historical defaults: 256 sequences,
prefix caching off, ``max(max_model_len, 2048)`` tokens without chunking.

:func:`resolve_engine_defaults` returns the filled values and one :class:`ResolvedSetting` per value the
file did not give, so ``simctl run`` can print what was assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.deploy.hardware import GIB

#: ``vllm/engine/arg_utils.py`` ``get_batch_defaults``: the memory threshold of the "large GPU" defaults
VLLM_LARGE_GPU_BYTES = 70 * GIB
#: (max_num_batched_tokens, max_num_seqs) for UsageContext.OPENAI_API_SERVER: large GPUs / the rest
VLLM_API_SERVER_DEFAULTS = {True: (8192, 1024), False: (2048, 256)}
#: simctl's defaults for the policies that model engines without such logic
LEGACY_MAX_NUM_SEQS = 256
LEGACY_MIN_BUDGET = 2048
#: ``server_args.py``: (upper bound of GPU memory, chunked_prefill_size); the last applies above 160 GiB
SGLANG_CHUNKED_PREFILL = ((35 * GIB, 2048), (60 * GIB, 4096), (160 * GIB, 8192), (float("inf"), 16384))
#: ``model_runner.py``: request pool size = min(max(tokens / context_len × 512, 2048), 4096)
SGLANG_POOL_MIN, SGLANG_POOL_MAX, SGLANG_POOL_PER_CONTEXT = 2048, 4096, 512


@dataclass(frozen=True)
class ResolvedSetting:
    """One engine setting the experiment left out and the value the engine would pick, with why."""

    key: str
    value: Any
    reason: str

    def line(self) -> str:
        """``engine.max_num_seqs = 1024 (why)`` for terminal output."""
        return f"engine.{self.key} = {self.value} ({self.reason})"


def vllm_is_large_gpu(hardware: Any) -> bool:
    """vLLM's ``device_memory >= 70 GiB and "a100" not in device_name`` for a hardware profile (the device
    name is what CUDA reports, e.g. "NVIDIA A100-SXM4-80GB"; the profile's name and display name carry it)."""
    names = " ".join((hardware.name, hardware.display_name, *hardware.aliases)).lower()
    return hardware.memory_bytes >= VLLM_LARGE_GPU_BYTES and "a100" not in names


def sglang_chunked_prefill_size(hardware: Any) -> int:
    """SGLang's default ``chunked_prefill_size`` for the GPU's memory."""
    return next(size for bound, size in SGLANG_CHUNKED_PREFILL if hardware.memory_bytes < bound)


def sglang_max_running_requests(kv_tokens: int, context_len: int) -> int:
    """SGLang's default ``max_running_requests`` for a KV pool of ``kv_tokens`` tokens."""
    pool = min(max(int(kv_tokens / max(1, context_len) * SGLANG_POOL_PER_CONTEXT), SGLANG_POOL_MIN), SGLANG_POOL_MAX)
    return max(1, min(kv_tokens // 2, pool))


def resolve_engine_defaults(engine: Any, hardware: Any, max_model_len: int) -> tuple[dict[str, Any], list[ResolvedSetting]]:
    """``(updates, notes)``: the values of ``max_num_batched_tokens``, ``max_num_seqs`` and
    ``enable_prefix_caching`` the engine picks when ``engine`` leaves them ``None``.

    SGLang's ``max_num_seqs`` depends on the KV pool and is left ``None`` here (see
    :func:`sglang_max_running_requests`)."""
    policy = engine.policy
    updates: dict[str, Any] = {}
    notes: list[ResolvedSetting] = []

    def put(key: str, value: Any, reason: str) -> None:
        updates[key] = value
        notes.append(ResolvedSetting(key, value, reason))

    seqs, budget = engine.max_num_seqs, engine.max_num_batched_tokens
    if policy == "vllm":
        large = vllm_is_large_gpu(hardware)
        d_budget, d_seqs = VLLM_API_SERVER_DEFAULTS[large]
        gpu = ("vLLM V1 API-server default on a GPU with ≥ 70 GiB that is not an A100" if large else
               "vLLM V1 API-server default on an A100 or a GPU with < 70 GiB")
        r_seqs = d_seqs if seqs is None else seqs
        if budget is None:
            b = d_budget if engine.enable_chunked_prefill else max(max_model_len, d_budget)
            b = min(r_seqs * max_model_len, b)
            why = gpu if engine.enable_chunked_prefill else f"chunked prefill off: max(max_model_len, {d_budget}), {gpu}"
            put("max_num_batched_tokens", b, why)
            budget = b
        if seqs is None:
            put("max_num_seqs", min(d_seqs, budget), gpu)
        if engine.enable_prefix_caching is None:
            put("enable_prefix_caching", True, "vLLM V1 enables prefix caching for generative models")
        return updates, notes
    if policy == "sglang":
        if budget is None:
            put("max_num_batched_tokens", sglang_chunked_prefill_size(hardware),
                f"SGLang chunked_prefill_size default for {hardware.memory_bytes / GIB:.0f} GiB of GPU memory")
        if engine.enable_prefix_caching is None:
            put("enable_prefix_caching", True, "SGLang's radix cache is on by default")
        return updates, notes
    if budget is None:
        if policy == "vllm-v0" and engine.policy_options.get("enable_chunked_prefill"):
            put("max_num_batched_tokens", LEGACY_MIN_BUDGET, "vLLM V0 default with chunked prefill")
        elif policy in ("vllm-v0", "orca", "static") or not engine.enable_chunked_prefill:
            put("max_num_batched_tokens", max(max_model_len, LEGACY_MIN_BUDGET), "no chunking: max(max_model_len, 2048)")
        else:
            large = hardware.memory_bytes >= VLLM_LARGE_GPU_BYTES
            put("max_num_batched_tokens", 8192 if large else 2048, "chunked budget as vLLM V1 by GPU memory")
    if seqs is None:
        put("max_num_seqs", LEGACY_MAX_NUM_SEQS, f"{policy} default" if policy != "vllm-v0" else "vLLM V0 default")
    if engine.enable_prefix_caching is None:
        put("enable_prefix_caching", False, f"{policy} default" if policy != "vllm-v0" else "vLLM V0 default")
    return updates, notes
