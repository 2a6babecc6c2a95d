"""Compiled kernel for the exact minimum-decode-deadline bisection (Metron fluidity).

:func:`sim.measure.metrics.min_decode_deadlines_rows` bisects every request's deadline with
vectorised numpy passes (``_trace_at``), which build a dozen B × W temporaries per pass. This module
does the same bisection one row at a time in a numba-compiled loop, streaming over the row's tokens
with no temporaries. It performs the *same floating-point operations in the same order* as the numpy
path (``t_k − k·d``, ``floor(x / d) − a``, ``x / (a + 1)``, ``x / (a + q + 1)``, ``x / (a + q)``, the
sums of integer-valued floats, the midpoint ``0.5·(lo + hi)``; no fastmath), so both give bit-identical
bounds; ``tests/test_fluidity.py`` checks that on random and adversarial rows.

numba is a dependency with wheels for every supported platform, so ``pip install`` needs no compiler;
when it is not installed (or ``SIMCTL_NO_NUMBA=1`` is set) :data:`AVAILABLE` is False and the numpy
path runs instead.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

# numba is imported (and the cached kernel loaded, ~0.5 CPU-s) only when a run has enough tokens for
# the kernel to pay; below that the numpy passes are as fast and give the same bits.
AVAILABLE = importlib.util.find_spec("numba") is not None and not os.environ.get("SIMCTL_NO_NUMBA")
MIN_CELLS = 200_000  # B × W token cells from which :func:`kernel` is used (tests set 0)
_kernel = None
_bisect_row_compiled = None  # the compiled _bisect_row, set by kernel()


def kernel():
    """The compiled :func:`bisect_rows` (compiling or loading it on first use), or None without numba."""
    global _kernel
    if _kernel is None and AVAILABLE:
        from numba import njit

        global _bisect_row_compiled
        # bisect_rows calls the global _bisect_row_compiled: numba resolves it at compile time
        _bisect_row_compiled = njit(cache=True, nogil=True)(_bisect_row)
        _kernel = njit(cache=True, nogil=True)(bisect_rows)
    return _kernel


def _bisect_row(t: np.ndarray, n: int, max_miss_rate: float, max_steps: int, eps: float,
                lo: float, hi: float) -> tuple[float, float]:  # pragma: no cover - compiled
    """Bisect one row's deadline: ``t[:n]`` token times (float ns, t[0] = 0); returns final (lo, hi)."""
    m = n - 1
    for _ in range(max_steps):
        mid = 0.5 * (lo + hi)
        if not ((hi > lo) and (mid > lo) and (mid < hi)):
            break
        d = mid
        # one pass of _trace_at at deadline d
        c = t[0]  # running max of z_j = t_j − j·d over j < k (z_0 = t_0)
        anchor = 0
        t_anchor = t[0]
        num_missed = 0.0
        num_late = 0
        lower_met = 0.0
        lower_late = 0.0
        upper = np.inf
        for k in range(1, n):
            z = t[k] - k * d
            x = t[k] - t_anchor
            a = float(k - 1 - anchor)
            if z > c:  # late: misses its deadline
                q = np.floor(x / d) - a
                if q < 1.0:
                    q = 1.0
                num_missed += q
                num_late += 1
                v = x / (a + q + 1.0)
                if v > lower_late:
                    lower_late = v
                u = x / (a + q)
                if u < upper:
                    upper = u
                anchor = k
                t_anchor = t[k]
            else:
                v = x / (a + 1.0)
                if v > lower_met:
                    lower_met = v
            if z > c:
                c = z
        total = (m - num_late) + num_missed
        feasible = num_missed <= max_miss_rate * total + eps
        lower = lower_met if lower_met > lower_late else lower_late
        if d < lower:
            lower = d
        if d > upper:
            upper = d
        if feasible:
            if lower < hi:
                hi = lower
        else:
            if upper > lo:
                lo = upper
    return lo, hi


def bisect_rows(t: np.ndarray, num_tok: np.ndarray, max_miss_rate: float, max_steps: int,
                eps: float) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """(lo, hi) in ns for every row of ``t`` (B × W float64 ns, row-relative), as the numpy bisection."""
    num_rows, width = t.shape
    lo = np.zeros(num_rows)
    hi = np.zeros(num_rows)
    for r in range(num_rows):
        n = num_tok[r]
        if n > width:
            n = width
        h = 0.0
        for k in range(1, width):
            g = t[r, k] - t[r, k - 1] if k < n else 0.0
            if g > h:
                h = g
        lo[r], hi[r] = _bisect_row_compiled(t[r], n, max_miss_rate, max_steps, eps, 0.0, h)
    return lo, hi
