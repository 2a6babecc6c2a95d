"""How a request's prompt KV gets from its prefill instance to its decode instance, beyond the
per-pair link of :class:`sim.engine.disagg.KVLink` (docs/disaggregation.md, "KV hand-off paths").

- :class:`NICFabric` (``kv_transfer.sharing: nic``): every instance has one NIC of the link's bandwidth
  each way. A transfer crosses its prefill instance's egress port and its decode instance's ingress
  port, and the ports' bandwidth is split among the transfers crossing them by **max-min fairness**
  (progressive filling, the fluid model of RDMA/TCP fair sharing): two transfers out of one NIC to
  two different decode peers each get half of it, where per-pair links would give each the whole.
- :class:`StoreHandoff` (``kv_transfer.via: store``): the prefill instance *puts* the KV into the shared
  store (``kv_store``) and the decode instance *gets* it, as vLLM's ``MooncakeStoreConnector`` does.
  Each side's copy is one whole object over that instance's NIC to the store (first come first
  served, :class:`sim.engine.kv_tiers.Link`: ``bytes / bandwidth + latency`` on an idle NIC); with
  ``store_staging: host`` it first (put) or last (get) crosses the instance's PCIe link, because the
  connector serialises the tensor into host memory (safetensors) before the put and moves the got
  tensor back to the GPU after. The object occupies the store from the put's start to the get's
  end; a put that does not fit waits for room, first come first served. With ``host_copy: connector``
  each side also pays the connector's host memcpys (:attr:`StoreHandoffSpec.PUT_HOST_COPIES`,
  :attr:`~StoreHandoffSpec.GET_HOST_COPIES`) of every rank's object (its KV shard and the hidden
  states) at one thread's memcpy bandwidth, the ranks in parallel; with ``sync_put`` the put is booked
  when the step finishing the prompt is priced, and that step ends when the put ends
  (:meth:`sim.engine.disagg.PDCoordinator.sync_put_s`); with ``sync_get`` the get is booked at the start
  of the decode step that first runs the request, and the step's forward follows it
  (:meth:`sim.engine.disagg.PDCoordinator.sync_get_s`).

Invariants (:meth:`NICFabric.check`, :meth:`StoreHandoff.check`): no port ever carries more than its
bandwidth × busy time; no flow is left at the end; the store's bytes stay within ``[0, capacity]``
and are back to 0 when every hand-off has ended; a get never starts before its put ended.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sim.engine.kv_tiers import Link

__all__ = ["NICFabric", "StoreHandoffSpec", "StoreHandoff", "BlockingHandoffCostModel", "num_kv_copies"]

# A flow with at most this many bytes left is complete (floating-point remainder of the fair shares).
_BYTES_EPS = 1e-3


def num_kv_copies(num_tokens: int, block_size: int, copies_per_page: int) -> int:
    """Copies a direct transfer posts for ``num_tokens`` of KV: one per page (``block_size`` tokens,
    the last one partial) and per region of a page (layers × K/V planes)."""
    return -(-int(num_tokens) // max(int(block_size), 1)) * int(copies_per_page)


class _Port:
    """One direction of one instance's NIC."""

    __slots__ = ("name", "flows", "busy_s", "bytes_carried", "num_flows", "max_concurrent")

    def __init__(self, name: str) -> None:
        self.name = name
        self.flows: set[int] = set()
        self.busy_s = 0.0
        self.bytes_carried = 0.0
        self.num_flows = 0
        self.max_concurrent = 0


class NICFabric:
    """Transfers between instances' NIC ports, sharing each port max-min fairly."""

    def __init__(self, env: Any, bandwidth_bytes_per_s: float) -> None:
        self.env = env
        self.bandwidth = float(bandwidth_bytes_per_s)
        self.ports: dict[str, _Port] = {}
        # flow id -> [remaining bytes, rate, egress port, ingress port, on_sent]
        self.flows: dict[int, list] = {}
        self._last_s = 0.0
        self._generation = 0

    def _port(self, name: str) -> _Port:
        port = self.ports.get(name)
        if port is None:
            port = self.ports[name] = _Port(name)
        return port

    def start(self, flow_id: int, src: int, dst: int, num_bytes: float, on_sent: Callable[[], None]) -> None:
        """Send ``num_bytes`` from instance ``src``'s egress to instance ``dst``'s ingress."""
        self._advance()
        out, inp = self._port(f"{src}.out"), self._port(f"{dst}.in")
        self.flows[flow_id] = [float(num_bytes), 0.0, out, inp, on_sent]
        for p in (out, inp):
            p.flows.add(flow_id)
            p.num_flows += 1
            p.max_concurrent = max(p.max_concurrent, len(p.flows))
        self._reschedule()

    def rates(self) -> dict[int, float]:
        """Max-min fair rate of every active flow (progressive filling over the ports)."""
        left = {name: self.bandwidth for name, p in self.ports.items() if p.flows}
        todo = {name: set(p.flows) for name, p in self.ports.items() if p.flows}
        rate: dict[int, float] = {}
        while todo:
            # the port whose remaining capacity per unfrozen flow is smallest sets those flows' rate
            name = min(todo, key=lambda n: (left[n] / len(todo[n]), n))
            share = left[name] / len(todo[name])
            for fid in sorted(todo[name]):
                rate[fid] = share
                f = self.flows[fid]
                for p in (f[2], f[3]):
                    if p.name in todo and p.name != name:
                        left[p.name] -= share
                        todo[p.name].discard(fid)
                        if not todo[p.name]:
                            del todo[p.name]
            del todo[name]
        return rate

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last_s
        if self.flows and dt > 0.0:
            for f in self.flows.values():
                moved = f[1] * dt
                f[0] -= moved
                f[2].bytes_carried += moved
                f[3].bytes_carried += moved
            for p in self.ports.values():
                if p.flows:
                    p.busy_s += dt
        self._last_s = now

    def _reschedule(self) -> None:
        self._generation += 1
        if not self.flows:
            return
        for fid, r in self.rates().items():
            self.flows[fid][1] = r
        dt = min(max(f[0], 0.0) / f[1] for f in self.flows.values())
        gen = self._generation
        self.env.timeout(dt).callbacks.append(lambda _ev: self._on_timer(gen))

    def _on_timer(self, generation: int) -> None:
        if generation != self._generation or not self.flows:
            return  # the flow set changed since this timer was set
        self._advance()
        # This timer was set for the flow nearest to its last byte, so that flow is done whatever is left
        # of it: the remainder is the clock's rounding (one ulp of the clock is 1.5e-11 s at t = 1 day).
        # Testing only ``≤ _BYTES_EPS`` could livelock: a remainder above it whose send time is under
        # half an ulp re-armed the timer for the same instant, forever (sim.engine.disagg.KVLink too).
        nearest_s = min(max(f[0], 0.0) / f[1] for f in self.flows.values())
        done = [fid for fid, f in self.flows.items() if f[0] <= _BYTES_EPS or max(f[0], 0.0) / f[1] <= nearest_s]
        callbacks = []
        for fid in done:
            f = self.flows.pop(fid)
            f[2].flows.discard(fid)
            f[3].flows.discard(fid)
            callbacks.append(f[4])
        self._reschedule()
        for cb in callbacks:
            cb()

    def cut(self) -> float:
        """At the horizon: drop the flows in flight; the bytes they had not sent."""
        self._advance()
        unsent = sum(max(f[0], 0.0) for f in self.flows.values())
        for f in self.flows.values():
            f[2].flows.clear()
            f[3].flows.clear()
        self.flows.clear()
        self._generation += 1
        return unsent

    def check(self) -> None:
        """No flow left; no port above its bandwidth (AssertionError otherwise)."""
        if self.flows:
            raise AssertionError(f"KV NIC fabric: {len(self.flows)} transfer(s) still active")
        for p in self.ports.values():
            if p.bytes_carried > self.bandwidth * p.busy_s * (1 + 1e-9) + 1.0:
                raise AssertionError(f"KV NIC port {p.name}: carried {p.bytes_carried:.0f} B in {p.busy_s:.6f} s "
                                     "busy, above its bandwidth")

    def links(self) -> list[dict[str, Any]]:
        """Per-port statistics in the shape of ``PDCoordinator.output()['links']``."""
        return [{"link": p.name, "num_transfers": p.num_flows, "bytes": p.bytes_carried, "busy_s": p.busy_s,
                 "max_concurrent": p.max_concurrent} for p in self.ports.values()]


@dataclass(frozen=True)
class StoreHandoffSpec:
    """The store a disaggregated run hands KV over through (built by ``sim.runs.disagg``)."""

    capacity_bytes: float  # kv_store.capacity_gib
    nic_bytes_per_s: float  # one instance's NIC to the store, per direction (kv_store.bandwidth_gbps)
    latency_s: float  # per put or get (kv_store.latency_us)
    staging: str  # "host" | "gpudirect"
    prefill_pcie_bytes_per_s: float  # one prefill instance's host link (all its GPUs' shards at once)
    decode_pcie_bytes_per_s: float
    # host_copy: connector (0 = host copies free, the object is the KV alone)
    host_memcpy_bytes_per_s: float = 0.0  # one host thread's memcpy (kv_transfer.host_memcpy_gbps)
    hidden_bytes_per_token: float = 0.0  # the prompt's hidden states, put and got by every rank with its KV shard
    prefill_shards: int = 1  # ranks of one instance, each putting (getting) its own object in parallel
    decode_shards: int = 1
    sync_put: bool = False  # kv_transfer.sync_put: the put blocks the prefill instance's step
    sync_get: bool = False  # kv_transfer.sync_get: the get blocks the decode instance's step

    # Host copies of one rank's object (KV shard + hidden states) on the store path of vLLM's
    # MooncakeStoreConnector (docs/disaggregation.md, "Host copies of the store connector"). Put: the
    # pageable ``.to("cpu")`` in safetensors' ``_tobytes`` (the driver's copy out of its pinned staging
    # buffer after the DMA), ``numpy.tobytes``, safetensors' Rust ``serialize`` into a Vec, ``PyBytes::new``
    # of that Vec, and the store client's copy of the bytes into its RDMA-registered buffer. Get: the
    # store client's ``pybind11::bytes`` out of its buffer, safetensors' ``deserialize`` (``PyByteArray::new``;
    # ``torch.frombuffer`` then copies nothing) and the driver's copy into its staging buffer for the
    # pageable ``.to(device)``.
    PUT_HOST_COPIES = 5
    GET_HOST_COPIES = 3

    def object_bytes(self, kv_bytes: float, num_tokens: int, shards: int) -> float:
        """Bytes one hand-off puts into the store: the KV, plus each rank's copy of the hidden states."""
        return kv_bytes + shards * self.hidden_bytes_per_token * num_tokens

    def host_copy_bytes(self, kv_bytes: float, num_tokens: int, shards: int, copies: int) -> float:
        """Bytes one rank's host thread copies for a put or get: ``copies`` × (its KV shard + hidden states)."""
        return copies * (kv_bytes / shards + self.hidden_bytes_per_token * num_tokens)


class StoreHandoff:
    """Puts and gets of PD hand-offs through the shared store (module docstring)."""

    def __init__(self, spec: StoreHandoffSpec) -> None:
        self.spec = spec
        self.held_bytes = 0.0
        self.peak_bytes = 0.0
        self.num_puts = 0
        self.num_gets = 0
        self.num_waited = 0  # puts that waited for room in the store
        self.links: dict[tuple[int, str], Link] = {}
        self.waiting: deque[tuple[float, Callable[[float], None]]] = deque()  # (bytes, start(now)) FIFO
        self.ready_s: dict[int, float] = {}  # request id -> its put's end (a get may start from then)

    def _link(self, instance: int, kind: str) -> Link:
        lk = self.links.get((instance, kind))
        if lk is None:
            s = self.spec
            if kind == "nic_out" or kind == "nic_in":
                lk = Link(f"{instance}.{kind}", s.nic_bytes_per_s, s.latency_s)
            elif kind == "host_put" or kind == "host_get":  # the ranks' threads copy their shards in parallel
                lk = Link(f"{instance}.{kind}", s.host_memcpy_bytes_per_s, 0.0)
            else:  # PCIe d2h on a prefill instance, h2d on a decode instance: no fixed latency of its own
                bw = s.prefill_pcie_bytes_per_s if kind == "pcie_d2h" else s.decode_pcie_bytes_per_s
                lk = Link(f"{instance}.{kind}", bw, 0.0)
            self.links[(instance, kind)] = lk
        return lk

    def fits(self, num_bytes: float) -> bool:
        """True if one object of ``num_bytes`` fits in the empty store."""
        return num_bytes <= self.spec.capacity_bytes

    def request_put(self, num_bytes: float, now_s: float, start: Callable[[float], None]) -> None:
        """Reserve room for an object (FIFO behind puts already waiting) and call ``start(now)`` once it has it."""
        if not self.waiting and self.held_bytes + num_bytes <= self.spec.capacity_bytes:
            self._reserve(num_bytes)
            start(now_s)
        else:
            self.num_waited += 1
            self.waiting.append((num_bytes, start))

    def _reserve(self, num_bytes: float) -> None:
        self.held_bytes += num_bytes
        self.peak_bytes = max(self.peak_bytes, self.held_bytes)

    def try_reserve(self, num_bytes: float) -> bool:
        """Reserve room for an object now if it fits and no put waits before it (sync puts)."""
        if self.waiting or self.held_bytes + num_bytes > self.spec.capacity_bytes:
            return False
        self._reserve(num_bytes)
        return True

    def put(self, request_id: int, instance: int, num_bytes: float, now_s: float, host_bytes: float = 0.0) -> float:
        """Book the put of a reserved object from prefill instance ``instance``; its end time. ``host_bytes``:
        what each of its ranks' host threads copies after the DMA and before the NIC (host_copy: connector)."""
        t = now_s
        if self.spec.staging == "host":
            t = self._link(instance, "pcie_d2h").transfer(t, int(num_bytes))
        if host_bytes > 0.0:
            t = self._link(instance, "host_put").transfer(t, int(host_bytes))
        end = self._link(instance, "nic_out").transfer(t, int(num_bytes))
        self.num_puts += 1
        self.ready_s[request_id] = end
        return end

    def get(self, request_id: int, instance: int, num_bytes: float, now_s: float, host_bytes: float = 0.0) -> float:
        """Book the get of a stored object into decode instance ``instance`` from ``now_s`` (or its put's
        end, if later); its end time. ``host_bytes`` as in :meth:`put`, between the NIC and the DMA."""
        ready = self.ready_s.pop(request_id)
        t = self._link(instance, "nic_in").transfer(max(now_s, ready), int(num_bytes))
        if host_bytes > 0.0:
            t = self._link(instance, "host_get").transfer(t, int(host_bytes))
        if self.spec.staging == "host":
            t = self._link(instance, "pcie_h2d").transfer(t, int(num_bytes))
        self.num_gets += 1
        return t

    def release(self, num_bytes: float, now_s: float) -> None:
        """The object's get ended: free its room and start the puts now fitting, in order."""
        self.held_bytes -= num_bytes
        if self.held_bytes < 0.0:
            if self.held_bytes < -1.0:
                raise AssertionError(f"KV store: held bytes went negative ({self.held_bytes:.0f})")
            self.held_bytes = 0.0
        while self.waiting and self.held_bytes + self.waiting[0][0] <= self.spec.capacity_bytes:
            num, start = self.waiting.popleft()
            self._reserve(num)
            start(now_s)

    def drop(self, request_id: int, num_bytes: float, now_s: float) -> None:
        """An object that will never be got (its request was refused at hand-over): free its room."""
        self.ready_s.pop(request_id, None)
        self.release(num_bytes, now_s)

    def drain(self) -> None:
        """At the horizon: forget what is in flight (the run's counters stay)."""
        self.waiting.clear()
        self.ready_s.clear()
        self.held_bytes = 0.0

    def check(self) -> None:
        """Store bytes back to 0 and never above capacity; no put waiting (AssertionError otherwise)."""
        if self.peak_bytes > self.spec.capacity_bytes * (1 + 1e-12):
            raise AssertionError(f"KV store held {self.peak_bytes:.0f} B, above its capacity")
        if self.waiting or abs(self.held_bytes) > 1.0 or self.ready_s:
            raise AssertionError(f"KV store: {len(self.waiting)} put(s) waiting, {self.held_bytes:.0f} B held, "
                                 f"{len(self.ready_s)} object(s) never got at the end")

    def report(self, span_s: float) -> dict[str, Any]:
        """The summary's ``disaggregation.kv_transfer.store`` block (docs/metrics.md)."""
        links: dict[str, Any] = {}
        for (_inst, kind), lk in self.links.items():
            agg = links.setdefault(kind, {"bytes_moved": 0, "num_transfers": 0, "busy_s": 0.0, "max_utilization": 0.0})
            r = lk.report(span_s)
            agg["bytes_moved"] += r["bytes_moved"]
            agg["num_transfers"] += r["num_transfers"]
            agg["busy_s"] += r["busy_s"]
            agg["max_utilization"] = max(agg["max_utilization"], r["utilization"])
        return {"capacity_bytes": self.spec.capacity_bytes, "peak_bytes": self.peak_bytes, "num_puts": self.num_puts,
                "num_gets": self.num_gets, "num_puts_waited_for_room": self.num_waited, "staging": self.spec.staging,
                "nic_bandwidth_gbps": self.spec.nic_bytes_per_s / 1e9, "latency_us": self.spec.latency_s * 1e6,
                "links": links, **({"host_memcpy_gbps": self.spec.host_memcpy_bytes_per_s / 1e9,
                                    "sync_put": self.spec.sync_put}
                                   if self.spec.host_memcpy_bytes_per_s > 0 or self.spec.sync_put else {}),
                **({"sync_get": True} if self.spec.sync_get else {})}


class BlockingHandoffCostModel:
    """An instance's cost model when the store hand-off blocks its steps: each step lasts its forward plus
    the blocking puts (``sync_put``, prefill) or gets (``sync_get``, decode) it runs, ``put_s(forward_s)``
    seconds (:meth:`sim.engine.disagg.PDCoordinator.sync_put_s`, :meth:`~sim.engine.disagg.PDCoordinator.sync_get_s`);
    every other attribute is the wrapped model's."""

    # the step time depends on the store's state, not on the shape alone: never cache its prices
    step_is_pure = False

    def __init__(self, inner: Any, put_s: Callable[[float], float]) -> None:
        self._inner = inner
        self._put_s = put_s

    def step(self, shape: Any) -> Any:
        """The wrapped model's step cost, its ``time_s`` lengthened by the puts or gets the step waits for."""
        cost = self._inner.step(shape)
        extra = self._put_s(cost.time_s)
        return cost if extra <= 0.0 else dataclasses.replace(cost, time_s=cost.time_s + extra)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_put_s"):  # copy/pickle probe before __init__ ran
            raise AttributeError(name)
        return getattr(self._inner, name)
