"""Capacity search: the highest request rate (or the fewest replicas) that meets the SLO.

```yaml
search:
  target: rate            # rate: max request rate; replicas: min replicas for target_rate
  tolerance: 0.025        # stop when (lowest failing − highest passing) ≤ tolerance × highest passing
  start_rate: 8           # first probe (default: the workload's own rate)
  min_rate: 0.01          # give up below this rate
  max_probes: 20
  num_requests: 5000      # measured requests per probe (default: module docstring, "Probe size")
  warmup_requests: 200    # extra requests sent first and left out of the statistics
  target_rate: 50         # target: replicas
  max_replicas: 64
```

**Algorithm (target: rate).** Each probe is a full simulation of the experiment at rate r (the
workload keeps its request sequence and scales its arrival times by 1/r, so probes differ only in
load — common random numbers), scored with :func:`sim.measure.slo.evaluate_slo`.

1. Bracket: probe ``start_rate``; while it passes, double; while it fails, halve (down to
   ``min_rate``). This yields a passing ``lo`` and a failing ``hi``.
2. Bisect: probe ``(lo + hi) / 2``; a pass raises ``lo``, a fail lowers ``hi``; stop when
   ``hi − lo ≤ tolerance · lo`` or after ``max_probes`` probes.
3. Report ``lo``: by construction a rate whose own probe passed (never interpolated), with the
   criterion that failed at ``hi`` as the binding constraint.

**target: replicas** doubles the replica count from 1 until the SLO holds at ``target_rate``, then
bisects the integers in between, and reports the fewest passing replicas with their GPUs and $/hour.

**Probe size.** Without ``num_requests``, a probe measures the workload's ``num_requests`` or, if more,
enough requests to leave :data:`DEFAULT_TAIL_SAMPLES` beyond the SLO's highest percentile
(P99: 5,000), since a P99 from 1,000 requests rests on 10 samples and overstated the MLPerf-server
example's capacity by 6 % (docs/capacity.md, "Probe size").

**Parallel probes** (``jobs`` > 1). The searches above are sequential: each probe's verdict picks the
next. They are written against a probe oracle and replayed (cheap: no simulation) from the results
known so far; the first unknown probe is the one the sequential search needs now, and the first
unknown probes under assumed verdicts (both outcomes, breadth first) are the ones it may need next.
Up to ``jobs`` of those run at once in worker processes. The search's path is decided by real
results only, so the result (and ``capacity.json``) is the same for every ``jobs``; extra workers
only buy speculative probes, of which the off-path ones are discarded. The disaggregated search
(:mod:`sim.plan.pd_capacity`) runs on the same oracle with points (rate, prefill, decode) and three
outcomes a point can have: it passes, fails on a prefill-side criterion, or fails on TPOT/ITL.

docs/capacity.md compares this with etalon's search.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from sim.config import Frozen, format_validation_error, load_experiment, with_overrides
from sim.errors import ConfigError, SimctlError
from sim.measure.slo import evaluate_slo, resolve_slo
from sim.plan.capacity_range import rate_range
from sim.plan.workers import (
    default_jobs,
    kill_workers,
    picklable,
    pool_context,
    stop_on_signals,
    worker_init,
)
from sim.runs.disagg import pd_probe_keys
from sim.runs.runner import run
from sim.runs.storage import to_jsonable

__all__ = [
    "DEFAULT_TAIL_SAMPLES",
    "MAX_DEFAULT_JOBS",
    "PROBE_SUMMARY_KEYS",
    "CapacityResult",
    "Probe",
    "SearchConfig",
    "capacity_search",
    "default_capacity_jobs",
    "default_probe_requests",
]

#: measured requests beyond the SLO's highest percentile that the default probe size provides:
#: 50 P99 tail samples (5,000 requests) gave the 10,000-request answer on the MLPerf-server example,
#: 10 (1,000 requests) overstated it by 6 % (docs/capacity.md, "Probe size")
DEFAULT_TAIL_SAMPLES = 50
#: ``simctl capacity`` uses at most this many worker processes by default: a 4th speculative probe
#: still shortens the search, more mostly simulate probes that end up off the path (docs/capacity.md)
MAX_DEFAULT_JOBS = 4


class SearchConfig(Frozen):
    """The ``search:`` section (module docstring)."""

    target: Literal["rate", "replicas"] = "rate"
    tolerance: float = Field(0.025, gt=0, lt=1, description="relative width at which the search stops")
    start_rate: float | None = Field(None, gt=0, description="first probe (req/s); default: the workload's rate")
    min_rate: float = Field(0.01, gt=0, description="lowest rate probed before giving up (req/s)")
    max_probes: int = Field(20, ge=1)
    num_requests: int | None = Field(None, ge=1, description="measured requests per probe "
                                     "(default: default_probe_requests)")
    warmup_requests: int = Field(0, ge=0, description="extra requests sent first, excluded from the statistics")
    target_rate: float | None = Field(None, gt=0, description="target: replicas — the rate to serve (req/s)")
    max_replicas: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _replicas_need_rate(self) -> SearchConfig:
        if self.target == "replicas" and self.target_rate is None:
            raise ValueError("target: replicas needs target_rate (req/s)")
        if self.start_rate is not None and self.min_rate > self.start_rate:
            raise ValueError(f"min_rate ({self.min_rate:g}) is above start_rate ({self.start_rate:g}) req/s")
        return self


# Summary keys kept in each probe record (the full summary is large).
PROBE_SUMMARY_KEYS = (
    "completed", "num_requests", "rejected", "unfinished", "duration", "request_throughput",
    "output_throughput", "total_token_throughput", "mean_ttft_ms", "p50_ttft_ms", "p90_ttft_ms",
    "p99_ttft_ms", "mean_tpot_ms", "p90_tpot_ms", "p99_tpot_ms", "p99_itl_ms", "mean_e2el_ms",
    "p99_e2el_ms", "mean_queue_ms", "p99_fluidity_miss_rate", "fluid_token_generation_rate",
    "request_goodput", "slo_attainment", "mean_batch_size", "peak_kv_cache_usage", "num_preemptions",
    "num_gpus", "cost_per_hour_usd", "usd_per_million_output_tokens",
)


@dataclass
class Probe:
    """One simulated point of the search."""

    request_rate: float
    replicas: int
    passed: bool
    binding: str | None  # the most violated (or, when passing, the tightest) criterion
    failed: list[str] = field(default_factory=list)
    criteria: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class CapacityResult:
    """What the search found (written as ``capacity.json``)."""

    target: str
    max_request_rate: float | None  # target rate: highest passing probe (None: nothing passed)
    min_replicas: int | None  # target replicas: fewest passing replicas
    converged: bool  # the bracket closed to the tolerance (rate) / adjacent integers (replicas)
    lowest_failing_rate: float | None
    binding_constraint: str | None  # what failed at the lowest failing probe
    num_gpus: int | None  # at the reported point
    cost_per_hour_usd: float | None
    tolerance: float
    # with an uncertainty: section, the max rate on the slow / fast end of the profile's uncertainty
    # (sim/plan/capacity_range.py); plan with the low end
    max_request_rate_low: float | None = None
    max_request_rate_high: float | None = None
    interval_level: float | None = None
    probes: list[Probe] = field(default_factory=list)
    slo: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # disaggregated experiments (sim.plan.pd_capacity): the (prefill, decode) replicas found and the search
    disaggregation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (probes in the order they were run)."""
        out = asdict(self)
        if out["disaggregation"] is None:
            del out["disaggregation"]
        return to_jsonable(out)


def _default_run_fn() -> Callable[[Any], Any]:

    return run


def _slo_percentiles(slo: Any, model_name: str = "") -> list[str]:
    """Latency percentiles the SLO bounds (e.g. "99", "99.9"); ``model_name`` resolves MLPerf presets."""

    return [] if slo is None else [f"{p:g}" for p in resolve_slo(slo, model_name).required_percentiles()]


def default_probe_requests(cfg: Any, warmup_requests: int = 0) -> int | None:
    """Measured requests per probe when ``search.num_requests`` is unset: what the workload's
    ``num_requests`` leaves after ``warmup_requests`` or, if more, ``DEFAULT_TAIL_SAMPLES / (1 − q)``
    for the SLO's highest percentile q (P99: 5,000; P90: 500). A trace replay keeps its own length
    (its rows are the workload), as does an SLO without percentiles."""
    wl = cfg.workload
    n = getattr(wl, "num_requests", None) or (wl.get("num_requests") if isinstance(wl, dict) else None)
    if n is None:
        return None
    measured = max(1, int(n) - warmup_requests)
    if getattr(wl, "trace", None) is not None:
        return measured
    tails = [t for t in (1 - float(p) / 100 for p in _slo_percentiles(cfg.slo, cfg.model)) if t > 0]
    if not tails:
        return measured
    # round before ceil: 50 / (1 − 0.99) is 5000.000000000004 in floating point
    return max(measured, math.ceil(round(DEFAULT_TAIL_SAMPLES / min(tails), 6)))


def default_capacity_jobs() -> int:
    """Worker processes ``simctl capacity`` uses without ``--jobs``: the cores, at most MAX_DEFAULT_JOBS."""
    return max(1, min(default_jobs(), MAX_DEFAULT_JOBS))


class _NeedProbe(Exception):
    """Raised by :meth:`_Searcher.probe` during a replay: the search needs a probe not simulated yet."""

    def __init__(self, key: ProbeKey) -> None:
        super().__init__(key)
        self.key = key


# A probe point: (rate, replicas), or (rate, prefill replicas, decode replicas) for a disaggregated search.
ProbeKey = tuple

# the outcomes a speculative replay assumes for a point not simulated yet, as (passed, binding): an
# aggregated search branches on the verdict only; the (P, D) search also on which side failed
_OUTCOMES = {2: ((True, None), (False, None)), 3: ((True, None), (False, "ttft"), (False, "tpot"))}


def simulate_probe(run_fn: Callable[[Any], Any], cfg: Any, key: ProbeKey) -> Probe:
    """Simulate one probe and score it (top level: runs in a worker process too)."""
    result = run_fn(cfg)
    summary = getattr(result, "summary", result)
    verdict = summary.get("slo") if isinstance(summary, dict) else None
    if not isinstance(verdict, dict) or "passed" not in verdict:

        verdict = evaluate_slo(summary, cfg.slo, cfg.model)
    kept = {k: summary.get(k) for k in PROBE_SUMMARY_KEYS if k in summary}
    if len(key) == 3:
        kept.update({"prefill_replicas": key[1], "decode_replicas": key[2]})
    return Probe(request_rate=key[0], replicas=sum(key[1:]), passed=bool(verdict["passed"]),
                 binding=verdict.get("binding"), failed=list(verdict.get("failed", [])),
                 criteria=list(verdict.get("criteria", [])), summary={**kept, **pd_probe_keys(summary)})


class _Searcher:
    """The probe oracle a search runs against: simulated results, replayed (module docstring).

    A search function (``_search_rate``, ``_search_replicas``, ``search_pd_replicas``) calls
    :meth:`probe` (or :meth:`probe_pd`); it is run from the start every time a result arrives. ``probes`` is the path of the current replay: each distinct
    point once, in the order the search asked for it (so ``max_probes`` counts the sequential
    search's probes, not speculative ones).
    """

    def __init__(self, cfg: Any, search: SearchConfig, run_fn: Callable[[Any], Any],
                 progress: Callable[[Probe], None] | None) -> None:

        self.search = search
        self.run_fn = run_fn
        self.progress = progress
        self.probes: list[Probe] = []
        self.results: dict[ProbeKey, Probe | Exception] = {}  # simulated (or failed), by point
        self._assumed: dict[ProbeKey, tuple[bool, str | None]] = {}  # hypothetical outcomes of this replay
        self._on_path: set[ProbeKey] = set()
        # the summary an assumed (P, D) probe carries (its cost, for the search's comparisons)
        self.assumed_summary: Callable[[ProbeKey], dict[str, Any]] = lambda key: {}
        self._num_reported = 0  # path probes already passed to ``progress``
        base = cfg.model_copy(update={"uncertainty": None})  # probes are points; the range is searched apart
        if search.num_requests is not None:
            base = with_overrides(base, {"workload.num_requests": search.num_requests + search.warmup_requests})
        else:
            n_req = default_probe_requests(cfg, search.warmup_requests)
            if n_req is not None and n_req + search.warmup_requests > getattr(cfg.workload, "num_requests", 0):
                # the tail-sample floor: otherwise the workload as written (unchanged results)
                base = with_overrides(base, {"workload.num_requests": n_req + search.warmup_requests})
        self.base = base

    def config_at(self, rate: float, replicas: int | None = None) -> Any:
        """The experiment at ``rate`` req/s (and ``replicas``), warm-up set from warmup_requests."""

        cfg = self.base
        wl = cfg.workload
        update: dict[str, Any] = {}
        if self.search.warmup_requests:
            # the first warmup_requests arrive, on average, in warmup_requests / rate seconds
            update["warmup_s"] = self.search.warmup_requests / rate
        if replicas is not None:
            update["replicas"] = replicas
        if hasattr(wl, "with_rate"):
            try:
                update["workload"] = wl.with_rate(rate)
            except ValueError as exc:
                raise ConfigError(f"{cfg.name}: capacity search needs a workload with an arrival rate: {exc}") from None
            return cfg.model_copy(update=update)
        overrides = {"workload.arrival.rate": rate, **update}
        return with_overrides(cfg, overrides)

    def config_for(self, key: ProbeKey) -> Any:
        """The experiment a probe point simulates."""
        if len(key) == 2:
            return self.config_at(*key)
        return with_overrides(self.config_at(key[0]), {"disaggregation.prefill.replicas": key[1],
                                                       "disaggregation.decode.replicas": key[2]})

    def replay(self, assumed: dict[ProbeKey, tuple[bool, str | None]] | None = None) -> None:
        """Start a replay of the search: an empty path, ``assumed`` outcomes for unsimulated points."""
        self.probes = []
        self._on_path = set()
        self._assumed = assumed or {}

    def probe(self, rate: float, replicas: int) -> Probe:
        """The probe at (rate, replicas): simulated, assumed, or :class:`_NeedProbe`."""
        return self._point((float(f"{rate:.6g}"), replicas))

    def probe_pd(self, rate: float, prefill: int, decode: int) -> Probe:
        """The probe of a disaggregated experiment at ``rate`` with ``prefill`` + ``decode`` replicas."""
        return self._point((float(f"{rate:.6g}"), prefill, decode))

    def _point(self, key: ProbeKey) -> Probe:
        if key in self.results:
            probe = self.results[key]
            if isinstance(probe, Exception):
                raise probe  # the simulation of a point the search needs failed: as it would in process
        elif key in self._assumed:
            passed, binding = self._assumed[key]
            probe = Probe(request_rate=key[0], replicas=sum(key[1:]), passed=passed, binding=binding,
                          summary=self.assumed_summary(key))
        else:
            raise _NeedProbe(key)
        if key not in self._on_path:
            self._on_path.add(key)
            self.probes.append(probe)
        return probe

    def report_progress(self) -> None:
        """Pass the newly settled probes of the path to ``progress`` (the same calls for every ``jobs``)."""
        if self._assumed:
            return
        while self._num_reported < len(self.probes):
            if self.progress is not None:
                self.progress(self.probes[self._num_reported])
            self._num_reported += 1

    @property
    def budget_left(self) -> bool:
        return len(self.probes) < self.search.max_probes


class _ProbeRunner:
    """Simulates probes: in this process (``jobs`` 1) or on a pool of ``jobs`` worker processes."""

    def __init__(self, run_fn: Callable[[Any], Any], jobs: int) -> None:
        self.run_fn = run_fn
        self.jobs = max(1, int(jobs))
        if self.jobs > 1 and not picklable(run_fn):
            self.jobs = 1  # e.g. a test's closure: it cannot cross a process boundary
        self._pool: Any = None

    def __enter__(self) -> _ProbeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            # speculative probes still running are off the path: stop them, no worker outlives the search
            kill_workers(self._pool)
            self._pool = None

    def start(self, cfg: Any, key: ProbeKey) -> Any:
        """Begin simulating ``key``; returns a handle for :meth:`wait`."""
        if self.jobs == 1:
            return (cfg, key)  # run lazily, in wait()
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=pool_context(),
                                             initializer=worker_init, initargs=(os.getpid(),))
        return self._pool.submit(simulate_probe, self.run_fn, cfg, key)

    def wait(self, handles: dict[ProbeKey, Any], first: ProbeKey) -> dict[ProbeKey, Probe | Exception]:
        """Results of the handles that finish next (in process: just ``first``, the needed one)."""
        if self.jobs == 1:
            cfg, key = handles[first]
            return {first: simulate_probe(self.run_fn, cfg, key)}
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(list(handles.values()), return_when=FIRST_COMPLETED)
        by_future = {f: k for k, f in handles.items()}
        out: dict[ProbeKey, Probe | Exception] = {}
        for f in done:
            exc = f.exception()
            if isinstance(exc, BrokenProcessPool):
                raise SimctlError("a capacity-search worker process died (out of memory?): "
                                  "rerun with fewer --jobs") from None
            # a failed simulation is kept as its exception and raised only if the search needs that
            # point: a speculative point off the path must not stop a search that never needs it
            out[by_future[f]] = exc if exc is not None else f.result()
        return out


def _first_unknown(search_fn: Callable[[_Searcher], Any], s: _Searcher,
                   assumed: dict[ProbeKey, tuple[bool, str | None]]) -> ProbeKey | None:
    """The first point the search needs under ``assumed`` outcomes (None: it finishes)."""
    s.replay(assumed)
    try:
        search_fn(s)
    except _NeedProbe as need:
        return need.key
    except Exception:  # the branch reaches a point whose simulation failed: nothing further to guess
        return None
    return None


def _speculative_frontier(search_fn: Callable[[_Searcher], Any], s: _Searcher, width: int,
                          running: set[ProbeKey]) -> list[ProbeKey]:
    """Up to ``width − len(running)`` points to start now, the likeliest needed first.

    Breadth first over the outcomes not known yet: depth 0 is the point the search needs now, each
    level below divides the chance a point is needed (each outcome of its parent is assumed in turn).
    """
    wanted: list[ProbeKey] = []
    queue: deque[dict[ProbeKey, tuple[bool, str | None]]] = deque([{}])
    visited = 0
    while queue and len(wanted) + len(running) < width and visited < 4 * width + 8:
        assumed = queue.popleft()
        visited += 1
        key = _first_unknown(search_fn, s, assumed)
        if key is None:
            continue
        if key not in running and key not in wanted:
            wanted.append(key)
        queue.extend({**assumed, key: outcome} for outcome in _OUTCOMES[len(key)])
    return wanted


def _drive(search_fn: Callable[[_Searcher], Any], s: _Searcher, runner: _ProbeRunner) -> Any:
    """Run ``search_fn`` against simulated probes, ``runner.jobs`` at a time; its return value.

    Its path (``s.probes``) and result depend on the simulated verdicts only, never on ``jobs``.
    """
    running: dict[ProbeKey, Any] = {}
    while True:
        s.replay()
        try:
            found = search_fn(s)
        except _NeedProbe as need:
            needed = need.key
        else:
            s.report_progress()
            return found
        s.report_progress()
        if runner.jobs == 1:
            start = [needed]
        else:
            start = _speculative_frontier(search_fn, s, runner.jobs, set(running))
            if needed not in running and needed not in start:
                start.insert(0, needed)
        for key in start:
            running[key] = runner.start(s.config_for(key), key)
        for key, probe in runner.wait(running, needed).items():
            del running[key]
            s.results[key] = probe


def _search_rate(s: _Searcher, start: float, replicas: int) -> tuple[Probe | None, Probe | None, bool]:
    """Bracket then bisect; returns (highest passing probe, lowest failing probe, converged)."""
    cfg = s.search
    lo: Probe | None = None
    hi: Probe | None = None
    p = s.probe(start, replicas)
    if p.passed:
        lo = p
        while s.budget_left:
            p = s.probe(lo.request_rate * 2, replicas)
            if not p.passed:
                hi = p
                break
            lo = p
    else:
        hi = p
        while s.budget_left and hi.request_rate / 2 >= cfg.min_rate:
            p = s.probe(hi.request_rate / 2, replicas)
            if p.passed:
                lo = p
                break
            hi = p
    if lo is None or hi is None:
        return lo, hi, False
    while hi.request_rate - lo.request_rate > cfg.tolerance * lo.request_rate and s.budget_left:
        mid = 0.5 * (lo.request_rate + hi.request_rate)
        p = s.probe(mid, replicas)
        if p.request_rate in (lo.request_rate, hi.request_rate):
            break  # rates rounded to 6 significant digits: the bracket cannot shrink further
        if p.passed:
            lo = p
        else:
            hi = p
    converged = hi.request_rate - lo.request_rate <= cfg.tolerance * lo.request_rate * (1 + 1e-9)
    return lo, hi, converged


def _search_replicas(s: _Searcher, rate: float) -> tuple[Probe | None, Probe | None, bool]:
    """Fewest replicas passing at ``rate``: doubling, then integer bisection."""
    cfg = s.search
    lo_fail: Probe | None = None
    best: Probe | None = None
    n = 1
    while n <= cfg.max_replicas and s.budget_left:
        p = s.probe(rate, n)
        if p.passed:
            best = p
            break
        lo_fail = p
        if n == cfg.max_replicas:
            break
        n = min(n * 2, cfg.max_replicas)
    if best is None:
        return None, lo_fail, False
    while lo_fail is not None and best.replicas - lo_fail.replicas > 1 and s.budget_left:
        mid = (best.replicas + lo_fail.replicas) // 2
        p = s.probe(rate, mid)
        if p.passed:
            best = p
        else:
            lo_fail = p
    converged = lo_fail is None or best.replicas - lo_fail.replicas <= 1
    return best, lo_fail, converged


def capacity_search(cfg: Any, run_fn: Callable[[Any], Any] | None = None, *, out_dir: str | Path | None = None,
                    progress: Callable[[Probe], None] | None = None, jobs: int = 1) -> CapacityResult:
    """Search the experiment's capacity under its ``slo:`` (settings from ``search:``).

    ``run_fn(cfg) -> RunResult`` (anything with a ``.summary`` dict) simulates one probe; default
    :func:`sim.api.run`. With ``out_dir``, ``capacity.json`` is written there. ``jobs`` worker
    processes simulate probes the search needs now or may need next (module docstring); the result
    is the same for every ``jobs``. A ``run_fn`` that cannot be pickled runs in this process.
    """
    with _ProbeRunner(run_fn or _default_run_fn(), jobs) as runner, stop_on_signals():
        return _capacity_search(cfg, runner, out_dir, progress)


def _capacity_search(cfg: Any, runner: _ProbeRunner, out_dir: str | Path | None,
                     progress: Callable[[Probe], None] | None) -> CapacityResult:
    if isinstance(cfg, (str, Path)):

        cfg = load_experiment(cfg)
    if cfg.slo is None:
        raise ConfigError(f"{cfg.name}: capacity search needs an 'slo:' section (what must hold at the found rate)")
    slo = resolve_slo(cfg.slo, cfg.model)
    if slo is not None and not (slo.presets or slo.latency_bounds() or slo.goodput or slo.fluidity):
        raise ConfigError(f"{cfg.name}: slo: sets no latency, goodput or fluidity limit, so every rate would pass; "
                          "give e.g. slo: {ttft_ms: {p99: 2000}} or slo: {preset: mlperf-server}")
    search = cfg.search
    if not isinstance(search, SearchConfig):
        from pydantic import ValidationError

        try:
            search = SearchConfig.model_validate(search or {})
        except ValidationError as exc:
            raise format_validation_error(exc, SearchConfig, cfg.name, ("search",)) from None
    run_fn = runner.run_fn
    s = _Searcher(cfg, search, run_fn, progress)
    warnings: list[str] = []
    wl = cfg.workload
    n_req = search.num_requests or default_probe_requests(cfg, search.warmup_requests)
    for p in _slo_percentiles(cfg.slo, cfg.model):
        tail = 1 - float(p) / 100
        if n_req is not None and tail > 0 and n_req * tail < 1:
            raise ConfigError(f"{cfg.name}: p{p} from {n_req} requests per probe has no tail sample to stand on; "
                              f"set search.num_requests ≥ {math.ceil(10 / tail - 1e-9)}")
        if n_req is not None and tail > 0 and n_req * tail < 10:
            warnings.append(f"p{p} from {n_req} requests rests on {n_req * tail:.1f} tail samples: "
                            f"raise search.num_requests to ≥ {math.ceil(10 / tail - 1e-9)} for a stable estimate")
    pd_detail = None
    if search.target == "replicas":
        if cfg.disaggregation is not None:  # the cheapest (prefill, decode) pair
            from sim.plan.pd_capacity import PDSearchStart, search_pd_replicas

            start_pd = PDSearchStart.of(cfg, search.target_rate, search.max_replicas)
            s.assumed_summary = start_pd.assumed_summary
            best, fail, converged, pd_detail = _drive(
                lambda x: search_pd_replicas(x, start_pd, search.target_rate), s, runner)
        else:
            best, fail, converged = _drive(lambda x: _search_replicas(x, search.target_rate), s, runner)
        point = best
        result = CapacityResult(
            target="replicas", max_request_rate=search.target_rate if best else None,
            min_replicas=best.replicas if best else None, converged=converged,
            lowest_failing_rate=None, binding_constraint=(fail.binding if fail else (best.binding if best else None)),
            num_gpus=None, cost_per_hour_usd=None, tolerance=search.tolerance, disaggregation=pd_detail)
        if best is None:
            tried = max((p.replicas for p in s.probes), default=0)
            warnings.append(f"the SLO is not met at {search.target_rate} req/s with up to {tried} replicas")
    else:
        start = search.start_rate or _workload_rate(wl) or 1.0
        lo, hi, converged = _drive(lambda x: _search_rate(x, start, cfg.replicas), s, runner)
        point = lo
        result = CapacityResult(
            target="rate", max_request_rate=lo.request_rate if lo else None, min_replicas=None,
            converged=converged, lowest_failing_rate=hi.request_rate if hi else None,
            binding_constraint=hi.binding if hi else (lo.binding if lo else None),
            num_gpus=None, cost_per_hour_usd=None, tolerance=search.tolerance)
        if lo is None:
            warnings.append(f"the SLO is not met even at {hi.request_rate if hi else start} req/s "
                            f"(search.min_rate = {search.min_rate})")
        elif hi is None:
            warnings.append(f"every probe passed up to {lo.request_rate} req/s: raise search.max_probes")
        elif not converged:
            warnings.append(f"stopped after {len(s.probes)} probes before reaching the tolerance")
        if cfg.uncertainty is not None:
            def search_at(c: Any) -> float | None:
                found, _, _ = _drive(lambda x: _search_rate(x, start, cfg.replicas),
                                     _Searcher(c, search, run_fn, progress), runner)
                return found.request_rate if found else None

            result.max_request_rate_low, result.max_request_rate_high = rate_range(cfg, search_at)
            result.interval_level = cfg.uncertainty.level
    if point is not None:
        result.num_gpus = point.summary.get("num_gpus")
        result.cost_per_hour_usd = point.summary.get("cost_per_hour_usd")
    result.probes = s.probes
    result.slo = _dump(cfg.slo)
    result.search = search.model_dump(mode="json")
    result.warnings = warnings
    if out_dir is not None:
        write_capacity_json(result, out_dir)
    return result


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True) if isinstance(model, BaseModel) else dict(model or {})


def _workload_rate(wl: Any) -> float | None:
    rate = getattr(wl, "mean_rate", None)
    if isinstance(rate, (int, float)):
        return float(rate)
    if isinstance(wl, dict):
        arr = wl.get("arrival") or {}
        if isinstance(arr, dict) and isinstance(arr.get("rate"), (int, float)):
            return float(arr["rate"])
    return None


def write_capacity_json(result: CapacityResult, out_dir: str | Path) -> Path:
    """Write ``capacity.json`` atomically into ``out_dir``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "capacity.json"
    fd, tmp = tempfile.mkstemp(dir=out, prefix="capacity.json.")
    with os.fdopen(fd, "w") as f:
        json.dump(result.to_dict(), f, indent=2)
    os.replace(tmp, path)
    return path
