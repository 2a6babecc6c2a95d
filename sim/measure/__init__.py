"""Measurement: from request records and token timestamps to latency tails, fluidity, SLOs and dollars.

- :mod:`sim.measure.metrics` — TTFT/TPOT/ITL/E2E statistics, Metron fluidity, throughput, the summary.
- :mod:`sim.measure.slo` — SLO definitions, presets and evaluation.
- :mod:`sim.measure.pricing` — GPU-hour and API prices, cost per million tokens.
"""
