"""Fidelity check: replay the bundled real vLLM runs and measure the simulator's error (``simctl validate``).

Each run in ``sim/data/calibration/`` (README there) is replayed request by request — the measured arrival
times, prompt lengths and output lengths — with the run's serving settings (vLLM V1 policy,
``max_num_seqs`` 128, ``max_num_batched_tokens`` 2048, ``max_model_len`` 4096, block 16,
``gpu_memory_utilization`` 0.9, chunked prefill and prefix caching on, the listed TP). The number of KV
blocks comes from simctl's memory plan (the measured count is reported beside it). Errors are absolute
percentage errors |sim − meas|/meas of:

- mean, p90 and p99 TTFT and E2E (per load stage and over the run),
- the derived inter-token latency (mean E2E − mean TTFT)/(mean output − 1) (the runs' summaries define
  ITL so; per-chunk gaps were unreliable in these measurements),
- the KV block count.

Measured statistics are recomputed from the per-request trace for exactly the requests replayed (they
equal ``measured_summary.csv`` over whole stages). With ``window_s`` only the first ``window_s`` seconds of
each stage are replayed — preceded by ``lead_s`` seconds of the previous stage's requests to warm the
engine up, which are simulated but not scored.

**Shared prefixes.** The runs used inference-perf's ``shared_prefix`` generator: 10 groups × 10 prompts,
each a 100-token system prompt shared by its group plus a question, sent in a fixed cycle (request *i*
uses prompt *i* mod 100; the traces' input lengths repeat with period 100). The traces carry no prompt
ids, so ``prefix_model="pool"`` (the default) reconstructs them: ``prompt_id = i mod 100``,
``prefix_group = prompt_id div 10``, ``prefix_tokens = 100``. With prefix caching on, a repeated prompt
hits the cache on every full block, so its prefill is only the last partial block — this is why the
measured TTFTs (~25–50 ms) are a fraction of a 580-token prefill. ``prefix_model="none"`` treats every
prompt as unique (an upper bound on prefill work) for comparison.

**Output lengths.** The runs sent ``ignore_eos`` requests with a fixed ``max_tokens``, yet 26–35% of the
Llama-2-7B rows record far fewer output tokens (0–230) while taking just as long to decode: their mean
E2E − TTFT is the same in every output-count bucket (docs/validation.md). The recorded count is wrong for
those rows, not the generation. ``output_model="repaired"`` (the default) replays such rows (recorded
< 90% of the run's requested ``output_len``) with the run's typical count (the median of the plausible
rows, e.g. 248); ``"recorded"`` replays the counts as written. The derived ITL of both sides then uses
the replayed counts (``measured_summary.csv``'s ITL uses the recorded ones and is ~20% too high for the
7B runs).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hwprofiles import load_profile
from sim.config import parse_experiment
from sim.errors import ConfigError
from sim.fidelity.calibrate import ReplayCase, ReplayFn, deployment_for, replay_with_api
from sim.fidelity.compare import derived_itl_ms, read_request_csv

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "calibration"  # sim/data/calibration
DEFAULT_HARDWARE = "h100-sxm"

# The targets: median over runs of each metric's absolute percentage error.
TARGETS: dict[str, float] = {"mean_e2el_ms": 0.05, "mean_ttft_ms": 0.12, "mean_itl_ms": 0.05,
                             "p99_e2el_ms": 0.10, "kv_blocks": 0.03}

# metric -> function of a per-request table (REQUEST_COLUMNS), ms
VALIDATION_METRICS: dict[str, Callable[[pd.DataFrame], float]] = {
    "mean_ttft_ms": lambda d: 1e3 * float(d["ttft_s"].mean()),
    "p90_ttft_ms": lambda d: 1e3 * float(np.percentile(d["ttft_s"], 90)),
    "p99_ttft_ms": lambda d: 1e3 * float(np.percentile(d["ttft_s"], 99)),
    "mean_e2el_ms": lambda d: 1e3 * float(d["e2el_s"].mean()),
    "p90_e2el_ms": lambda d: 1e3 * float(np.percentile(d["e2el_s"], 90)),
    "p99_e2el_ms": lambda d: 1e3 * float(np.percentile(d["e2el_s"], 99)),
    "mean_itl_ms": derived_itl_ms,
}

# How the runs' models map onto what the model loader accepts (catalog HF ids; a config.json path
# resolved against DATA_DIR would do for a model outside the catalog).
MODEL_NAMES = {"meta-llama/Llama-2-7b-hf": "meta-llama/Llama-2-7b-hf",
               "codellama/CodeLlama-34b-Instruct-hf": "codellama/CodeLlama-34b-Instruct-hf"}


@dataclass(frozen=True)
class Stage:
    """One constant-rate load stage of a run: requests ``[first, first + count)`` in send order."""

    index: int
    rate_rps: float
    start_s: float
    duration_s: float
    first: int
    count: int


@dataclass(frozen=True)
class CalibrationRun:
    """One bundled real run: its settings, its trace and its load stages."""

    run_id: str
    model: str  # HF id as served
    tp: int
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    max_model_len: int
    gpu_memory_utilization: float
    measured_kv_blocks: int
    trace_path: Path
    stages: tuple[Stage, ...]
    num_prompt_groups: int = 10
    prompts_per_group: int = 10
    system_prompt_tokens: int = 100
    requested_output_tokens: int = 0  # the benchmark's max_tokens (ignore_eos); 0 = unknown

    @property
    def short_name(self) -> str:
        """Run id without its timestamp (``llama-2-7b-tp1-codegen``)."""
        parts = self.run_id.split("-", 2)
        return parts[2] if len(parts) == 3 else self.run_id

    def trace(self) -> pd.DataFrame:
        """The measured requests (REQUEST_COLUMNS) in send order, with ``stage`` and ``index`` columns."""
        df = read_request_csv(self.trace_path)
        df["index"] = np.arange(len(df))
        df["stage"] = -1
        for st in self.stages:
            df.loc[st.first:st.first + st.count - 1, "stage"] = st.index
        return df

    def experiment(self, hardware: str = DEFAULT_HARDWARE, **engine_overrides: Any):
        """The run's serving settings as an :class:`sim.config.ExperimentConfig` (no workload)."""
        engine = {"policy": "vllm", "max_num_seqs": self.max_num_seqs,
                  "max_num_batched_tokens": self.max_num_batched_tokens, "enable_chunked_prefill": True,
                  "enable_prefix_caching": True, "block_size": self.block_size,
                  "gpu_memory_utilization": self.gpu_memory_utilization, "max_model_len": self.max_model_len}
        engine.update(engine_overrides)
        data = {"name": f"validate-{self.short_name}", "seed": 0,
                "model": MODEL_NAMES.get(self.model, self.model), "hardware": hardware,
                "parallel": {"tp": self.tp, "pp": 1}, "precision": {"weights": "bf16", "kv_cache": "auto"},
                "engine": engine}
        return parse_experiment(data, f"<calibration run {self.run_id}>", DATA_DIR)


def load_runs(data_dir: str | Path | None = None, select: Sequence[str] | None = None) -> list[CalibrationRun]:
    """The calibration runs in ``data_dir`` (default: the bundled ones), optionally those whose id
    contains one of ``select``."""
    data_dir = Path(data_dir) if data_dir else DATA_DIR
    cfg_path, summary_path = data_dir / "serving_configs.json", data_dir / "measured_summary.csv"
    if not cfg_path.is_file() or not summary_path.is_file():
        raise ConfigError(f"{data_dir}: not a calibration data folder (needs serving_configs.json and "
                          "measured_summary.csv)")
    configs = json.loads(cfg_path.read_text())
    summary = pd.read_csv(summary_path)
    runs = []
    for run_id, c in configs.items():
        rows = summary[(summary["experiment"] == run_id) & (summary["stage"] >= 0)].sort_values("stage")
        if rows.empty:
            raise ConfigError(f"{summary_path}: no stage rows for run {run_id}")
        first, stages = 0, []
        for _, r in rows.iterrows():
            count = int(r["n_success"])
            stages.append(Stage(int(r["stage"]), float(r["stage_rate_rps"]), float(r["stage_start_s"]),
                                float(r["stage_duration_s"]), first, count))
            first += count
        r0 = rows.iloc[0]
        trace = data_dir / f"{run_id}.csv.gz"
        if not trace.is_file():
            raise ConfigError(f"{trace}: trace of run {run_id} is missing")
        runs.append(CalibrationRun(
            run_id=run_id, model=str(r0["model_hf"]), tp=int(c["tensor_parallelism"]),
            max_num_seqs=int(c["max_num_seqs"]), max_num_batched_tokens=int(c["max_num_batched_tokens"]),
            block_size=int(c["block_size"]), max_model_len=int(r0["max_model_len"]),
            gpu_memory_utilization=0.9, measured_kv_blocks=int(c["kv_blocks_total_gpu"]),
            trace_path=trace, stages=tuple(stages),
            num_prompt_groups=int(r0.get("resolved_num_groups", 10) or 10),
            prompts_per_group=int(r0.get("resolved_num_prompts_per_group", 10) or 10),
            system_prompt_tokens=int(r0.get("system_prompt_len", 100) or 100),
            requested_output_tokens=int(r0.get("output_len_req", 0) or 0)))
    if select:
        chosen = [r for r in runs if any(s in r.run_id for s in select)]
        if not chosen:
            raise ConfigError(f"no calibration run matches {', '.join(select)}; runs: "
                              + ", ".join(r.run_id for r in runs))
        runs = chosen
    return runs


def add_prefix_model(trace: pd.DataFrame, run: CalibrationRun, prefix_model: str = "pool") -> pd.DataFrame:
    """Add ``prompt_id``/``prefix_group``/``prefix_tokens`` columns (module docstring) to a run's trace."""
    out = trace.copy()
    if prefix_model == "none":
        return out
    if prefix_model != "pool":
        raise ConfigError(f"unknown prefix model '{prefix_model}' (pool, none)")
    pool = run.num_prompt_groups * run.prompts_per_group
    idx = out["index"].to_numpy() if "index" in out.columns else np.arange(len(out))
    out["prompt_id"] = idx % pool
    out["prefix_group"] = (idx % pool) // run.prompts_per_group
    out["prefix_tokens"] = run.system_prompt_tokens
    return out


def repair_output_lengths(trace: pd.DataFrame, run: CalibrationRun, output_model: str = "repaired") -> pd.DataFrame:
    """Replace implausibly low recorded output counts (module docstring); adds ``recorded_output_tokens``."""
    if output_model == "recorded" or run.requested_output_tokens <= 0:
        return trace
    if output_model != "repaired":
        raise ConfigError(f"unknown output model '{output_model}' (repaired, recorded)")
    out = trace.copy()
    rec = out["output_tokens"].to_numpy()
    plausible = rec >= 0.9 * run.requested_output_tokens
    typical = int(np.median(rec[plausible])) if plausible.any() else run.requested_output_tokens
    out["recorded_output_tokens"] = rec
    out["output_tokens"] = np.where(plausible, rec, typical)
    return out


def replay_cases(run: CalibrationRun, hardware: str = DEFAULT_HARDWARE, *, window_s: float | None = None,
                 lead_s: float = 20.0, prefix_model: str = "pool", output_model: str = "repaired") -> list[ReplayCase]:
    """The replays that validate ``run``: the whole trace as one case, or one case per stage window.

    Each case's ``measured`` keeps the ``stage`` column (scores are split by stage) and a ``scored`` flag
    (False on warm-up rows).
    """
    trace = repair_output_lengths(add_prefix_model(run.trace(), run, prefix_model), run, output_model)
    cfg = run.experiment(hardware)
    if window_s is None:
        trace["scored"] = True
        return [ReplayCase(run.short_name, cfg, trace)]
    cases = []
    arrival = trace["arrival_s"].to_numpy()
    for st in run.stages:
        t0 = float(arrival[st.first])
        in_stage = (trace["stage"] == st.index).to_numpy()
        scored = in_stage & (arrival < t0 + window_s)
        lead = (arrival >= t0 - lead_s) & (trace["index"].to_numpy() < st.first)
        part = trace[scored | lead].copy()
        part["scored"] = scored[scored | lead]
        part["arrival_s"] = part["arrival_s"] - float(part["arrival_s"].iloc[0])
        cases.append(ReplayCase(f"{run.short_name}/stage{st.index}", cfg, part.reset_index(drop=True)))
    return cases


def ape(sim: float, meas: float) -> float:
    """Absolute percentage error |sim − meas|/meas (as a fraction)."""
    if not (math.isfinite(sim) and math.isfinite(meas)) or meas == 0:
        return float("nan")
    return abs(sim - meas) / abs(meas)


def _metrics(d: pd.DataFrame) -> dict[str, float]:
    d = d.dropna(subset=["ttft_s", "e2el_s"])
    if len(d) == 0:
        return {k: float("nan") for k in VALIDATION_METRICS}
    return {k: float(f(d)) for k, f in VALIDATION_METRICS.items()}


@dataclass
class ValidationReport:
    """Per-run, per-stage, per-metric simulated vs measured values and errors."""

    rows: list[dict[str, Any]]  # run, stage ("all" or index), metric, simulated, measured, ape
    kv_blocks: list[dict[str, Any]]  # run, simulated, measured, ape
    settings: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """Rows as a DataFrame."""
        return pd.DataFrame(self.rows)

    def run_table(self) -> pd.DataFrame:
        """APE (fraction) per run (rows) and metric (columns), whole-run rows only, plus KV blocks."""
        df = self.frame()
        df = df[df["stage"] == "all"].pivot(index="run", columns="metric", values="ape")
        df = df[[m for m in VALIDATION_METRICS if m in df.columns]]
        if self.kv_blocks:
            df["kv_blocks"] = pd.Series({k["run"]: k["ape"] for k in self.kv_blocks})
        return df

    def medians(self) -> dict[str, float]:
        """Median over runs of each metric's APE (the issue's 'median MAPE')."""
        t = self.run_table()
        return {c: float(t[c].median()) for c in t.columns}

    def target_check(self) -> dict[str, dict[str, Any]]:
        """Each target metric: median APE, target, met?"""
        med = self.medians()
        return {k: {"median_ape": med.get(k, float("nan")), "target": v,
                    "met": bool(med.get(k, float("inf")) <= v)} for k, v in TARGETS.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"settings": self.settings, "rows": self.rows, "kv_blocks": self.kv_blocks,
                "median_ape": self.medians(), "targets": self.target_check()}

    def to_markdown(self) -> str:
        """The error tables as Markdown (docs/validation.md shows one)."""
        lines = ["| run | " + " | ".join(self.run_table().columns) + " |",
                 "|---|" + "---:|" * len(self.run_table().columns)]
        for run, row in self.run_table().iterrows():
            lines.append(f"| {run} | " + " | ".join(_pct(v) for v in row) + " |")
        med = self.medians()
        lines.append("| **median** | " + " | ".join(f"**{_pct(med[c])}**" for c in self.run_table().columns) + " |")
        lines += ["", "| target | median APE | target | met |", "|---|---:|---:|---|"]
        for k, v in self.target_check().items():
            lines.append(f"| {k} | {_pct(v['median_ape'])} | ≤ {_pct(v['target'])} | {'yes' if v['met'] else 'no'} |")
        lines += ["", "Per stage (simulated / measured, ms):", "",
                  "| run | stage | " + " | ".join(VALIDATION_METRICS) + " |",
                  "|---|---|" + "---:|" * len(VALIDATION_METRICS)]
        df = self.frame()
        for (run, stage), g in df.groupby(["run", "stage"], sort=False):
            vals = {r["metric"]: r for _, r in g.iterrows()}
            lines.append(f"| {run} | {stage} | " + " | ".join(
                f"{vals[m]['simulated']:.1f} / {vals[m]['measured']:.1f}" if m in vals else "-"
                for m in VALIDATION_METRICS) + " |")
        if self.kv_blocks:
            lines += ["", "| run | KV blocks (simctl memory plan) | KV blocks (vLLM log) | error |", "|---|---:|---:|---:|"]
            for k in self.kv_blocks:
                lines.append(f"| {k['run']} | {k['simulated']:,} | {k['measured']:,} | {_pct(k['ape'])} |")
        return "\n".join(lines) + "\n"


def _pct(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def planned_kv_blocks(run: CalibrationRun, profile: Any) -> int:
    """KV blocks per replica from simctl's memory plan for the run's settings on ``profile``."""
    return int(deployment_for(profile, run.experiment())[1].memory_plan.num_kv_blocks)


def validate(runs: Sequence[CalibrationRun] | None = None, *, hardware: str = DEFAULT_HARDWARE,
             profile: Any = None, window_s: float | None = None, lead_s: float = 20.0,
             prefix_model: str = "pool", output_model: str = "repaired", replay: ReplayFn = replay_with_api,
             progress: Callable[[str], None] | None = None) -> ValidationReport:
    """Replay ``runs`` (default: all bundled) and compute the error tables.

    ``profile`` (a HardwareProfile) overrides the one named by ``hardware`` (e.g. a fitted one).
    """
    if profile is None:
        profile = load_profile(hardware)
    runs = list(runs) if runs is not None else load_runs()
    rows, kv = [], []
    for run in runs:
        if progress:
            progress(f"replaying {run.run_id} ...")
        sim_parts, meas_parts = [], []
        for case in replay_cases(run, hardware, window_s=window_s, lead_s=lead_s, prefix_model=prefix_model,
                                 output_model=output_model):
            sim = replay(profile, case)
            mask = case.measured["scored"].to_numpy(dtype=bool)
            stage = case.measured["stage"].to_numpy()[mask]
            s = sim[mask].assign(stage=stage)
            m = case.measured[mask]
            sim_parts.append(s)
            meas_parts.append(m)
        sim_all, meas_all = pd.concat(sim_parts), pd.concat(meas_parts)
        groups = [("all", sim_all, meas_all)] + [
            (st.index, sim_all[sim_all["stage"] == st.index], meas_all[meas_all["stage"] == st.index])
            for st in run.stages if len(run.stages) > 1]
        for stage, s, m in groups:
            ms, mm = _metrics(s), _metrics(m)
            for k in VALIDATION_METRICS:
                rows.append({"run": run.short_name, "stage": stage if stage == "all" else str(stage),
                             "metric": k, "simulated": ms[k], "measured": mm[k], "ape": ape(ms[k], mm[k]),
                             "num_requests": int(len(m))})
        try:
            blocks = planned_kv_blocks(run, profile)
            kv.append({"run": run.short_name, "simulated": blocks, "measured": run.measured_kv_blocks,
                       "ape": ape(blocks, run.measured_kv_blocks)})
        except Exception as exc:  # a missing memory plan must not hide the latency table
            if progress:
                progress(f"KV blocks of {run.run_id}: {exc}")
    settings = {"hardware": getattr(profile, "name", hardware), "window_s": window_s, "lead_s": lead_s,
                "prefix_model": prefix_model, "output_model": output_model, "runs": [r.run_id for r in runs]}
    return ValidationReport(rows, kv, settings)
