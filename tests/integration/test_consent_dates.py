"""The day a person consented is the same in the message footer, the preference centre and
`contacts show`: a date given without a time as given, a timestamp as its day in the sender's
zone (issue 13, item 2)."""

from __future__ import annotations

import csv
import dataclasses
import email
import re
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailer.campaigns.render_inputs import RenderInputs
from mailer.core import consent_dates
from mailer.core.consent_dates import consent_day, end_date_only
from mailer.core.footer import format_date
from mailer.core.settings import DatabaseSettings, Settings, TrackerSettings
from mailer.db import connect, migrations
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.engine_setup import KEYS, engine_for, sample_campaign, settings_for
from tests.smtp_servers import smtp_server
from tracker.app import create_app
from tracker.preferences import LedgerRow
from tracker.wording import history_line

SOURCE = "Salon Auto Quebec"
# (address, locale, consent_date as the file gives it). 02:00 UTC on the 17th is still the
# 16th in Toronto; 20:00 UTC is already the 18th in Brisbane.
CONTACTS = [
    ("date.only@example.com", "fr", "2018-11-17"),
    ("early.utc@example.com", "en", "2018-11-17T02:00:00+00:00"),
    ("late.utc@example.com", "en", "2018-11-17T20:00:00Z"),
]
EXPECTED: dict[str, dict[str, date]] = {
    "America/Toronto": {  # UTC−5 in November
        "date.only@example.com": date(2018, 11, 17),
        "early.utc@example.com": date(2018, 11, 16),
        "late.utc@example.com": date(2018, 11, 17),
    },
    "UTC": {
        "date.only@example.com": date(2018, 11, 17),
        "early.utc@example.com": date(2018, 11, 17),
        "late.utc@example.com": date(2018, 11, 17),
    },
    "Australia/Brisbane": {  # UTC+10, no daylight saving
        "date.only@example.com": date(2018, 11, 17),
        "early.utc@example.com": date(2018, 11, 17),
        "late.utc@example.com": date(2018, 11, 18),
    },
}
# "…you subscribed on 17 November 2018 at…", "…vous vous êtes abonné le 17 novembre 2018…"
_SUBSCRIBED_ON = re.compile(r"(?:subscribed on|abonné le) (\S+ \S+ \d{4})")


def write_contacts(path: Path) -> None:
    today = datetime.now(UTC).date().isoformat()
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(
            [
                "email",
                "locale",
                "consent",
                "consent_source",
                "consent_date",
                "last_activity",
                "attr.vehicle",
                "attr.next_service",
            ]
        )
        for address, locale, consent_date in CONTACTS:
            out.writerow(
                [address, locale, "express", SOURCE, consent_date, today, "RAV4", "2026-12-01"]
            )


def only_day(text: str, where: str) -> str:
    found = _SUBSCRIBED_ON.findall(text)
    assert len(found) == 1, f"{where}: expected one consent sentence, found {found}"
    return str(found[0])


@pytest.mark.parametrize("zone", list(EXPECTED))
async def test_footer_preference_centre_and_contacts_show_name_the_same_consent_day(
    zone: str,
    stores: Stores,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contacts_csv = tmp_path / "contacts.csv"
    write_contacts(contacts_csv)
    await stores.contacts.topic_upsert("service", "Service reminders")
    code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(contacts_csv))
    assert code == 0, printed
    edits = {'timezone = "America/Toronto"': f'timezone = "{zone}"'}
    await sample_campaign(stores, edits, tmp_path)
    with smtp_server() as (port, sink):
        await engine_for(stores, settings_for(port, render_processes=0)).run(until_idle=True)
    assert sorted(sink.recipients) == sorted(address for address, _, _ in CONTACTS)

    tracker = Settings(
        database=DatabaseSettings(url=db_url, pool_min=1, pool_max=2),
        tracker=TrackerSettings(base_url="http://127.0.0.1:8080"),
        token_keys=KEYS,
    )
    async with TestClient(TestServer(create_app(tracker))) as client:
        for received in sink.messages:
            locale = {a: loc for a, loc, _ in CONTACTS}[received.rcpt]
            expected = format_date(EXPECTED[zone][received.rcpt], locale)
            message = email.message_from_bytes(received.data, policy=policy.default)
            assert isinstance(message, EmailMessage)
            text = message.get_body(("plain",))
            assert text is not None
            footer = text.get_content()
            assert only_day(footer, f"footer to {received.rcpt}") == expected

            token = re.search(r"/p/([A-Za-z0-9_-]+)", footer)
            assert token is not None
            page = await client.get(f"/p/{token[1]}")
            assert page.status == 200
            assert only_day(await page.text(), f"preference centre of {received.rcpt}") == expected

            code, shown = await run_cli(
                monkeypatch, db_url, "contacts", "show", received.rcpt, "--timezone", zone
            )
            assert code == 0, shown
            grant = next(line for line in shown.splitlines() if "express" in line)
            day = re.search(r"\d{4}-\d{2}-\d{2}", grant)
            assert day is not None
            assert day[0] == EXPECTED[zone][received.rcpt].isoformat(), grant


async def test_a_date_without_a_time_is_recorded_as_a_calendar_date_and_a_reimport_adds_nothing(
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    contacts_csv = tmp_path / "contacts.csv"
    write_contacts(contacts_csv)
    await stores.contacts.topic_upsert("service", "Service reminders")
    for _ in range(2):
        code, printed = await run_cli(monkeypatch, db_url, "contacts", "import", str(contacts_csv))
        assert code == 0, printed
    rows = await conn.fetch(
        "SELECT c.email, l.obtained_at, l.obtained_date_only FROM consents l"
        " JOIN contacts c ON c.id = l.contact_id ORDER BY c.email"
    )
    assert [(r["email"], r["obtained_date_only"]) for r in rows] == [
        ("date.only@example.com", True),
        ("early.utc@example.com", False),
        ("late.utc@example.com", False),
    ]
    assert rows[0]["obtained_at"] == datetime(2018, 11, 17, tzinfo=UTC)  # its midnight UTC
    # consent_current (the audience's summary, kept by the ledger's trigger) still follows.
    assert await conn.fetchval("SELECT count(*) FROM consent_current") == 3
    assert await conn.fetchval("SELECT consent_current_rebuild()") == 3


async def test_a_date_only_flag_needs_a_midnight_utc_instant(conn: asyncpg.Connection) -> None:
    contact = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash)"
        " VALUES ('a@example.com', sha256('a@example.com'::bytea)) RETURNING id"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at,"
            " obtained_date_only) VALUES ($1, 'email', 'grant', 'express', 'form',"
            " '2018-11-17 05:00+00', true)",
            contact,
        )


async def test_migration_0007_reads_earlier_imported_midnights_as_dates(
    empty_db_url: str,
) -> None:
    """A ledger imported before 0007 (dates stored as midnight UTC, nothing saying so) is
    printed right once migrated; rows written by the tracker at other times are not touched."""
    earlier = [m for m in migrations.available() if m.version < 7]
    conn = await asyncpg.connect(empty_db_url)
    try:
        async with connect(empty_db_url, max_size=1) as pool:
            await pool.execute(migrations.Q("migrations_bootstrap"))
            for m in earlier:  # as `db migrate` applied them then
                async with pool.acquire() as c, c.transaction():
                    await c.execute(m.sql)
                    await c.execute(
                        migrations.Q("migrations_record"), m.version, m.name, m.checksum
                    )
            contact = await conn.fetchval(
                "INSERT INTO contacts (email, email_hash)"
                " VALUES ('a@example.com', sha256('a@example.com'::bytea))"
                " RETURNING id"
            )
            await conn.execute(
                "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at,"
                " ends_at, evidence) VALUES"
                " ($1, 'email', 'grant', 'implied_contract', 'lease', '2018-11-17 00:00+00',"
                "  '2024-05-01 00:00+00', '{\"import_id\": 1, \"line\": 2}'),"
                " ($1, 'sms', 'grant', 'express', 'form', '2018-11-17 14:30+00',"
                '  NULL, \'{"import_id": 1, "line": 3}\'),'
                " ($1, 'email', 'withdraw', NULL, 'one-click', '2019-01-01 00:00+00', NULL, '{}')",
                contact,
            )
            applied = await migrations.migrate(pool)
        assert [m.version for m in applied] == [m.version for m in migrations.available()][6:]
        rows = await conn.fetch(
            "SELECT source, obtained_date_only, ends_date_only FROM consents ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [
            ("lease", True, True),
            ("form", False, False),
            ("one-click", False, False),  # not imported: an instant, even at midnight
        ]
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE consents SET source = 'forged'")  # guard is back
    finally:
        await conn.close()


def test_an_archive_written_before_the_flag_re_renders_as_it_was_sent() -> None:
    """Messages archived before 0007 printed every consent date in the sender's zone; their
    render inputs lack the flag and must keep rendering that way (byte-for-byte archive)."""
    stored = {
        "delivery_id": 1,
        "email": "a@example.com",
        "name": None,
        "locale": "en",
        "attributes": {},
        "consent_kind": "express",
        "consent_source": SOURCE,
        "consent_obtained_at": "2018-11-17T00:00:00+00:00",
        "campaign": {
            "slug": "s",
            "name": "S",
            "topic": "service",
            "subject": {"en": "Hi"},
            "locales": ["en"],
            "timezone": "America/Toronto",
            "sender": {
                "business_name": "B",
                "postal_address": "P",
                "phone": None,
                "email": None,
                "web": "https://b.example",
            },
            "from_name": "B",
            "from_address": "b@b.example",
            "reply_to": None,
        },
        "unsubscribe_url": "https://t.example/u/x",
        "preferences_url": "https://t.example/p/x",
        "tracking": False,
        "pixel_url": None,
        "click_urls": {},
    }
    inputs = RenderInputs.from_json(stored)
    assert inputs.consent_date_only is False
    assert RenderInputs.from_json(inputs.to_json()) == inputs


@pytest.mark.parametrize(
    ("moment", "date_only", "zone", "day"),
    [
        (datetime(2018, 11, 17, tzinfo=UTC), True, "America/Toronto", date(2018, 11, 17)),
        (datetime(2018, 11, 17, tzinfo=UTC), False, "America/Toronto", date(2018, 11, 16)),
        (datetime(2018, 11, 17, 20, tzinfo=UTC), False, "Australia/Brisbane", date(2018, 11, 18)),
        (datetime(2018, 11, 17, tzinfo=UTC), True, "Australia/Brisbane", date(2018, 11, 17)),
    ],
)
def test_a_date_prints_as_given_and_a_timestamp_as_its_day_in_the_senders_zone(
    moment: datetime, date_only: bool, zone: str, day: date
) -> None:
    assert consent_day(moment, consent_dates.zone(zone), date_only=date_only) == day


def test_an_end_counted_from_a_date_is_a_date() -> None:
    # Two years after a purchase given as a date; a contract's end is its own.
    assert end_date_only("implied_purchase", obtained_date_only=True, ends_date_only=False)
    assert not end_date_only("implied_contract", obtained_date_only=True, ends_date_only=False)
    assert end_date_only("implied_publication", obtained_date_only=False, ends_date_only=True)


def test_the_history_prints_a_purchase_given_as_a_date_and_its_end_as_dates() -> None:
    toronto = consent_dates.zone("America/Toronto")
    row = LedgerRow(
        1,
        "email",
        "grant",
        "implied_purchase",
        None,
        None,
        "invoice 42",
        datetime(2018, 11, 17, tzinfo=UTC),
        obtained_date_only=True,
    )
    assert history_line(row, "en", toronto) == (
        "You bought from us on 17 November 2018 (invoice 42): we may write to you by email"
        " until 17 November 2020."
    )
    stamped = dataclasses.replace(row, obtained_date_only=False)
    assert history_line(stamped, "fr", toronto) == (
        "Vous nous avez acheté le 16 novembre 2018 (invoice 42) : nous pouvons vous écrire"
        " (courriel) jusqu'au 16 novembre 2020."
    )
