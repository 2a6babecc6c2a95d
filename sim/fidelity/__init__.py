"""Fidelity: how close the simulator is to real deployments.

- :mod:`sim.fidelity.compare` — simulated vs measured (vllm bench, GenAI-Perf, CSV).
- :mod:`sim.fidelity.calibrate` — fit a hardware profile to replays or microbenchmarks.
- :mod:`sim.fidelity.validate` — replay the bundled real vLLM runs against their targets.
"""
