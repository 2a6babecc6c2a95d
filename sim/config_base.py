"""The base class of every config section: frozen, unknown keys rejected, numbers held to what they mean.

It lives below ``sim.config`` so that a section model ``sim.config`` itself imports
(``sim.speculative_config``) can derive from it too; ``sim.config.Frozen`` is the same class.
"""
from __future__ import annotations

import functools
import math
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from sim.limits import MAX_FLOAT

__all__ = ["Frozen"]


def _is_number_type(annotation: Any) -> bool:
    """True when a field typed ``annotation`` takes numbers but not booleans (``int``, ``float``,
    ``float | None``...): there pydantic would read ``true`` as 1."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_number_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return bool(args) and bool not in args and any(_is_number_type(a) for a in args)
    return annotation in (int, float)


@functools.cache
def _number_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, f in cls.model_fields.items() if _is_number_type(f.annotation))


class Frozen(BaseModel):
    """Base for config sections: immutable, unknown keys rejected, and numbers held to what they mean.

    Every field of every subclass (sections other modules register included) refuses, before
    pydantic's own coercion: a boolean where the field takes numbers (``max_num_seqs: true`` is
    not 1), non-finite floats and floats beyond ±:data:`sim.limits.MAX_FLOAT`, integers beyond 64
    bits. A new section gets these rules by deriving from this class; docs/experiment.md
    ("Conventions for sections") lists them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool):
            if info.field_name in _number_fields(cls):
                raise PydanticCustomError("bool_for_number", "a number is expected, not a boolean")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise PydanticCustomError("non_finite", "a finite number is expected (no simctl quantity is infinite)")
            if abs(value) > MAX_FLOAT:
                raise PydanticCustomError("too_large", f"magnitude above {MAX_FLOAT:g} (simctl's limit for any number)")
        elif isinstance(value, int) and abs(value) > 2 ** 63 - 1:
            raise PydanticCustomError("too_large", "does not fit in 64 bits")
        return value
