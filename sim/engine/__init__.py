"""The serving engine: a SimPy event loop over replicas, schedulers and a paged KV cache.

- :mod:`sim.engine.simulator` — the event loop (arrivals, routing, steps) and its outputs.
- :mod:`sim.engine.kv_cache` — the paged KV-block allocator with prefix caching and a swap pool.
- :mod:`sim.engine.request` — per-request state, flat records and the compact token timeline.

Schedulers and routers live in the top-level ``policies/`` package, workloads in ``workloads/``.
"""
