"""Number formatting for report tables: one place, so every table reads the same."""
from __future__ import annotations

import math
from typing import Any

MISSING = "–"
GIB = 1024 ** 3


def is_number(value: Any) -> bool:
    """True for a finite int/float (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, digits: int = 2) -> str:
    """``1,234.57``; integers without decimals; missing/NaN as a dash."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if not is_number(value):
        return MISSING if value is None or isinstance(value, float) else str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def ms(value: Any) -> str:
    """Milliseconds with one decimal."""
    return num(value, 1)


def pct(fraction: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage."""
    return f"{100 * fraction:.{digits}f}%" if is_number(fraction) else MISSING


def gib(num_bytes: Any) -> str:
    """Bytes as GiB with two decimals."""
    return f"{num_bytes / GIB:,.2f} GiB" if is_number(num_bytes) else MISSING


def usd(value: Any) -> str:
    """Dollars: four decimals below $1, else two."""
    if not is_number(value):
        return MISSING
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def params(count: Any) -> str:
    """A parameter count with its short form: ``70,553,706,496 (70.55 B)``."""
    if not is_number(count):
        return MISSING
    return f"{int(count):,} ({count / 1e9:,.2f} B)" if count >= 1e8 else f"{int(count):,}"


def passfail(value: Any) -> str:
    """``PASS`` / ``FAIL`` / dash."""
    return MISSING if value is None else ("PASS" if value else "FAIL")


def scalar(value: Any) -> str:
    """Any scalar value for a key/value table."""
    if isinstance(value, float):
        return num(value, 4 if abs(value) < 1 else 2)
    if isinstance(value, (list, tuple)):
        return ", ".join(scalar(v) for v in value)
    if isinstance(value, dict):  # nested config: leave out unset entries
        return ", ".join(f"{k}={scalar(v)}" for k, v in value.items() if v not in (None, "", [], {}))
    return num(value)
