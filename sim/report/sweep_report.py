"""The report of a sweep: which configuration to deploy for the SLO, and at what cost.

A *configuration* is one combination of the swept keys other than the offered load (the sweep's
``load_key``, e.g. ``workload.arrival.rate``). Its *capacity* is the highest load it sustains while
meeting the SLO: the capacity-search result in ``mode: capacity``, else the highest swept load whose
point passes. Costs come from the runs' summaries when they carry them, else from the hardware's
$/GPU-hour × GPUs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sim.plan.sweep import SWEEP_PLAN, SWEEP_TABLE, short_keys
from sim.report import fmt, plots
from sim.report.document import Document, Figure, Note, Table, Text
from sim.report.thresholds import Criterion, slo_criteria, slo_passed


def _get(row: pd.Series | dict[str, Any], key: str) -> Any:
    value = row.get(key) if hasattr(row, "get") else None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _num(row: pd.Series | dict[str, Any], key: str) -> float:
    value = _get(row, key)
    return float(value) if fmt.is_number(value) else float("nan")


def cost_per_hour(row: pd.Series) -> float:
    """$/hour of a point's deployment: the summary's ``cost_per_hour_usd``, else $/GPU-hour × GPUs."""
    value = _num(row, "cost_per_hour_usd")
    return value if np.isfinite(value) else _num(row, "gpu_hour_usd") * _num(row, "num_gpus")


def cost_per_1m_output(row: pd.Series) -> float:
    """$ per million output tokens at a point's throughput (summary key, else derived)."""
    value = _num(row, "usd_per_million_output_tokens")
    if np.isfinite(value):
        return value
    tput = _num(row, "output_throughput")
    return cost_per_hour(row) / (tput * 3600) * 1e6 if tput > 0 else float("nan")


@dataclass
class Configuration:
    """One deployment option of the sweep and how it fared."""

    label: str
    points: pd.DataFrame  # its feasible points, by load
    num_gpus: int
    gpus_per_replica: int
    replicas: int
    capacity_rps: float  # NaN when unknown
    at_capacity: pd.Series | None  # the point at capacity (or its best point)
    cost_per_hour: float
    cost_per_1m_output: float
    meets_slo: bool | None
    capacity_is_lower_bound: bool = False  # it passed even at the highest swept load

    @property
    def capacity_text(self) -> str:
        """The capacity for tables: ``≥ 8.00`` when the sweep never found the limit."""
        return ("≥ " if self.capacity_is_lower_bound else "") + fmt.num(self.capacity_rps)

    def replicas_for(self, target_rps: float) -> tuple[int, int] | None:
        """(replicas, GPUs) needed to serve ``target_rps`` at this configuration's capacity."""
        if not (self.capacity_rps > 0):
            return None
        per_replica = self.capacity_rps / self.replicas
        replicas = math.ceil(target_rps / per_replica - 1e-9)
        return replicas, replicas * self.gpus_per_replica


def _label_of(row: pd.Series, keys: list[str], short: dict[str, str]) -> str:
    parts = []
    for key in keys:
        value = _get(row, key)
        parts.append(str(value) if key == "hardware" else f"{short[key]}={value}")
    return " ".join(parts) or "base"


def configurations(table: pd.DataFrame, plan: dict[str, Any], criteria: list[Criterion]) -> list[Configuration]:
    """Group the sweep's points into configurations and find each one's capacity and cost."""
    keys, load_key, mode = plan["keys"], plan.get("load_key"), plan.get("mode", "run")
    config_keys = [k for k in keys if k != load_key]
    short = short_keys(keys)
    out: list[Configuration] = []
    groups = table.groupby(config_keys, sort=False, dropna=False) if config_keys else [((), table)]
    for _, group in groups:
        first = group.iloc[0]
        ok = group[group["status"] == "ok"]
        if load_key:
            ok = ok.sort_values(load_key)
        label = _label_of(first, config_keys, short)
        passes = [slo_passed(r.to_dict(), criteria) for _, r in ok.iterrows()]
        capacity, at, lower_bound = float("nan"), None, False
        if mode == "capacity" and not ok.empty:
            at = ok.iloc[0]
            capacity = _num(at, "max_request_rate")
            capacity = capacity if np.isfinite(capacity) else 0.0  # no probe passed
        elif load_key and any(p is not None for p in passes):
            passing = [i for i, p in enumerate(passes) if p]
            capacity = float(ok.iloc[passing[-1]][load_key]) if passing else 0.0
            at = ok.iloc[passing[-1]] if passing else None
            lower_bound = bool(passing) and capacity >= float(table[load_key].max())
        elif not ok.empty:
            at = ok.iloc[-1]
        cost_h = cost_per_hour(at if at is not None else first)
        cost_1m = float("nan")
        if at is not None:
            if mode == "capacity":
                tokens_per_req = _num(at, "output_throughput") / _num(at, "request_throughput")
                cost_1m = cost_h / (capacity * tokens_per_req * 3600) * 1e6 if capacity > 0 else float("nan")
            else:
                cost_1m = cost_per_1m_output(at)
        meets = None
        if mode == "capacity":
            meets = capacity > 0 if fmt.is_number(capacity) else None
        elif any(p is not None for p in passes):
            meets = any(passes)
        out.append(Configuration(
            label, ok, int(_num(first, "num_gpus")) if fmt.is_number(_get(first, "num_gpus")) else 0,
            int(_num(first, "gpus_per_replica")) if fmt.is_number(_get(first, "gpus_per_replica")) else 0,
            int(_num(first, "replicas")) if fmt.is_number(_get(first, "replicas")) else 1,
            capacity, at, cost_h, cost_1m, meets, lower_bound))
    return out


def recommend(configs: list[Configuration], target_rps: float | None, has_slo: bool) -> tuple[Configuration | None, str]:
    """The configuration to deploy, and why (cheapest that meets the SLO, sized for the target)."""
    feasible = [c for c in configs if c.at_capacity is not None and c.meets_slo is not False]
    if not feasible:
        return None, ("No configuration meets the SLO at any swept load." if has_slo
                      else "No configuration ran successfully.")
    slo_text = "meets the SLO" if has_slo else "ran (no SLO given, so every feasible point qualifies)"
    if target_rps and any(c.replicas_for(target_rps) for c in feasible):
        sized = [(c, *c.replicas_for(target_rps)) for c in feasible if c.replicas_for(target_rps)]
        priced = all(np.isfinite(c.cost_per_hour) for c, _, _ in sized)

        def cost(item: tuple[Configuration, int, int]) -> float:
            c, _, gpus = item
            return gpus * c.cost_per_hour / max(c.num_gpus, 1) if priced else float(gpus)

        best, replicas, gpus = min(sized, key=lambda it: (cost(it), -it[0].capacity_rps))
        others = sorted(sized, key=cost)
        runner = next((o for o in others if o[0] is not best), None)
        reason = (f"To serve {target_rps:g} req/s it needs {replicas} replica(s) = {gpus} GPUs"
                  + (f" at {fmt.usd(cost((best, replicas, gpus)))}/hour" if priced else "")
                  + f", the {'cheapest' if priced else 'fewest GPUs'} among {len(sized)} configurations whose capacity "
                  f"under the SLO is known (capacity {best.capacity_text} req/s per {best.replicas} replica(s)).")
        if runner:
            rc, rr, rg = runner
            reason += (f" Next best: {rc.label} with {rr} replica(s) = {rg} GPUs"
                       + (f" at {fmt.usd(cost(runner))}/hour." if priced else "."))
        return best, reason
    with_capacity = [c for c in feasible if np.isfinite(c.capacity_rps) and c.capacity_rps > 0]
    if with_capacity:
        priced = [c for c in with_capacity if np.isfinite(c.cost_per_1m_output)]
        if priced:
            best = min(priced, key=lambda c: c.cost_per_1m_output)
            return best, (f"Lowest cost per 1M output tokens at capacity ({fmt.usd(best.cost_per_1m_output)}) among "
                          f"{len(priced)} configurations that {slo_text}; it sustains {best.capacity_text} req/s on "
                          f"{best.num_gpus} GPUs.")
        best = max(with_capacity, key=lambda c: c.capacity_rps / max(c.num_gpus, 1))
        return best, (f"Highest capacity per GPU ({best.capacity_rps / max(best.num_gpus, 1):.3g} req/s/GPU) among "
                      f"{len(with_capacity)} configurations that {slo_text} (no prices known).")
    priced = [c for c in feasible if np.isfinite(c.cost_per_1m_output)]
    if priced:
        best = min(priced, key=lambda c: c.cost_per_1m_output)
        return best, (f"Lowest cost per 1M output tokens ({fmt.usd(best.cost_per_1m_output)}) among {len(priced)} "
                      f"configurations that {slo_text}.")
    best = max(feasible, key=lambda c: _num(c.at_capacity, "output_throughput") / max(c.num_gpus, 1))
    return best, f"Highest output throughput per GPU among {len(feasible)} configurations that {slo_text}."


# what a binding SLO criterion means for the deployment (the mechanism behind it)
_BINDING_MEANING = {
    "ttft": "TTFT-bound: prompts queue for prefill compute",
    "tpot": "TPOT-bound: decode steps grow too slow (batch size, and in an aggregated replica the prefill "
            "chunks sharing each step)",
    "itl": "ITL-bound: some decode steps grow too slow (prefill chunks or large batches in them)",
    "e2e": "E2E-bound: the whole request takes too long",
    "queue": "queue-bound: requests wait too long to start",
}


def binding_rows(configs: list[Configuration]) -> list[list[str]]:
    """One row per configuration of a capacity sweep: its capacity, $/1M output tokens, the binding SLO
    criterion and what it means; for a disaggregated configuration also each pool's utilization (busy
    share of the run) at the capacity point and which pool is the busier. Empty when no capacity was
    searched."""
    rows = []
    for c in configs:
        at = c.at_capacity
        binding = _get(at, "binding_constraint") if at is not None else None
        if not isinstance(binding, str) or not binding:
            continue
        meaning = next((v for k, v in _BINDING_MEANING.items() if k in binding), "")
        u_pre, u_dec = _num(at, "prefill_utilization"), _num(at, "decode_utilization")
        if np.isfinite(u_pre) and np.isfinite(u_dec):
            meaning = (meaning.split(" (")[0] if "tpot" in binding or "itl" in binding else meaning)
            busier = "decode" if u_dec >= u_pre else "prefill"
            meaning += (f"; disaggregated (decode steps never carry a prefill): the {busier} pool is the busier, "
                        f"prefill {u_pre:.0%} / decode {u_dec:.0%} busy")
        rows.append([c.label, c.capacity_text, fmt.usd(c.cost_per_1m_output), binding, meaning])
    return rows


def _pareto_front(latency: np.ndarray, throughput: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats on both lower latency and higher throughput."""
    ok = np.isfinite(latency) & np.isfinite(throughput)
    front = np.zeros(latency.size, bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (latency <= latency[i]) & (throughput >= throughput[i]) & (
            (latency < latency[i]) | (throughput > throughput[i]))
        front[i] = not dominated.any()
    return front


def _fig(name: str, png: bytes | None, caption: str, wide: bool = False) -> Figure | None:
    return None if png is None else Figure(name, png, caption, wide)


def build_sweep_document(sweep_dir: str | Path) -> Document:
    """The whole report of a sweep directory."""
    path = Path(sweep_dir)
    table = pd.read_parquet(path / SWEEP_TABLE)
    plan = json.loads((path / SWEEP_PLAN).read_text())
    base = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
    keys, load_key, mode = plan["keys"], plan.get("load_key"), plan.get("mode", "run")
    target = plan.get("target_request_rate")
    short = short_keys(keys)
    criteria = slo_criteria(base.get("slo"), str(base.get("model", "")))
    configs = configurations(table, plan, criteria)
    best, reason = recommend(configs, target, bool(criteria) or mode == "capacity")
    if any(c.capacity_is_lower_bound for c in configs):
        reason += (" Capacities marked ≥ passed even at the highest swept load: add higher loads (or use "
                   "mode: capacity) to find their limit.")
    counts = table["status"].value_counts().to_dict()

    doc = Document(
        title=f"simctl sweep report — {plan.get('name', path.name)}",
        subtitle=(f"{len(table)} points ({counts.get('ok', 0)} ok, {counts.get('infeasible', 0)} infeasible, "
                  f"{counts.get('error', 0)} error) · {len(configs)} configurations · mode {mode} · "
                  f"model {base.get('model', '?')}"),
        footer="Generated by simctl — simulated, not measured. Each point's results are in points/<name>/; "
               "`simctl report points/<name>` writes its own report.")

    sec = doc.section("Recommendation", "recommendation")
    if best is not None:
        sec.add(Note(reason, "good", f"Recommended: {best.label}"))
    else:
        sec.add(Note(reason, "warn", "No recommendation"))
    why = binding_rows(configs)
    if why:
        sec.add(Table(["configuration", "capacity (req/s)", "$/1M out tok", "binding constraint", "why it stops there"],
                      why, caption="What limits each configuration at its capacity (the SLO criterion that fails "
                      "first above it)", align="lrrll"))
    if criteria:
        sec.add(Text("SLO: " + "; ".join(c.label + (f" ({c.source})" if c.source != "SLO" else "")
                                         for c in criteria) + "."))
    elif mode != "capacity":
        sec.add(Text("The experiment has no slo: section, so capacities are not defined; add one "
                     "(e.g. slo: {ttft_ms: {p99: 2000}, tpot_ms: {p99: 200}}) to rank configurations by capacity."))
    if target:
        rows = []
        for c in sorted(configs, key=lambda c: (c.replicas_for(target) or (10**9, 10**9))[1]):
            need = c.replicas_for(target)
            rows.append([c.label, c.capacity_text, fmt.num(need[0]) if need else fmt.MISSING,
                         fmt.num(need[1]) if need else fmt.MISSING,
                         fmt.usd(need[1] * c.cost_per_hour / max(c.num_gpus, 1)) if need else fmt.MISSING])
        sec.add(Table(["configuration", "capacity (req/s)", "replicas needed", "GPUs needed", "$/hour"], rows,
                      caption=f"Sizing for a target of {target:g} req/s (capacity of one configuration scaled by replicas)"))

    sec = doc.section("What was swept", "swept")
    sec.add(Table(["key", "values"], [[k, ", ".join(sorted({str(v) for v in table[k].dropna()}, key=_natural))]
                                      for k in keys if k in table], align="ll"))
    wl = base.get("workload") or {}
    sec.add(Table(["base experiment", "value"], [
        ["model", str(base.get("model"))], ["hardware", str(base.get("hardware"))],
        ["parallel", fmt.scalar(base.get("parallel") or {})], ["replicas", str(base.get("replicas", 1))],
        ["engine", fmt.scalar({k: v for k, v in (base.get("engine") or {}).items() if v not in (None, {}, [])})],
        ["workload", fmt.scalar(wl)], ["seed", str(base.get("seed", 0))]], align="ll"))

    sec = doc.section("Configurations", "configurations")
    rows = []
    for c in configs:
        at = c.at_capacity
        rows.append([c.label, fmt.num(c.num_gpus), str(len(c.points)), c.capacity_text,
                     fmt.num(_num(at, "output_throughput") / max(c.num_gpus, 1), 1) if at is not None else fmt.MISSING,
                     fmt.ms(_num(at, "p99_ttft_ms")) if at is not None else fmt.MISSING,
                     fmt.ms(_num(at, "p99_tpot_ms")) if at is not None else fmt.MISSING,
                     fmt.usd(c.cost_per_hour), fmt.usd(c.cost_per_1m_output),
                     fmt.passfail(c.meets_slo) + (" ★" if c is best else "")])
    sec.add(Table(["configuration", "GPUs", "feasible points", "capacity (req/s)", "out tok/s/GPU", "P99 TTFT",
                   "P99 TPOT", "$/hour", "$/1M out tok", "SLO"], rows,
                  caption="Metrics at each configuration's capacity point (its highest load meeting the SLO), "
                          "else at its highest feasible load"))
    labels = [c.label for c in configs]
    best_idx = configs.index(best) if best is not None else None
    if any(np.isfinite(c.capacity_rps) for c in configs):
        sec.add(_fig("capacity", plots.bars("Capacity under the SLO", "req/s", labels,
                                            [c.capacity_rps for c in configs], best_idx, wide=True),
                     "Highest request rate each configuration sustains within the SLO (green: recommended)",
                     wide=True))
    sec.add(_fig("cost", plots.bars("Cost per 1M output tokens", "$", labels,
                                    [c.cost_per_1m_output for c in configs], best_idx, "${:,.3f}", wide=True),
                 "At each configuration's capacity point; from the hardware profiles' $/GPU-hour", wide=True))

    sec = doc.section("Latency and throughput", "curves")
    ok = table[table["status"] == "ok"]
    if load_key and not ok.empty and ok[load_key].nunique() > 1:
        def lines(metric: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
            return {c.label: (c.points[load_key].to_numpy(float), c.points[metric].to_numpy(float))
                    for c in configs if not c.points.empty and metric in c.points}

        def slo_lines(metric: str) -> list[plots.Threshold]:
            return [plots.Threshold(f"SLO {c.label}", c.limit_ms) for c in criteria
                    if c.metric == metric and c.stat == "p99"]

        per_gpu = {c.label: (c.points[load_key].to_numpy(float),
                             c.points["output_throughput"].to_numpy(float) / max(c.num_gpus, 1))
                   for c in configs if not c.points.empty and "output_throughput" in c.points}
        sec.add(_fig("latency_vs_load", plots.curves([
            ("P99 TTFT", "ms", lines("p99_ttft_ms"), slo_lines("ttft")),
            ("P99 TPOT", "ms", lines("p99_tpot_ms"), slo_lines("tpot")),
            ("P99 E2E latency", "ms", lines("p99_e2el_ms"), slo_lines("e2el")),
            ("Output throughput per GPU", "tokens/s/GPU", per_gpu, []),
        ], f"offered load: {short.get(load_key, load_key)}"), "Latency vs offered load, one line per configuration",
            wide=True))
    if not ok.empty:
        lat_col = next((c for c in ("p99_tpot_ms", "p99_e2el_ms", "p99_ttft_ms") if c in ok), None)
        if lat_col and "output_throughput" in ok:
            lat = ok[lat_col].to_numpy(float)
            tput = ok["output_throughput"].to_numpy(float) / ok["num_gpus"].to_numpy(float)
            front = _pareto_front(lat, tput)
            point_labels = [_label_of(r, keys, short) for _, r in ok.iterrows()]
            limit = next((c.limit_ms for c in criteria if c.summary_key == lat_col), None)
            axis = lat_col.removesuffix("_ms").replace("_", " ").upper().replace("E2EL", "E2E") + " (ms)"
            # number the front's distinct positions by latency; the table below names their points
            positions: dict[tuple[float, float], list[int]] = {}
            for i in sorted(np.flatnonzero(front), key=lambda i: lat[i]):
                positions.setdefault((lat[i], tput[i]), []).append(int(i))
            marks = {members[0]: str(n) for n, members in enumerate(positions.values(), 1)}
            sec.add(_fig("pareto", plots.pareto("Throughput vs latency", axis, "output tokens/s per GPU",
                                                lat, tput, front, marks, limit),
                         "Every feasible point (grey: dominated); the numbered Pareto front holds the points no "
                         "other point beats on both latency and per-GPU throughput", wide=True))
            sec.add(Table(["#", "point(s)", axis, "out tok/s/GPU"],
                          [[str(n), " | ".join(point_labels[i] for i in members), fmt.ms(pos[0]), fmt.num(pos[1], 1)]
                           for n, (pos, members) in enumerate(positions.items(), 1)],
                          caption="Pareto-optimal points, by latency", align="llrr"))

    sec = doc.section("All points", "points")
    show = [k for k in keys if k in table]
    metric_cols = [("GPUs", "num_gpus", fmt.num), ("req/s", "request_throughput", fmt.num),
                   ("out tok/s", "output_throughput", lambda v: fmt.num(v, 1)),
                   ("P99 TTFT", "p99_ttft_ms", fmt.ms), ("P99 TPOT", "p99_tpot_ms", fmt.ms),
                   ("P99 E2E", "p99_e2el_ms", fmt.ms)]
    if mode == "capacity":
        metric_cols += [("max req/s", "max_request_rate", fmt.num), ("binding", "binding_constraint", fmt.scalar)]
    rows = []
    for _, r in table.iterrows():
        passed = slo_passed(r.to_dict(), criteria) if r["status"] == "ok" else None
        rows.append([str(_get(r, k)) for k in show] + [str(r["status"])]
                    + [f(_get(r, col)) if col in r else fmt.MISSING for _, col, f in metric_cols]
                    + [fmt.passfail(passed), fmt.usd(cost_per_1m_output(r)) if r["status"] == "ok" else fmt.MISSING])
    sec.add(Table([short[k] for k in show] + ["status"] + [n for n, _, _ in metric_cols] + ["SLO", "$/1M out"], rows,
                  align="l" * (len(show) + 1)))
    bad = table[table["status"] != "ok"]
    if not bad.empty:
        sec.add(Table(["point", "status", "reason"],
                      [[str(r["point"]), str(r["status"]), str(r["reason"])[:400]] for _, r in bad.iterrows()],
                      caption="Points that did not run", align="lll"))
    return doc


def _natural(text: str) -> tuple:
    """Sort key putting numbers in numeric order (2 < 10)."""
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)
