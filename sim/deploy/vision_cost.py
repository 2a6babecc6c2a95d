"""Vision-encoder prefill cost: the ViT of a multimodal wrapper (Qwen3-VL) priced through the roofline.

When a request carries images (``workload.images_per_request`` / ``image_tokens``), vLLM V1 runs the
vision encoder in the same step as the first prefill chunk whose token range reaches the image
placeholders (``vllm/v1/core/sched/scheduler.py``, ``Scheduler._try_schedule_encoder_inputs``: "an encoder
input will be scheduled if its output tokens overlap with the range of tokens being computed in this
step"); the model runner executes the encoder before that step's language-model forward. The scheduler
adds those images to the step's :class:`~sim.deploy.step_cost.BatchShape` (``num_images``,
``Σ T``, ``Σ T²`` for images of ``T`` LM tokens), so pricing stays O(1) per step.

One image of ``T`` LM tokens is ``P = T·merge²`` patches. Per step, with ``P_j`` patches per image:

* **GEMMs** — patch embedding (``patch_pixels → hidden``, replicated) and per block qkv / proj / fc1 /
  fc2 run over ``ΣP_j`` rows; the patch merger and each DeepStack merger (``hidden·merge² → hidden·merge²
  → out_hidden``) over ``ΣT_j`` rows. Each GEMM is priced like the language model's dense GEMMs:
  ``overlap(compute, weight read + activations) + kernel launch``, compute from the profile's tile/wave
  model (or the row ramp), at the 16-bit peak (the vision tower stays bf16 whatever the LM's weight format).
  Block and merger GEMMs are TP-sharded (vLLM's column/row-parallel linears in ``qwen3_vl.py``).
* **Attention** — bidirectional within each image: ``4·hidden`` FLOPs per (query, key) pair per block
  (QKᵀ and PV), ``Σ P_j²`` pairs, at the attention peak and efficiency of the language model.
* **TP all-reduce** — one after each block's proj and fc2 (``ΣP_j · hidden`` activations) and one per
  merger (``ΣT_j · out_hidden``).

Left out (small next to the GEMMs at image sizes): LayerNorm/GELU element-wise kernels, rotary
position embedding, the bilinear interpolation of the position table. FLOPs equal
:meth:`sim.deploy.models.vision.VisionTower.flops_per_image` summed over the images (tests/test_vision_cost.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim.deploy.kernel_shapes import gemm_shape, overlap
from sim.deploy.models.vision import VisionTower, vision_tower
from sim.deploy.step_cost import BatchShape
from sim.errors import ConfigError

if TYPE_CHECKING:
    from sim.deploy.models.spec import ModelSpec

WEIGHT_BYTES = 2.0  # bf16 vision tower
ACT_BYTES = 2.0


def model_vision_tower(model: "ModelSpec") -> VisionTower | None:
    """The modelled vision tower of ``model`` (a Qwen3-VL wrapper), else None."""
    mm = getattr(model, "multimodal", None)
    if not mm:
        return None
    return vision_tower(mm["wrapper"], mm.get("vision_config"), text_hidden=model.hidden_size,
                        tokens_per_image=mm.get("mm_tokens_per_image"))


def vision_weight_bytes_per_gpu(model: "ModelSpec", tp: int) -> float:
    """Resident bytes of the vision tower on one GPU (0 without a modelled tower): bf16, the blocks' and
    mergers' linear weights TP-sharded, everything else (patch embedding, positions, norms, biases)
    replicated. vLLM loads the tower with the model, so the memory plan counts it on every GPU."""
    tower = model_vision_tower(model)
    if tower is None:
        return 0.0
    sharded = tower.depth * tower.block_linear_params + sum(
        n * k * count for n, k, count, is_sharded in tower.projector_gemms() if is_sharded)
    return ((tower.params() - sharded) + sharded / tp) * WEIGHT_BYTES


def check_vision_inputs(model: "ModelSpec", workload: Any, where: str) -> None:
    """Refuse a workload whose requests carry images when ``model`` has no modelled vision tower, or whose
    ``image_tokens`` differ from the fixed tokens per image of the model's tower (Gemma 3: 256)."""
    if workload is None or not getattr(workload, "has_images", False):
        return
    tower = model_vision_tower(model)
    if tower is None:
        raise ConfigError(f"{where}: workload.images_per_request: model {model.name} has no vision tower simctl "
                          "models (supported: Qwen3-VL / Qwen3-VL-MoE / Qwen3.5 / Gemma 3 wrappers)")
    fixed = tower.fixed_tokens_per_image
    if fixed is None:
        return
    streams = [("workload.image_tokens", workload.image_tokens)]
    streams += [(f"workload.classes.{c.name}.image_tokens", c.image_tokens) for c in workload.classes]
    for key, tokens in streams:
        if tokens is not None and tokens != fixed:
            raise ConfigError(f"{where}: {key}: model {model.name} turns every image into {fixed} tokens "
                              f"(mm_tokens_per_image), got {tokens}")


class VisionEncoderCost:
    """Prices the vision encoder's work of one step (see the module docstring)."""

    def __init__(self, tower: VisionTower, rf: Any) -> None:
        """``rf``: the language model's :class:`sim.deploy.roofline.RooflineCostModel` (hardware, TP degree,
        attention constants and all-reduce model are shared with it; not imported here, which would cycle)."""
        self.tower = tower
        hw, tp = rf.hw, rf.tp
        eff = hw.efficiency
        self.tp = tp
        peak = hw.peak_flops("bf16")
        e = eff.gemm_compute_efficiency.value
        mem_bw = hw.memory_bandwidth_bytes_per_s * eff.memory_efficiency.value
        self.kernel_s = hw.overheads.gemm_kernel_s.value
        self.p = eff.gemm_overlap_exponent.value
        n_half = eff.gemm_half_tokens.value
        sms = int(hw.compute_units or 0)
        h, inter = tower.hidden_size, tower.intermediate_size
        # (rows: "patch" or "token", n_out per GPU, k_in per GPU, layers)
        specs = [("patch", h, tower.patch_pixels, 1),
                 ("patch", 3 * h / tp, h, tower.depth), ("patch", h, h / tp, tower.depth),
                 ("patch", inter / tp, h, tower.depth), ("patch", h, inter / tp, tower.depth)]
        # projector GEMMs per LM token: Qwen3-VL's mergers (first column-, then row-parallel), Gemma 3's
        # replicated input projection
        for i, (n_out, k_in, count, sharded) in enumerate(tower.projector_gemms()):
            if sharded:
                n_out, k_in = (n_out / tp, k_in) if i % 2 == 0 else (n_out, k_in / tp)
            specs.append(("token", n_out, k_in, count))
        self._gemms = []
        weight_bytes = 0.0
        for rows, n_out, k_in, layers in specs:
            w = n_out * k_in * WEIGHT_BYTES
            weight_bytes += layers * w
            shape = gemm_shape(n_out, k_in, 1.0, peak, e, sms) if sms else None
            self._gemms.append((rows == "patch", layers, 2.0 * n_out * k_in / (peak * e), w / mem_bw,
                                (n_out + k_in) * ACT_BYTES / mem_bw, shape, 2.0 * n_out * k_in,
                                (n_out + k_in) * ACT_BYTES))
        self.n_half = n_half
        self.weight_bytes_per_gpu = weight_bytes
        self._attn_flops_per_pair = 4.0 * h / tp * tower.depth
        self._attn_c = rf._attn_c
        self._attn_kernel_s = rf.attention_kernel_s * tower.depth
        self._allreduce = rf.allreduce
        self._ar_block_bytes = h * ACT_BYTES  # per patch, 2 per block
        self._ar_merger_bytes = tower.out_hidden_size * ACT_BYTES  # per token, 1 per (row-parallel) merger
        self._num_block_ar = 2 * tower.depth
        self._num_merger_ar = sum(count for n, k, count, sharded in tower.projector_gemms()[1:2] if sharded)

    def price(self, shape: BatchShape) -> tuple[float, float, float]:
        """(seconds, FLOPs per GPU, HBM bytes per GPU) of encoding the step's images."""
        tokens = float(shape.sum_image_tokens)
        if tokens <= 0:
            return 0.0, 0.0, 0.0
        m2 = self.tower.merge ** 2
        patches = tokens * m2
        t = flops = nbytes = 0.0
        p, kernel, n_half = self.p, self.kernel_s, self.n_half
        for is_patch, layers, c, w, a, gs, f_row, act_row in self._gemms:
            rows = patches if is_patch else tokens
            tc = gs.compute_s(rows) if gs is not None else c * (rows + n_half)
            tm = w + a * rows
            t += layers * (overlap(tc, tm, p) + kernel)
            flops += layers * f_row * rows
            nbytes += layers * act_row * rows
        nbytes += self.weight_bytes_per_gpu
        pairs = float(shape.sum_image_tokens_sq) * m2 * m2
        fa = self._attn_flops_per_pair * pairs
        t += fa * self._attn_c + self._attn_kernel_s
        flops += fa
        if self.tp > 1:
            t += (self._num_block_ar * self._allreduce.time_s(self._ar_block_bytes * patches)
                  + self._num_merger_ar * self._allreduce.time_s(self._ar_merger_bytes * tokens))
        return t, flops, nbytes
