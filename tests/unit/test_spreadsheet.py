"""CSV the project writes opens in a spreadsheet as data, never as a formula (CSV injection)."""

from __future__ import annotations

import ast
import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.core.spreadsheet import csv_writer, neutralise

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cell",
    ["=1+1", "+33 1 23 45 67 89", "-2+3", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x","y")'],
)
def test_a_cell_a_spreadsheet_would_evaluate_is_written_with_a_leading_quote(cell: str) -> None:
    out = io.StringIO()
    csv_writer(out).writerow(["a", cell])
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["a", "'" + cell]


def test_plain_text_numbers_and_empty_cells_are_written_as_they_are() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    values = ["René", "a=b", " =x", 42, -7, 1.5, None, True, when, ""]
    assert [neutralise(v) for v in values] == [
        "René", "a=b", " =x", 42, -7, 1.5, None, True, str(when), ""
    ]  # fmt: skip


def _writes_csv(path: Path) -> list[str]:
    """Calls of csv.writer / csv.DictWriter in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("writer", "DictWriter")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "csv"
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_csv_the_project_writes_goes_through_the_one_neutralising_writer() -> None:
    modules = [*(ROOT / "mailer").rglob("*.py"), *(ROOT / "tracker").rglob("*.py")]
    modules += (ROOT / "bench").rglob("*.py")
    direct = [hit for path in modules for hit in _writes_csv(path)]
    assert [hit for hit in direct if not hit.startswith("mailer/core/spreadsheet.py:")] == []
