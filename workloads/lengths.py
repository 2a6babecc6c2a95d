"""Token-length distributions (``input_tokens``, ``output_tokens``, ``prefix.prefix_tokens``, ...).

Every distribution yields *integers* ``Y = clip(R, min, max)`` where ``R`` is the distribution's raw
integer variable: ``R = rint(X)`` for a continuous ``X`` (lognormal, exponential, normal), or the
integer itself (fixed, uniform, zipf, empirical). ``min`` defaults to 1, so every sample is ≥ 1.
``normal`` is the one exception: it is *truncated* (``X`` conditioned on ``min − ½ ≤ X < max + ½``,
so no probability mass piles up at the bounds); the others *clip*.

``mean`` and ``variance`` are the exact moments of those integer samples — rounding, clipping and
truncation included — computed from the survival function ``P(R > k)``::

    E[Y]  = min  + Σ_{k=min}^{max−1} P(R > k)
    E[Y²] = min² + Σ_{k=min}^{max−1} (2k+1)·P(R > k)

summed term by term up to 200 000 terms past ``min``; an unbounded tail beyond that is added in
closed form (zipf: Hurwitz zeta; continuous laws: their partial moments with an Euler–Maclaurin
correction, relative error far below 1e-9). Moments that do not exist (zipf with ``a ≤ 2`` and no
``max``) are ``inf``. The *nominal* parameters (e.g. lognormal ``mean``/``std``) describe ``X``
before rounding and clipping; :meth:`LengthDistribution.describe` reports both.

Register a new distribution with ``@LENGTH_DISTRIBUTIONS.register("name")`` on a subclass of
:class:`LengthDistribution` that implements ``_sample_int`` and ``_sf`` (and, when its support is
unbounded, ``_tail_sums``). Nothing else needs editing.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    model_serializer,
    model_validator,
)
from scipy import special, stats

from sim.config import Frozen
from sim.limits import MAX_TOKENS
from workloads.datasets import canonical_dataset, load_dataset
from workloads.registry import Registry, invalid
from workloads.traces import read_length_column

LENGTH_DISTRIBUTIONS: Registry = Registry("length distribution", "dist")

# Terms of the survival-function sum evaluated one by one before an unbounded tail is closed analytically.
_DIRECT_TERMS = 200_000
_UNBOUNDED_CLIP = 2 ** 62
_moment_cache: dict[str, tuple[float, float]] = {}


class LengthDistribution(Frozen):
    """Base class: a frozen parameter model that also samples and knows its exact moments."""

    dist: str
    # ge=0 here because durations (think times) start at 0 s; token counts are held to ≥ 1 by
    # parse_length. The bound is a value, never inferred from which keys were written, so a dumped
    # config parses back to the same distribution.
    min: int = Field(1, ge=0, le=MAX_TOKENS, description="smallest value; samples below are clipped up (normal: truncated)")
    max: int | None = Field(None, ge=1, le=MAX_TOKENS, description="largest value; samples above are clipped down (normal: truncated)")

    # Largest value R can take (None = unbounded); lets the moment sum stop early.
    _support_max: ClassVar[int | None] = None

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        # Parameters spelled ``mean`` in YAML are stored as ``mean_tokens`` (``mean`` is the analytic
        # property); dump them under the YAML spelling so a saved config loads back unchanged.
        data = handler(self)
        if isinstance(data, dict) and "mean_tokens" in data:
            data = {("mean" if k == "mean_tokens" else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _check_bounds(self) -> "LengthDistribution":
        if self.max is not None and self.max < self.min:
            raise invalid(f"max ({self.max}) must be ≥ min ({self.min})")
        return self

    # ---- to implement -------------------------------------------------------------------------
    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Raw continuous draws ``X`` (before rounding and clipping)."""
        raise NotImplementedError

    def _sample_int(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Raw integer draws ``R`` (before clipping). Default: ``rint`` of the continuous draws."""
        return np.rint(self._sample_real(rng, n))

    def _sf(self, k: np.ndarray) -> np.ndarray:
        """``P(R > k)`` for integer ``k`` (vectorised)."""
        raise NotImplementedError

    def _tail_sums(self, k0: int) -> tuple[float, float]:
        """``(Σ_{k≥k0} P(R>k), Σ_{k≥k0} (2k+1)·P(R>k))``; needed only for unbounded support."""
        raise NotImplementedError

    def _upper_support(self) -> int | None:
        """Largest value R can take for these parameters (None = unbounded)."""
        return self._support_max

    # ---- public -------------------------------------------------------------------------------
    def resolve(self, base_dir: Path) -> "LengthDistribution":
        """Load any data the distribution needs (CSV columns, datasets); parametric laws return self."""
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` integer samples (int64, each in ``[min, max]``). The first k of ``sample(rng, n)``
        equal ``sample(rng, k)`` from the same generator state (draws are sequential)."""
        raw = self._sample_int(rng, n)
        # Unbounded laws are clipped at 2**62, which int64 holds exactly (clipping at int64's max
        # rounds up to 2**63 in float64 and wraps to a negative length).
        hi = self.max if self.max is not None else _UNBOUNDED_CLIP
        return np.clip(np.nan_to_num(raw, nan=self.min, posinf=hi, neginf=self.min), self.min, hi).astype(np.int64)

    def sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Continuous draws for durations (think times): raw ``X`` clipped to [min, max]. Durations
        parsed by :func:`parse_duration_dist` default to ``min: 0``, so only a bound written in the
        file clips them."""
        x = np.asarray(self._sample_real(rng, n), dtype=float)
        lo = float(self.min)
        hi = self.max if self.max is not None else np.inf
        return np.clip(x, lo, hi)

    @property
    def mean(self) -> float:
        """Exact mean of :meth:`sample` (rounding, clipping and truncation included)."""
        return self._moments()[0]

    @property
    def variance(self) -> float:
        """Exact variance of :meth:`sample` (``inf`` where the second moment diverges)."""
        return self._moments()[1]

    def describe(self) -> dict[str, Any]:
        """Parameters plus the analytic mean/std of the integer samples."""
        out = self.model_dump(mode="json", exclude_none=True)
        out["mean"] = _round(self.mean)
        var = self.variance
        out["std"] = _round(math.sqrt(var)) if math.isfinite(var) else float("inf")
        return out

    # ---- moments ------------------------------------------------------------------------------
    def _cache_key(self) -> str:
        return f"{type(self).__name__}:{self.model_dump_json()}"

    def _moments(self) -> tuple[float, float]:
        key = self._cache_key()
        if key not in _moment_cache:
            _moment_cache[key] = self._compute_moments()
        return _moment_cache[key]

    def _compute_moments(self) -> tuple[float, float]:
        lo = self.min
        hi = self.max
        sup = self._upper_support()
        if sup is not None:
            hi = sup if hi is None else min(hi, sup)
            hi = max(hi, lo)
        m1 = float(lo)
        m2 = float(lo) ** 2
        stop = hi if hi is not None else lo + _DIRECT_TERMS
        for start in range(lo, stop, 1_000_000):  # chunks bound memory for very wide finite ranges
            k = np.arange(start, min(stop, start + 1_000_000), dtype=np.float64)
            sf = np.clip(self._sf(k), 0.0, 1.0)
            m1 += math.fsum(sf)
            m2 += math.fsum((2 * k + 1) * sf)
        if hi is None:
            t1, t2 = self._tail_sums(stop)
            m1 += t1
            m2 += t2
        if not math.isfinite(m1):
            return math.inf, math.inf
        var = m2 - m1 * m1 if math.isfinite(m2) else math.inf
        return m1, max(var, 0.0)


def _round(x: float) -> float:
    return float(f"{x:.6g}") if math.isfinite(x) else x


class _ContinuousTail:
    """Mixin: tail sums of ``R = rint(X)`` from ``X``'s survival ``S``, density ``f`` and partial moments
    ``PM_r(a) = E[X^r · 1{X > a}]`` (Euler–Maclaurin with the first two correction terms)."""

    def _S(self, x: float) -> float:
        raise NotImplementedError

    def _pdf(self, x: float) -> float:
        raise NotImplementedError

    def _partial_moment(self, r: int, a: float) -> float:
        raise NotImplementedError

    def _tail_sums(self, k0: int) -> tuple[float, float]:
        a = k0 + 0.5  # P(R > k) = S(k + ½)
        s, f = self._S(a), self._pdf(a)
        pm1, pm2 = self._partial_moment(1, a), self._partial_moment(2, a)
        t1 = (pm1 - a * s) + s / 2 + f / 12
        t2 = (pm2 - a * a * s) + a * s + (a * f - s) / 6
        return t1, t2


# ------------------------------------------------------------------------------------------------
@LENGTH_DISTRIBUTIONS.register("fixed", "constant")
class FixedLength(LengthDistribution):
    """Always ``value`` (then clipped to [min, max]). ``input_tokens: 512`` is shorthand for this."""

    dist: Literal["fixed"] = "fixed"
    value: int = Field(..., ge=1, le=MAX_TOKENS)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, float(self.value))

    def _sf(self, k: np.ndarray) -> np.ndarray:
        return (k < self.value).astype(float)

    def _upper_support(self) -> int | None:
        return self.value


@LENGTH_DISTRIBUTIONS.register("uniform")
class UniformLength(LengthDistribution):
    """Integers uniform on ``[low, high]`` inclusive: mean (low+high)/2, variance ((high−low+1)²−1)/12
    (before clipping). As a think time: continuous uniform on [low, high]."""

    dist: Literal["uniform"] = "uniform"
    low: int = Field(..., ge=0, le=MAX_TOKENS)
    high: int = Field(..., ge=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _check(self) -> "UniformLength":
        if self.high < self.low:
            raise invalid(f"high ({self.high}) must be ≥ low ({self.low})")
        return self

    def _sample_int(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=n)

    def _sf(self, k: np.ndarray) -> np.ndarray:
        return np.clip((self.high - k) / (self.high - self.low + 1), 0.0, 1.0)

    def _upper_support(self) -> int | None:
        return self.high


@LENGTH_DISTRIBUTIONS.register("normal", "gaussian")
class NormalLength(LengthDistribution):
    """Normal(``mean``, ``std``) *truncated* to ``[min − ½, max + ½)`` and rounded, so samples are in
    [min, max] with no pile-up at the bounds (inverse-CDF sampling, one uniform per draw)."""

    dist: Literal["normal"] = "normal"
    mean_tokens: float = Field(..., alias="mean")
    std: float = Field(..., gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def _bounds(self) -> tuple[float, float]:
        a = (self.min - 0.5 - self.mean_tokens) / self.std
        b = math.inf if self.max is None else (self.max + 0.5 - self.mean_tokens) / self.std
        return a, b

    @model_validator(mode="after")
    def _check_mass(self) -> "NormalLength":
        a, b = self._bounds()
        if stats.norm.sf(a) - stats.norm.sf(b) <= 0:
            raise invalid("the truncation interval [min, max] has no probability mass under this normal")
        return self

    def _frozen(self):
        a, b = self._bounds()
        return stats.truncnorm(a, b, loc=self.mean_tokens, scale=self.std)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._frozen().ppf(rng.random(n))

    def _sf(self, k: np.ndarray) -> np.ndarray:
        return self._frozen().sf(k + 0.5)

    def _tail_sums(self, k0: int) -> tuple[float, float]:
        # Truncated normal tail: E[X^r 1{X>a}] in closed form (normalised by the truncation mass).
        mu, sd = self.mean_tokens, self.std
        lo_z, _ = self._bounds()
        mass = stats.norm.sf(lo_z)
        a = k0 + 0.5
        z = (a - mu) / sd
        s0, phi = stats.norm.sf(z), stats.norm.pdf(z)
        s = s0 / mass
        f = phi / sd / mass
        pm1 = (mu * s0 + sd * phi) / mass
        pm2 = ((mu * mu + sd * sd) * s0 + sd * (a + mu) * phi) / mass
        t1 = (pm1 - a * s) + s / 2 + f / 12
        t2 = (pm2 - a * a * s) + a * s + (a * f - s) / 6
        return t1, t2

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["nominal_mean"] = self.mean_tokens
        out.pop("mean_tokens", None)
        return out


@LENGTH_DISTRIBUTIONS.register("lognormal")
class LogNormalLength(_ContinuousTail, LengthDistribution):
    """Lognormal, given either ``mean``/``std`` of the continuous law or ``mu``/``sigma`` of its log;
    rounded, then clipped to [min, max]. Nominal mean = exp(mu + sigma²/2)."""

    dist: Literal["lognormal"] = "lognormal"
    mean_tokens: float | None = Field(None, alias="mean", gt=0)
    std: float | None = Field(None, gt=0)
    mu: float | None = None
    sigma: float | None = Field(None, gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check_params(self) -> "LogNormalLength":
        by_moments = self.mean_tokens is not None and self.std is not None
        by_log = self.mu is not None and self.sigma is not None
        given = [n for n, v in (("mean", self.mean_tokens), ("std", self.std), ("mu", self.mu), ("sigma", self.sigma)) if v is not None]
        if by_moments == by_log or len(given) != 2:
            raise invalid(f"give either mean and std, or mu and sigma (got {', '.join(given) or 'none'})")
        return self

    @property
    def log_params(self) -> tuple[float, float]:
        """``(mu, sigma)`` of ``ln X``."""
        if self.mu is not None and self.sigma is not None:
            return self.mu, self.sigma
        m, s = float(self.mean_tokens), float(self.std)  # type: ignore[arg-type]
        sigma2 = math.log1p((s / m) ** 2)
        return math.log(m) - sigma2 / 2, math.sqrt(sigma2)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu, sigma = self.log_params
        return rng.lognormal(mu, sigma, size=n)

    def _sf(self, k: np.ndarray) -> np.ndarray:
        mu, sigma = self.log_params
        return stats.norm.sf((np.log(k + 0.5) - mu) / sigma)

    def _S(self, x: float) -> float:
        mu, sigma = self.log_params
        return float(stats.norm.sf((math.log(x) - mu) / sigma))

    def _pdf(self, x: float) -> float:
        mu, sigma = self.log_params
        return float(stats.norm.pdf((math.log(x) - mu) / sigma) / (x * sigma))

    def _partial_moment(self, r: int, a: float) -> float:
        mu, sigma = self.log_params
        return float(math.exp(r * mu + r * r * sigma * sigma / 2) * stats.norm.cdf((mu + r * sigma * sigma - math.log(a)) / sigma))


@LENGTH_DISTRIBUTIONS.register("exponential")
class ExponentialLength(_ContinuousTail, LengthDistribution):
    """Exponential with the given ``mean`` (continuous), rounded, then clipped to [min, max]."""

    dist: Literal["exponential"] = "exponential"
    mean_tokens: float = Field(..., alias="mean", gt=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_exponential(n) * self.mean_tokens

    def _sf(self, k: np.ndarray) -> np.ndarray:
        return np.exp(-(k + 0.5) / self.mean_tokens)

    def _S(self, x: float) -> float:
        return math.exp(-x / self.mean_tokens)

    def _pdf(self, x: float) -> float:
        return math.exp(-x / self.mean_tokens) / self.mean_tokens

    def _partial_moment(self, r: int, a: float) -> float:
        m = self.mean_tokens
        e = math.exp(-a / m)
        return e * (a + m) if r == 1 else e * (a * a + 2 * a * m + 2 * m * m)


@LENGTH_DISTRIBUTIONS.register("zipf")
class ZipfLength(LengthDistribution):
    """Zipf: ``P(R = k) = k^(−a) / ζ(a)`` for k ≥ 1 (``numpy`` ``zipf``), clipped to [min, max].
    Without ``max`` the mean is finite only for a > 2 and the variance only for a > 3."""

    dist: Literal["zipf"] = "zipf"
    a: float = Field(..., gt=1)

    def _sample_int(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # Devroye's rejection sampler (the one numpy's ``zipf`` uses) in float64 without numpy's cap
        # at 2**63: near a = 1 that cap silently drops a visible share of the mass (~12% at a = 1.05).
        # Candidates are (U, V) pairs drawn row by row, so accepted values form one fixed sequence.
        am1 = self.a - 1.0
        b = 2.0 ** am1
        out: list[np.ndarray] = []
        need = n
        while need > 0:
            uv = rng.random((max(64, int(need * 1.3) + 8), 2))
            u = 1.0 - uv[:, 0]
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                x = np.floor(u ** (-1.0 / am1))
                inv = 1.0 / x
                # X·(T − 1) with T = (1 + 1/X)^(a−1), stable for huge X (limit a − 1)
                xt1 = np.where(x > 1e12, am1, x * np.expm1(am1 * np.log1p(inv)))
                t = np.exp(am1 * np.log1p(inv))
                ok = (x >= 1) & (uv[:, 1] * xt1 / (b - 1.0) <= t / b)
            acc = x[ok][:need]
            out.append(acc)
            need -= len(acc)
        return np.concatenate(out) if out else np.empty(0)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._sample_int(rng, n)

    def _sf(self, k: np.ndarray) -> np.ndarray:
        k = np.maximum(k, 0.0)
        return special.zeta(self.a, k + 1) / special.zeta(self.a)

    def _tail_sums(self, k0: int) -> tuple[float, float]:
        # Σ_{k≥K} P(R>k) = Σ_{j>K} (j−K) p_j ;  Σ_{k≥K} (2k+1) P(R>k) = Σ_{j>K} (j²−K²) p_j
        a, z = self.a, special.zeta(self.a)
        t1 = (special.zeta(a - 1, k0 + 1) - k0 * special.zeta(a, k0 + 1)) / z if a > 2 else math.inf
        t2 = (special.zeta(a - 2, k0 + 1) - k0 * k0 * special.zeta(a, k0 + 1)) / z if a > 3 else math.inf
        return float(t1), float(t2)


class _TabulatedLength(LengthDistribution):
    """Shared code for distributions over a finite table of values (empirical CSV column, datasets)."""

    _values: np.ndarray | None = PrivateAttr(None)

    def _table(self) -> np.ndarray:
        if self._values is None:
            self._load(Path("."))
        assert self._values is not None
        return self._values

    def _load(self, base_dir: Path) -> None:
        raise NotImplementedError

    def resolve(self, base_dir: Path) -> "LengthDistribution":
        if self._values is None:
            self._load(base_dir)
        return self

    def _sample_int(self, rng: np.random.Generator, n: int) -> np.ndarray:
        values = self._table()
        return values[rng.integers(0, len(values), size=n)].astype(np.float64)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self._sample_int(rng, n)

    def _sf(self, k: np.ndarray) -> np.ndarray:
        values = np.sort(self._table())
        return 1.0 - np.searchsorted(values, k, side="right") / len(values)

    def _upper_support(self) -> int | None:
        return int(np.max(self._table()))

    def _cache_key(self) -> str:
        values = self._table()
        return f"{super()._cache_key()}:{len(values)}:{hash(values.tobytes())}"


@LENGTH_DISTRIBUTIONS.register("empirical")
class EmpiricalLength(_TabulatedLength):
    """Resample (uniformly, with replacement) the values of one ``column`` of a CSV file (``path``
    relative to the experiment file); values are rounded to integers, then clipped to [min, max]."""

    dist: Literal["empirical"] = "empirical"
    path: str
    column: str

    def _load(self, base_dir: Path) -> None:

        p = Path(self.path).expanduser()
        p = p if p.is_absolute() else Path(base_dir) / p
        self._values = read_length_column(p, self.column)


@LENGTH_DISTRIBUTIONS.register("dataset")
class DatasetLength(_TabulatedLength):
    """Lengths of a built-in dataset profile (``workloads.datasets``): ``input_tokens: {dataset: sharegpt}``.
    ``column`` (input/output) is filled in from the key it appears under. When ``input_tokens`` and
    ``output_tokens`` name the same dataset, (input, output) *pairs* are sampled jointly."""

    dist: Literal["dataset"] = "dataset"
    dataset: str
    column: Literal["input", "output"] = "input"

    @model_validator(mode="after")
    def _check_name(self) -> "DatasetLength":

        try:
            canonical_dataset(self.dataset)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return self

    def _load(self, base_dir: Path) -> None:

        inp, out = load_dataset(self.dataset)
        self._values = inp if self.column == "input" else out

    def pair_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(input, output) columns of the dataset, row-aligned."""

        return load_dataset(self.dataset)


def parse_length(value: Any, column: Literal["input", "output"] | None = None) -> LengthDistribution:
    """Validate a length spec: an int (fixed), ``{dist: name, ...}`` or ``{dataset: name}``.

    ``column`` tells a ``dataset`` spec which column to draw (from the YAML key it is under).
    """
    if isinstance(value, LengthDistribution):
        return value
    if isinstance(value, bool):
        raise invalid("expected a token count or a distribution mapping")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or float(value) != int(value) or value < 1:
            raise invalid("a fixed token count must be a whole number ≥ 1")
        if value > MAX_TOKENS:
            raise invalid(f"a token count above {MAX_TOKENS:,} (simctl's limit; docs/experiment.md, Limits)")
        return FixedLength(value=int(value))
    if isinstance(value, dict):
        data = dict(value)
        if "dist" not in data and "dataset" in data:
            data["dist"] = "dataset"
        if data.get("dist") in ("dataset",) and column is not None:
            data.setdefault("column", column)
        dist = LENGTH_DISTRIBUTIONS.validate(data)
        if dist.min < 1:  # type: ignore[attr-defined]
            raise invalid("min must be ≥ 1 for a token count")
        return dist  # type: ignore[return-value]
    raise invalid("expected a token count or a distribution mapping")


def parse_duration_dist(value: Any) -> LengthDistribution:
    """Validate a duration spec in seconds (think times): a number (fixed) or ``{dist: ...}``.

    Durations use :meth:`LengthDistribution.sample_real` (continuous, ≥ 0)."""
    if isinstance(value, LengthDistribution):
        return value
    if isinstance(value, bool):
        raise invalid("expected seconds or a distribution mapping")
    if isinstance(value, (int, float)):
        if value < 0:
            raise invalid("a duration must be ≥ 0")
        return FixedSeconds(value=float(value))
    if isinstance(value, dict):
        data = dict(value)
        try:
            is_fixed = LENGTH_DISTRIBUTIONS.canonical(str(data.get("dist"))) == "fixed"
        except ValueError:
            is_fixed = False
        if is_fixed:
            return FixedSeconds.model_validate({**data, "dist": "fixed"})
        data.setdefault("min", 0)  # seconds start at 0, not at the 1-token floor of lengths
        return LENGTH_DISTRIBUTIONS.validate(data)  # type: ignore[return-value]
    raise invalid("expected seconds or a distribution mapping")


class FixedSeconds(LengthDistribution):
    """A constant duration in seconds (think time shorthand ``think_time_s: 2.5``)."""

    dist: Literal["fixed"] = "fixed"
    value: float = Field(..., ge=0)
    min: int = Field(0, ge=0)

    def _sample_real(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value)

    def _sf(self, k: np.ndarray) -> np.ndarray:
        return (k < round(self.value)).astype(float)

    def _upper_support(self) -> int | None:
        return max(int(round(self.value)), self.min)
