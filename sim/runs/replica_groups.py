"""The ``replica_groups:`` section: aggregated replicas of different GPU types behind one router.

```yaml
hardware: h100-sxm              # the top-level hardware/parallel/engine are each group's defaults
replica_groups:
  - {count: 2, hardware: h100-sxm}
  - {count: 1, hardware: a100-sxm-80gb, parallel: {tp: 2}, engine: {max_num_seqs: 128}, gpu_hour_usd: 1.8}
router: least-outstanding-requests
```

Every replica is a whole aggregated engine (own scheduler, KV cache, cost model of its group's GPU and
parallelism); the router sees them all (replica indices in group order). A group with ``dp > 1``
(data-parallel attention) has replicas of ``dp`` lockstep ranks, each rank an engine core behind the
router (indices count ranks), as in the uniform DP path. ``parallel``/``engine`` keys
merge over the top-level ones, ``hardware`` replaces the top-level profile; each group is priced at its
own $/GPU-hour (``gpu_hour_usd``, else ``cost.gpu_hour_usd``, else its profile's). Without the section
nothing changes. Summary block: docs/metrics.md#replica-groups.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, Field, RootModel, model_validator

from sim.config import EngineConfig, ExperimentConfig, Frozen, ParallelConfig, scoped_experiment
from sim.deploy.deployment import Deployment, build_deployment
from sim.errors import ConfigError
from sim.limits import MAX_REPLICAS
from sim.measure.pricing import gpu_hour_price

__all__ = ["ReplicaGroupConfig", "ReplicaGroupsConfig", "GroupsSetup", "groups_setup", "groups_summary"]


class ReplicaGroupConfig(Frozen):
    """One group of identical aggregated replicas."""

    count: int = Field(1, ge=1, le=MAX_REPLICAS, description="replicas in the group")
    hardware: str | None = Field(None, description="GPU profile; default: the top-level hardware")
    parallel: ParallelConfig | None = Field(None, description="keys of `parallel` overriding the top-level ones")
    engine: EngineConfig | None = Field(None, description="keys of `engine` overriding the top-level ones")
    gpu_hour_usd: float | None = Field(None, gt=0, description="$ per GPU-hour of this group; default: "
                                       "cost.gpu_hour_usd, else the profile's price")


class ReplicaGroupsConfig(RootModel[list[ReplicaGroupConfig]]):
    """The ``replica_groups:`` list (module docstring)."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _bounds(self) -> "ReplicaGroupsConfig":
        if not self.root:
            raise ValueError("needs at least one group")
        if sum(g.count for g in self.root) > MAX_REPLICAS:
            raise ValueError(f"at most {MAX_REPLICAS} replicas in all groups")
        return self


def group_config(cfg: ExperimentConfig, i: int) -> ExperimentConfig:
    """The experiment as one replica of group ``i`` sees it (no ``replica_groups``; ``replicas`` = count)."""
    g = cfg.replica_groups.root[i]
    return scoped_experiment(cfg, "replica_groups", g, g.count, f"{cfg.name}: replica_groups.{i}")


@dataclass(frozen=True)
class GroupsSetup:
    """Every group resolved: configs, deployments, engine setups (one per group) and pricing."""

    configs: list[ExperimentConfig]
    deployments: list[Deployment]
    setups: list[Any]  # sim.engine.simulator.ReplicaSetup per group
    prices: list[float | None]  # $/GPU-hour per group (explicit group price, else cost / profile)

    @property
    def replica_setups(self) -> list[Any]:
        """One setup per replica, in group order (the engine's replica indices)."""
        return [s for s, c in zip(self.setups, self.configs) for _ in range(c.replicas)]

    @property
    def num_replicas(self) -> int:
        """Replicas in all groups."""
        return sum(c.replicas for c in self.configs)

    def group_gpus(self, i: int) -> int:
        """GPUs of group ``i``."""
        return self.deployments[i].num_gpus_per_replica * self.configs[i].replicas

    @property
    def num_gpus(self) -> int:
        """GPUs of all groups."""
        return sum(self.group_gpus(i) for i in range(len(self.configs)))

    def cost_per_hour(self) -> float | None:
        """$ per hour of all groups, each at its own price (None if a price is unknown)."""
        if any(p is None for p in self.prices):
            return None
        return sum(p * self.group_gpus(i) for i, p in enumerate(self.prices))

    def price_hardware(self) -> dict[str, Any]:
        """A stand-in hardware record for the summary's cost keys: the GPU-weighted mean $/GPU-hour, so
        ``num_gpus × gpu_hour_usd`` = the groups' $/hour."""
        total = self.cost_per_hour()
        names = sorted({d.hardware.name for d in self.deployments})
        return {"name": "+".join(names), "usd_per_gpu_hour": None if total is None else total / self.num_gpus}


def groups_setup(cfg: ExperimentConfig, replica_setup: Callable[[Deployment, int | None], Any]) -> GroupsSetup:
    """Resolve every group of ``cfg`` (``replica_setup`` is :func:`sim.runs.runner.replica_setup`)."""
    where = f"{cfg.name}: replica_groups"
    if cfg.disaggregation is not None or cfg.autoscaling is not None:
        raise ConfigError(f"{where}: cannot be combined with disaggregation: or autoscaling: (remove one)")
    if getattr(cfg, "kv_store", None) is not None:
        raise ConfigError(f"{where}: cannot be combined with kv_store: yet (remove one)")
    if cfg.replicas != 1:
        raise ConfigError(f"{where}: the top-level 'replicas' key conflicts with the groups' counts (remove it)")
    if cfg.cost is not None and cfg.cost.gpu_hour_usd is not None and any(
            g.gpu_hour_usd is not None for g in cfg.replica_groups.root):
        raise ConfigError(f"{where}: gpu_hour_usd is set per group and in cost.gpu_hour_usd; set one of them")
    configs = [group_config(cfg, i) for i in range(len(cfg.replica_groups.root))]
    deps = [build_deployment(c) for c in configs]
    prices = []
    for g, d in zip(cfg.replica_groups.root, deps):
        prices.append(g.gpu_hour_usd if g.gpu_hour_usd is not None else gpu_hour_price(d.hardware, cfg.cost)[0])
    setups = [replica_setup(d, c.engine.num_kv_blocks) for d, c in zip(deps, configs)]
    return GroupsSetup(configs, deps, setups, prices)


def groups_summary(gs: GroupsSetup, out: Any) -> list[dict[str, Any]]:
    """The summary's ``replica_groups`` list: per group its replicas, GPUs, $/hour, utilization (busy
    share of the run per replica), completed requests and their mean TTFT / TPOT."""
    it, req = out.iterations, out.requests
    end_s = max(float(out.end_s), 1e-12)
    rows, first = [], 0
    for i, c in enumerate(gs.configs):
        n = c.replicas * gs.deployments[i].dp  # engine cores: a DP-attention replica is dp ranks
        idx = list(range(first, first + n))
        first += n
        sel = it[it["replica"].isin(idx)] if len(it) else it
        done = req[req["replica"].isin(idx) & (req["status"] == "completed")] if len(req) else req
        price = gs.prices[i]
        rows.append({
            "group": i, "replicas": idx, "hardware": gs.deployments[i].hardware.name,
            "parallel": c.parallel.model_dump(include={"tp", "pp"} | ({"dp", "ep"} if c.parallel.dp > 1 else set())),
            "num_gpus": gs.group_gpus(i),
            "gpu_hour_usd": price, "cost_per_hour_usd": None if price is None else price * gs.group_gpus(i),
            "utilization": float(sel["time_s"].sum()) / end_s / len(idx) if len(sel) else 0.0,
            "completed": int(len(done)),
            "mean_ttft_ms": float(done["ttft_s"].mean() * 1e3) if len(done) else None,
            "mean_tpot_ms": float(done["tpot_s"].mean() * 1e3) if len(done) and done["tpot_s"].notna().any() else None,
        })
    return rows
