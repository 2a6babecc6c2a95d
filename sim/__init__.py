"""simctl: discrete-event simulator of LLM serving.

The Python API mirrors the CLI: :func:`sim.run`, :func:`sim.sweep`, :func:`sim.capacity`
(see ``sim/api.py``).
"""
from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy re-exports so `import sim` stays cheap and free of import cycles.
    if name in {"run", "sweep", "capacity", "load_experiment", "RunResult"}:
        from sim import api
        return getattr(api, name)
    raise AttributeError(name)
