"""``simctl model``: inspect model architectures (parameters, KV-cache bytes, breakdown).

    simctl model list [--json]
    simctl model info NAME|PATH [--json] [--kv-cache-dtype bf16|fp8|...] [--tp N] [--pp N]
    simctl model verify NAME|PATH          (needs the [hf] extra: transformers + torch CPU)
"""
from __future__ import annotations

import json

import click

KV_DTYPES = ["auto", "fp32", "bf16", "fp16", "fp8", "fp8_e4m3", "fp8_e5m2", "int8"]

BREAKDOWN_ORDER = ("embeddings", "attention", "mlp", "experts", "shared_experts", "router", "per_layer_inputs",
                   "norms", "lm_head")


def _human(n: float) -> str:
    """8.03 B / 125.2 M style."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def _human_bytes(n: float) -> str:
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def _kv_dtype(name: str) -> str:
    return "bf16" if name == "auto" else name


def info_dict(spec, kv_dtype: str = "bf16", tp: int = 1, pp: int = 1) -> dict:
    """The JSON document ``simctl model info --json`` prints."""
    d = spec.summary()
    d["kv_cache_dtype"] = kv_dtype
    d["kv_cache_bytes_per_token"] = spec.kv_cache_bytes_per_token(kv_dtype)
    d["active_params_excluding_embeddings"] = spec.active_params(include_embeddings=False)
    d["attention_dims"] = {
        form: {"form": a.form, "num_q_heads": a.num_q_heads, "num_kv_heads": a.num_kv_heads,
               "qk_head_dim": a.qk_head_dim, "v_head_dim": a.v_head_dim}
        for form, a in (("prefill", spec.attention_dims("prefill")), ("decode", spec.attention_dims("decode")))
    }
    d["layer_groups"] = [
        {"kind": g.kind, "num_layers": g.num_layers, "params_per_layer": g.params_per_layer,
         "extra_params_per_layer": dict(g.extra_params),
         "linears": [{"name": o.name, "in_features": o.in_features, "out_features": o.out_features,
                      "group": o.group, "tp": o.tp, "num_instances": o.num_instances,
                      "active_instances": o.active_instances, "bias": o.bias} for o in g.linears]}
        for g in spec.layer_groups()
    ]
    if tp > 1 or pp > 1:
        d["parallel"] = {"tp": tp, "pp": pp, "params_per_gpu": spec.params_per_gpu(tp=tp, pp=pp)}
    d["source"] = spec.source
    return d


def render_info(spec, kv_dtype: str = "bf16", tp: int = 1, pp: int = 1) -> str:
    """Readable multi-line report of one model."""
    lines: list[str] = []
    head = spec.name + (f"  ({spec.hf_repo})" if spec.hf_repo else "")
    lines.append(head)
    lines.append(f"  family        {spec.family} (model_type {spec.model_type})")
    layers = f"{spec.num_layers}"
    if spec.is_moe:
        mixer_only = sum(1 for k in spec.kinds if k == "none")  # Nemotron-3: Mamba / attention layers without MLP
        if mixer_only:
            layers += f" ({spec.num_moe_layers} MoE + {mixer_only} mixer-only"
            layers += f" + {spec.num_dense_layers - mixer_only} dense)" if spec.num_dense_layers > mixer_only else ")"
        else:
            layers += (f" ({spec.num_dense_layers} dense + {spec.num_moe_layers} MoE)" if spec.num_dense_layers
                       else " (all MoE)")
    lines.append(f"  layers        {layers}")
    lines.append(f"  hidden        {spec.hidden_size}    vocab {spec.vocab_size}    max positions {spec.max_position_embeddings}")
    if spec.attention == "mla":
        m = spec.mla
        q = "q_proj" if m.q_lora_rank is None else f"q_lora_rank {m.q_lora_rank}"
        lines.append(f"  attention     MLA, {spec.num_attention_heads} heads, {q}, kv_lora_rank {m.kv_lora_rank}, "
                     f"qk {m.qk_nope_head_dim}+{m.qk_rope_head_dim} (nope+rope), v {m.v_head_dim}")
    else:
        kind = "MHA" if spec.num_kv_heads == spec.num_attention_heads else ("MQA" if spec.num_kv_heads == 1 else "GQA")
        extras = [x for x, on in (("qkv bias", spec.qkv_bias), ("QK-norm", spec.qk_norm),
                                  ("sinks", spec.attention_sinks), ("fused qkv", spec.fused_qkv)) if on]
        lines.append(f"  attention     {kind}, {spec.num_attention_heads} q / {spec.num_kv_heads} kv heads x {spec.head_dim}"
                     + (f" ({', '.join(extras)})" if extras else ""))
        ga = spec.global_attention
        if ga is not None:  # Gemma 4: the full-attention layers' own geometry
            n_global = sum(1 for m in spec.mixers if m == "global_attention")
            lines.append(f"  global attn   {n_global}/{spec.num_layers} layers, {spec.num_attention_heads} q / {ga.num_kv_heads} "
                         f"kv heads x {ga.head_dim}" + (" (K = V, no v_proj)" if ga.k_eq_v else "")
                         + f"; the other layers slide over {spec.sliding_window} tokens")
    if spec.is_hybrid:
        from sim.deploy.models.spec import STATE_MODEL_DTYPE

        la, mb = spec.linear_attention, spec.mamba
        ssm_dtype = (la if la is not None else mb).ssm_state_dtype or STATE_MODEL_DTYPE
        what = (f"Gated DeltaNet, {la.num_k_heads} k / {la.num_v_heads} v heads x {la.k_head_dim}/{la.v_head_dim}"
                if la is not None else
                f"Mamba-2, {mb.num_heads} heads x {mb.head_dim}, d_state {mb.state_size}, {mb.n_groups} groups")
        lines.append(f"  recurrent     {what} on {spec.num_linear_attention_layers}/{spec.num_layers} layers "
                     f"({spec.num_attention_layers} attention); state {spec.state_bytes_per_sequence():,} "
                     f"B/sequence (SSM state {ssm_dtype}, conv window {STATE_MODEL_DTYPE})")
    if spec.multimodal:
        v = spec.vision_params()
        extra = (f"; vision tower {v:,} (whole model {spec.whole_model_params():,})" if v is not None
                 else "; vision tower not modelled")
        lines.append(f"  multimodal    {spec.multimodal['wrapper']} wrapper: counts below are the language model{extra}")
    if spec.sliding_window:
        lines.append(f"  sliding win.  {spec.sliding_window} on {spec.num_sliding_layers}/{spec.num_layers} layers")
    if spec.intermediate_size:
        wide = f" ({spec.dense_mlp_width(True)} on the KV-shared layers)" if spec.double_wide_shared_mlp else ""
        lines.append(f"  mlp           {spec.mlp_kind} ({spec.hidden_act}), intermediate {spec.intermediate_size}{wide}")
    if spec.kv_shared:
        first = spec.kv_shared.index(True)
        lines.append(f"  KV sharing    layers {first}-{spec.num_layers - 1} reuse the cache of the last earlier layer "
                     f"of their type (no k/v projections, no KV of their own)")
    if spec.per_layer_input_size:
        table = spec.per_layer_input_vocab * spec.num_layers * spec.per_layer_input_size
        lines.append(f"  per-layer in  {spec.per_layer_input_size} per layer and token (table {table:,} parameters)")
    if spec.moe is not None:
        m = spec.moe
        sh = f", {m.num_shared_experts} shared ({m.shared_intermediate_size})" if m.shared_intermediate_size else ""
        lines.append(f"  moe           {m.num_experts} experts, top-{m.top_k}, expert intermediate "
                     f"{m.expert_intermediate_size}{sh}")
    lines.append(f"  embeddings    {'tied' if spec.tie_word_embeddings else 'untied'}"
                 + (", learned positions" if spec.position_embedding == "learned" else ""))
    lines.append("")
    total = spec.total_params()
    lines.append("Parameters")
    lines.append(f"  {'total':<16}{total:>18,}  {_human(total):>10}")
    active = spec.active_params()
    lines.append(f"  {'active / token':<16}{active:>18,}  {_human(active):>10}")
    b = spec.param_breakdown()
    for k in BREAKDOWN_ORDER:
        if b[k]:
            width = 18 - max(0, len(k) - 14)  # a long category name eats into the number's column
            lines.append(f"    {k:<14}{b[k]:>{width},}  {100 * b[k] / total:>9.2f}%")
    if spec.is_moe and spec.num_dense_layers:
        split = spec.layer_split()
        lines.append(f"  {'dense layers':<16}{split['dense_layers']:>18,}")
        lines.append(f"  {'moe layers':<16}{split['moe_layers']:>18,}")
    if spec.buffer_params():
        lines.append(f"  {'buffers':<16}{spec.buffer_params():>18,}  (in the checkpoint, not parameters)")
    if tp > 1 or pp > 1:
        lines.append(f"  {'per GPU':<16}{spec.params_per_gpu(tp=tp, pp=pp):>18,}  (tp={tp}, pp={pp})")
    lines.append("")
    kv = spec.kv_cache_bytes_per_token(kv_dtype)
    lines.append(f"KV cache ({kv_dtype})")
    per_layer = (f"{spec.kv_elements_per_token_per_layer()} elements/token/layer" if spec.global_attention is None else
                 f"{spec.kv_elements_per_token_per_layer()} / {spec.global_kv_elements_per_token_per_layer()} "
                 "elements/token/layer (sliding / full attention)")
    lines.append(f"  per token     {kv:,} B ({_human_bytes(kv)})   {per_layer}")
    return "\n".join(lines)


@click.group(name="model")
def command() -> None:
    """Inspect model architectures: parameters, KV-cache bytes, breakdown."""


@command.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of the table.")
@click.option("--kv-cache-dtype", type=click.Choice(KV_DTYPES), default="bf16", show_default=True,
              help="dtype of KV-cache entries (auto = bf16).")
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True, help="Tensor-parallel degree for the per-GPU parameter count.")
@click.option("--pp", type=click.IntRange(min=1), default=1, show_default=True, help="Pipeline stages for the per-GPU parameter count.")
def info(name: str, as_json: bool, kv_cache_dtype: str, tp: int, pp: int) -> None:
    """Show one model: catalog NAME, HF repo id from the catalog, or PATH to a config.json."""
    from sim.deploy.models import load_model

    spec = load_model(name)
    if pp > spec.num_layers:
        raise click.BadParameter(f"{spec.name} has {spec.num_layers} layers; --pp must not exceed that", param_hint="--pp")
    kv = _kv_dtype(kv_cache_dtype)
    if as_json:
        click.echo(json.dumps(info_dict(spec, kv, tp, pp), indent=2))
    else:
        click.echo(render_info(spec, kv, tp, pp))


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of the table.")
def list_cmd(as_json: bool) -> None:
    """List the bundled models with total/active parameters and KV bytes per token (bf16)."""
    from sim.deploy.models import catalog, load_model

    rows = []
    for name, entry in catalog().items():
        s = load_model(name)
        rows.append({"name": name, "hf_repo": entry.hf_repo, "family": s.family, "type": s.model_class,
                     "context_length": s.max_position_embeddings, "total_params": s.total_params(),
                     "active_params": s.active_params(), "kv_cache_bytes_per_token": s.kv_cache_bytes_per_token("bf16")})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    w = max(len(r["name"]) for r in rows)
    wr = max(len(r["hf_repo"]) for r in rows)
    wf = max(12, max(len(r["family"]) for r in rows) + 1)
    click.echo(f"{'name':<{w}}  {'hf repo':<{wr}}  {'family':<{wf}}{'type':<11}{'context':>9}{'total':>10}{'active':>10}"
               f"{'KV B/tok':>11}")
    for r in rows:
        click.echo(f"{r['name']:<{w}}  {r['hf_repo']:<{wr}}  {r['family']:<{wf}}{r['type']:<11}{r['context_length']:>9}"
                   f"{_human(r['total_params']):>10}{_human(r['active_params']):>10}{r['kv_cache_bytes_per_token']:>11,}")


@command.command("verify")
@click.argument("path")
def verify(path: str) -> None:
    """Recount PATH (a config.json or catalog name) with transformers on the meta device and print the
    difference per category (needs the optional extra: pip install 'simctl[hf]')."""
    from sim.deploy.models import catalog, load_model, resolve_name
    from sim.deploy.models.hf_config import read_config_file
    from sim.errors import ConfigError

    spec = load_model(path)
    try:
        from sim.deploy.models.verify_hf import hf_counts
        short = resolve_name(path)
        ref = hf_counts(read_config_file(catalog()[short].path if short else spec.source))
    except ImportError as exc:
        raise ConfigError(f"simctl model verify needs torch and transformers ({exc.name} is not installed): "
                          f"pip install 'simctl[hf]'") from None
    ours = {k: v for k, v in spec.param_breakdown().items() if v}
    click.echo(f"{spec.name}: simctl {spec.total_params():,}  transformers {ref['total']:,}  "
               f"(transformers {ref['transformers_version']})")
    for k in sorted(set(ours) | set(ref["breakdown"])):
        a, b = ours.get(k, 0), ref["breakdown"].get(k, 0)
        click.echo(f"  {k:<16}{a:>18,}{b:>18,}{a - b:>+16,}")
    if "whole_model" in ref:
        click.echo(f"  whole multimodal model {ref['whole_model']:,} (vision tower + projector {ref['vision']:,})")
    diff = spec.total_params() - ref["total"]
    click.echo("exact match" if diff == 0 and ours == ref["breakdown"] else f"DIFFERENCE {diff:+,}")
    if diff:
        raise SystemExit(1)
