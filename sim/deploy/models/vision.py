"""Vision towers of multimodal wrappers: exact parameters and encoder FLOPs per image.

Two towers are modelled block by block; both are a patch embedding, a learned position table and
``depth`` pre-norm ViT blocks (LayerNorms with bias, q/k/v and output projections with bias, GELU MLP
with biases), followed by a projector into the language model:

* Qwen3-VL (``Qwen3VLVisionModel``): a Conv3d patch embedding (``temporal_patch_size × patch_size²``
  pixels × ``in_channels`` per patch, with bias); a patch merger (LayerNorm, two linears over
  ``spatial_merge_size²`` patches) and one DeepStack merger per ``deepstack_visual_indexes`` entry
  (post-shuffle LayerNorm). An image of ``T`` LM tokens is ``T · merge²`` patches.
* Gemma 3 (``SiglipVisionModel`` + ``Gemma3MultiModalProjector``): a Conv2d patch embedding, the SigLIP
  encoder's ``post_layernorm``, then the projector: a 2-D average pool of the ``(image_size /
  patch_size)²`` patches down to ``mm_tokens_per_image`` tokens (``pool²`` patches per token), an
  RMSNorm over the vision width and ``mm_input_projection_weight`` (vision width × text width, no bias).
  Every image is resized to ``image_size``: it is always ``mm_tokens_per_image`` LM tokens.

Totals equal transformers' whole-model minus language-model parameter count
(tests/test_models_families.py, tests/test_vision_gemma3.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VisionTower:
    """A ViT encoder followed by patch mergers that turn ``merge²`` patches into one LM token."""

    depth: int
    hidden_size: int
    intermediate_size: int
    out_hidden_size: int
    patch_pixels: int  # in_channels · temporal_patch_size · patch_size²
    num_position_embeddings: int
    merge: int  # spatial_merge_size (Gemma 3: the average-pool kernel, patches per token = merge²)
    num_deepstack: int
    projector: str = "merger"  # "merger" (Qwen3-VL) or "gemma3" (post-LayerNorm, pool, RMSNorm, projection)
    fixed_tokens_per_image: int | None = None  # Gemma 3: every image is mm_tokens_per_image LM tokens

    def _merger_params(self, norm_width: int) -> int:
        h, m2 = self.hidden_size, self.merge ** 2
        return 2 * norm_width + (h * m2 * h * m2 + h * m2) + (h * m2 * self.out_hidden_size + self.out_hidden_size)

    @property
    def block_linear_params(self) -> int:
        """Weights of the GEMMs of one ViT block (qkv, proj, fc1, fc2), biases excluded."""
        h, inter = self.hidden_size, self.intermediate_size
        return 4 * h * h + 2 * h * inter

    def projector_gemms(self) -> tuple[tuple[int, int, int, bool], ...]:
        """GEMMs applied per LM token after the blocks: ``(n_out, k_in, count, tp_sharded)``. Qwen3-VL: the
        merger's two linears, once per merger (TP-sharded in vLLM); Gemma 3: the one input projection
        (a plain replicated matmul in vLLM's ``Gemma3MultiModalProjector``)."""
        h, m2, out = self.hidden_size, self.merge ** 2, self.out_hidden_size
        if self.projector == "gemma3":
            return ((out, h, 1, False),)
        mergers = 1 + self.num_deepstack
        return ((h * m2, h * m2, mergers, True), (out, h * m2, mergers, True))

    def params(self) -> int:
        """All parameters of the tower (patch embedding, positions, blocks, mergers or projector)."""
        h, inter = self.hidden_size, self.intermediate_size
        block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h)
        encoder = self.patch_pixels * h + h + self.num_position_embeddings * h + self.depth * block
        if self.projector == "gemma3":
            # post_layernorm (weight + bias), the projector's RMSNorm (weight) and its projection (no bias)
            return encoder + 2 * h + h + h * self.out_hidden_size
        return encoder + self._merger_params(h) + self.num_deepstack * self._merger_params(h * self.merge ** 2)

    def flops_per_image(self, image_tokens: int) -> float:
        """Encoder FLOPs for one image that becomes ``image_tokens`` LM tokens: every one of its
        ``image_tokens · merge²`` patches passes the blocks' GEMMs (2 FLOPs per MAC), attends to the
        image's other patches (QKᵀ and PV: 4·hidden per pair), and the mergers map each group of
        ``merge²`` patches to one token."""
        patches = image_tokens * self.merge ** 2
        h = self.hidden_size
        gemm = 2.0 * patches * (self.patch_pixels * h + self.depth * self.block_linear_params)
        attn = 4.0 * h * patches * patches * self.depth
        merger = 2.0 * image_tokens * sum(n * k * count for n, k, count, _ in self.projector_gemms())
        return gemm + attn + merger


def _gemma3_tower(v: dict[str, Any], text_hidden: int | None, tokens_per_image: int | None) -> VisionTower | None:
    """SigLIP (``siglip_vision_model``) with Gemma 3's projector; transformers' SiglipVisionConfig defaults
    for keys the config leaves out (3 channels)."""
    if v.get("model_type", "siglip_vision_model") != "siglip_vision_model" or text_hidden is None:
        return None
    if v.get("vision_use_head"):  # SigLIP's attention-pooling head: Gemma 3 builds it without one
        return None
    try:
        side = int(v["image_size"]) // int(v["patch_size"])
        tokens = int(tokens_per_image or 256)  # Gemma3Config default mm_tokens_per_image
        pool = side // math.isqrt(tokens)
        if math.isqrt(tokens) ** 2 != tokens or pool * math.isqrt(tokens) != side:
            return None
        return VisionTower(
            depth=int(v["num_hidden_layers"]), hidden_size=int(v["hidden_size"]),
            intermediate_size=int(v["intermediate_size"]), out_hidden_size=int(text_hidden),
            patch_pixels=int(v.get("num_channels", 3)) * int(v["patch_size"]) ** 2,
            num_position_embeddings=side * side, merge=pool, num_deepstack=0, projector="gemma3",
            fixed_tokens_per_image=tokens)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def vision_tower(wrapper: str, vision_config: dict[str, Any] | None, *, text_hidden: int | None = None,
                 tokens_per_image: int | None = None) -> VisionTower | None:
    """The tower of a wrapper's ``vision_config`` when simctl models it (Qwen3-VL, Gemma 3), else None.
    ``text_hidden`` (the language model's width) and ``tokens_per_image`` (``mm_tokens_per_image``) size
    Gemma 3's projector."""
    if wrapper == "gemma3" and isinstance(vision_config, dict):
        return _gemma3_tower(vision_config, text_hidden, tokens_per_image)
    if wrapper not in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5_moe") or not isinstance(vision_config, dict):
        return None
    v = vision_config
    try:
        return VisionTower(
            depth=int(v["depth"]), hidden_size=int(v["hidden_size"]), intermediate_size=int(v["intermediate_size"]),
            out_hidden_size=int(v["out_hidden_size"]),
            patch_pixels=int(v.get("in_channels", 3)) * int(v.get("temporal_patch_size", 2)) * int(v["patch_size"]) ** 2,
            num_position_embeddings=int(v["num_position_embeddings"]), merge=int(v.get("spatial_merge_size", 2)),
            num_deepstack=len(v.get("deepstack_visual_indexes") or ()))
    except (KeyError, TypeError, ValueError):
        return None
