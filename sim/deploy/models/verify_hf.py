"""Developer check: compare simctl's parameter accounting with Hugging Face ``transformers``.

Instantiates each config with ``AutoModelForCausalLM.from_config`` on the ``meta`` device (no memory,
no download) and compares ``model.num_parameters()`` and a per-category split of
``named_parameters()`` with :meth:`ModelSpec.total_params` / :meth:`ModelSpec.param_breakdown`.

Needs ``torch`` and ``transformers``, which simctl itself does not depend on::

    python -m sim.deploy.models.verify_hf                 # every catalog model
    python -m sim.deploy.models.verify_hf llama-3.1-8b path/to/config.json
    python -m sim.deploy.models.verify_hf --json out.json # also write the reference counts

Exit status 1 if any model differs.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

from sim.deploy.models import catalog, list_models, load_model, resolve_name
from sim.deploy.models.hf_config import WRAPPERS, read_config_file

#: model_type values transformers does not register, and the class their ``architectures`` name
MODEL_TYPE_ALIASES = {"kimi_k2": "deepseek_v3"}


def hf_category(name: str) -> str:
    """Breakdown category of an HF parameter name (same categories as ModelSpec.param_breakdown)."""
    if "lm_head" in name:
        return "lm_head"
    if re.search(r"(embed_tokens|embed_positions|\bwte\b|\bwpe\b|project_in|project_out|(backbone|model)\.embeddings\.)", name):
        return "embeddings"
    if re.search(r"(norm|ln_|layernorm|layer_norm)", name):
        return "norms"
    if ".experts." in name:
        return "experts"
    if "shared_expert" in name or ".shared_mlp." in name:  # Granite 4.0-H: the shared MLP beside the experts
        return "shared_experts"
    if re.search(r"(mlp|feed_forward|block_sparse_moe|\.mixer)\.(gate|router)\.", name) or ".router." in name:
        return "router"  # Nemotron-3: mixer.gate; Gemma 4: layers.N.router (proj, scale, per_expert_scale)
    if "per_layer_" in name:  # Gemma 4: per_layer_model_projection, per_layer_input_gate, per_layer_projection
        return "per_layer_inputs"
    if re.search(r"\.mixer\.(up_proj|down_proj)", name):  # Nemotron-H MLP blocks
        return "mlp"
    if re.search(r"(self_attn|\.attn\.|linear_attn|\.mixer\.|\.mamba\.)", name):  # .mamba.: Granite, Falcon-H1
        return "attention"
    if re.search(r"(mlp|fc1|fc2|feed_forward)", name):
        return "mlp"
    return "other"


def hf_breakdown(named_parameters) -> dict[str, int]:
    """Parameters by :func:`hf_category` of ``(name, tensor)`` pairs, in simctl's categories."""
    breakdown: dict[str, int] = {}
    per_layer: dict[str, dict[str, int]] = {}
    for name, p in named_parameters:
        k = hf_category(name)
        breakdown[k] = breakdown.get(k, 0) + p.numel()
        layer = re.search(r"layers\.(\d+)\.", name)
        if layer:
            cats = per_layer.setdefault(layer.group(1), {})
            cats[k] = cats.get(k, 0) + p.numel()
    for cats in per_layer.values():
        if "experts" in cats and "mlp" in cats:
            # Gemma 4 MoE: a dense MLP beside the routed experts of the same layer runs on every token,
            # which is what simctl's shared experts are
            breakdown["mlp"] -= cats["mlp"]
            breakdown["shared_experts"] = breakdown.get("shared_experts", 0) + cats["mlp"]
    breakdown = {k: v for k, v in breakdown.items() if v}
    if "shared_experts" in breakdown and "experts" not in breakdown:
        # Granite 4.0-H without experts (H-1B, H-Micro): its shared MLP is the layer's dense MLP
        breakdown["mlp"] = breakdown.get("mlp", 0) + breakdown.pop("shared_experts")
    return breakdown


def hf_counts(config: dict) -> dict:
    """``{"total": num_parameters(), "breakdown": {...}}`` of the transformers model for ``config``."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    d = dict(config)
    if isinstance(d.get("text_config"), dict) and d.get("model_type") in WRAPPERS:
        return _wrapper_counts(d)
    if d.get("model_type") in MODEL_TYPE_ALIASES:
        d["model_type"] = MODEL_TYPE_ALIASES[d["model_type"]]
    for k in ("quantization_config", "auto_map"):  # build the plain (unquantized, in-library) model
        d.pop(k, None)
    model_type = d.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **d)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    breakdown = hf_breakdown(model.named_parameters())  # tied parameters are listed once
    return {"total": int(model.num_parameters()), "breakdown": breakdown,
            "transformers_version": transformers.__version__}


def _wrapper_counts(d: dict) -> dict:
    """A multimodal wrapper, built whole (AutoModelForImageTextToText): ``total`` and ``breakdown`` are
    the language model's (decoder + LM head, what simctl prices per token), ``whole_model`` counts
    everything, ``vision`` the rest (vision tower + projector)."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText

    transformers.logging.set_verbosity_error()
    d = {k: v for k, v in d.items() if k not in ("quantization_config", "auto_map")}
    cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg)
    breakdown = hf_breakdown((n, p) for n, p in model.named_parameters()
                             if "language_model" in n or n.startswith("lm_head"))
    whole = int(model.num_parameters())
    vision = whole - sum(breakdown.values())
    return {"total": whole - vision, "breakdown": breakdown, "whole_model": whole, "vision": vision,
            "transformers_version": transformers.__version__}


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="catalog names or config.json paths (default: the whole catalog)")
    ap.add_argument("--json", help="write the transformers reference counts to this file")
    args = ap.parse_args(argv)
    names = args.models or list_models()
    failures = 0
    ref: dict[str, dict] = {}
    for n in names:
        spec = load_model(n)
        short = resolve_name(n)
        cfg = read_config_file(catalog()[short].path if short else spec.source)
        hf = hf_counts(cfg)
        ref[spec.name] = hf
        ours = {k: v for k, v in spec.param_breakdown().items() if v}
        ok = hf["total"] == spec.total_params() and hf["breakdown"] == ours
        failures += not ok
        print(f"{'ok  ' if ok else 'DIFF'} {spec.name:<20} simctl {spec.total_params():>16,}  transformers {hf['total']:>16,}")
        if not ok:
            print(f"     simctl       {ours}\n     transformers {hf['breakdown']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ref, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
