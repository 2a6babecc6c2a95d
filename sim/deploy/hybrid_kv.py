"""KV-cache layout of hybrid models (softmax attention + linear attention), as vLLM's hybrid KV-cache
manager lays it out.

A Qwen3-Next-style model mixes full-attention layers, whose KV cache grows with the context, and
Gated DeltaNet linear-attention layers, which keep one fixed recurrent state per sequence. vLLM V1
(``vllm/v1/core/kv_cache_utils.py`` ``_get_kv_cache_groups_uniform_page_size`` and
``vllm/model_executor/models/config.py`` ``HybridAttentionMambaModelConfig``) serves both from one
block pool:

* **uniform pages.** The attention block size is raised to the smallest multiple of the kernel
  alignment (:data:`KERNEL_BLOCK_ALIGNMENT` tokens) whose page (block_size × per-token KV bytes of one
  layer) holds one layer's recurrent state; the state page is padded to that size. Every page in the
  pool has the same size.
* **layer groups.** Layers of each kind are cut into groups of ``group_size`` layers (the smaller
  kind's count, or the larger one's when they are within 25 %); one block id maps to one page in
  one layer of every group, so a block costs ``group_size × page`` bytes.
* **per-request use.** Each attention group takes ``ceil(tokens / block_size)`` blocks; each state
  group takes one block, whatever the context.

So ``sequences that fit at T tokens = num_blocks // (attention_groups · ceil(T / block_size) + state_groups)``.

Simplifications (documented in docs/models.md): the state is kept in the KV dtype (vLLM's default
``mamba_ssm_cache_dtype = auto``); pipeline stages take ``ceil(n / pp)`` layers of each kind; a
linear-attention state is not prefix-cached (vLLM's default for these models too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sim.deploy.models.spec import ModelSpec, dtype_bytes

#: token alignment vLLM uses when it enlarges the attention block size of a hybrid model
#: (``HybridAttentionMambaModelConfig``: ``kernel_block_alignment_size = 16`` for the FlashAttention backend)
KERNEL_BLOCK_ALIGNMENT = 16


@dataclass(frozen=True)
class HybridKVLayout:
    """Block layout of one GPU of a hybrid model (all sizes in bytes)."""

    block_size: int  # tokens per attention block (enlarged from the configured one)
    group_size: int  # layers per KV-cache group
    attention_groups: int
    state_groups: int
    attention_token_bytes: int  # KV bytes of one token in one attention layer on this GPU
    state_bytes_per_layer: int  # recurrent state of one sequence in one linear-attention layer on this GPU
    page_bytes: int  # one page (one layer): block_size × attention_token_bytes ≥ state_bytes_per_layer

    @property
    def block_bytes(self) -> int:
        """Bytes one block id costs: a page in one layer of every group."""
        return self.group_size * self.page_bytes

    def blocks_per_sequence(self, context_tokens: int) -> int:
        """Blocks one sequence of ``context_tokens`` tokens holds."""
        return self.attention_groups * max(1, math.ceil(context_tokens / self.block_size)) + self.state_groups


def group_size(counts: list[int]) -> int:
    """vLLM's group size for layer kinds with these layer counts."""
    lo, hi = min(counts), max(counts)
    return hi if hi < lo * 1.25 else lo


def hybrid_layout(model: ModelSpec, tp: int, pp: int, kv_dtype: str, block_size: int) -> HybridKVLayout | None:
    """The layout for a linear-attention hybrid on one GPU (None for a model without linear attention)."""
    la = model.linear_attention
    if la is None or not model.is_hybrid:
        return None
    b = dtype_bytes(kv_dtype)
    if model.attention == "mla":
        attn_elems = model.kv_elements_per_token_per_layer()
    else:
        attn_elems = 2 * max(1, model.num_kv_heads // tp) * model.head_dim
    attn_token = int(attn_elems * b)
    # Gated DeltaNet heads and conv channels are split over TP ranks (vLLM shards them like attention heads)
    state_elems = (la.num_v_heads // tp) * la.k_head_dim * la.v_head_dim + (la.conv_dim // tp) * (la.conv_kernel - 1)
    state = int(state_elems * b)
    a = KERNEL_BLOCK_ALIGNMENT
    bs = max(block_size, a * math.ceil(state / (a * attn_token)))
    n_attn = math.ceil(model.num_attention_layers / pp)
    n_lin = math.ceil(model.num_linear_attention_layers / pp)
    g = group_size([n_attn, n_lin])
    return HybridKVLayout(block_size=bs, group_size=g, attention_groups=math.ceil(n_attn / g),
                          state_groups=math.ceil(n_lin / g), attention_token_bytes=attn_token,
                          state_bytes_per_layer=state, page_bytes=bs * attn_token)
