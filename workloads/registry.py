"""Name registries for length distributions and arrival processes: adding one touches one file.

Usage, next to the class (which is also its pydantic parameter model)::

    @LENGTH_DISTRIBUTIONS.register("lognormal")
    class LogNormalLength(LengthDistribution): ...

    @ARRIVAL_PROCESSES.register("poisson")
    class PoissonArrival(ArrivalProcess): ...

``input_tokens: {dist: lognormal, ...}`` and ``arrival: {process: poisson, ...}`` in an experiment then
find them. Validation looks the name up at validation time, so a class registered from any module
imported before the experiment is loaded works without editing a union type anywhere.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

from sim.errors import suggest

T = TypeVar("T", bound=type)


def invalid(msg: str) -> PydanticCustomError:
    """A validation error carrying ``msg`` verbatim (no "Value error," prefix); raise it in validators."""
    return PydanticCustomError("invalid_workload", "{msg}", {"msg": msg})


class Registry(Generic[T]):
    """A name → class map with a decorator and a validating look-up.

    ``key`` is the mapping key that selects the class in YAML (``dist`` or ``process``).
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._classes: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Class decorator registering ``cls`` under ``name`` (and optional aliases)."""
        def deco(cls: T) -> T:
            self._classes[name] = cls
            for alias in aliases:
                self._aliases[alias] = name
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls
        return deco

    def names(self) -> list[str]:
        """Registered names (aliases excluded), sorted."""
        return sorted(self._classes)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or an alias of it; ValueError (with suggestions) if unknown."""
        if name in self._classes:
            return name
        if name in self._aliases:
            return self._aliases[name]
        choices = self.names() + sorted(self._aliases)
        raise ValueError(f"unknown {self.kind} '{name}'{suggest(name, choices)}; known: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        """The class registered as ``name`` (or an alias)."""
        return self._classes[self.canonical(name)]

    def validate(self, data: Any, default: str | None = None) -> BaseModel:
        """Validate a mapping whose ``key`` entry names the class; returns the class's model instance.

        Already-validated instances pass through. Errors raised here carry the location inside the
        mapping (pydantic nests them under the field being validated).
        """
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, dict):
            raise invalid(f"expected a mapping with '{self.key}: <name>', got {data!r}")
        name = data.get(self.key, default)
        if name is None:
            raise invalid(f"'{self.key}' is missing; one of: {', '.join(self.names())}")
        try:
            cls = self.get(str(name))
        except ValueError as exc:
            raise invalid(str(exc)) from None
        known = {self.key}
        for fname, finfo in cls.model_fields.items():  # type: ignore[attr-defined]
            known.add(finfo.alias or fname)
        unknown = [k for k in data if k not in known]
        if unknown:
            params = sorted(known - {self.key})
            raise invalid(f"unknown key '{unknown[0]}' for {self.key} {cls.registry_name}{suggest(str(unknown[0]), params)}; "  # type: ignore[attr-defined]
                          f"its keys: {', '.join(params)}")
        return cls.model_validate({**data, self.key: cls.registry_name})  # type: ignore[attr-defined]
