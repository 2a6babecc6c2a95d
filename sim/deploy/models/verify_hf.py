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

from sim.deploy import models
from sim.deploy.models import list_models, load_model
from sim.deploy.models.hf_config import read_config_file


#: config model_type -> the transformers model_type that implements it (Kimi-K2 ships as
#: ``DeepseekV3ForCausalLM``; transformers has no ``kimi_k2`` class)
HF_CLASS_ALIASES: dict[str, str] = {"kimi_k2": "deepseek_v3"}


def hf_category(name: str) -> str:
    """Breakdown category of an HF parameter name (same categories as ModelSpec.param_breakdown)."""
    if "lm_head" in name:
        return "lm_head"
    if ".visual." in name or name.startswith(("visual.", "vision_tower.", "model.vision_tower.")) \
            or "multi_modal_projector" in name:
        return "vision"
    if re.search(r"(embed_tokens|embed_positions|\bwte\b|\bwpe\b|project_in|project_out)", name):
        return "embeddings"
    if re.search(r"(norm|ln_|layernorm|layer_norm)", name):
        return "norms"
    if ".experts." in name:
        return "experts"
    if "shared_expert" in name:
        return "shared_experts"
    if re.search(r"(mlp|feed_forward)\.(gate|router)\.", name):
        return "router"
    if re.search(r"(self_attn|\.attn\.|linear_attn)", name):
        return "attention"
    if re.search(r"(mlp|fc1|fc2)", name):
        return "mlp"
    return "other"


def hf_counts(config: dict) -> dict:
    """``{"total": num_parameters(), "breakdown": {...}}`` of the transformers model for ``config``."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    transformers.logging.set_verbosity_error()
    d = dict(config)
    for k in ("quantization_config", "auto_map"):  # build the plain (unquantized, in-library) model
        d.pop(k, None)
    model_type = d.pop("model_type")
    # model types whose transformers class is another family's (vLLM maps them the same way)
    model_type = HF_CLASS_ALIASES.get(model_type, model_type)
    cfg = AutoConfig.for_model(model_type, **d)
    auto = AutoModelForImageTextToText if "vision_config" in d else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(cfg)
    breakdown: dict[str, int] = {}
    for name, p in model.named_parameters():  # tied parameters are listed once
        k = hf_category(name)
        breakdown[k] = breakdown.get(k, 0) + p.numel()
    return {"total": int(model.num_parameters()), "breakdown": breakdown,
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
        short = models.resolve_name(n)
        cfg = read_config_file(models.catalog()[short].path if short else spec.source)
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
