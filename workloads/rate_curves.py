"""Time-varying arrival rates: a diurnal sinusoid, a piecewise rate curve (inline or from a CSV), and
the modifiers both share — a weekend factor and bursts.

Every process here is a *non-homogeneous Poisson process* with rate λ(t), generated exactly by a time
change of one unit-rate Poisson stream: with ``S_k = E_1 + … + E_k`` (``E_i`` standard exponential,
drawn from the run's ``arrivals`` stream) the k-th arrival is ``t_k = Λ⁻¹(S_k)``, where
``Λ(t) = ∫₀ᵗ λ`` is the cumulative rate. Λ is known in closed form for every curve (sinusoid: sines;
piecewise linear: quadratics), and the inversion is solved per arrival to floating-point precision
(safeguarded Newton on a bracket from a tabulated Λ), so there is no discretisation of the rate.

Consequences (the same as for the renewal processes in :mod:`workloads.arrivals`):

- multiplying every rate by ``f`` (``scaled(f)``, capacity search, ``with_rate``) keeps the stream:
  ``t_k = Λ⁻¹(S_k / f)`` — the request sequence is unchanged, only arrival times move;
- the number of arrivals in ``[a, b]`` is Poisson with mean ``Λ(b) − Λ(a)``.

Modifiers multiply the base curve: ``λ(t) = base(t) · weekday(t) · Π bursts(t)`` with
``weekday(t) = weekend_factor`` on Saturdays and Sundays (``start_weekday`` says which weekday day 0
is; days are ``day_s`` long) and each burst multiplying the rate by ``factor`` during
``[start_s, start_s + duration_s)``. The multiplier is piecewise constant, so Λ stays closed form.
"""
from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sim.config import Frozen
from sim.errors import ConfigError
from workloads.arrivals import ARRIVAL_PROCESSES, ArrivalProcess, unit_rate_stream

__all__ = [
    "Burst",
    "DiurnalArrival",
    "PiecewiseFunction",
    "RateCurveArrival",
    "TimeVaryingArrival",
    "load_rate_csv",
]

DAY_S = 86_400.0
WEEK_DAYS = 7
_SATURDAY = 5
# Relative precision of the inversion Λ(t_k) = S_k.
_REL_TOL = 1e-13
_MAX_ITER = 200


class Burst(Frozen):
    """A window during which the rate is multiplied by ``factor`` (a launch, an outage recovery)."""

    start_s: float = Field(..., ge=0)
    duration_s: float = Field(..., gt=0)
    factor: float = Field(..., ge=0, description="rate multiplier during the window (0 = no traffic)")


class PiecewiseFunction:
    """A function of time given by knots ``(t_i, y_i)``: linear or step (left-continuous value y_i on
    ``[t_i, t_{i+1})``) in between, constant ``y_0`` before the first knot and ``y_last`` after the last.
    With ``period_s`` it repeats: f(t) = f(t mod period). Vectorised; ``integral(t) = ∫₀ᵗ f`` exact."""

    def __init__(self, times: Sequence[float], values: Sequence[float], interpolation: str = "linear",
                 period_s: float | None = None) -> None:
        self.t = np.asarray(times, dtype=np.float64)
        self.y = np.asarray(values, dtype=np.float64)
        self.step = interpolation == "step"
        self.period_s = period_s
        # integral from 0 to each knot over one period (or the whole curve)
        if self.step:
            seg = self.y[:-1] * np.diff(self.t)
        else:
            seg = 0.5 * (self.y[:-1] + self.y[1:]) * np.diff(self.t)
        self._cum = np.concatenate([[0.0], np.cumsum(seg)]) + self.y[0] * self.t[0]  # ∫₀^{t_i} (y_0 before t_0)
        self._period_integral = float(self._integral_once(np.array([period_s]))[0]) if period_s else 0.0

    def _value_once(self, t: np.ndarray) -> np.ndarray:
        if self.step:
            i = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.t) - 1)
            return self.y[i]
        return np.interp(t, self.t, self.y)

    def _integral_once(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        i = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, len(self.t) - 1)
        before = t < self.t[0]
        dt = t - self.t[i]
        if self.step:
            part = self.y[i] * dt
        else:
            nxt = np.minimum(i + 1, len(self.t) - 1)
            width = self.t[nxt] - self.t[i]
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where(width > 0, (self.y[nxt] - self.y[i]) / np.where(width > 0, width, 1.0), 0.0)
            slope = np.where(i == len(self.t) - 1, 0.0, slope)  # constant after the last knot
            part = self.y[i] * dt + 0.5 * slope * dt * dt
        return np.where(before, self.y[0] * t, self._cum[i] + part)

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if self.period_s:
            t = np.mod(t, self.period_s)
        return self._value_once(t)

    def integral(self, t: np.ndarray | float) -> np.ndarray:
        """∫₀ᵗ f(u) du (t ≥ 0)."""
        t = np.asarray(t, dtype=np.float64)
        if not self.period_s:
            return self._integral_once(t)
        n = np.floor(t / self.period_s)
        return n * self._period_integral + self._integral_once(t - n * self.period_s)


def load_rate_csv(path: Path) -> tuple[tuple[float, float], ...]:
    """Rows ``(time_s, rate)`` of a CSV (optionally gzipped) with a header naming ``time_s`` (or
    ``time``/``t``/``timestamp_s``) and ``rate`` (or ``rate_rps``/``requests_per_s``/``qps``)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the rate curve: {exc.strerror or exc}") from None
    if not rows:
        raise ConfigError(f"{path}: the rate curve CSV has no rows")
    header = {h.strip().lower(): h for h in rows[0]}
    t_col = next((header[h] for h in ("time_s", "time", "t", "timestamp_s") if h in header), None)
    r_col = next((header[h] for h in ("rate", "rate_rps", "requests_per_s", "qps") if h in header), None)
    if t_col is None or r_col is None:
        raise ConfigError(f"{path}: the rate curve CSV needs columns time_s and rate (found {', '.join(rows[0])})")
    out = []
    for n, row in enumerate(rows, start=2):
        try:
            out.append((float(row[t_col]), float(row[r_col])))
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: line {n}: time_s and rate must be numbers, got "
                              f"{row[t_col]!r}, {row[r_col]!r}") from None
    return tuple(out)


class TimeVaryingArrival(ArrivalProcess):
    """Base class: a non-homogeneous Poisson process (module docstring). Subclasses give the base
    curve (:meth:`base_rate`, :meth:`base_integral`) and how to scale it."""

    weekend_factor: float = Field(1.0, ge=0, description="rate multiplier on Saturdays and Sundays")
    start_weekday: int = Field(0, ge=0, le=6, description="weekday of day 0 (0 = Monday)")
    day_s: float = Field(DAY_S, gt=0, description="length of a day for the weekday pattern (s)")
    bursts: tuple[Burst, ...] = ()

    # ---- the base curve (subclasses) ----------------------------------------------------------
    def base_rate(self, t: np.ndarray) -> np.ndarray:
        """λ_base(t) in req/s."""
        raise NotImplementedError

    def base_integral(self, t: np.ndarray) -> np.ndarray:
        """∫₀ᵗ λ_base."""
        raise NotImplementedError

    @property
    def end_s(self) -> float | None:
        """Where the curve itself ends (None: it goes on forever)."""
        return None

    @property
    def base_mean_rate(self) -> float:
        """Long-run mean of the base curve."""
        raise NotImplementedError

    # ---- modifiers --------------------------------------------------------------------------------
    def _segments(self, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Breakpoints ``b`` (b[0] = 0) and the multiplier on ``[b_j, b_{j+1})`` up to ``horizon_s``."""
        points = {0.0}
        if self.weekend_factor != 1.0:
            points.update(float(d) * self.day_s for d in range(1, int(math.ceil(horizon_s / self.day_s)) + 1))
        for b in self.bursts:
            points.update((b.start_s, b.start_s + b.duration_s))
        b = np.array(sorted(points), dtype=np.float64)
        mid = b + 0.5 * np.diff(np.append(b, b[-1] + 1.0))
        return b, self._multiplier(mid)

    def _multiplier(self, t: np.ndarray) -> np.ndarray:
        m = np.ones_like(t, dtype=np.float64)
        if self.weekend_factor != 1.0:
            weekday = (self.start_weekday + np.floor(t / self.day_s)) % WEEK_DAYS
            m = np.where(weekday >= _SATURDAY, m * self.weekend_factor, m)
        for b in self.bursts:
            m = np.where((t >= b.start_s) & (t < b.start_s + b.duration_s), m * b.factor, m)
        return m

    def rate(self, t: np.ndarray | float) -> np.ndarray:
        """λ(t) in req/s, modifiers included."""
        t = np.asarray(t, dtype=np.float64)
        return self.base_rate(t) * self._multiplier(t)

    def cumulative(self, t: np.ndarray | float, _segments: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Λ(t) = ∫₀ᵗ λ (expected arrivals by t)."""
        t = np.asarray(t, dtype=np.float64)
        if not self.bursts and self.weekend_factor == 1.0:
            return self.base_integral(t)
        b, m = _segments if _segments is not None else self._segments(float(np.max(t, initial=0.0)))
        base_b = self.base_integral(b)
        cum_b = np.concatenate([[0.0], np.cumsum(m[:-1] * np.diff(base_b))])
        j = np.clip(np.searchsorted(b, t, side="right") - 1, 0, len(b) - 1)
        return cum_b[j] + m[j] * (self.base_integral(t) - base_b[j])

    @property
    def mean_rate(self) -> float | None:
        """Long-run mean rate of the base curve times the weekly average of the weekday factor
        (bursts are transient and not counted)."""
        week = (5.0 + 2.0 * self.weekend_factor) / WEEK_DAYS if self.weekend_factor != 1.0 else 1.0
        return self.base_mean_rate * week

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.end_s is not None:
            out["end_s"] = self.end_s
        return out

    # ---- generation -------------------------------------------------------------------------------
    def arrival_times(self, rng: np.random.Generator, num_requests: int | None, duration_s: float | None) -> np.ndarray:
        horizon = self.end_s if duration_s is None else (duration_s if self.end_s is None else min(duration_s, self.end_s))
        if horizon is None and num_requests is None:
            raise ValueError("an open-loop arrival process needs num_requests or duration_s")
        target = float(self.cumulative(np.array([horizon]))[0]) if horizon is not None else math.inf
        t = self.invert(unit_rate_stream(rng, target, num_requests), horizon)
        if horizon is not None:
            t = t[t <= horizon]
        return t

    def invert(self, s: np.ndarray, horizon_s: float | None = None) -> np.ndarray:
        """The times t with Λ(t) = s (s sorted, ≥ 0), to floating-point precision.

        Bracket: Λ tabulated on a grid (every ``day_s``/1440 or finer, plus every breakpoint of the
        curve and its modifiers) gives the cell of each s; inside the cell safeguarded Newton steps
        (bisection whenever Newton would leave the bracket or λ = 0) converge to |Λ(t) − s| ≤ 1e-13·s."""
        if s.size == 0:
            return np.empty(0)
        hi_t = horizon_s if horizon_s is not None else self.day_s
        while float(self.cumulative(np.array([hi_t]))[0]) < s[-1]:
            hi_t *= 2.0
            if hi_t > 1e12:
                raise ValueError("the cumulative rate does not reach the requested arrivals (rate is 0)")
        segs = self._segments(hi_t)
        grid = np.union1d(np.linspace(0.0, hi_t, int(min(2_000_000, max(2, hi_t / (self.day_s / 1440)))) + 1),
                          np.concatenate([segs[0][segs[0] <= hi_t], self._knots(hi_t)]))
        cum = self.cumulative(grid, segs)
        j = np.clip(np.searchsorted(cum, s, side="left") - 1, 0, len(grid) - 2)
        lo, hi = grid[j], grid[j + 1]
        c_lo, c_hi = cum[j], cum[j + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(c_hi > c_lo, lo + (s - c_lo) / (c_hi - c_lo) * (hi - lo), lo)
        tol = _REL_TOL * np.maximum(s, 1.0)
        todo = np.arange(s.size)
        for _ in range(_MAX_ITER):
            f = self.cumulative(t[todo], segs) - s[todo]
            open_ = np.abs(f) > tol[todo]
            open_ &= (hi[todo] - lo[todo]) > 1e-12 * np.maximum(hi[todo], 1.0)
            todo_next = todo[open_]
            if todo_next.size == 0:
                break
            f = f[open_]
            tt = t[todo_next]
            lo[todo_next] = np.where(f < 0, tt, lo[todo_next])
            hi[todo_next] = np.where(f > 0, tt, hi[todo_next])
            lam = self.rate(tt)
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = tt - f / lam
            ok = (lam > 0) & (newton > lo[todo_next]) & (newton < hi[todo_next])
            t[todo_next] = np.where(ok, newton, 0.5 * (lo[todo_next] + hi[todo_next]))
            todo = todo_next
        return np.maximum.accumulate(t)  # rounding must never reorder arrivals

    def _knots(self, horizon_s: float) -> np.ndarray:
        """Breakpoints of the base curve up to ``horizon_s`` (where λ_base is not smooth)."""
        return np.empty(0)


@ARRIVAL_PROCESSES.register("diurnal", "sinusoid")
class DiurnalArrival(TimeVaryingArrival):
    """A daily sinusoid between ``trough_rate`` and ``peak_rate``, highest at ``peak_at_s``::

        λ(t) = trough + (peak − trough) · (1 + cos(2π (t − peak_at_s) / period_s)) / 2

    Mean over a period (peak + trough)/2; Λ in closed form (sines)."""

    process: Literal["diurnal"] = "diurnal"
    peak_rate: float = Field(..., gt=0, description="highest rate of the day (req/s)")
    trough_rate: float = Field(..., ge=0, description="lowest rate of the day (req/s)")
    period_s: float = Field(DAY_S, gt=0, description="length of one cycle (s)")
    peak_at_s: float = Field(14 * 3600.0, description="time of the peak within the cycle (s)")

    @model_validator(mode="after")
    def _trough_below_peak(self) -> DiurnalArrival:
        if self.trough_rate > self.peak_rate:
            raise ValueError(f"trough_rate ({self.trough_rate}) must not exceed peak_rate ({self.peak_rate})")
        return self

    def base_rate(self, t: np.ndarray) -> np.ndarray:
        w = 2.0 * math.pi / self.period_s
        return self.trough_rate + (self.peak_rate - self.trough_rate) * 0.5 * (1.0 + np.cos(w * (t - self.peak_at_s)))

    def base_integral(self, t: np.ndarray) -> np.ndarray:
        w = 2.0 * math.pi / self.period_s
        amp = 0.5 * (self.peak_rate - self.trough_rate)
        return (self.trough_rate + amp) * t + amp / w * (np.sin(w * (t - self.peak_at_s)) + math.sin(w * self.peak_at_s))

    @property
    def base_mean_rate(self) -> float:
        return 0.5 * (self.peak_rate + self.trough_rate)

    def scaled(self, factor: float) -> ArrivalProcess:
        return self.model_copy(update={"peak_rate": self.peak_rate * factor, "trough_rate": self.trough_rate * factor})


@ARRIVAL_PROCESSES.register("rate-curve", "rate_curve")
class RateCurveArrival(TimeVaryingArrival):
    """A rate curve given by points ``[[time_s, rate], ...]`` (inline, or ``csv: FILE`` with columns
    ``time_s,rate``), linear or step in between, played ``repeat`` times back to back (the period is
    the last point's time). Ends after the last repetition. ``rate_scale`` multiplies every rate."""

    process: Literal["rate-curve"] = "rate-curve"
    points: tuple[tuple[float, float], ...] | None = Field(None, description="[[time_s, rate], ...], times ascending, first at 0")
    csv: str | None = Field(None, description="CSV with columns time_s, rate (relative to the experiment file)")
    interpolation: Literal["linear", "step"] = "linear"
    repeat: int = Field(1, ge=1, description="play the curve this many times")
    rate_scale: float = Field(1.0, gt=0, description="multiply every rate")
    self_limiting: ClassVar[bool] = True

    @field_validator("points")
    @classmethod
    def _check_points(cls, v: tuple[tuple[float, float], ...] | None) -> tuple[tuple[float, float], ...] | None:
        if v is None:
            return v
        _check_curve(v)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> RateCurveArrival:
        if (self.points is None) == (self.csv is None):
            raise ValueError("give exactly one of points or csv")
        return self

    def resolve(self, base_dir: Path) -> RateCurveArrival:
        """Read ``csv`` (relative to ``base_dir``) into ``points``; a no-op for inline points."""
        if self.points is not None:
            return self
        path = Path(self.csv).expanduser()  # type: ignore[arg-type]
        path = path if path.is_absolute() else Path(base_dir) / path
        rows = load_rate_csv(path)
        try:
            _check_curve(rows)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return self.model_copy(update={"points": rows})

    @property
    def _curve(self) -> PiecewiseFunction:
        if self.points is None:
            raise ValueError(f"rate-curve: the CSV {self.csv} has not been read (call resolve(base_dir))")
        t = [p[0] for p in self.points]
        y = [p[1] * self.rate_scale for p in self.points]
        return PiecewiseFunction(t, y, self.interpolation, period_s=t[-1])

    @property
    def period_s(self) -> float:
        """Length of one play of the curve."""
        return float(self.points[-1][0]) if self.points else 0.0

    @property
    def end_s(self) -> float | None:
        return self.period_s * self.repeat if self.points is not None else None

    @property
    def total_duration_s(self) -> float:
        """Span of the whole curve (0 while a CSV curve is unread: its size is checked when read)."""
        return self.end_s or 0.0

    def base_rate(self, t: np.ndarray) -> np.ndarray:
        return self._curve(t)

    def base_integral(self, t: np.ndarray) -> np.ndarray:
        return self._curve.integral(t)

    def _knots(self, horizon_s: float) -> np.ndarray:
        knots = np.array([p[0] for p in self.points or ()])
        reps = np.arange(int(math.ceil(horizon_s / self.period_s)) + 1) * self.period_s if self.period_s else np.zeros(1)
        return (reps[:, None] + knots[None, :]).ravel()

    @property
    def base_mean_rate(self) -> float:
        return float(self._curve.integral(np.array([self.period_s]))[0]) / self.period_s

    @property
    def mean_rate(self) -> float | None:
        return None if self.points is None else super().mean_rate

    def scaled(self, factor: float) -> ArrivalProcess:
        return self.model_copy(update={"rate_scale": self.rate_scale * factor})

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.csv is not None:
            out.pop("points", None)  # the file is named; a day of points would flood the summary
            out["num_points"] = len(self.points or ())
        return out


def _check_curve(points: Sequence[Sequence[float]]) -> None:
    """Raise ValueError unless ``points`` is a valid rate curve (≥ 2 points from t = 0, increasing
    times, rates ≥ 0, not all zero)."""
    if len(points) < 2:
        raise ValueError("a rate curve needs at least 2 points [time_s, rate]")
    times = [float(p[0]) for p in points]
    rates = [float(p[1]) for p in points]
    if times[0] != 0.0:
        raise ValueError(f"the rate curve must start at time 0, got {times[0]}")
    if any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError("rate-curve times must be strictly increasing")
    if any(not math.isfinite(r) or r < 0 for r in rates):
        raise ValueError("rate-curve rates must be finite and ≥ 0")
    if not any(r > 0 for r in rates):
        raise ValueError("the rate curve is zero everywhere")
