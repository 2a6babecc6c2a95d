"""Registries of scheduling policies and routers: adding one touches one file.

Usage, next to the class::

    @register_policy("sarathi")
    class SarathiScheduler(Scheduler): ...

``policy: sarathi`` in an experiment then finds it. Policy modules are imported lazily by
:func:`load_builtin_policies` so the registry is complete before any look-up.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sim.errors import ConfigError, unknown_name

_POLICIES: dict[str, type] = {}
_ROUTERS: dict[str, type] = {}

BUILTIN_POLICY_MODULES = ("vllm", "vllm_v0", "sarathi", "orca", "static", "sglang")
BUILTIN_ROUTER_MODULES = ("routers", "cache_routers")


def register_policy(name: str) -> Callable[[type], type]:
    """Class decorator registering a scheduler under ``name``."""
    def deco(cls: type) -> type:
        _POLICIES[name] = cls
        cls.policy_name = name
        return cls
    return deco


def register_router(name: str) -> Callable[[type], type]:
    """Class decorator registering a router under ``name``."""
    def deco(cls: type) -> type:
        _ROUTERS[name] = cls
        cls.router_name = name
        return cls
    return deco


def _load(modules: tuple[str, ...]) -> None:
    for mod in modules:
        try:
            importlib.import_module(f"policies.{mod}")
        except ModuleNotFoundError as exc:  # a policy file not written yet must not break the others
            if exc.name != f"policies.{mod}":
                raise


def get_policy(name: str) -> Any:
    """Return the scheduler class registered as ``name`` (clear error with suggestions otherwise)."""
    _load(BUILTIN_POLICY_MODULES)
    if name not in _POLICIES:
        raise unknown_name("policy", name, _POLICIES)
    return _POLICIES[name]


def get_router(name: str) -> Any:
    """Return the router class registered as ``name``."""
    _load(BUILTIN_ROUTER_MODULES)
    if name not in _ROUTERS:
        raise unknown_name("router", name, _ROUTERS)
    return _ROUTERS[name]


def build_router(name: str, num_replicas: int, rng: Any, options: dict[str, Any] | None = None) -> Any:
    """A router instance; ``options`` (the experiment's ``router_options``) only for routers that take
    them (those with an ``Options`` model), else a one-line error."""
    cls = get_router(name)
    if not options:
        return cls(num_replicas, rng)
    if getattr(cls, "Options", None) is None:
        raise ConfigError(f"router_options: router '{name}' takes no options, got {sorted(options)}")
    return cls(num_replicas, rng, **options)


def policy_names() -> list[str]:
    """All registered policy names."""
    _load(BUILTIN_POLICY_MODULES)
    return sorted(_POLICIES)


def router_names() -> list[str]:
    """All registered router names."""
    _load(BUILTIN_ROUTER_MODULES)
    return sorted(_ROUTERS)
