"""Render a :class:`~sim.report.document.Document` as Markdown (GitHub flavour).

Figures are written as PNG files into an assets folder beside the Markdown file and linked by
relative path, so ``report.md`` reads well on GitHub or in any viewer.
"""
from __future__ import annotations

from sim.report.document import Document, Figure, Note, Table, Text


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(block: Table) -> list[str]:
    align = block.alignment()
    lines = [f"*{block.caption}*", ""] if block.caption else []
    lines.append("| " + " | ".join(_cell(c) for c in block.columns) + " |")
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
    lines.extend("| " + " | ".join(_cell(v) for v in row) + " |" for row in block.rows)
    return [*lines, ""]


def render_markdown(doc: Document, assets_dir_name: str) -> tuple[str, dict[str, bytes]]:
    """Return the Markdown text and ``{relative path: PNG bytes}`` of the figures it links to."""
    lines = [f"# {doc.title}", ""]
    if doc.subtitle:
        lines += [f"_{doc.subtitle}_", ""]
    lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.anchor})" for s in doc.sections), ""]
    assets: dict[str, bytes] = {}
    for sec in doc.sections:
        lines += [f'<a id="{sec.anchor}"></a>', "", f"## {sec.title}", ""]
        for block in sec.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Note):
                title = f"**{block.title}** " if block.title else ""
                lines += [f"> {title}{block.text}", ""]
            elif isinstance(block, Table):
                lines += _table(block)
            elif isinstance(block, Figure):
                rel = f"{assets_dir_name}/{block.name}.png"
                assets[rel] = block.png
                lines += [f"![{block.caption or block.name}]({rel})", ""]
                if block.caption:
                    lines += [f"*{block.caption}*", ""]
    if doc.footer:
        lines += ["---", "", doc.footer, ""]
    return "\n".join(lines), assets
