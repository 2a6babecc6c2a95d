"""simctl: discrete-event simulator of LLM serving.

The Python API mirrors the CLI: :func:`sim.run`, :func:`sim.sweep`, :func:`sim.capacity`, :func:`sim.plan`
(see ``sim/api.py``); docs/architecture.md maps the subpackages.
"""
from __future__ import annotations

from sim.version import __version__

__all__ = ["__version__", "run", "sweep", "capacity", "plan", "load_experiment", "RunResult"]


def __getattr__(name: str):
    # Lazy re-exports: `import sim` (and every `import sim.<stage>`) stays cheap.
    if name in {"run", "sweep", "capacity", "plan", "load_experiment", "RunResult"}:
        from sim import api
        return getattr(api, name)
    raise AttributeError(name)
