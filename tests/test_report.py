"""Reports: content and self-containedness of report.html / report.md for runs and sweeps, the
recommendation logic, and the ``simctl report`` / ``simctl sweep`` commands."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.api import save_result
from sim.plan.sweep import sweep
from sim.report import write_report
from sim.report.run_report import binned, memory_parts
from sim.report.sweep_report import Configuration, _pareto_front, recommend
from sim.report.thresholds import Criterion, mlperf_criteria, slo_criteria, slo_passed
from tests.test_sweep import GRID, experiment, fake_capacity, fake_run, synthetic_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Assets(HTMLParser):
    """Collects every URL-bearing attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        for key in ("href", "src", "action", "poster"):
            if key in a and tag != "img":
                self.links.append(a[key] or "")
        if "id" in a:
            self.ids.add(a["id"] or "")


def check_self_contained(html: str) -> _Assets:
    """Every image is an embedded PNG, every link an in-page anchor, nothing fetched from anywhere."""
    page = _Assets()
    page.feed(html)
    assert page.images, "the report has no figures"
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:80]
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    for link in page.links:
        assert link.startswith("#") and link[1:] in page.ids, link
    style = html[html.index("<style>"):html.index("</style>")]
    assert "url(" not in style and "@import" not in style  # no fonts or images fetched by CSS
    assert "<script" not in html.lower() and "<link" not in html.lower() and "<iframe" not in html.lower()
    return page


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    cfg = experiment(replicas=2, workload={"num_requests": 400, "arrival": {"process": "poisson", "rate": 6.0},
                                           "input_tokens": {"dist": "fixed", "value": 256},
                                           "output_tokens": {"dist": "fixed", "value": 24}})
    out = tmp_path_factory.mktemp("run")
    save_result(synthetic_result(cfg), out)
    write_report(out)
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    sweep(experiment({**GRID, "target_request_rate": 20}), out, jobs=1, point_fn=fake_run)
    write_report(out)
    return out


def test_run_report_is_self_contained_and_complete(run_dir):
    html = (run_dir / "report.html").read_text()
    page = check_self_contained(html)
    assert len(page.images) >= 7  # CDFs, over time, iteration time, busy share, TTFT split, memory, MFU/MBU
    for title in ("What was simulated", "Latency", "Over time", "Where the time goes", "Memory and utilisation",
                  "Per replica", "All summary metrics"):
        assert f">{title}</h2>" in html
    # what was simulated: hardware, model size, parallelism, engine settings, seed, version
    for text in ("8 × H100-SXM", "70,553,706,496", "TP 4 × PP 1", "2 replica(s)", "max_num_seqs 64", "seed 1", "nvlink"):
        assert text in html, text
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert f"{summary['p99_ttft_ms']:,.1f}" in html  # the latency table shows the summary's numbers
    assert "MLPerf llama2-70b, closest benchmark" in html and "P99 TTFT ≤ 1,500 ms" in html
    assert "synthetic result built by the tests" in html  # meta warnings are shown


def test_run_markdown_links_existing_figures(run_dir):
    md = (run_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 7
    for rel in links:
        assert (run_dir / rel).read_bytes().startswith(PNG_MAGIC)
    assert "| TTFT |" in md and "## Latency" in md


def test_sweep_report_recommends_and_lists_infeasible(sweep_dir):
    html = (sweep_dir / "report.html").read_text()
    page = check_self_contained(html)
    assert len(page.images) >= 4  # capacity, cost, latency vs load, Pareto
    assert "Recommended: max_num_seqs=16 h100-sxm tp=4" in html
    assert "To serve 20 req/s it needs 5 replica(s) = 20 GPUs" in html
    assert "smallest TP that fits" in html and "infeasible" in html
    for title in ("Recommendation", "What was swept", "Configurations", "Latency and throughput", "All points"):
        assert f">{title}</h2>" in html
    md = (sweep_dir / "report.md").read_text()
    assert "**Recommended: max_num_seqs=16 h100-sxm tp=4**" in md


def test_capacity_sweep_report(tmp_path):
    cfg = experiment({"zip": [{"hardware": ["h100-sxm", "h100-sxm", "a100-sxm-80gb", "a100-sxm-40gb"],
                               "parallel.tp": [4, 8, 8, 2]}], "mode": "capacity", "target_request_rate": 30})
    sweep(cfg, tmp_path, jobs=1, point_fn=fake_capacity)
    html = (write_report(tmp_path)["html"]).read_text()
    check_self_contained(html)
    assert "Recommended:" in html and "max req/s" in html and "p99_tpot_ms" in html


def test_report_without_slo_or_load_axis(tmp_path):
    cfg = experiment({"grid": {"parallel.tp": [4, 8]}}, slo=None)
    sweep(cfg, tmp_path, jobs=1, point_fn=fake_run)
    html = write_report(tmp_path)["html"].read_text()
    check_self_contained(html)
    assert "no slo: section" in html


def test_report_of_unknown_directory_is_a_clear_error(tmp_path):
    from sim.errors import SimctlError

    with pytest.raises(SimctlError, match="neither a run directory"):
        write_report(tmp_path)


# ---------------------------------------------------------------------------------------------
# Pieces


def _config(label, capacity, gpus, replicas, cost_per_hour, cost_1m, meets=True) -> Configuration:
    at = pd.Series({"output_throughput": 100.0 * gpus})
    return Configuration(label, pd.DataFrame(), gpus, gpus // replicas, replicas, capacity, at, cost_per_hour,
                         cost_1m, meets)


def test_recommend_sizes_for_target_traffic_by_cost():
    a = _config("a", capacity=4.0, gpus=4, replicas=1, cost_per_hour=12.0, cost_1m=2.0)  # 5 × 4 GPUs = $60/h
    b = _config("b", capacity=10.0, gpus=8, replicas=1, cost_per_hour=24.0, cost_1m=3.0)  # 2 × 8 GPUs = $48/h
    c = _config("c", capacity=50.0, gpus=8, replicas=1, cost_per_hour=8.0, cost_1m=0.1, meets=False)
    best, reason = recommend([a, b, c], 20.0, has_slo=True)
    assert best is b
    assert "2 replica(s) = 16 GPUs at $48.00/hour" in reason and "Next best: a" in reason
    assert a.replicas_for(20.0) == (5, 20)


def test_recommend_without_target_uses_cost_per_token_then_capacity_per_gpu():
    a = _config("a", 4.0, 4, 1, 12.0, 2.0)
    b = _config("b", 10.0, 8, 1, 24.0, 3.0)
    assert recommend([a, b], None, True)[0] is a
    a.cost_per_1m_output = b.cost_per_1m_output = float("nan")
    best, reason = recommend([a, b], None, True)
    assert best is b and "capacity per GPU" in reason
    assert recommend([_config("x", 1, 1, 1, 1, 1, meets=False)], None, True)[0] is None


def test_pareto_front():
    lat = np.array([1.0, 2.0, 3.0, 2.5, np.nan])
    tput = np.array([1.0, 5.0, 6.0, 4.0, 9.0])
    assert _pareto_front(lat, tput).tolist() == [True, True, True, False, False]


def test_thresholds_from_slo_and_mlperf():
    crit = slo_criteria({"ttft_ms": {"p99": 2000, "mean": 500}, "tpot_ms": {"p90": 50}}, "llama-3.1-8b")
    assert {(c.metric, c.stat, c.limit_ms) for c in crit} == {("ttft", "p99", 2000.0), ("ttft", "mean", 500.0),
                                                             ("tpot", "p90", 50.0)}
    preset = slo_criteria({"preset": "mlperf-interactive"}, "llama-3.1-8b")
    assert {(c.metric, c.limit_ms) for c in preset} == {("ttft", 500.0), ("tpot", 30.0)}
    assert [c.limit_ms for c in mlperf_criteria("meta-llama/Llama-2-70b-hf", "server")] == [2000.0, 200.0]
    assert "closest" in mlperf_criteria("llama-3.1-70b", "server")[0].source
    assert mlperf_criteria("qwen2.5-7b", "server") == []
    crit = [Criterion("ttft", "p99", 100.0)]
    assert slo_passed({"p99_ttft_ms": 99.0}, crit) is True
    assert slo_passed({"p99_ttft_ms": 101.0}, crit) is False
    assert slo_passed({"p99_ttft_ms": 1.0, "slo": {"passed": False}}, crit) is False  # the run's verdict wins
    assert slo_passed({}, []) is None


def test_binned_time_weighted_means():
    it = pd.DataFrame({"replica": 0, "end_s": np.arange(1, 101) * 0.1, "time_s": 0.1, "num_seqs": 4,
                       "num_waiting": 2, "kv_usage": 0.5, "num_prefill_tokens": 10, "num_decode_seqs": 3,
                       "prefill_time_s": 0.04, "mfu": 0.2, "mbu": 0.6})
    b = binned(it, num_bins=10)
    np.testing.assert_allclose(b["batch"], 4.0)
    np.testing.assert_allclose(b["kv"], 0.5)
    np.testing.assert_allclose(b["decode_tok_s"], 30.0)
    np.testing.assert_allclose(b["prefill_share"] + b["decode_share"], 1.0)


def test_memory_parts_reads_the_memory_plan():
    gib = 1024 ** 3
    parts, capacity = memory_parts({"capacity_bytes": 80 * gib, "budget_bytes": 72 * gib, "weights_bytes": 16 * gib,
                                    "activation_bytes": 2 * gib, "non_torch_bytes": 1 * gib,
                                    "kv_cache_bytes": 53 * gib, "block_bytes": 2 ** 20})
    assert capacity == 80 * gib
    assert sum(parts.values()) == 72 * gib and len(parts) == 4


# ---------------------------------------------------------------------------------------------
# Commands (the real simulator)


def _simctl(*args: str) -> None:
    from sim.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        assert exc.code in (None, 0), exc.code


def test_simctl_sweep_and_report_commands(tmp_path):
    """End to end with the real engine: a tiny sweep with an infeasible point, then `simctl report`."""
    exp = tmp_path / "tiny.yaml"
    exp.write_text("""
name: tiny-sweep
model: llama-3.1-8b
hardware: h100-sxm
engine: {max_num_seqs: 32, max_model_len: 4096, gpu_memory_utilization: 0.18}
workload:
  num_requests: 40
  arrival: {process: poisson, rate: 4.0}
  input_tokens: {dist: fixed, value: 128}
  output_tokens: {dist: fixed, value: 16}
slo: {ttft_ms: {p99: 2000}, tpot_ms: {p99: 100}}
sweep:
  grid:
    parallel.tp: [1, 2]
    workload.arrival.rate: [2.0, 8.0]
""")
    out = tmp_path / "out"
    _simctl("sweep", str(exp), "--out", str(out), "--jobs", "2", "--no-progress")
    table = pd.read_parquet(out / "sweep.parquet")
    assert list(table["status"]) == ["infeasible", "infeasible", "ok", "ok"]  # 16 GB of weights > 18% of 80 GB
    assert "GiB" in table["reason"][0]
    assert (out / "report.html").is_file()
    point = out / "points" / table.loc[table["status"] == "ok", "point"].iloc[0]
    _simctl("report", str(point))
    check_self_contained((point / "report.html").read_text())


@pytest.mark.parametrize("example, overrides", [
    ("quickstart.yaml", {"workload.num_requests": 150, "replicas": 2}),   # plain, two replicas
    ("autoscale_pd_pools.yaml", {"workload.duration_s": 20}),            # PD pools, fleet tables
])
def test_report_from_memory_equals_report_from_disk(tmp_path, example, overrides):
    """Issue 10: `simctl run` builds the report from the in-memory result (storage.as_saved); it must
    render exactly what the report built by re-reading the result directory renders."""
    from sim.api import run
    from sim.config import load_experiment, with_overrides
    from sim.report.html import render_html
    from sim.report.markdown import render_markdown
    from sim.report.run_report import build_run_document
    from sim.runs.storage import as_saved, load_result

    root = Path(__file__).resolve().parents[1]
    cfg = with_overrides(load_experiment(root / "experiments" / example), overrides)
    res = run(cfg, out_dir=tmp_path / "run", report=True)
    disk = build_run_document(load_result(tmp_path / "run"))
    mem = build_run_document(as_saved(res))
    assert render_html(mem) == render_html(disk)
    assert render_markdown(mem, "a") == render_markdown(disk, "a")
    # and the report simctl run wrote is that one
    assert (tmp_path / "run" / "report.html").read_text(encoding="utf-8") == render_html(disk)
    assert as_saved(res).summary == load_result(tmp_path / "run").summary
