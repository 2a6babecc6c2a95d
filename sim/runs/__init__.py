"""One run: deployment → workload → engine → metrics, and its result directory.

- :mod:`sim.runs.runner` — simulate one experiment (what ``simctl run`` and :func:`sim.run` do).
- :mod:`sim.runs.result` — the in-memory result of a run.
- :mod:`sim.runs.storage` — write and read result directories; plain-JSON conversion.
"""
