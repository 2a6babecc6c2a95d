"""Error types that reach the user as one clear message (never a traceback).

The CLI catches :class:`SimctlError` and prints ``error: <message>`` with exit code 2.
Anything else escaping is a bug in simctl.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SimctlError(Exception):
    """Base class for every user-facing error."""


class ConfigError(SimctlError):
    """A configuration file or value is invalid; the message names the key path and the file."""


class UnknownNameError(SimctlError):
    """A name (model, GPU, policy, distribution...) is not known; the message suggests close matches."""


class InfeasibleConfigError(SimctlError):
    """The configuration cannot run (e.g. the model does not fit in GPU memory)."""


class TraceError(SimctlError):
    """A trace file is malformed; the message names the file, row and column."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``did you mean ...?`` suffix listing close matches of ``name`` in ``choices``."""
    choices = list(choices)
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=n, cutoff=0.5)
    # map back to the original spelling
    lower_to_orig = {c.lower(): c for c in choices}
    close = [lower_to_orig[c] for c in close]
    if close:
        return " (did you mean: " + ", ".join(close) + "?)"
    return ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build an :class:`UnknownNameError` for ``kind`` ``name`` with suggestions and the full list."""
    choices = sorted(set(choices))
    plural = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
    msg = f"unknown {kind} '{name}'{suggest(name, choices)}. Known {plural}: {', '.join(choices)}"
    return UnknownNameError(msg)
