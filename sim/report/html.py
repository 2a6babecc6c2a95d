"""Render a :class:`~sim.report.document.Document` as one self-contained HTML file.

Everything is inline: CSS in a ``<style>`` element, figures as ``data:image/png;base64`` URIs, no
scripts, fonts or links to other hosts — the file opens offline and can be mailed as is.
"""
from __future__ import annotations

import base64
from html import escape

from sim.report.document import Document, Figure, Note, Table, Text

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#f6f7f9; --accent:#1f5fa8;
        --good:#1e7b45; --good-bg:#e7f5ec; --warn:#9a5b00; --warn-bg:#fff4e0; --info-bg:#eaf1fb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#17263c; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header p { margin:0; color:#c9d3e3; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; position:sticky; top:0; z-index:1; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:13px; white-space:nowrap; }
main { max-width:1180px; margin:0 auto; padding:8px 32px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:6px 22px 18px; margin:18px 0; }
h2 { font-size:18px; margin:14px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
p { margin:8px 0; }
.tablewrap { overflow-x:auto; margin:10px 0 14px; }
table { border-collapse:collapse; font-size:13px; min-width:40%; }
caption { text-align:left; color:var(--muted); font-size:12px; padding-bottom:4px; caption-side:top; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#f0f3f7; font-weight:600; text-align:left; white-space:nowrap; }
td.r, th.r { text-align:right; font-variant-numeric: tabular-nums; }
tr:hover td { background:#fafbfd; }
.figs { display:grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap:14px; margin:12px 0; }
@media (max-width: 900px) { .figs { grid-template-columns: minmax(0, 1fr); } }
figure { margin:0; border:1px solid var(--line); border-radius:6px; padding:8px; background:#fff; }
figure.wide { grid-column: 1 / -1; }
figure img { display:block; width:100%; height:auto; }
figcaption { color:var(--muted); font-size:12px; margin-top:6px; }
.note { border-left:4px solid var(--accent); background:var(--info-bg); padding:10px 14px; margin:12px 0; border-radius:4px; }
.note.good { border-color:var(--good); background:var(--good-bg); }
.note.warn { border-color:var(--warn); background:var(--warn-bg); }
.note b { display:block; margin-bottom:2px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 30px; }
"""


def _text(block: Text) -> str:
    return f"<p>{escape(block.text)}</p>"


def _note(block: Note) -> str:
    title = f"<b>{escape(block.title)}</b>" if block.title else ""
    return f'<div class="note {escape(block.kind)}">{title}{escape(block.text)}</div>'


def _table(block: Table) -> str:
    align = block.alignment()
    head = "".join(f'<th class="{a}">{escape(c)}</th>' for c, a in zip(block.columns, align))
    body = "".join("<tr>" + "".join(f'<td class="{a}">{escape(str(v))}</td>' for v, a in zip(row, align)) + "</tr>"
                   for row in block.rows)
    caption = f"<caption>{escape(block.caption)}</caption>" if block.caption else ""
    return f'<div class="tablewrap"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(block: Figure) -> str:
    data = base64.b64encode(block.png).decode("ascii")
    cls = ' class="wide"' if block.wide else ""
    return (f'<figure{cls}><img alt="{escape(block.caption or block.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(block.caption)}</figcaption></figure>")


def render_html(doc: Document) -> str:
    """The whole report as an HTML string (consecutive figures share a responsive grid)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(doc.title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{escape(doc.title)}</h1><p>{escape(doc.subtitle)}</p></header>"]
    links = "".join(f'<a href="#{escape(s.anchor)}">{escape(s.title)}</a>' for s in doc.sections)
    parts.append(f"<nav>{links}</nav><main>")
    for sec in doc.sections:
        parts.append(f'<section id="{escape(sec.anchor)}"><h2>{escape(sec.title)}</h2>')
        in_grid = False
        for block in sec.blocks:
            is_fig = isinstance(block, Figure)
            if is_fig and not in_grid:
                parts.append('<div class="figs">')
                in_grid = True
            elif not is_fig and in_grid:
                parts.append("</div>")
                in_grid = False
            if isinstance(block, Figure):
                parts.append(_figure(block))
            elif isinstance(block, Table):
                parts.append(_table(block))
            elif isinstance(block, Note):
                parts.append(_note(block))
            else:
                parts.append(_text(block))
        if in_grid:
            parts.append("</div>")
        parts.append("</section>")
    parts.append(f"</main><footer>{escape(doc.footer)}</footer></body></html>")
    return "\n".join(parts)
