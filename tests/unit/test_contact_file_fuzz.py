"""No file makes the contacts reader fail with anything but a clear, line-numbered FileError.

Random bytes, and random CSV-ish text (headers, delimiters, quotes, line
breaks of every kind, NUL, non-ASCII in several encodings), read with random
--encoding and --delimiter: each is refused with a FileError or read to the
end as rows and rejected rows. tests/integration/test_contact_file_errors.py
drives the same files through `mailer contacts import`.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.contacts import csvfile
from mailer.contacts.csvfile import ContactRow, Defaults, FileError, Rejected

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TOPICS = {"service": 1, "promotions": 2}

_CELLS = [
    "email",
    "name",
    "locale",
    "consent",
    "consent_source",
    "consent_date",
    "consent_ends",
    "topics",
    "tracking",
    "attr.ville",
    "a@example.com",
    "René Côté",
    "Zoë ’quoted’ €",
    '=HYPERLINK("x")',
    "express",
    "purchase",
    "2024-02-29",
    "2024-02-29T10:00:00-05:00",
    "31/12/2024",
    "fr-CA",
    "service;promotions",
    "true",
    "",
    " ",
    '"',
    '""',
    '"a,b;c"',
    "\x00",
    "\x1a",
    "\ufeff",
    "\udcff",
    "x" * 1200,
]
_SEPARATORS = [",", ";", "\t", "\r\n", "\n", "\r", '"', " "]

csvish = st.lists(
    st.one_of(st.sampled_from(_CELLS), st.sampled_from(_SEPARATORS), st.text(max_size=8)),
    max_size=60,
).map("".join)


def _encoded(text: str, encoding: str) -> bytes:
    return text.encode(encoding, "surrogateescape" if encoding == "utf-8" else "replace")


files = st.one_of(
    st.binary(max_size=2000),
    st.tuples(csvish, st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16"])).map(
        lambda pair: _encoded(*pair)
    ),
    # A valid header, then anything.
    st.tuples(
        st.sampled_from(["email,name,consent,consent_source,consent_date\r\n", "email;topics\n"]),
        csvish,
    ).map(lambda pair: _encoded(pair[0] + pair[1], "utf-8")),
)
options = st.tuples(
    st.sampled_from([None, "utf-8", "utf-8-sig", "cp1252", "latin-1", "windows-1252", "ebcdic"]),
    st.sampled_from([None, ",", ";", "tab", "|"]),
)


def read_all(path: Path, encoding: str | None, delimiter: str | None) -> list[object]:
    """Every row of the file, or the FileError that refused it."""
    try:
        return list(
            csvfile.read(path, Defaults(), TOPICS, NOW, encoding=encoding, delimiter=delimiter)
        )
    except FileError as exc:
        return [exc]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=files, chosen=options)
def test_any_file_is_read_to_the_end_or_refused_with_a_file_error(
    data: bytes, chosen: tuple[str | None, str | None]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "contacts.csv"
        path.write_bytes(data)
        for item in read_all(path, *chosen):
            if isinstance(item, Rejected):
                assert item.line >= 2
                assert item.reason
            elif isinstance(item, ContactRow):
                assert item.line >= 2
                assert "\x00" not in "".join(map(str, item))
            else:
                assert isinstance(item, FileError)
                message = str(item)
                assert message.startswith((str(path), "--encoding", "--delimiter"))
