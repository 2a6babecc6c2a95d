"""Deployment and cost model: what a replica is made of and what one engine iteration costs.

- :mod:`sim.deploy.models` — model architectures from config.json, exact parameter counts.
- :mod:`sim.deploy.hardware` — GPU profiles (schema; the YAML files live in ``hwprofiles/``).
- :mod:`sim.deploy.memory_plan` — weights, activations and KV blocks per GPU (vLLM's arithmetic).
- :mod:`sim.deploy.roofline` — the analytical per-iteration cost model.
- :mod:`sim.deploy.step_cost` — the contract between schedulers and cost models (batch shape, step cost).
- :mod:`sim.deploy.deployment` — resolves an experiment's deployment (defaults that depend on GPU and model).
"""
