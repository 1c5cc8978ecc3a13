"""The report in the terminal, as rich tables."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mailer.report.figures import ReportFigures
from mailer.report.sections import headline, sections


def render_rich(figures: ReportFigures) -> RenderableType:
    """The report as rich tables for the terminal."""
    parts: list[RenderableType] = [Text(headline(figures), style="bold")]
    for s in sections(figures):
        table = Table(title=s.title, title_justify="left", title_style="bold")
        for name, align in zip(s.head, s.align, strict=True):
            table.add_column(name, justify="right" if align == "r" else "left", overflow="fold")
        for i, row in enumerate(s.rows):
            # Text cells, not markup: URLs and reasons are other people's text.
            table.add_row(*(Text(c) for c in row), style="dim" if i in s.detail_rows else None)
        parts.append(table)
        parts.extend(Text(note, style="italic") for note in s.notes)
    if not figures.adds_up:
        parts.append(Text("the report does not add up to the audience", style="bold red"))
    return Group(*parts)
