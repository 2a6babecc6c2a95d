"""Planning: many runs answer one question.

- :mod:`sim.plan.capacity` — the highest request rate (or fewest replicas) meeting an SLO.
- :mod:`sim.plan.sweep` — grids of configurations, resumable, in parallel or on Ray.
"""
