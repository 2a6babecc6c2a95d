"""Bundled hardware profiles: one YAML per GPU in this directory, every number with its source.

>>> from hwprofiles import load_profile, list_profiles
>>> hw = load_profile("H100")              # name or alias, any case
>>> hw = load_profile("my-gpus/b200.yaml") # or a user YAML file
>>> hw.tunable_parameters()

Adding a GPU means adding one ``<name>.yaml`` here (see ``docs/cost-model.md``); nothing else changes.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sim.deploy.hardware import HardwareProfile
from sim.errors import ConfigError, unknown_name
from sim.strict_yaml import read_text_file

PROFILE_DIR = Path(__file__).resolve().parent

__all__ = ["PROFILE_DIR", "HardwareProfile", "list_profiles", "load_profile", "resolve_name"]


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@lru_cache(maxsize=1)
def _bundled() -> dict[str, HardwareProfile]:
    """All bundled profiles by name (each file validated once)."""
    out: dict[str, HardwareProfile] = {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        prof = HardwareProfile.from_yaml_text(path.read_text(encoding="utf-8"), str(path))
        if prof.name != path.stem:
            raise ConfigError(f"{path}: name: '{prof.name}' must equal the file name '{path.stem}'")
        out[prof.name] = prof
    return out


@lru_cache(maxsize=1)
def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for prof in _bundled().values():
        for a in (prof.name, *prof.aliases):
            k = _key(a)
            if table.get(k, prof.name) != prof.name:
                raise ConfigError(f"alias '{a}' is claimed by both {table[k]} and {prof.name}")
            table[k] = prof.name
    return table


def list_profiles() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(_bundled())


def resolve_name(name: str) -> str | None:
    """Bundled profile name for a name or alias (case-insensitive), or None."""
    return _aliases().get(_key(name))


def load_profile(name_or_path: str | Path) -> HardwareProfile:
    """Load a bundled profile by name/alias, or a user profile from a YAML path.

    Raises :class:`sim.errors.UnknownNameError` (with suggestions) for an unknown name and
    :class:`sim.errors.ConfigError` naming the file and key for an invalid file.
    """
    s = str(name_or_path)
    path = Path(s).expanduser()
    if s.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: no such hardware profile file")
        return _load_file(str(path.resolve()), path.stat().st_mtime_ns)
    found = resolve_name(s)
    if found is None:
        names = list(_bundled())
        raise unknown_name("hardware profile", s, names + [a for p in _bundled().values() for a in p.aliases])
    return _bundled()[found]


@lru_cache(maxsize=64)
def _load_file(path: str, mtime_ns: int) -> HardwareProfile:
    return HardwareProfile.from_yaml_text(read_text_file(path, "hardware profile"), path)
