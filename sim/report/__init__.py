"""Reports: ``report.html`` (self-contained, opens offline) and ``report.md`` for a run or a sweep.

>>> from sim.report import write_report
>>> write_report("results/quickstart")          # a run directory (summary.json, ...)
>>> write_report("results/llama70b-sweep")      # a sweep directory (sweep.parquet, points/)

Layout of the package: :mod:`.run_report` and :mod:`.sweep_report` decide what a report says and
build a :class:`.document.Document`; :mod:`.html` and :mod:`.markdown` render it; :mod:`.plots` draws
the figures (matplotlib, Agg); :mod:`.thresholds` knows the SLO and MLPerf lines; :mod:`.fmt` formats
numbers. Heavy imports (matplotlib) happen only when a report is written.
"""
from __future__ import annotations

from pathlib import Path

from sim.errors import SimctlError
from sim.report.html import render_html
from sim.report.markdown import render_markdown
from sim.report.run_report import build_run_document
from sim.report.sweep_report import build_sweep_document
from sim.runs.result import RunResult
from sim.runs.storage import as_saved, load_result

HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
ASSETS_DIR = "report_files"


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_document(doc: object, out_dir: str | Path) -> dict[str, Path]:
    """Render a :class:`~sim.report.document.Document` into ``out_dir`` as HTML and Markdown."""

    out = Path(out_dir)
    html_path, md_path = out / HTML_FILE, out / MARKDOWN_FILE
    _write_text_atomically(html_path, render_html(doc))
    markdown, assets = render_markdown(doc, ASSETS_DIR)
    for rel, png in assets.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(png)
    _write_text_atomically(md_path, markdown)
    return {"html": html_path, "markdown": md_path}


def write_report(result_dir: str | Path, result: RunResult | None = None) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` (figures in ``report_files/``) into ``result_dir``.

    ``result_dir`` is a run directory (``summary.json`` …, as :func:`sim.api.save_result` writes) or a
    sweep directory (``sweep.parquet`` and ``points/``). ``result``, the run just saved there, saves
    reading its tables back (:func:`sim.runs.storage.as_saved`; the same report). Returns the paths
    written.
    """
    path = Path(result_dir)
    if result is not None:
        return write_document(build_run_document(as_saved(result)), path)
    if (path / "sweep.parquet").is_file():

        doc = build_sweep_document(path)
    elif (path / "summary.json").is_file():

        doc = build_run_document(load_result(path))
    else:
        raise SimctlError(f"{path}: neither a run directory (summary.json) nor a sweep directory (sweep.parquet)")
    return write_document(doc, path)
