"""Fit a hardware profile's free parameters to real measurements (``simctl calibrate``).

Two modes:

**Replay mode** (``--measurements FILE --experiment EXP.yaml``). The measured requests (arrival time,
prompt and output lengths, measured TTFT and E2E; a per-request CSV or a ``vllm bench serve
--save-detailed`` JSON with ``start_times``) are replayed through the simulator with the serving
settings of the experiment file, and the profile's tunable parameters
(:meth:`HardwareProfile.tunable_parameters`) are fitted with ``scipy.optimize.least_squares``
(trust-region reflective, bounds) to minimise the residual vector

    r = [w_k · ln(sim_k / meas_k)  for k in OBJECTIVE_METRICS]   (per case, concatenated)

with ``OBJECTIVE_METRICS`` = mean, p50 and p90 TTFT, mean E2E and the derived inter-token latency
(mean E2E − mean TTFT)/(mean output − 1), weights w_k = 1 unless given. The log ratio is the relative
error to first order (ln 1.05 ≈ 0.049) but stays bounded when a start point overloads the simulated
server (a 10× too slow replay gives 2.3, not 9), which keeps the first steps of the fit sane. Relative
errors make every metric count alike whatever its scale; TTFT gets three entries because its
distribution (queueing) is what the decode-dominated E2E cannot see. Parameters are scaled by their
starting values so the optimiser works on O(1) numbers; the Jacobian is taken by finite differences with
a step of a few percent, because a discrete-event simulator's output is piecewise constant at very small
steps.

Uncertainty: with J the Jacobian at the optimum (in scaled units), the residual variance
s² = Σr²/(m − n) and cov = s²·(JᵀJ)⁺; the reported ±σ of each parameter is √cov_ii (converted back to the
parameter's units). It is a local, linearised estimate: it says which parameters the data pins down
(small σ) and which it barely sees (large σ, or strong correlation).

**Microbenchmark mode** (``--microbench CSV``): ``benchmarks/gpu_profile.py``'s CSV (GEMMs, attention,
all-reduce and decoder-layer timings measured with PyTorch) is reduced to efficiencies and overheads
directly (:func:`fit_microbench`), no simulation needed.

The simulator is reached through one injection point, :data:`ReplayFn` (default
:func:`replay_with_api`: the deployment resolved by :func:`sim.deploy.deployment.build_deployment`, the requests driven
through :func:`sim.engine.simulator.simulate`), so the fitter can be tested with a stand-in.
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config import with_overrides
from sim.deploy.deployment import build_deployment
from sim.engine.request import RequestSpec
from sim.engine.simulator import simulate
from sim.errors import ConfigError, suggest
from sim.fidelity.compare import (
    derived_itl_ms,
    load_benchmark,
    read_request_csv,
    simulated_requests,
)
from sim.runs.runner import replica_setup
from workloads.base import OpenLoopWorkload

# Metric name -> function of a per-request table (REQUEST_COLUMNS), in ms.
OBJECTIVE_METRICS: dict[str, Callable[[pd.DataFrame], float]] = {
    "mean_ttft_ms": lambda d: 1e3 * float(d["ttft_s"].mean()),
    "median_ttft_ms": lambda d: 1e3 * float(d["ttft_s"].median()),
    "p90_ttft_ms": lambda d: 1e3 * float(np.percentile(d["ttft_s"], 90)),
    "mean_e2el_ms": lambda d: 1e3 * float(d["e2el_s"].mean()),
    "mean_itl_derived_ms": derived_itl_ms,
}


def objective_metrics(requests: pd.DataFrame, names: Sequence[str] | None = None) -> dict[str, float]:
    """Evaluate the objective metrics (ms) on a per-request table."""
    names = list(names or OBJECTIVE_METRICS)
    requests = requests.dropna(subset=["ttft_s", "e2el_s"])
    if len(requests) == 0:
        return {n: float("nan") for n in names}
    return {n: OBJECTIVE_METRICS[n](requests) for n in names}


# ----------------------------------------------------------------------------------------------
# measurements

def load_measurements(path: str | Path) -> pd.DataFrame:
    """Per-request measurements (:data:`sim.fidelity.compare.REQUEST_COLUMNS`) from a CSV or a detailed vLLM JSON.

    Arrival times are shifted so the first request arrives at 0. Replaying needs them: a vLLM result
    without ``start_times`` (older vLLM) is refused with a hint.
    """
    path = Path(path)
    if path.name.lower().endswith((".csv", ".csv.gz")):
        df = read_request_csv(path)
    else:
        res = load_benchmark(path)
        if res.requests is None:
            raise ConfigError(f"{path}: has no per-request data ({res.format}); calibration replays "
                              "requests: use `vllm bench serve --save-result --save-detailed` or a CSV "
                              "arrival_time_s,input_tokens,output_tokens,ttft_s,e2e_s")
        df = res.requests
    if len(df) == 0:
        raise ConfigError(f"{path}: no successful requests to calibrate on")
    if df["arrival_s"].isna().any():
        raise ConfigError(f"{path}: no arrival times (vLLM result without 'start_times'); replay needs "
                          "them: export a CSV with arrival_time_s,input_tokens,output_tokens,ttft_s,e2e_s")
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df["arrival_s"] = df["arrival_s"] - df["arrival_s"].iloc[0]
    return df


# ----------------------------------------------------------------------------------------------
# replaying requests through the simulator

@dataclass
class ReplayCase:
    """One set of measured requests and the serving settings they were measured under.

    ``cfg`` is an :class:`sim.config.ExperimentConfig` (its ``workload:`` is ignored: the requests of
    ``measured`` are replayed instead, at their arrival times with their exact lengths). Optional columns
    of ``measured``:

    - ``scored`` (bool): rows that count for the objective; the others are simulated only to warm the
      engine up (default: all rows count);
    - ``prompt_id`` (int): requests with the same id send the same prompt (a prefix-cache hit on every full
      block when prefix caching is on); ``prefix_group`` (int) and ``prefix_tokens`` (int): requests of a
      group share their first ``prefix_tokens`` tokens (a system prompt). Without them every prompt is
      unique.
    """

    name: str
    cfg: Any
    measured: pd.DataFrame

    def scored(self, requests: pd.DataFrame) -> pd.DataFrame:
        """The rows of a per-request table aligned with ``measured`` that count for the objective."""
        if "scored" not in self.measured.columns:
            return requests
        return requests[self.measured["scored"].to_numpy(dtype=bool)]


# (profile, case) -> simulated per-request table (REQUEST_COLUMNS), one row per row of case.measured,
# in the same order (NaN latencies for requests that did not complete)
ReplayFn = Callable[[Any, ReplayCase], pd.DataFrame]


def request_specs(measured: pd.DataFrame, namespace: str = "replay") -> list:
    """:class:`sim.engine.request.RequestSpec` for each row (arrival order kept), with shared-prompt segments.

    A request with ``prompt_id`` p in ``prefix_group`` g is the segments
    ``[(("sys", g), prefix_tokens), (("prompt", p), rest)]``; without a group it is ``[(("prompt", p), n)]``;
    without a ``prompt_id`` it is unique (the engine's default).
    """

    cols = measured.columns
    arrival = measured["arrival_s"].to_numpy(dtype=float)
    n_in = measured["input_tokens"].to_numpy(dtype=int)
    n_out = measured["output_tokens"].to_numpy(dtype=int)
    pid = measured["prompt_id"].to_numpy() if "prompt_id" in cols else None
    grp = measured["prefix_group"].to_numpy() if "prefix_group" in cols else None
    pre = measured["prefix_tokens"].to_numpy(dtype=int) if "prefix_tokens" in cols else None
    specs = []
    for i in range(len(measured)):
        segments: tuple = ()
        group = -1
        if pid is not None and pid[i] >= 0:
            if grp is not None and pre is not None and grp[i] >= 0 and 0 < pre[i] < n_in[i]:
                group = int(grp[i])
                segments = (((namespace, "sys", group), int(pre[i])),
                            ((namespace, "prompt", int(pid[i]), int(n_in[i])), int(n_in[i] - pre[i])))
            else:
                segments = (((namespace, "prompt", int(pid[i]), int(n_in[i])), int(n_in[i])),)
        specs.append(RequestSpec(arrival_s=float(arrival[i]), num_prompt_tokens=int(n_in[i]),
                                 max_output_tokens=max(1, int(n_out[i])), prompt_segments=segments,
                                 prefix_group=group))
    return specs


def replay_with_api(profile: Any, case: ReplayCase) -> pd.DataFrame:
    """Default :data:`ReplayFn`: price ``case.cfg`` with ``profile`` and simulate ``case.measured``'s requests.

    The deployment (memory plan, cost model) is resolved by :func:`sim.deploy.deployment.build_deployment` exactly
    as ``simctl run`` does; the requests are driven open-loop at their measured arrival times.
    """

    cfg, dep = deployment_for(profile, case.cfg)
    setup = replica_setup(dep, cfg.engine.num_kv_blocks)
    workload = OpenLoopWorkload(request_specs(case.measured, case.name))
    out = simulate(workload, setup, num_replicas=cfg.replicas, router=cfg.router,
                   seed_seq=np.random.SeedSequence(cfg.seed), max_duration_s=cfg.max_duration_s)
    return aligned_requests(out.requests, len(case.measured))


def deployment_for(profile: Any, cfg: Any) -> tuple[Any, Any]:
    """``cfg`` with its hardware replaced by ``profile`` (an in-memory profile, e.g. one being fitted), and
    the :class:`sim.deploy.deployment.Deployment` (memory plan, cost model) resolved from it as ``simctl run`` would."""

    with tempfile.TemporaryDirectory(prefix="simctl-cal-") as tmp:
        prof_path = Path(tmp) / "profile.yaml"
        prof_path.write_text(profile.to_yaml())
        cfg = with_overrides(cfg, {"hardware": str(prof_path)})
        return cfg, build_deployment(cfg)


def aligned_requests(records: pd.DataFrame, n: int) -> pd.DataFrame:
    """Simulated records as :data:`REQUEST_COLUMNS`, one row per submitted request in submission order.

    Requests are numbered in submission (= arrival) order by the engine; ones that did not complete
    have NaN latencies.
    """

    rec = records.sort_values("request_id", kind="stable")
    if len(rec) != n:
        raise RuntimeError(f"the simulation returned {len(rec)} request records for {n} requests")
    return simulated_requests(rec, keep_all=True)


# ----------------------------------------------------------------------------------------------
# parameters

# What a replay of serving measurements pins down on any GPU (docs/calibration.md, "Fit what your data
# can see"): weight streaming, KV reading, per-step and per-sequence host work, the GEMM efficiency
# fall-off at decode-sized batches.
DEFAULT_REPLAY_PARAMETERS = ("memory_efficiency", "attention_memory_efficiency", "per_iteration_s",
                             "per_request_s", "gemm_half_tokens")


def default_parameters(profile: Any) -> list[str]:
    """The parameters a replay fit adjusts by default: the profile's own recommendation when it has one
    (``calibration_parameters()``), else :data:`DEFAULT_REPLAY_PARAMETERS` that the profile has, else its
    timing parameters."""
    rec = getattr(profile, "calibration_parameters", None)
    if callable(rec):
        return list(rec())
    tunables = profile.tunable_parameters()
    chosen = [p for p in DEFAULT_REPLAY_PARAMETERS if p in tunables]
    if chosen:
        return chosen
    try:
        return list(profile.tunable_parameters("timing"))
    except TypeError:
        return list(tunables)


def default_bounds(name: str, value: float) -> tuple[float, float]:
    """Physical bounds of a tunable parameter, from its name.

    Efficiencies/fractions (``*efficiency*``, ``*_eff``, ``*fraction*``) lie in (0, 1]; times
    (``*_s``) and other non-negative quantities in [0, max(50·value, 50 ms)]; anything else within a
    factor of 20 of its starting value.
    """
    low = name.lower()
    if "efficien" in low or low.endswith("_eff") or "fraction" in low or low.startswith("eff_"):
        return 0.01, 1.0
    if low.endswith("_s") or "overhead" in low or "latency" in low:
        return 0.0, max(50.0 * value, 0.05)
    if value > 0:
        return value / 20.0, value * 20.0
    return value * 20.0, value / 20.0 if value < 0 else 1.0


def _scale(name: str, value: float) -> float:
    """Typical magnitude used to make the optimiser's variables O(1)."""
    if value != 0:
        return abs(value)
    return 1e-3 if name.lower().endswith("_s") else 1.0


@dataclass
class FitResult:
    """Outcome of :func:`fit_profile`."""

    parameters: dict[str, float]  # fitted values
    initial: dict[str, float]  # starting values (the base profile's)
    stderr: dict[str, float]  # 1σ (parameter units), NaN where undetermined
    correlation: list[list[float]]  # parameter correlation matrix (order of ``parameters``)
    metrics: dict[str, dict[str, dict[str, float]]]  # case -> metric -> {simulated, measured, rel_error}
    initial_rms_rel_error: float
    rms_rel_error: float
    num_evaluations: int
    success: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (for YAML/JSON)."""
        return {
            "parameters": {k: float(v) for k, v in self.parameters.items()},
            "initial": {k: float(v) for k, v in self.initial.items()},
            "stderr": {k: (None if not math.isfinite(v) else float(v)) for k, v in self.stderr.items()},
            "correlation": [[round(float(c), 3) for c in row] for row in self.correlation],
            "rms_rel_error": float(self.rms_rel_error),
            "initial_rms_rel_error": float(self.initial_rms_rel_error),
            "metrics": self.metrics,
            "num_evaluations": self.num_evaluations,
            "success": self.success,
            "message": self.message,
        }


def _case_metrics(profile: Any, cases: Sequence[ReplayCase], replay: ReplayFn,
                  metric_names: Sequence[str], weights: dict[str, float] | None = None) -> tuple[np.ndarray, dict]:
    """Residual vector (log ratios sim/meas, times each metric's weight) and the per-case table."""
    residuals, table = [], {}
    for case in cases:
        sim_req = case.scored(replay(profile, case))
        meas = objective_metrics(case.scored(case.measured), metric_names)
        sim = objective_metrics(sim_req, metric_names)
        table[case.name] = {}
        for k in metric_names:
            ok = meas[k] > 0 and math.isfinite(sim[k]) and sim[k] > 0
            r = math.log(sim[k] / meas[k]) if ok else math.log(10.0)
            residuals.append(r * (weights or {}).get(k, 1.0))
            rel = sim[k] / meas[k] - 1 if ok else float("nan")
            table[case.name][k] = {"simulated": float(sim[k]), "measured": float(meas[k]), "rel_error": float(rel)}
    return np.asarray(residuals, dtype=float), table


def fit_profile(base_profile: Any, cases: Sequence[ReplayCase], *, parameters: Sequence[str] | None = None,
                replay: ReplayFn = replay_with_api, bounds: dict[str, tuple[float, float]] | None = None,
                metric_names: Sequence[str] | None = None, weights: dict[str, float] | None = None,
                start: dict[str, float] | None = None,
                diff_step: float = 0.03, max_nfev: int | None = None, ftol: float = 1e-4,
                progress: Callable[[str], None] | None = None) -> FitResult:
    """Fit ``parameters`` of ``base_profile`` so replays of ``cases`` match their measurements.

    ``base_profile`` needs ``tunable_parameters() -> dict[str, float]`` and ``with_parameters(**kw)``.
    ``start`` overrides starting values (defaults: the base profile's); ``bounds`` overrides
    :func:`default_bounds`; ``metric_names``/``weights`` choose and weight the objective's metrics.
    Returns fitted values, 1σ uncertainties and the per-metric errors.
    """
    from scipy.optimize import least_squares

    tunables = dict(base_profile.tunable_parameters())
    names = list(parameters or tunables)
    unknown = [n for n in names if n not in tunables]
    if unknown:
        raise ConfigError(f"unknown tunable parameter(s) {', '.join(unknown)}{suggest(unknown[0], tunables)}; "
                          f"tunable: {', '.join(sorted(tunables))}")
    metric_names = list(metric_names or OBJECTIVE_METRICS)
    x0_native = np.array([float((start or {}).get(n, tunables[n])) for n in names])
    scales = np.array([_scale(n, tunables[n]) for n in names])
    bnds = [(bounds or {}).get(n) or default_bounds(n, float(tunables[n])) for n in names]
    lo = np.array([b[0] for b in bnds]) / scales
    hi = np.array([b[1] for b in bnds]) / scales
    x0 = np.clip(x0_native / scales, lo + 1e-9 * np.abs(lo) + 1e-12, hi - 1e-9 * np.abs(hi) - 1e-12)
    cache: dict[tuple, tuple[np.ndarray, dict]] = {}
    nfev = [0]

    def profile_at(x: np.ndarray) -> Any:
        return base_profile.with_parameters(**{n: float(v) for n, v in zip(names, x * scales)})

    budget = max_nfev or 25 * (len(names) + 1)

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, dict]:
        key = tuple(np.round(x, 12))
        if key not in cache:
            if nfev[0] >= budget:  # every simulation counts, Jacobian steps included: the cap is exact
                raise _BudgetSpent
            nfev[0] += 1
            cache[key] = _case_metrics(profile_at(x), cases, replay, metric_names, weights)
            if progress:
                vals = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, x * scales))
                progress(f"eval {nfev[0]}: rms {np.sqrt(np.mean(cache[key][0] ** 2)):.4f}  ({vals})")
        return cache[key]

    r0, _ = evaluate(x0)
    try:
        res = least_squares(lambda x: evaluate(x)[0], x0, bounds=(lo, hi), method="trf",
                            diff_step=diff_step, x_scale=1.0, ftol=ftol, xtol=1e-4, gtol=1e-8, max_nfev=budget)
        x_best, jac, success, message = res.x, res.jac, bool(res.success), str(res.message)
    except _BudgetSpent:  # stopped at the cap: the best point evaluated, a secant Jacobian around it
        best = min(cache, key=lambda k: float(np.sum(cache[k][0] ** 2)))
        x_best, jac = np.array(best), _secant_jacobian(cache, best)
        success, message = False, f"stopped after {budget} simulations (the evaluation budget)"
    r, table = evaluate(x_best)
    m, n = len(r), len(names)
    if jac is None:
        stderr_scaled, corr = np.full(n, np.nan), np.eye(n)
    else:
        stderr_scaled, corr = _covariance(jac, r, m, n)
    if m <= n:
        message += f"; underdetermined: {n} free parameters but {m} independent residuals"
    fitted = {nm: float(v) for nm, v in zip(names, x_best * scales)}
    return FitResult(
        parameters=fitted, initial={nm: float(v) for nm, v in zip(names, x0 * scales)},
        stderr={nm: float(s * sc) for nm, s, sc in zip(names, stderr_scaled, scales)},
        correlation=corr.tolist(), metrics=table,
        initial_rms_rel_error=float(np.sqrt(np.mean(r0 ** 2))), rms_rel_error=float(np.sqrt(np.mean(r ** 2))),
        num_evaluations=nfev[0], success=success, message=message)


def _secant_jacobian(cache: dict[tuple, tuple[np.ndarray, dict]], best: tuple) -> np.ndarray | None:
    """Least-squares linear fit of the residual changes to the parameter changes over every evaluated
    point (``r_i − r_best ≈ J (x_i − x_best)``); None when fewer points than parameters."""
    x0, r0 = np.array(best), cache[best][0]
    others = [k for k in cache if k != best]
    if len(others) < len(best):
        return None
    dx = np.array([np.array(k) - x0 for k in others])
    dr = np.array([cache[k][0] - r0 for k in others])
    jt, *_ = np.linalg.lstsq(dx, dr, rcond=None)
    return jt.T


class _BudgetSpent(Exception):
    """The fit used its whole simulation budget (``max_nfev``)."""


def _covariance(jac: np.ndarray, r: np.ndarray, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """1σ of each (scaled) parameter and the correlation matrix from the Jacobian at the optimum."""
    jtj = jac.T @ jac
    cov_unit = np.linalg.pinv(jtj)
    s2 = float(r @ r) / (m - n) if m > n else float("nan")
    cov = cov_unit * s2
    diag = np.diag(cov)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.where(diag >= 0, diag, np.nan))
        d = np.sqrt(np.abs(np.diag(cov_unit)))
        corr = cov_unit / np.outer(d, d)
    # a parameter the data does not move (zero Jacobian column) is undetermined
    dead = np.linalg.norm(jac, axis=0) == 0
    std[dead] = np.nan
    corr = np.nan_to_num(corr, nan=0.0)
    return std, corr


# ----------------------------------------------------------------------------------------------
# writing the calibrated profile

def calibrated_profile(base_profile: Any, fitted: dict[str, float], *, on: str,
                       stderr: dict[str, float] | None = None, rms_rel_error: float | None = None,
                       method: str = "replay", name: str | None = None,
                       correlation: list[list[float]] | None = None) -> tuple[Any, dict[str, Any]]:
    """The base profile with ``fitted`` values marked calibrated, and the calibration note.

    Each fitted parameter's provenance (``basis``: what it was fitted on, when, how, its ±1σ and the fit's
    RMS error) goes into the profile through ``with_parameters(basis=...)``, so the written YAML says
    which numbers are calibrated and on what. ``name`` renames the profile (see :func:`profile_yaml`).
    With ``stderr`` and ``correlation`` (order of ``fitted``) the profile also carries them as its
    ``calibration_covariance`` (parameters with a finite σ), the input of the error bars (sim/runs/uncertainty.py).
    """
    note = calibration_note(fitted, on=on, stderr=stderr, rms_rel_error=rms_rel_error, method=method)
    if name:
        note["name"] = name
    prof = base_profile
    for pname, entry in note["parameters"].items():
        prof = _with_basis(prof, pname, entry["value"], entry["basis"],
                           "calibrated" if entry["calibrated"] else "assumed")
    if stderr is not None and correlation is not None and hasattr(prof, "calibration_covariance"):
        names = list(fitted)
        keep = [i for i, n in enumerate(names) if stderr.get(n) is not None and math.isfinite(stderr[n])]
        if keep:
            cov = {"parameters": [names[i] for i in keep], "stderr": [float(stderr[names[i]]) for i in keep],
                   "correlation": [[float(correlation[i][j]) for j in keep] for i in keep],
                   "basis": f"Jacobian of the {method} fit on {on}, scaled by its residual variance"}
            data = prof.to_dict()
            data["calibration_covariance"] = cov
            prof = type(prof).from_dict(data, prof.source or prof.name)
    return prof, note


def _with_basis(profile: Any, pname: str, value: float, basis: str, status: str = "calibrated") -> Any:
    try:
        return profile.with_parameters(basis=basis, status=status, **{pname: value})
    except TypeError:  # a profile type without provenance: values only (the note still records them)
        return profile.with_parameters(**{pname: value})


def calibration_note(fitted: dict[str, float], *, on: str, stderr: dict[str, float] | None = None,
                     rms_rel_error: float | None = None, method: str = "replay") -> dict[str, Any]:
    """What was calibrated, on what, when and how well — one ``basis`` line per parameter."""
    today = date.today().isoformat()
    params = {}
    for k, v in fitted.items():
        basis = f"simctl calibrate ({method}) {today} on {on}"
        entry: dict[str, Any] = {"value": float(v), "calibrated": True}
        s = (stderr or {}).get(k)
        if s is not None and math.isfinite(s):
            entry["stderr"] = float(s)
            basis += f"; ±1σ {s:.3g}"
        elif k in (stderr or {}):  # a NaN σ: the measurements do not pin it down; not "calibrated"
            entry["calibrated"] = False
            basis = (f"assumed: simctl calibrate ({method}) {today} on {on} left it undetermined (no finite ±1σ: "
                     "more free parameters than independent residuals, or the data does not move it)")
        if rms_rel_error is not None:
            basis += f"; fit RMS rel. error {100 * rms_rel_error:.1f}%"
        entry["basis"] = basis
        params[k] = entry
    note: dict[str, Any] = {"method": f"simctl calibrate ({method})", "date": today, "on": on, "parameters": params}
    if rms_rel_error is not None:
        note["rms_rel_error"] = round(float(rms_rel_error), 5)
    return note


def profile_yaml(profile: Any, note: dict[str, Any]) -> str:
    """YAML text of a calibrated profile, renamed when the note names a new profile (aliases dropped so
    the copy never shadows the profile it came from). The provenance travels in each parameter's basis."""
    import yaml
    data = yaml.safe_load(profile.to_yaml())
    if not isinstance(data, dict):
        raise ConfigError("the profile's to_yaml() did not produce a mapping")
    new_name = note.get("name")
    if new_name:
        data["name"] = str(new_name).lower()
        if "aliases" in data:
            data["aliases"] = []
        if "display_name" in data:
            data["display_name"] = f"{data['display_name']} (calibrated)"
    header = f"# Calibrated by {note['method']} on {note['date']}: {note['on']}\n"
    if note.get("rms_rel_error") is not None:
        header += f"# fit RMS relative error {100 * note['rms_rel_error']:.1f}%\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


# ----------------------------------------------------------------------------------------------
# microbenchmark mode

MICROBENCH_COLUMNS = ("op", "dtype", "m", "n", "k", "batch", "num_heads", "num_kv_heads", "head_dim",
                      "query_len", "context_len", "num_gpus", "message_bytes", "flops", "bytes_moved", "time_s")


# Profile attributes holding peak dense bf16 FLOP/s and HBM bytes/s (first found wins; a method is
# called with the dtype).
PEAK_FLOPS_ATTRS = ("peak_flops", "peak_flops_per_s", "bf16_flops_per_s", "peak_bf16_flops")
PEAK_BW_ATTRS = ("memory_bandwidth_bytes_per_s", "hbm_bandwidth_bytes_per_s", "peak_bandwidth_bytes_per_s")
# microbench quantity -> the profile's tunable parameters it sets
# (default: the quantity's own name; layer_overhead_s and the efficiency curve are reported only)
MICROBENCH_TO_PARAMETER: dict[str, tuple[str, ...]] = {"layer_overhead_s": (), "gemm_fit_median_abs_error": ()}


def read_microbench(path: str | Path) -> pd.DataFrame:
    """Read ``benchmarks/gpu_profile.py``'s CSV (schema in that file's docstring), checking columns."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such microbenchmark CSV")
    df = pd.read_csv(path)
    missing = [c for c in MICROBENCH_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: not a gpu_profile.py CSV: missing column(s) {', '.join(missing)}")
    bad = df[(df["time_s"] <= 0) | df["time_s"].isna()]
    if len(bad):
        raise ConfigError(f"{path}: row {int(bad.index[0]) + 2}: time_s must be > 0")
    return df


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares y = a + b·x with a ≥ 0; returns (a, b)."""
    A = np.vstack([np.ones_like(x), x]).T
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    if a < 0:
        a, b = 0.0, float((x @ y) / (x @ x))
    return float(a), float(b)


def fit_gemm(g: pd.DataFrame, peak_flops_per_s: float, peak_bytes_per_s: float) -> dict[str, float]:
    """Fit the roofline GEMM model to measured GEMMs (least squares in log time).

    time = max(F·(n + n_half)/(n·peak·e), bytes/(bw·e_mem)) + t_kernel, n = tokens (rows): compute
    efficiency e·n/(n + n_half) rises with the token count, weight streaming reaches e_mem of the HBM
    bandwidth, and every kernel pays t_kernel. Returns gemm_compute_efficiency, gemm_half_tokens,
    memory_efficiency and gemm_kernel_s.
    """
    from scipy.optimize import least_squares

    n = g["m"].to_numpy(dtype=float)
    flops = g["flops"].to_numpy(dtype=float)
    nbytes = g["bytes_moved"].to_numpy(dtype=float)
    t = g["time_s"].to_numpy(dtype=float)

    def model(x: np.ndarray) -> np.ndarray:
        e, half, e_mem, t_k = x
        return np.maximum(flops * (n + half) / (n * peak_flops_per_s * e), nbytes / (peak_bytes_per_s * e_mem)) + t_k

    x0 = np.array([0.7, 200.0, 0.8, 3e-6])
    res = least_squares(lambda x: np.log(model(x)) - np.log(t), x0,
                        bounds=([0.05, 0.0, 0.05, 0.0], [1.0, 1e5, 1.0, 1e-3]), x_scale=[0.1, 100.0, 0.1, 1e-6])
    e, half, e_mem, t_k = (float(v) for v in res.x)
    err = np.abs(model(res.x) / t - 1)
    return {"gemm_compute_efficiency": e, "gemm_half_tokens": half, "memory_efficiency": e_mem,
            "gemm_kernel_s": t_k, "gemm_fit_median_abs_error": float(np.median(err))}


def microbench_summary(df: pd.DataFrame, peak_flops_per_s: float, peak_bytes_per_s: float,
                       link_bytes_per_s: float | None = None) -> dict[str, Any]:
    """Reduce ``gpu_profile.py`` rows to the roofline model's efficiencies and overheads.

    - GEMMs: :func:`fit_gemm` (``gemm_compute_efficiency``, ``gemm_half_tokens``, ``memory_efficiency``,
      ``gemm_kernel_s``) plus ``gemm_efficiency_by_tokens``, the measured token count → median
      achieved/peak FLOP/s (the small-batch fall-off, for the report);
    - ``attention_compute_efficiency``: causal prefill attention ≥ 1024 tokens, achieved/peak FLOP/s;
    - ``attention_memory_efficiency``: decode attention with ≥ 64k cached tokens per call, achieved/peak bytes/s;
    - ``elementwise_kernel_s``: the 1-element kernel's time (the floor of any small kernel);
    - ``allreduce``: per GPU count, ``latency_s`` and ``communication_efficiency`` from
      t = latency + 2(n − 1)/n · bytes/(e · link bandwidth);
    - ``layer_overhead_s``: median over the measured decode-layer steps of measured − modelled time, where
      the model is the fitted GEMM roofline applied to the whole layer (FLOPs and bytes) plus 4 GEMM and
      6 small-kernel floors. Reported, not written into the profile: the benchmark runs eagerly, while
      vLLM replays CUDA graphs that hide most launch gaps (docs/calibration.md).
    """
    out: dict[str, Any] = {}
    la = df[df["op"] == "launch"]
    if len(la):
        out["elementwise_kernel_s"] = float(la["time_s"].median())
    g = df[df["op"] == "gemm"]
    if len(g) >= 4:
        out.update(fit_gemm(g, peak_flops_per_s, peak_bytes_per_s))
        eff = g["flops"] / g["time_s"] / peak_flops_per_s
        out["gemm_efficiency_by_tokens"] = {int(m): round(float(v), 4) for m, v in eff.groupby(g["m"]).median().items()}
    a = df[df["op"] == "attn_prefill"]
    if len(a):
        sel = a[a["query_len"] >= 1024] if (a["query_len"] >= 1024).any() else a
        out["attention_compute_efficiency"] = float((sel["flops"] / sel["time_s"] / peak_flops_per_s).median())
    d = df[df["op"] == "attn_decode"]
    if len(d):
        big = d[d["batch"] * d["context_len"] >= 65536]
        sel = big if len(big) else d
        out["attention_memory_efficiency"] = float((sel["bytes_moved"] / sel["time_s"] / peak_bytes_per_s).median())
    ar = df[df["op"] == "allreduce"]
    if len(ar):
        out["allreduce"] = {}
        for n, grp in ar.groupby("num_gpus"):
            lat, slope = _linear_fit(grp["message_bytes"].to_numpy(dtype=float), grp["time_s"].to_numpy(dtype=float))
            entry = {"latency_s": lat, "algorithm_bandwidth_bytes_per_s": 1.0 / slope if slope > 0 else float("inf")}
            if link_bytes_per_s and slope > 0:
                entry["communication_efficiency"] = min(1.0, 2 * (n - 1) / n / (slope * link_bytes_per_s))
            out["allreduce"][int(n)] = entry
    lay = df[df["op"] == "layer_decode"]
    if len(lay) and "gemm_compute_efficiency" in out:
        e, half, e_mem = out["gemm_compute_efficiency"], out["gemm_half_tokens"], out["memory_efficiency"]
        n = lay["m"].to_numpy(dtype=float)
        ideal = np.maximum(lay["flops"] * (n + half) / (n * peak_flops_per_s * e),
                           lay["bytes_moved"] / (peak_bytes_per_s * e_mem))
        ideal = ideal + 4 * out["gemm_kernel_s"] + 6 * out.get("elementwise_kernel_s", 0.0)
        out["layer_overhead_s"] = float(max(0.0, float(np.median(lay["time_s"] - ideal))))
        out["layer_time_ratio"] = {f"decode:{int(m)}": round(float(tt / i), 3)
                                   for m, tt, i in zip(lay["m"], lay["time_s"], ideal)}
    return out


def _peak(profile: Any, names: Sequence[str]) -> float:
    for n in names:
        v = getattr(profile, n, None)
        if callable(v):
            try:
                v = v("bf16")
            except TypeError:
                v = v()
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    raise ConfigError(f"profile '{getattr(profile, 'name', profile)}' has none of {', '.join(names)}")


def fit_microbench(path: str | Path, base_profile: Any,
                   parameters: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Tunable parameter values measured by ``benchmarks/gpu_profile.py`` (``--microbench`` mode).

    Every quantity :func:`microbench_summary` derives is matched to the profile's tunable parameter of
    the same meaning (:data:`MICROBENCH_TO_PARAMETER`); ``parameters`` restricts which are written.
    Returns (fitted values, full report incl. the GEMM efficiency curve and layer-time ratios).
    """
    df = read_microbench(path)
    peak_flops = _peak(base_profile, PEAK_FLOPS_ATTRS)
    peak_bw = _peak(base_profile, PEAK_BW_ATTRS)
    link = getattr(base_profile, "link_bandwidth_bytes_per_s", None)
    ar_gpus = df.loc[df["op"] == "allreduce", "num_gpus"]
    link_bw = float(link(int(ar_gpus.max()))) if callable(link) and len(ar_gpus) else None
    summary = microbench_summary(df, peak_flops, peak_bw, link_bw)
    tunables = base_profile.tunable_parameters()
    fitted: dict[str, float] = {}
    for key, value in _flat_microbench(summary).items():
        for pname in MICROBENCH_TO_PARAMETER.get(key, (key,)):
            if pname in tunables and (parameters is None or pname in parameters):
                fitted[pname] = float(value)
    if not fitted:
        raise ConfigError(f"{path}: none of the measured quantities ({', '.join(_flat_microbench(summary))}) "
                          f"maps to a tunable parameter of '{getattr(base_profile, 'name', '?')}'")
    report = {"device": str(df["device"].iloc[0]) if "device" in df.columns else None,
              "peak_flops_per_s": peak_flops, "peak_bytes_per_s": peak_bw, "summary": summary,
              "fitted": fitted}
    return fitted, report


def _flat_microbench(summary: dict[str, Any]) -> dict[str, float]:
    """Scalar quantities of a microbench summary (the all-reduce of the largest GPU count flattened)."""
    flat = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    ar = summary.get("allreduce") or {}
    if ar:
        n = max(ar)
        flat["allreduce_latency_s"] = ar[n]["latency_s"]
        if "communication_efficiency" in ar[n]:
            flat["communication_efficiency"] = ar[n]["communication_efficiency"]
    return flat
