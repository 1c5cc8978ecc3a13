"""The import's own binary COPY data (mailer/contacts/copydata.py) and its reader process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.contacts import copydata
from mailer.contacts.csvfile import ContactRow
from mailer.contacts.store import _STAGING_COLUMNS, Q
from mailer.core.addresses import address_hash

# Text as files hold it: accents, tabs, line breaks, backslashes, quotes, beyond the BMP.
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
# Within asyncpg's range: it sends datetime.min and .max as -infinity and infinity.
WHEN = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@st.composite
def contact_rows(draw: st.DrawFn) -> list[ContactRow]:
    rows = []
    for line in range(2, 2 + draw(st.integers(1, 8))):
        email = f"{draw(TEXT)}{line}@example.com"
        rows.append(
            ContactRow(
                line,
                email,
                address_hash(email),
                draw(st.none() | TEXT),
                draw(st.none() | st.sampled_from(["fr", "en", "fr-ca"])),
                draw(st.sampled_from(["{}", '{"vehicle": "VUS\\t"}', '{"n": 12.5}'])),
                draw(st.none() | WHEN),
                draw(st.none() | st.booleans()),
                draw(st.sampled_from(["email", "sms"])),
                draw(st.none() | st.sampled_from(["express", "implied_contract"])),
                draw(st.none() | TEXT),
                draw(st.none() | WHEN),
                draw(st.none() | WHEN),
                tuple(draw(st.lists(st.integers(1, 2**62), max_size=3))),
                draw(st.booleans()),
                draw(st.booleans()),
            )
        )
    return rows


@given(rows=contact_rows())
# Each example in its own transaction, its tables dropped at commit: the database is shared safely.
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
async def test_the_encoded_copy_data_loads_the_rows_asyncpgs_records_load(
    db_url: str, rows: list[ContactRow]
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute(Q("import_create_staging"))
            await conn.execute("CREATE TEMPORARY TABLE records (LIKE import_rows) ON COMMIT DROP")
            await conn.copy_records_to_table("records", records=rows, columns=_STAGING_COLUMNS)

            async def data() -> AsyncIterator[bytes]:
                yield copydata.encode(rows)

            await conn.copy_to_table(
                "import_rows", source=data(), columns=_STAGING_COLUMNS, format="binary"
            )
            differ = await conn.fetchval(
                "SELECT count(*) FROM ((TABLE records EXCEPT ALL TABLE import_rows) "
                "UNION ALL (TABLE import_rows EXCEPT ALL TABLE records)) d"
            )
            assert differ == 0
            assert await conn.fetchval("SELECT count(*) FROM import_rows") == len(rows)
    finally:
        await conn.close()


async def test_a_consent_dated_year_one_keeps_its_date_not_minus_infinity(db_url: str) -> None:
    # asyncpg would have sent datetime.min as -infinity; the import's own data sends the date.
    first = datetime(1, 1, 1, tzinfo=UTC)
    row = ContactRow(
        2, "a@example.com", address_hash("a@example.com"), None, None, "{}", None, None,
        "email", "express", "shop", first, None, (), True, False,
    )  # fmt: skip
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute(Q("import_create_staging"))

            async def data() -> AsyncIterator[bytes]:
                yield copydata.encode([row])

            await conn.copy_to_table(
                "import_rows", source=data(), columns=_STAGING_COLUMNS, format="binary"
            )
            assert await conn.fetchval(
                "SELECT obtained_at = '0001-01-01 00:00+00' FROM import_rows"
            )
    finally:
        await conn.close()
