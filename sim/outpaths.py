"""Where results go: safe directory names from experiment names, and output paths checked up front.

An experiment's ``name`` becomes a directory under ``results/``; :func:`safe_name` maps any string
(``../../etc``, ``/tmp/x``, ``""``, ``.``) to one path component that stays inside ``results/``
(the original name is kept in the run's config and meta). :func:`ensure_writable_dir` and
:func:`ensure_writable_file` check an output location *before* the work starts, so an unwritable
``--out`` fails in a second instead of after a long simulation or fit.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from sim.errors import ConfigError

_MAX_NAME = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def safe_name(name: str, default: str = "experiment") -> str:
    """``name`` as a single safe directory name: the pieces between unsafe characters (``/``, spaces,
    control characters...) joined by ``_``, pieces made only of dots dropped and leading dots removed
    (no ``.``, ``..`` or hidden directories), long names cut and tagged with a hash;
    an empty result becomes ``default``. Already-safe names are returned unchanged."""
    parts = [p for p in _UNSAFE.split(name) if p.strip(".")]  # path separators, '.', '..' and the like go
    out = "_".join(parts).lstrip(".")
    if not out.strip("_"):
        return default
    if len(out) > _MAX_NAME:
        out = f"{out[:_MAX_NAME - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return out


def default_out_dir(name: str, suffix: str = "") -> Path:
    """``results/<safe name><suffix>``."""
    return Path("results") / (safe_name(name) + suffix)


def _why_not_writable(path: Path) -> str | None:
    """None when a file can be created in directory ``path``, else the reason."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".simctl-write-test-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def ensure_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create output directory ``path`` (with parents) and check files can be written in it.

    ConfigError naming ``option`` and the path when it is a file, lies under a file, cannot be
    created or is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: exists and is not a directory")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{option} {path}: {parent} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot create the directory: {exc.strerror or exc}") from None
    reason = _why_not_writable(path)
    if reason:
        raise ConfigError(f"{option} {path}: cannot write there: {reason}")
    return path


def ensure_writable_file(path: str | Path, option: str = "--out") -> Path:
    """Check output file ``path`` can be written (its directory is created); the file itself is not
    created. ConfigError naming ``option`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory, expected a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: the file exists and is not writable")
    ensure_writable_dir(path.parent if str(path.parent) else Path("."), option=f"{option} {path}: its directory")
    return path
