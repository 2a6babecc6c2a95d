"""Vision towers of multimodal wrappers: exact parameters and encoder FLOPs per image.

Only Qwen3-VL's tower (``Qwen3VLVisionModel``) is modelled block by block: a Conv3d patch embedding
(``temporal_patch_size × patch_size²`` pixels × ``in_channels`` per patch, with bias), a learned
position table, ``depth`` pre-norm ViT blocks (LayerNorms with bias, fused qkv and proj with bias,
GELU MLP with biases), a patch merger (LayerNorm, two linears over ``spatial_merge_size²`` patches)
and one DeepStack merger per ``deepstack_visual_indexes`` entry (post-shuffle LayerNorm). Totals equal
transformers' ``model.visual`` parameter count (tests/test_models_families.py).
"""
from __future__ import annotations

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
    merge: int  # spatial_merge_size
    num_deepstack: int

    def _merger_params(self, norm_width: int) -> int:
        h, m2 = self.hidden_size, self.merge ** 2
        return 2 * norm_width + (h * m2 * h * m2 + h * m2) + (h * m2 * self.out_hidden_size + self.out_hidden_size)

    @property
    def block_linear_params(self) -> int:
        """Weights of the GEMMs of one ViT block (qkv, proj, fc1, fc2), biases excluded."""
        h, inter = self.hidden_size, self.intermediate_size
        return 4 * h * h + 2 * h * inter

    def params(self) -> int:
        """All parameters of the tower (patch embedding, positions, blocks, mergers)."""
        h, inter = self.hidden_size, self.intermediate_size
        block = 4 * h + (3 * h * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h)
        return (self.patch_pixels * h + h + self.num_position_embeddings * h + self.depth * block
                + self._merger_params(h) + self.num_deepstack * self._merger_params(h * self.merge ** 2))

    def flops_per_image(self, image_tokens: int) -> float:
        """Encoder FLOPs for one image that becomes ``image_tokens`` LM tokens: every one of its
        ``image_tokens · merge²`` patches passes the blocks' GEMMs (2 FLOPs per MAC), attends to the
        image's other patches (QKᵀ and PV: 4·hidden per pair), and the mergers map each group of
        ``merge²`` patches to one token."""
        patches = image_tokens * self.merge ** 2
        h, m2 = self.hidden_size, self.merge ** 2
        gemm = 2.0 * patches * (self.patch_pixels * h + self.depth * self.block_linear_params)
        attn = 4.0 * h * patches * patches * self.depth
        merger = 2.0 * image_tokens * (h * m2 * h * m2 + h * m2 * self.out_hidden_size) * (1 + self.num_deepstack)
        return gemm + attn + merger


def vision_tower(wrapper: str, vision_config: dict[str, Any] | None) -> VisionTower | None:
    """The tower of a wrapper's ``vision_config`` when simctl models it (Qwen3-VL), else None."""
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
