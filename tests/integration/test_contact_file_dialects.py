"""The files offices really export, through `mailer contacts import`: semicolons and tabs,
Windows-1252, a byte-order mark; and every bad file refused with its line, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_run import run_cli
from tests.unit.test_contact_file_fuzz import files, options

HEADER = ["email", "name", "locale", "consent", "consent_source", "consent_date", "topics"]
ROWS = [
    ["rene@example.com", "René Côté", "fr-CA", "express", "Salon de l’auto", "2024-03-02", ""],
    ["zoe@example.com", "Zoë Lévesque", "fr", "purchase", "facture n° 12", "2025-01-15", ""],
]


def office_file(folder: Path, *, delimiter: str, encoding: str) -> Path:
    """The two rows as Excel writes them for a locale: its delimiter and encoding, CRLF."""
    path = folder / "c.csv"
    rows = [HEADER, *ROWS]
    if encoding == "latin-1":  # ISO-8859-1 has no typographic apostrophe
        rows = [[cell.replace("’", "'") for cell in row] for row in rows]
    path.write_bytes("".join(delimiter.join(r) + "\r\n" for r in rows).encode(encoding))
    return path


def flat(printed: str) -> str:
    """What a command printed, its lines wrapped by the terminal joined again."""
    return " ".join(printed.split())


async def names(conn: asyncpg.Connection) -> list[str]:
    return [r["name"] for r in await conn.fetch("SELECT name FROM contacts ORDER BY email")]


@pytest.mark.parametrize(
    ("delimiter", "encoding", "option", "stated"),
    [
        (";", "cp1252", ["--encoding", "cp1252"], "cp1252, ';'-delimited, CRLF line ends"),
        ("\t", "utf-8", [], "utf-8, tab-delimited, CRLF line ends"),
        (";", "utf-8-sig", [], "utf-8-sig, ';'-delimited, CRLF line ends"),
        (",", "latin-1", ["--encoding", "latin-1"], "latin-1, ','-delimited, CRLF line ends"),
    ],
)
async def test_a_file_in_an_office_dialect_imports_and_the_summary_says_how_it_was_read(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    conn: asyncpg.Connection,
    tmp_path: Path,
    delimiter: str,
    encoding: str,
    option: list[str],
    stated: str,
) -> None:
    path = office_file(tmp_path, delimiter=delimiter, encoding=encoding)
    code, out = await run_cli(monkeypatch, db_url, "contacts", "import", str(path), *option)
    assert code == 0, out
    assert f"read c.csv as {stated}" in flat(out)
    assert await names(conn) == ["René Côté", "Zoë Lévesque"]
    source = await conn.fetchval("SELECT source FROM consents ORDER BY id LIMIT 1")
    assert source in ("Salon de l’auto", "Salon de l'auto")


async def test_a_windows_1252_file_is_refused_with_its_line_bytes_and_the_option_that_reads_it(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # UTF-8 for 4,933 lines, then one in Windows-1252: refused whole, naming that line.
    path = tmp_path / "late.csv"
    good = "".join(f"u{i}@example.com;Name {i}\r\n" for i in range(4932))
    late = "rene@example.com;René\r\n".encode("cp1252")
    path.write_bytes(("email;name\r\n" + good).encode() + late)
    code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(path))
    out = flat(printed)
    assert code == 2
    assert "line 4934, character 21: byte(s) 0xE9 are not UTF-8" in out
    assert "Ren\\xE9" in out
    assert "as Windows-1252: 'rene@example.com;René'" in out
    assert "--encoding cp1252" in out
    assert "Traceback" not in out
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_cp1252_punctuation_read_as_latin_1_is_refused_rather_than_stored_as_controls(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = office_file(tmp_path, delimiter=";", encoding="cp1252")
    code, printed = await run_cli(
        monkeypatch, db_url, "contacts", "import", str(path), "--encoding", "latin-1"
    )
    out = flat(printed)
    at = ";".join(ROWS[0]).index("’") + 1
    assert code == 2
    assert f"line 2, character {at}: byte 0x92 is a control character in latin-1" in out
    assert "--encoding cp1252" in out
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_a_forced_delimiter_wins_over_the_header_and_an_ambiguous_header_asks_for_one(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    ambiguous = tmp_path / "a.csv"
    ambiguous.write_text("email;name,x\r\nrene@example.com;René, x\r\n", encoding="utf-8")
    code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(ambiguous))
    out = flat(printed)
    assert code == 2
    assert "line 1: cannot tell the delimiter from the header" in out
    assert "pass --delimiter" in out
    ambiguous.write_text("email;name\r\nrene@example.com;René, x\r\n", encoding="utf-8")
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "import", str(ambiguous), "--delimiter", ";"
    )
    assert code == 0, out
    assert await names(conn) == ["René, x"]
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "import", str(ambiguous), "--delimiter", "|"
    )
    assert (code, "--delimiter: '|' is not one of" in out) == (2, True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A NUL byte far from the start (the first 4 KB are clean).
        (
            "".join(f"u{i}@example.com,N\r\n" for i in range(400)) + "late@example.com,A\x00B\r\n",
            "line 402, character 19: a NUL byte: not a CSV file",
        ),
        (
            "a@example.com,A\r\nb@example.com,B\nc@example.com,C\r\n",
            "line 3: ends with LF where line 1 ends with CRLF: mixed line endings",
        ),
        (
            'a@example.com,"' + "x" * 140_000 + "\r\n",
            "line 2, column 2: a field longer than 131,072 characters (the limit)",
        ),
        (
            'a@example.com,"Ann\r\nb@example.com,B\r\n',
            "line 2: a quoted field starting here is never closed",
        ),
        ('a@example.com,"Ann"x\r\n', "line 2: malformed CSV"),
    ],
)
async def test_a_broken_file_is_refused_with_the_line_that_breaks_it_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    conn: asyncpg.Connection,
    tmp_path: Path,
    body: str,
    message: str,
) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(("email,name\r\n" + body).encode())
    code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(path))
    out = flat(printed)
    assert code == 2, out
    assert message in out
    assert "Traceback" not in out
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_a_line_break_inside_a_quoted_cell_of_a_crlf_file_is_data_not_a_mixed_ending(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # Excel writes rows with CRLF and a line break typed in a cell as LF.
    path = tmp_path / "multi.csv"
    path.write_bytes(b'email,name\r\na@example.com,"Ann\nMarie"\r\nb@example.com,Bob\r\n')
    code, out = await run_cli(monkeypatch, db_url, "contacts", "import", str(path))
    assert code == 0, out
    assert await names(conn) == ["Ann\nMarie", "Bob"]


async def test_an_overlong_cell_rejects_its_row_naming_line_column_and_limit(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        "email,name,attr.note\r\na@example.com,A,ok\r\nb@example.com,B," + "n" * 1001 + "\r\n",
        encoding="utf-8",
    )
    code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(path))
    assert code == 2
    assert "line 3: column 3 (attr.note): 1,001 characters, longer than the limit of 1,000" in (
        flat(printed)
    )
    code, out = await run_cli(
        monkeypatch, db_url, "contacts", "import", str(path), "--skip-invalid"
    )
    assert code == 0, out
    assert await names(conn) == ["A"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=files, chosen=options, skip=st.booleans())
async def test_any_file_given_to_the_import_command_ends_in_an_import_or_a_clear_refusal(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    data: bytes,
    chosen: tuple[str | None, str | None],
    skip: bool,
) -> None:
    encoding, delimiter = chosen
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "contacts.csv"
        path.write_bytes(data)
        argv = ["contacts", "import", str(path)]
        argv += ["--encoding", encoding] if encoding else []
        argv += ["--delimiter", delimiter] if delimiter else []
        argv += ["--skip-invalid"] if skip else []
        code, out = await run_cli(monkeypatch, db_url, *argv)
    assert code in (0, 2), out
    assert "Traceback" not in out
    if code == 2:
        assert "error" in out


async def test_a_suppression_list_is_read_like_a_contact_file_encoding_included(
    monkeypatch: pytest.MonkeyPatch, db_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "registre.csv"
    path.write_bytes("email;nom\r\nrene@example.com;René\r\n".encode("cp1252"))
    code, printed = await run_cli(monkeypatch, db_url, "suppress", "import", str(path))
    assert code == 2
    assert "--encoding cp1252" in flat(printed)
    code, printed = await run_cli(
        monkeypatch, db_url, "suppress", "import", str(path), "--encoding", "cp1252"
    )
    assert code == 0, printed
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 1
