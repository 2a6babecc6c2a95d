"""The ``disaggregation:`` section: prefill and decode on separate pools joined by a KV-transfer link.

```yaml
hardware: h100-sxm            # the top-level hardware/parallel/engine are the defaults of both pools
parallel: {tp: 1}
disaggregation:
  prefill: {replicas: 2, hardware: h100-sxm, parallel: {tp: 2}, engine: {max_num_batched_tokens: 16384}}
  decode:  {replicas: 1, hardware: h200, parallel: {tp: 4}, engine: {max_num_seqs: 256}}
  kv_transfer: {link: rdma, bandwidth_gbps: 400, latency_us: 10, layerwise: false,
                sharing: pair,         # pair: one link per (prefill, decode) pair; nic: each instance's NIC
                copy_overhead_us: 0,   # host cost of posting one copy (one page of one layer's K or V)
                via: direct}           # direct: point to point; store: put into / get from the top-level kv_store
  router: {prefill: least-outstanding-requests, decode: least-kv-usage}
  # either pool may scale on its own: the `autoscaling:` schema under the pool (docs/autoscaling.md)
  # decode: {replicas: 1, autoscaling: {max_replicas: 8, policy_options: {metrics: {kv_cache_usage: 0.7}}}}
```

A pool's ``parallel`` and ``engine`` are merged key by key over the top-level sections (what a pool
does not say, it inherits); ``hardware`` replaces the top-level profile. The semantics (where TTFT
ends, how the link is shared, when blocks are freed) are in :mod:`sim.engine.disagg` and
docs/disaggregation.md.

**Link defaults** (used when ``bandwidth_gbps`` / ``latency_us`` are left out; per direction, between
one prefill instance and one decode instance):

- ``nvlink``: 3600 Gb/s (NVLink 4 on H100/H200: 900 GB/s bidirectional = 450 GB/s per direction,
  NVIDIA H100 datasheet), 2 µs;
- ``rdma``: 400 Gb/s (one ConnectX-7 400G InfiniBand NDR / RoCE port, NVIDIA ConnectX-7 datasheet),
  10 µs (RDMA verbs one-sided write latency at the few-µs scale plus the connector's bookkeeping,
  as the issue's example);
- ``pcie``: 512 Gb/s (PCIe 5.0 x16: 64 GB/s per direction, PCI-SIG), 10 µs;
- ``tcp``: 100 Gb/s (a 100 GbE NIC), 50 µs (kernel TCP stack round trip).

**Per-copy cost** (``copy_overhead_us``, default 0 = none): a direct transfer posts one copy per KV
page, per layer, per K/V plane (vLLM's NixlConnector registers each layer's K and V as regions and
makes one descriptor per block of each; MLA caches have one plane). Each posting costs the sender's
host ``copy_overhead_us``, serially, before the data moves. Reference value: UCX's own performance
model of its ``cuda_ipc`` (NVLink / PCIe P2P) transport charges 4.0 µs of CPU overhead and 1.8 µs of
latency per operation (openucx/ucx PR #8760, ``uct_cuda_ipc_estimate_perf``); vLLM issue #55434
measures NIXL's ``cuda_ipc`` posting at about 20× RDMA's (``rc_x``) per descriptor. docs/disaggregation.md.

**Hand-off through a store** (``via: store``, with the top-level ``kv_store``): the prefill instance
puts the prompt's KV into the shared store and the decode instance gets it, as vLLM's
``MooncakeStoreConnector`` does (``kv_store.put`` of the gathered KV after the prefill forward,
``kv_store.get`` before the decode instance's first step). ``store_staging: host`` (that connector:
safetensors serialises the tensor into host memory) adds a PCIe copy on each side; ``gpudirect``
sends from and into GPU memory. The store's NIC bandwidth and latency are ``kv_store``'s.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.config import EngineConfig, Frozen, ParallelConfig
from sim.engine.autoscaling_config import AutoscalingConfig
from sim.errors import SimctlError
from sim.limits import MAX_REPLICAS

__all__ = ["PoolConfig", "KVTransferConfig", "PDRouterConfig", "DisaggregationConfig", "LINK_DEFAULTS"]

# link -> (Gb/s per direction, one-way latency in µs); sources in the module docstring
LINK_DEFAULTS: dict[str, tuple[float, float]] = {
    "nvlink": (3600.0, 2.0),
    "rdma": (400.0, 10.0),
    "pcie": (512.0, 10.0),
    "tcp": (100.0, 50.0),
}


class PoolConfig(Frozen):
    """One pool of a disaggregated deployment (``disaggregation.prefill`` / ``disaggregation.decode``)."""

    replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="instances in the pool")
    hardware: str | None = Field(None, description="GPU profile of the pool; default: the top-level hardware")
    parallel: ParallelConfig | None = Field(None, description="keys of `parallel` overriding the top-level ones")
    engine: EngineConfig | None = Field(None, description="keys of `engine` overriding the top-level ones")
    autoscaling: AutoscalingConfig | None = Field(None, description="this pool's own controller (the `autoscaling:` "
                                                  "schema; `replicas` are then the instances ready at t = 0)")

    @model_validator(mode="after")
    def _replicas_in_bounds(self) -> "PoolConfig":
        a = self.autoscaling
        if a is not None and not a.min_replicas <= self.replicas <= a.max_replicas:
            raise ValueError(f"replicas = {self.replicas} (ready at t = 0) must lie within autoscaling.min_replicas = "
                             f"{a.min_replicas} and autoscaling.max_replicas = {a.max_replicas}")
        return self


class KVTransferConfig(Frozen):
    """How a request's prompt KV moves from its prefill instance to its decode instance."""

    link: Literal["nvlink", "rdma", "pcie", "tcp"] = Field("rdma", description="the interconnect (sets the defaults)")
    bandwidth_gbps: float | None = Field(None, gt=0, description="Gb/s per direction between one prefill and one decode "
                                         "instance, shared by their concurrent transfers; default: the link's")
    latency_us: float | None = Field(None, ge=0, description="fixed per-transfer latency (µs); default: the link's")
    layerwise: bool = Field(False, description="stream each layer's KV as the prefill computes it (the transfer "
                            "overlaps the request's last prefill step)")
    sharing: Literal["pair", "nic"] = Field("pair", description="pair: one link of `bandwidth_gbps` per (prefill, decode) "
                                            "instance pair; nic: each instance has one NIC of `bandwidth_gbps` each way, "
                                            "shared by all its transfers to or from any peer")
    copy_overhead_us: float = Field(0.0, ge=0, description="host time to post one copy (one KV page of one layer's K or "
                                    "V), serial per transfer; 0 = no per-copy cost (module docstring)")
    via: Literal["direct", "store"] = Field("direct", description="direct: point to point over the link; store: the "
                                            "prefill puts the KV into the top-level kv_store, the decode gets it")
    store_staging: Literal["host", "gpudirect"] | None = Field(None, description="via: store only (default host); host: the KV passes through "
                                                        "host memory over PCIe on both sides (vLLM's MooncakeStoreConnector); "
                                                        "gpudirect: NIC to and from GPU memory")
    host_copy: Literal["none", "connector"] = Field("none", description="via: store only; connector: price the host-side "
                                                   "copies of vLLM's MooncakeStoreConnector (safetensors serialisation, "
                                                   "pageable copies; docs/disaggregation.md) at host_memcpy_gbps, and put "
                                                   "the prompt's hidden states with its KV; none: host copies are free")
    host_memcpy_gbps: float | None = Field(None, gt=0, description="host_copy: connector only (required there): GB/s one "
                                           "host thread copies (memcpy) between two host buffers")
    sync_put: bool = Field(False, description="via: store only; the put blocks the prefill instance: the step that "
                           "finished a prompt ends when its put has ended (vLLM V0 model_runner + MooncakeStore.put)")
    sync_get: bool = Field(False, description="via: store only; the get blocks the decode instance: the request enters "
                           "the decode scheduler when admitted, and the step that first runs it starts with its get "
                           "(vLLM V0 model_runner: recv_kv_caches_and_hidden_states before the forward)")

    @model_validator(mode="after")
    def _store_options(self) -> "KVTransferConfig":
        if self.via == "store":
            if self.layerwise:
                raise ValueError("layerwise: true streams layers point to point; a store hand-off (via: store) moves "
                                 "the whole prompt's KV after the prefill")
            if self.copy_overhead_us > 0:
                raise ValueError("copy_overhead_us prices the per-page copies of a direct transfer; via: store "
                                 "gathers the KV into one object before the put")
            if self.sharing != "pair":
                raise ValueError("sharing: a store hand-off always goes through each instance's own NIC; leave "
                                 "sharing at its default")
        elif self.store_staging is not None:
            raise ValueError("store_staging applies to via: store only")
        if self.via != "store" and (self.host_copy != "none" or self.sync_put or self.sync_get):
            raise ValueError("host_copy, sync_put and sync_get describe the store connector's put and get; they need "
                             "via: store")
        if self.host_copy == "connector":
            if self.staging != "host":
                raise ValueError("host_copy: connector copies through host memory; it needs store_staging: host")
            if self.host_memcpy_gbps is None:
                raise ValueError("host_copy: connector needs host_memcpy_gbps (GB/s of one host thread's memcpy; "
                                 "cite its source)")
        elif self.host_memcpy_gbps is not None:
            raise ValueError("host_memcpy_gbps applies to host_copy: connector only")
        return self

    @property
    def staging(self) -> str:
        """How a store hand-off meets GPU memory (``host`` unless ``store_staging`` says otherwise)."""
        return self.store_staging or "host"

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Link bandwidth in bytes/s."""
        gbps = self.bandwidth_gbps if self.bandwidth_gbps is not None else LINK_DEFAULTS[self.link][0]
        return gbps * 1e9 / 8.0

    @property
    def latency_s(self) -> float:
        """Per-transfer latency in seconds."""
        us = self.latency_us if self.latency_us is not None else LINK_DEFAULTS[self.link][1]
        return us * 1e-6


class PDRouterConfig(Frozen):
    """The router of each pool (names from ``policies/routers.py``)."""

    prefill: str = "least-outstanding-requests"
    decode: str = "least-kv-usage"

    @model_validator(mode="after")
    def _known(self) -> "PDRouterConfig":
        from policies.registry import get_router  # the registry validates names with suggestions

        for name in (self.prefill, self.decode):
            try:
                get_router(name)
            except SimctlError as exc:  # unknown name: the registry's message
                raise ValueError(str(exc).strip("'")) from None
        return self


class DisaggregationConfig(Frozen):
    """The ``disaggregation:`` section (module docstring)."""

    prefill: PoolConfig = PoolConfig()
    decode: PoolConfig = PoolConfig()
    kv_transfer: KVTransferConfig = KVTransferConfig()
    router: PDRouterConfig = PDRouterConfig()

    @property
    def num_replicas(self) -> int:
        """Instances in both pools."""
        return self.prefill.replicas + self.decode.replicas
