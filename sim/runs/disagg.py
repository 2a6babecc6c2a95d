"""The run-level side of disaggregated serving: each pool's deployment from the experiment, the
engine's :class:`~sim.engine.disagg.PDSpec`, pricing of the two pools and the summary's
``disaggregation`` block (docs/disaggregation.md, docs/metrics.md#disaggregation)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.config import ExperimentConfig, scoped_experiment
from sim.deploy.deployment import Deployment, build_deployment
from sim.engine.disagg import PDSpec, np_stats
from sim.errors import ConfigError
from sim.measure.pricing import gpu_hour_price
from sim.runs.pd_autoscaled import autoscaled_pool_keys, pool_instance_s

__all__ = ["PDSetup", "pool_config", "pd_setup", "pd_summary", "pd_probe_keys"]

ROLES = ("prefill", "decode")


def pool_config(cfg: ExperimentConfig, role: str) -> ExperimentConfig:
    """The experiment as one instance of pool ``role`` sees it: the pool's hardware, and its
    ``parallel``/``engine`` keys merged over the top-level ones; no ``disaggregation`` section."""
    pool = getattr(cfg.disaggregation, role)
    return scoped_experiment(cfg, "disaggregation", pool, pool.replicas, f"{cfg.name}: disaggregation.{role}")


@dataclass(frozen=True)
class PDSetup:
    """Both pools resolved: deployments, engine setups, the engine's PD spec and pricing."""

    configs: dict[str, ExperimentConfig]
    deployments: dict[str, Deployment]
    setups: dict[str, Any]  # role -> sim.engine.simulator.ReplicaSetup
    spec: PDSpec
    autoscaling: dict[str, Any] | None = None  # pool -> AutoscalerSpec (sim.runs.pd_autoscaled)
    kv_transfer: Any = None  # the disaggregation.kv_transfer section

    @property
    def num_gpus(self) -> int:
        """GPUs of both pools."""
        return sum(self.pool_gpus(r) for r in ROLES)

    def pool_gpus(self, role: str) -> int:
        """GPUs of pool ``role``."""
        return self.deployments[role].num_gpus_per_replica * self.configs[role].replicas

    def cost_per_hour(self, cost: Any) -> tuple[float | None, dict[str, Any]]:
        """$ per hour of both pools (each at its own GPU's price) and the per-pool detail."""
        total, detail = 0.0, {}
        for role in ROLES:
            price, source = gpu_hour_price(self.deployments[role].hardware, cost)
            if price is None:
                return None, {}
            detail[role] = {"gpu_hour_usd": price, "gpu_hour_usd_source": source,
                            "cost_per_hour_usd": price * self.pool_gpus(role)}
            total += price * self.pool_gpus(role)
        return total, detail

    def price_hardware(self, cost: Any) -> dict[str, Any]:
        """A stand-in hardware record for the summary's cost keys: the GPU-weighted mean $/GPU-hour
        of the two pools, so ``num_gpus × gpu_hour_usd`` = both pools' $/hour."""
        total, _ = self.cost_per_hour(None)
        price = None if total is None else total / self.num_gpus
        names = {self.deployments[r].hardware.name for r in ROLES}
        return {"name": "+".join(sorted(names)), "usd_per_gpu_hour": price}


def pd_setup(cfg: ExperimentConfig, replica_setup: Callable[[Deployment, int | None], Any]) -> PDSetup:
    """Resolve both pools of ``cfg`` (``replica_setup`` is :func:`sim.runs.runner.replica_setup`)."""
    d = cfg.disaggregation
    if cfg.autoscaling is not None:
        raise ConfigError(f"{cfg.name}: autoscaling: a disaggregated deployment scales per pool; move the section "
                          "to disaggregation.prefill.autoscaling and/or disaggregation.decode.autoscaling")
    store = getattr(cfg, "kv_store", None)
    if store is not None and d.kv_transfer.via != "store":
        raise ConfigError(f"{cfg.name}: kv_store: with disaggregation the store carries the prefill→decode hand-off; "
                          "set disaggregation.kv_transfer.via: store (or remove kv_store)")
    if store is None and d.kv_transfer.via == "store":
        raise ConfigError(f"{cfg.name}: disaggregation.kv_transfer.via: store needs the top-level kv_store section "
                          "(capacity_gib, bandwidth_gbps)")
    configs = {r: pool_config(cfg, r) for r in ROLES}
    deps = {r: build_deployment(configs[r]) for r in ROLES}
    if deps["prefill"].model.name != deps["decode"].model.name:
        raise ConfigError(f"{cfg.name}: disaggregation: both pools must serve the same model")
    setups = {r: replica_setup(deps[r], configs[r].engine.num_kv_blocks) for r in ROLES}
    model = deps["prefill"].model
    # the KV moved is the prefill instance's cache format (the decode side stores the same format)
    from sim.deploy.models.spec import dtype_bytes

    kv_dtype = dtype_bytes(configs["prefill"].precision.kv_dtype)
    kv = d.kv_transfer
    if kv.sync_put and deps["prefill"].dp > 1:
        raise ConfigError(f"{cfg.name}: disaggregation.kv_transfer.sync_put: a prefill pool with dp > 1 steps its "
                          "ranks as one group; sync_put supports prefill instances with dp = 1 only")
    if kv.sync_get and deps["decode"].dp > 1:
        raise ConfigError(f"{cfg.name}: disaggregation.kv_transfer.sync_get: a decode pool with dp > 1 steps its "
                          "ranks as one group; sync_get supports decode instances with dp = 1 only")
    spec = PDSpec(prefill=setups["prefill"], decode=setups["decode"], num_prefill=d.prefill.replicas,
                  num_decode=d.decode.replicas, prefill_router=d.router.prefill, decode_router=d.router.decode,
                  kv_bytes_fn=lambda n: model.kv_cache_bytes_for_tokens(int(n), kv_dtype),
                  bandwidth_bytes_per_s=kv.bandwidth_bytes_per_s, latency_s=kv.latency_s, layerwise=kv.layerwise,
                  num_layers=int(model.num_layers), sharing=kv.sharing, copy_overhead_s=kv.copy_overhead_us * 1e-6,
                  block_size=int(deps["prefill"].engine.block_size),
                  # one region per layer and K/V plane (an MLA cache is one latent plane per layer)
                  copies_per_page=int(model.num_layers) * (1 if getattr(model, "attention", "mha") == "mla" else 2),
                  store=None if store is None else _store_spec(store, kv, deps, model))
    from sim.runs.pd_autoscaled import pd_autoscaler_specs

    return PDSetup(configs, deps, setups, spec, pd_autoscaler_specs(cfg, configs, deps), kv)


def _store_spec(store: Any, kv: Any, deps: dict[str, Deployment], model: Any) -> Any:
    """The hand-off store of a ``via: store`` run: ``kv_store``'s capacity, NIC (GB/s per instance and
    direction) and latency; each pool's PCIe link (its profile's per-GPU bandwidth × the GPUs holding a
    shard of the KV, as the tiers of docs/kv-tiers.md count it) for host staging; with ``host_copy:
    connector`` one host thread's memcpy bandwidth per rank and the hidden states every rank puts
    (``hidden_size`` × 2 bytes a token: the connector puts the model's 16-bit output hidden states)."""
    from sim.engine.kv_handoff import StoreHandoffSpec

    def shards(dep: Deployment) -> int:
        return max(dep.num_gpus_per_replica // dep.dp, 1)

    def pcie(dep: Deployment) -> float:
        return float(dep.hardware.pcie_bandwidth_bytes_per_s) * shards(dep)

    connector = kv.host_copy == "connector"
    return StoreHandoffSpec(capacity_bytes=store.capacity_gib * 1024 ** 3, nic_bytes_per_s=store.bandwidth_gbps * 1e9,
                            latency_s=store.latency_us * 1e-6, staging=kv.staging,
                            prefill_pcie_bytes_per_s=pcie(deps["prefill"]), decode_pcie_bytes_per_s=pcie(deps["decode"]),
                            host_memcpy_bytes_per_s=kv.host_memcpy_gbps * 1e9 if connector else 0.0,
                            hidden_bytes_per_token=2.0 * int(model.hidden_size) if connector else 0.0,
                            prefill_shards=shards(deps["prefill"]), decode_shards=shards(deps["decode"]),
                            sync_put=bool(kv.sync_put), sync_get=bool(kv.sync_get))


def _full_step_s(dep: Deployment, shape: Any) -> float:
    """Seconds of one step with every rank of an instance running ``shape`` (with DP attention the
    ranks step together: :meth:`RooflineCostModel.group_step` over ``dp`` copies of the shape)."""
    if dep.dp > 1:
        return float(dep.cost_model.group_step([shape] * dep.dp)[0])
    return float(dep.cost_model.step(shape).time_s)


def pool_capacity_rps(pd: PDSetup, prompt_tokens: float, output_tokens: float) -> dict[str, float]:
    """Requests/s each pool can serve at most, from its cost model, for requests of the given mean
    prompt and output lengths: the prefill pool at a full token budget of whole prompts, the decode
    pool at its largest batch (``max_num_seqs``, or what its KV holds) at the shortest context. With
    DP attention these are per rank (budget, batch and KV are a rank's) and every rank of an instance
    runs them at once."""
    from sim.deploy.step_cost import BatchShapeBuilder

    prompt, out = max(int(round(prompt_tokens)), 1), max(output_tokens, 1.0)
    pre_cfg, dec_cfg = pd.configs["prefill"], pd.configs["decode"]
    budget = pd.deployments["prefill"].engine.max_num_batched_tokens or prompt
    per_step = max(budget // prompt, 1)
    b = BatchShapeBuilder()
    for _ in range(per_step):
        b.add(min(prompt, budget), 0)
    t_pre = _full_step_s(pd.deployments["prefill"], b.build()) * (-(-prompt // budget))
    prefill = pre_cfg.replicas * pd.deployments["prefill"].dp * per_step / t_pre
    if out <= 1:
        return {"prefill": prefill, "decode": float("inf")}
    setup = pd.setups["decode"]
    fit = setup.num_kv_blocks * pd.deployments["decode"].engine.block_size // (prompt + int(out))
    seqs = max(min(pd.deployments["decode"].engine.max_num_seqs, fit), 1)
    b = BatchShapeBuilder()
    for _ in range(seqs):
        b.add(1, prompt + 1)
    dec = pd.deployments["decode"]
    decode = dec_cfg.replicas * dec.dp * seqs / _full_step_s(dec, b.build()) / (out - 1)
    return {"prefill": prefill, "decode": decode}


def decode_side_ttft_s(out: Any) -> np.ndarray:
    """Per transferred request: arrival to the end of its first step on the decode instance (the
    second run of its timeline: :meth:`sim.engine.disagg.PDCoordinator.extend_timeline` puts the
    prefill's token first). Requests that never produced a token there are left out."""
    tl, req = out.timeline, out.requests
    decode_ids = set(out.disagg["decode_replicas"])
    offsets, runs = tl.run_offsets, tl.runs
    vals = []
    for i, (rep, arrival) in enumerate(zip(tl.replica_of, req["arrival_s"].to_numpy(float))):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        if int(rep) in decode_ids and hi - lo >= 4:
            vals.append(float(tl.iteration_end_s[int(rep)][runs[lo + 2]]) - arrival)
    return np.asarray(vals, dtype=np.float64)


def pd_summary(pd: PDSetup, out: Any, cost: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's ``disaggregation`` block: per-pool GPUs, $ and utilization (busy share of the
    run), queueing, KV-wait and transfer-time distributions, link statistics."""
    info = out.disagg
    it = out.iterations
    end_s = max(float(out.end_s), 1e-12)
    pools: dict[str, Any] = {}
    idx = {"prefill": info["prefill_replicas"], "decode": info["decode_replicas"]}
    _, price_detail = pd.cost_per_hour(cost)
    scaled = (summary.get("autoscaling") or {}).get("pools", {})  # autoscaled pools (sim.runs.pd_autoscaled)
    for role in ROLES:
        sel = it[it["replica"].isin(idx[role])] if len(it) else it
        busy = float(sel["time_s"].sum()) if len(sel) else 0.0
        # per instance: a fixed pool's instances are up the whole run, an autoscaled pool's while started
        up_s = (pool_instance_s(out.fleet["pools"][role], end_s) * pd.deployments[role].dp if role in scaled
                else None)  # rank-seconds: each DP rank logs its own steps
        waiting = float((sel["num_waiting"] * sel["time_s"]).sum()) if len(sel) else 0.0
        waiting = (waiting / end_s / len(idx[role]) if up_s is None else waiting / up_s) if len(sel) else 0.0
        pools[role] = {
            "replicas": pd.configs[role].replicas, "hardware": pd.deployments[role].hardware.name,
            "parallel": pd.configs[role].parallel.model_dump(include={"tp", "pp", "dp", "ep"}),
            "num_gpus": pd.pool_gpus(role),
            "utilization": busy / end_s / len(idx[role]) if up_s is None else busy / up_s if up_s > 0 else 0.0,
            "mean_num_waiting": waiting,
            "peak_kv_cache_usage": float(sel["kv_usage"].max()) if len(sel) else 0.0,
            "num_kv_blocks": int(pd.setups[role].num_kv_blocks),
            **price_detail.get(role, {}),
        }
        if role in scaled:
            pools[role].update(autoscaled_pool_keys(scaled[role], price_detail.get(role, {}).get("gpu_hour_usd")))
    req = info["requests"]
    transfer = req["transfer_s"].to_numpy(float) if len(req) else np.zeros(0)
    wait = req["kv_wait_s"].to_numpy(float) if len(req) else np.zeros(0)
    hold = (req["transfer_end_s"] - req["prefill_done_s"]).to_numpy(float) if len(req) else np.zeros(0)
    if "store" in info:  # via: store frees the prefill side when the put ends
        hold = info["store_put_s"]
    queue = out.requests["queue_s"].to_numpy(float) if len(out.requests) else np.zeros(0)
    kv_cfg = pd.kv_transfer
    block = {
        "pools": pools,
        "kv_transfer": {
            "bandwidth_gbps": info["bandwidth_bytes_per_s"] * 8 / 1e9, "latency_us": info["latency_s"] * 1e6,
            "layerwise": info["layerwise"], "num_transfers": int(len(req)),
            "mean_kv_bytes": float(req["kv_bytes"].mean()) if len(req) else 0.0,
            "transfer_time": np_stats(transfer),
            "kv_wait_time": np_stats(wait),  # prefilled KV waiting for decode blocks
            "kv_hold_after_prefill": np_stats(hold),  # prefill-side blocks held after the prefill ended
            "max_concurrent_per_link": max((link["max_concurrent"] for link in info["links"]), default=0),
            "max_link_utilization": max((link["busy_s"] / end_s for link in info["links"]), default=0.0),
            "via": kv_cfg.via, "sharing": kv_cfg.sharing, "copy_overhead_us": kv_cfg.copy_overhead_us,
            "host_copy": kv_cfg.host_copy, "sync_put": kv_cfg.sync_put,
            **({"sync_get": kv_cfg.sync_get} if kv_cfg.via == "store" else {}),
        },
        "prefill_queue_time": np_stats(queue),
        # arrival -> first token generated on the decode instance: the TTFT a client sees through a PD
        # proxy that streams from the decode server (vLLM's disagg proxy, the Mooncake benchmarks)
        "ttft_decode_side": np_stats(decode_side_ttft_s(out)),
    }
    if "store" in info:
        block["kv_transfer"]["store"] = {**info["store"], "put_time": np_stats(info["store_put_s"]),
                                         "get_time": np_stats(info["store_get_s"])}
    rps = pool_capacity_rps(pd, float(out.requests["num_prompt_tokens"].mean()) if len(out.requests) else 0.0,
                            float(out.requests["max_output_tokens"].mean()) if len(out.requests) else 0.0)
    for role in ROLES:
        pools[role]["capacity_rps"] = rps[role]
    block["bottleneck"] = min(ROLES, key=lambda r: rps[r])
    return block


def pd_probe_keys(summary: Any) -> dict[str, Any]:
    """What a capacity probe keeps of a disaggregated run's summary (empty for an aggregated one): the
    pool that binds by the cost model's capacity and each pool's measured utilization, so a sweep
    report can say why a configuration stops where it does."""
    block = summary.get("disaggregation") if isinstance(summary, dict) else None
    if not isinstance(block, dict):
        return {}
    pools = block.get("pools", {})
    return {"pd_bottleneck": block.get("bottleneck"),
            "prefill_utilization": pools.get("prefill", {}).get("utilization"),
            "decode_utilization": pools.get("decode", {}).get("utilization")}
