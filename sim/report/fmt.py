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


# key suffix -> (label suffix, formatter) for key/value tables
_UNIT_SUFFIXES = (("_bytes", "", gib), ("_usd", " ($)", usd), ("_ms", " (ms)", None), ("_gib", " (GiB)", None),
                  ("_tb_s", " (TB/s)", None), ("_gb_s", " (GB/s)", None), ("_s", " (s)", None))


def keyed(key: str, value: Any) -> tuple[str, str]:
    """A summary/profile key and its value as a readable (label, value) pair: unit suffixes become
    units (``memory_bytes`` → ``memory``, ``85.02 GiB``; ``p99_ttft_ms`` → ``p99 ttft (ms)``), lists of
    plain values are joined, nested mappings become ``k=v`` lists (never raw JSON)."""
    for suffix, unit, f in _UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            label = key[: -len(suffix)].replace("_", " ") + unit
            return label, (f(value) if f is not None and is_number(value) else scalar(value))
    return key.replace("_", " "), scalar(value)


def describe_workload(wl: dict[str, Any]) -> str:
    """One readable line for a workload description (``meta.json``'s ``workload``)."""
    parts = []
    if wl.get("num_requests") is not None:
        parts.append(f"{num(wl['num_requests'])} requests ({wl.get('kind', 'open-loop')})")
    arr = wl.get("arrival")
    if isinstance(arr, dict):
        extra = ", ".join(f"{k} {scalar(v)}" for k, v in arr.items() if k not in ("process", "mean_rate"))
        parts.append(f"arrivals {arr.get('process', '?')}" + (f" ({extra})" if extra else ""))
    if is_number(wl.get("observed_rate")):
        parts.append(f"observed {num(wl['observed_rate'])} req/s")
    for side in ("input_tokens", "output_tokens"):
        for cls in wl.get("classes") or []:
            d = cls.get(side)
            if isinstance(d, dict):
                name = f"{side.split('_')[0]} tokens" + (f" [{cls.get('name')}]" if len(wl["classes"]) > 1 else "")
                params_ = ", ".join(f"{k} {scalar(v)}" for k, v in d.items() if k not in ("dist", "min") and v is not None)
                parts.append(f"{name}: {d.get('dist', '?')} ({params_})")
    if is_number(wl.get("mean_prompt_tokens")):
        parts.append(f"mean prompt {num(wl['mean_prompt_tokens'])} tokens")
    return "; ".join(parts) if parts else scalar(wl)
