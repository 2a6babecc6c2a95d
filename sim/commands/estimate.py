"""``simctl estimate``: a static roofline estimate of one batch — latency, memory plan, MFU/MBU.

    simctl estimate --model llama-3.1-8b --hardware H100 --batch 16 --prompt 1024 --output 256 [--json]

The batch's ``B`` prompts of ``P`` tokens are prefilled in vLLM-style chunks of at most
``max_num_batched_tokens`` tokens (no decodes mixed in), then the ``B`` requests decode ``O − 1`` more
tokens together (the first output token comes out of the prefill), their context growing each step.
No queueing or scheduling is simulated — that is what ``simctl run`` does.
"""
from __future__ import annotations

import json
from typing import Any

import click

from sim.config import EngineConfig, ParallelConfig, PrecisionConfig
from sim.deploy.hardware import GIB
from sim.deploy.step_cost import BatchShapeBuilder
from sim.errors import ConfigError, InfeasibleConfigError
from sim.limits import MAX_TOKENS

# vLLM V1's default token budget (SEMANTICS.md §3; the same rule as sim/deploy/deployment.py): 8192 on GPUs with
# ≥ 70 GiB, else 2048.
_LARGE_GPU_BYTES = 70 * GIB
# Prefill chunks + decode steps one estimate may price (each a roofline evaluation, ~µs; 2 M ≈ seconds).
_MAX_ESTIMATE_STEPS = 2_000_000


def estimate(model: str, hardware: str, *, tp: int = 1, pp: int = 1, batch: int = 1, prompt: int = 1024,
             output: int = 128, gpu_memory_utilization: float = 0.9, block_size: int = 16,
             max_num_batched_tokens: int | None = None, max_num_seqs: int | None = None,
             max_model_len: int | None = None, kv_cache_dtype: str = "auto", weights_dtype: str = "bf16") -> dict[str, Any]:
    """The estimate as a JSON-ready dict (what ``--json`` prints)."""
    from hwprofiles import load_profile
    from sim.deploy.memory_plan import plan_memory
    from sim.deploy.models import load_model
    from sim.deploy.roofline import RooflineCostModel

    if batch < 1 or prompt < 1 or output < 1:
        raise ConfigError("--batch, --prompt and --output must be ≥ 1")
    if prompt > MAX_TOKENS or output > MAX_TOKENS:
        raise ConfigError(f"--prompt/--output above {MAX_TOKENS:,} tokens (simctl's limit; docs/experiment.md, Limits)")
    # the estimate prices every prefill chunk and decode step: bound that count before starting
    steps_needed = batch + batch * prompt // max(1, max_num_batched_tokens or 2048) + output
    if steps_needed > _MAX_ESTIMATE_STEPS:
        raise ConfigError(f"--batch {batch} × --prompt {prompt} with --output {output} needs ~{steps_needed:,} "
                          f"priced steps (limit {_MAX_ESTIMATE_STEPS:,}); a batch that large is a capacity "
                          "question: use simctl run or simctl capacity")
    spec = load_model(model)
    hw = load_profile(hardware)
    parallel = ParallelConfig(tp=tp, pp=pp)
    precision = PrecisionConfig(weights=weights_dtype, kv_cache=kv_cache_dtype)
    mnbt = max_num_batched_tokens or (8192 if hw.memory_bytes >= _LARGE_GPU_BYTES else 2048)
    engine = EngineConfig(gpu_memory_utilization=gpu_memory_utilization, block_size=block_size,
                          max_num_batched_tokens=mnbt, max_num_seqs=max_num_seqs or max(256, batch))
    warnings: list[str] = []
    if max_model_len is not None and prompt + output > max_model_len:
        raise ConfigError(f"--prompt {prompt} + --output {output} = {prompt + output} tokens exceed "
                          f"--max-model-len {max_model_len}: vLLM would reject these requests")
    mml = max_model_len or spec.max_position_embeddings
    try:
        plan = plan_memory(spec, hw, parallel, precision, engine, mml)
    except InfeasibleConfigError:
        if max_model_len is not None or mml <= prompt + output:
            raise
        # the weights may fit while one max_position_embeddings-long sequence does not: vLLM would ask
        # for a smaller --max-model-len; estimate with the batch's own context instead
        mml = prompt + output
        plan = plan_memory(spec, hw, parallel, precision, engine, mml)
        warnings.append(f"max_model_len lowered to {mml} (one {spec.max_position_embeddings}-token sequence "
                        f"does not fit the KV cache); pass --max-model-len to choose it")
    context = prompt + output
    max_conc = plan.max_concurrent_seqs(context)
    if batch > max_conc:
        warnings.append(f"a batch of {batch} sequences of {context} tokens needs {batch * plan.blocks_per_sequence(context):,} "
                        f"KV blocks but {plan.num_kv_blocks:,} fit: vLLM would queue or preempt "
                        f"(at most {max_conc} run at once)")
    if not hw.is_calibrated:
        warnings.append(f"{hw.name}: assumed efficiencies — uncalibrated; treat latencies as ±30% estimates")
    cm = RooflineCostModel(spec, hw, parallel, precision)

    # prefill: chunked by the token budget, requests in order (vLLM V1 packs chunks greedily)
    remaining = [prompt] * batch
    done = [0] * batch
    pre_t = pre_flops = pre_bytes = 0.0
    first_ttft = None
    steps = 0
    i = 0
    while i < batch:
        b = BatchShapeBuilder()
        budget = mnbt
        j = i
        while j < batch and budget > 0:
            n = min(remaining[j], budget)
            b.add(n, done[j])
            remaining[j] -= n
            done[j] += n
            budget -= n
            if remaining[j] == 0:
                j += 1
            else:
                break
        c = cm.step(b.build())
        pre_t += c.time_s
        pre_flops += c.flops
        pre_bytes += c.bytes_moved
        steps += 1
        if first_ttft is None and remaining[0] == 0:
            first_ttft = pre_t
        i = j
    # decode: output − 1 further tokens, all requests together, context growing
    dec_t = dec_flops = dec_bytes = 0.0
    first_dec = last_dec = None
    for k in range(1, output):
        c = cm.decode_step(batch, prompt + k)
        dec_t += c.time_s
        dec_flops += c.flops
        dec_bytes += c.bytes_moved
        if first_dec is None:
            first_dec = c.time_s
        last_dec = c.time_s
    n_dec = output - 1
    peak, bw = cm.peak_flops, hw.memory_bandwidth_bytes_per_s

    def util(flops: float, bytes_: float, t: float) -> tuple[float | None, float | None]:
        return (flops / (t * peak), bytes_ / (t * bw)) if t > 0 else (None, None)

    pre_mfu, pre_mbu = util(pre_flops, pre_bytes, pre_t)
    dec_mfu, dec_mbu = util(dec_flops, dec_bytes, dec_t)
    e2e = pre_t + dec_t
    return {
        "model": spec.name, "hardware": hw.name, "hardware_display_name": hw.display_name,
        "calibration": hw.calibration_note(), "calibration_status": hw.calibration_status,
        "parallel": {"tp": tp, "pp": pp, "num_gpus": tp * pp},
        "precision": {"weights": precision.weights, "gemm_dtype": cm.gemm_dtype, "kv_cache": precision.kv_dtype},
        "batch": batch, "prompt_tokens": prompt, "output_tokens": output,
        "engine": {"max_num_batched_tokens": mnbt, "max_num_seqs": engine.max_num_seqs, "block_size": block_size,
                   "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": mml},
        "prefill": {"latency_s": pre_t, "first_request_ttft_s": first_ttft, "iterations": steps,
                    "tokens_per_s": batch * prompt / pre_t if pre_t else None, "mfu": pre_mfu, "mbu": pre_mbu},
        "decode": {"time_per_token_s": dec_t / n_dec if n_dec else None, "first_step_s": first_dec,
                   "last_step_s": last_dec, "steps": n_dec,
                   "tokens_per_s": batch * n_dec / dec_t if dec_t else None, "mfu": dec_mfu, "mbu": dec_mbu},
        "e2e_latency_s": e2e,
        "output_tokens_per_s": batch * output / e2e if e2e else None,
        "max_concurrent_seqs_at_context": max_conc,
        "memory_plan": plan.to_dict(),
        "usd_per_gpu_hour": hw.usd_per_gpu_hour,
        "usd_per_million_output_tokens": (hw.usd_per_gpu_hour * tp * pp / 3600 * e2e / (batch * output) * 1e6
                                          if hw.usd_per_gpu_hour and e2e else None),
        "warnings": warnings,
    }


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:,.2f} ms"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def render(e: dict[str, Any]) -> str:
    """Human-readable report of :func:`estimate`'s dict."""
    m = e["memory_plan"]
    p, d = e["prefill"], e["decode"]
    gi = lambda k: f"{m[k]:.2f} GiB"
    lines = [
        (f"{e['model']} on {e['parallel']['num_gpus']}× {e['hardware_display_name']} "
        f"(tp={e['parallel']['tp']}, pp={e['parallel']['pp']}; weights {e['precision']['weights']}, "
        f"GEMMs {e['precision']['gemm_dtype']}, KV {e['precision']['kv_cache']})"),
        f"  efficiencies: {e['calibration']}",
        f"  batch {e['batch']} × ({e['prompt_tokens']} prompt + {e['output_tokens']} output tokens)",
        "",
        "latency",
        (f"  prefill            {_ms(p['latency_s'])} for the batch in {p['iterations']} iteration(s) of ≤ "
        f"{e['engine']['max_num_batched_tokens']} tokens (first request {_ms(p['first_request_ttft_s'])}); "
        f"MFU {_pct(p['mfu'])}, MBU {_pct(p['mbu'])}"),
        (f"  decode per token   {_ms(d['time_per_token_s'])} at batch {e['batch']} (first {_ms(d['first_step_s'])}, "
        f"last {_ms(d['last_step_s'])}); MFU {_pct(d['mfu'])}, MBU {_pct(d['mbu'])}"),
        f"  end to end         {_ms(e['e2e_latency_s'])};  {e['output_tokens_per_s'] or 0:,.0f} output tok/s",
    ]
    if e.get("usd_per_million_output_tokens"):
        lines.append(f"  cost               ${e['usd_per_million_output_tokens']:,.2f} per million output tokens "
                     f"at ${e['usd_per_gpu_hour']:.2f}/GPU-hour (this batch, back to back)")
    lines += [
        "",
        "memory per GPU",
        f"  capacity {gi('capacity_gib')} × utilization {m['gpu_memory_utilization']} = {gi('budget_gib')}",
        f"  weights {gi('weights_gib')}, activation peak {gi('activation_gib')}, non-torch {gi('non_torch_gib')}",
        (f"  KV cache {gi('kv_cache_gib')} = {m['num_kv_blocks']:,} blocks of {m['block_size']} tokens "
        f"({m['block_bytes'] / 2**20:.2f} MiB each) = {m['kv_capacity_tokens']:,} tokens"),
        (f"  max concurrent sequences: {e['max_concurrent_seqs_at_context']:,} at {e['prompt_tokens'] + e['output_tokens']} "
        f"tokens, {m['max_concurrent_seqs_at_max_model_len']:,} at max_model_len {m['max_model_len']}"),
    ]
    for w in e["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


@click.command("estimate")
@click.option("--model", "model", required=True, help="catalog name, HF id or config.json path")
@click.option("--hardware", "hardware", required=True, help="profile name/alias (simctl hw list) or YAML path")
@click.option("--tp", type=click.IntRange(1), default=1, show_default=True, help="tensor-parallel degree")
@click.option("--pp", type=click.IntRange(1), default=1, show_default=True, help="pipeline-parallel stages")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="concurrent requests")
@click.option("--prompt", type=click.IntRange(1), default=1024, show_default=True, help="prompt tokens per request")
@click.option("--output", type=click.IntRange(1), default=128, show_default=True, help="output tokens per request")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.9, show_default=True)
@click.option("--block-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--max-num-batched-tokens", type=click.IntRange(1), default=None,
              help="token budget per iteration (default as vLLM V1: 8192 on ≥ 70 GiB GPUs, else 2048)")
@click.option("--max-num-seqs", type=click.IntRange(1), default=None, help="sizes the sampler's memory (default max(256, batch))")
@click.option("--max-model-len", type=click.IntRange(1), default=None, help="default: the model's max_position_embeddings")
@click.option("--kv-cache-dtype", type=click.Choice(["auto", "bf16", "fp16", "fp8", "int8", "fp32"]), default="auto", show_default=True)
@click.option("--weights-dtype", type=click.Choice(["bf16", "fp16", "fp8", "int8", "int4", "fp32"]), default="bf16", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output, including the memory plan")
def command(as_json: bool, **kw: Any) -> None:
    """Static roofline estimate of one batch: prefill latency, decode time per token, end-to-end time,
    memory plan (KV blocks, max concurrency) and MFU/MBU."""
    e = estimate(**kw)
    click.echo(json.dumps(e, indent=2) if as_json else render(e))
