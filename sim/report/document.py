"""A report as a small document tree, rendered to both HTML and Markdown.

The run and sweep report builders decide *what* to say (sections of text, tables, figures and
notes); :mod:`sim.report.html` and :mod:`sim.report.markdown` decide only *how* it looks. So the two
formats never drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class Text:
    """A paragraph of plain text (no markup; renderers escape it)."""

    text: str


@dataclass
class Note:
    """A highlighted call-out: ``kind`` is ``info``, ``good`` (recommendation, pass) or ``warn``."""

    text: str
    kind: str = "info"
    title: str = ""


@dataclass
class Table:
    """A table of already-formatted cells. ``align`` per column: ``l`` or ``r`` (default: left for the
    first column, right for the others)."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    align: str = ""

    def alignment(self) -> str:
        """One of ``l``/``r`` per column."""
        if self.align:
            return self.align.ljust(len(self.columns), "r")
        return "l" + "r" * (len(self.columns) - 1)


@dataclass
class Figure:
    """A PNG image (a matplotlib figure) with a caption; ``name`` becomes its file name in Markdown."""

    name: str
    png: bytes
    caption: str = ""
    wide: bool = False  # spans the full page width in HTML


Block = Union[Text, Note, Table, Figure]


@dataclass
class Section:
    """A titled part of the report; ``anchor`` is its HTML id and table-of-contents target."""

    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block | None) -> Section:
        """Append blocks, skipping ``None`` (a figure that had no data)."""
        self.blocks.extend(b for b in blocks if b is not None)
        return self


@dataclass
class Document:
    """A whole report."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)
    footer: str = ""

    def section(self, title: str, anchor: str) -> Section:
        """Create, append and return a new section."""
        sec = Section(title, anchor)
        self.sections.append(sec)
        return sec
