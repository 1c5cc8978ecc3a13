"""Writing CSV that a spreadsheet opens as data, never as formulas (CSV injection).

Every CSV the project writes (the import's rejects file, the audit and
archive exports, the demo's sample) goes through `csv_writer`. Excel,
LibreOffice and Google Sheets evaluate a cell that begins with `=`, `+`, `-`
or `@` as a formula (`=HYPERLINK(…)`, `=cmd|' /C calc'!A0`), and one that
begins with a tab or carriage return after trimming it; a contact's name or a
consent source is text an outsider typed into a web form. OWASP's rule
(https://owasp.org/www-community/attacks/CSV_Injection): prefix such a cell
with a single quote, which spreadsheets show as text. Numbers the project
computes are written as numbers; everything else is neutralised.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, Protocol

# The first characters that make a spreadsheet evaluate a cell (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A cell as written: text that a spreadsheet would evaluate gets a leading `'`."""
    if value is None or isinstance(value, int | float):
        return value  # None is an empty cell; numbers (bool is an int) are ours, not formulas
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


class _Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


class SafeWriter:
    """csv.writer's writerow/writerows, every cell neutralised first."""

    def __init__(self, target: _Writable, **dialect: Any) -> None:
        self._writer = csv.writer(target, **dialect)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def csv_writer(target: _Writable, **dialect: Any) -> SafeWriter:
    """The project's only way to write CSV (tests/unit/test_spreadsheet.py holds modules to it)."""
    return SafeWriter(target, **dialect)
