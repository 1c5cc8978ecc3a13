from __future__ import annotations

import asyncio
import csv
import hashlib
from pathlib import Path

import asyncpg
import pytest

from mailer.contacts import batches, imports
from mailer.contacts.csvfile import Defaults, FileError, Rejected
from mailer.contacts.store import ImportRefused, SuppressionImportResult
from mailer.core.addresses import address_hash
from mailer.demo.stores import Stores
from tests.barriers import waiting_on_a_lock

HEADER = "email,name,locale,consent,consent_source,consent_date,topics,last_activity,attr.vehicle\n"


def write(tmp_path: Path, body: str, header: str = HEADER, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


async def run_import(
    stores: Stores, path: Path, *, skip_invalid: bool = False, defaults: Defaults | None = None
) -> imports.ImportOutcome:
    return await imports.import_contacts(
        stores.contacts,
        path,
        defaults or Defaults(),
        default_locale="en",
        skip_invalid=skip_invalid,
    )


@pytest.fixture
async def topics(stores: Stores) -> None:
    await stores.contacts.topic_upsert("service", "Service reminders")
    await stores.contacts.topic_upsert("promotions", "Promotions", default_subscribed=False)


@pytest.mark.usefixtures("topics")
async def test_import_creates_contacts_consents_and_topic_subscriptions(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "Marie@Example.COM,Marie Côté,fr,express,Salon E-commerce Paris,2012-09-19,"
        "service;promotions,2025-01-10,SUV\n"
        "bob@example.org,Bob,en,purchase,service invoice,2025-03-02,service,,\n",
    )
    outcome = await run_import(stores, path)
    r = outcome.result
    assert (r.rows_read, r.rows_valid, r.contacts_created, r.consents_added) == (2, 2, 2, 2)
    assert r.topics_added == 3
    marie = await conn.fetchrow("SELECT * FROM contacts WHERE email = 'marie@example.com'")
    assert marie is not None
    assert marie["name"] == "Marie Côté"
    assert marie["locale"] == "fr"
    assert bytes(marie["email_hash"]) == address_hash("marie@example.com")
    ledger = await conn.fetchrow(
        "SELECT kind, source, obtained_at::date AS day, evidence->>'line' AS line "
        "FROM consents WHERE contact_id = $1 AND topic_id IS NULL",
        marie["id"],
    )
    assert dict(ledger or {}) == {
        "kind": "express",
        "source": "Salon E-commerce Paris",
        "day": __import__("datetime").date(2012, 9, 19),
        "line": "2",
    }
    assert outcome.rejects_file is None


@pytest.mark.usefixtures("topics")
async def test_reimporting_the_same_file_changes_nothing(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "a@example.com,Ann,en,express,form,2024-01-01,service,2025-01-01,SUV\n"
        "b@example.com,Ben,fr,inquiry,quote request,2026-10-01,,,\n",
    )
    await run_import(stores, path)
    before = await conn.fetch("SELECT id, updated_at FROM contacts ORDER BY id")
    again = (await run_import(stores, path)).result
    assert (again.contacts_created, again.contacts_updated) == (0, 0)
    assert (again.consents_added, again.topics_added) == (0, 0)
    assert await conn.fetch("SELECT id, updated_at FROM contacts ORDER BY id") == before


@pytest.mark.usefixtures("topics")
async def test_an_import_waits_for_a_preference_save_in_progress_on_a_contact_it_does_not_change(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, db_url: str
) -> None:
    # The tracker locks the contact, then writes topics and consents; an import
    # that wrote the same contact's consents (and so its consent_current row)
    # before its topics used to deadlock with it. It now queues on the contact.
    await run_import(stores, write(tmp_path, "d@example.com,D,en,express,form,2024-01-01,,,\n"))
    contact = await conn.fetchval("SELECT id FROM contacts WHERE email = 'd@example.com'")
    later = "d@example.com,D,en,purchase,invoice,2026-02-01,service,,\n"
    tracker = await asyncpg.connect(db_url)
    try:
        saving = tracker.transaction()
        await saving.start()
        await tracker.execute("SELECT 1 FROM contacts WHERE id = $1 FOR NO KEY UPDATE", contact)
        importing = asyncio.ensure_future(run_import(stores, write(tmp_path, later, name="b.csv")))
        await waiting_on_a_lock(conn)  # the import waits for the tracker's row lock
        assert not importing.done()
        await saving.commit()
        assert (await importing).result.consents_added == 1
    finally:
        await tracker.close()


@pytest.mark.usefixtures("topics")
async def test_duplicate_addresses_in_one_file_merge_into_one_contact(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "dup@example.com,First Name,en,express,form,2024-01-01,service,2024-01-01,SUV\n"
        "DUP@example.com,,fr,purchase,invoice,2025-06-01,promotions,2025-02-01,\n",
    )
    r = (await run_import(stores, path)).result
    assert r.contacts_created == 1
    row = await conn.fetchrow("SELECT * FROM contacts WHERE email = 'dup@example.com'")
    assert row is not None
    # The later line wins where it says something; an empty cell never erases.
    assert (row["name"], row["locale"]) == ("First Name", "fr")
    assert row["last_activity_at"].date().isoformat() == "2025-02-01"
    assert await conn.fetchval("SELECT count(*) FROM consents WHERE topic_id IS NULL") == 2


@pytest.mark.usefixtures("topics")
async def test_a_new_consent_in_a_later_file_appends_to_the_history(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    await run_import(stores, write(tmp_path, "c@example.com,C,en,inquiry,quote,2025-01-01,,,\n"))
    later = write(tmp_path, "c@example.com,C,en,purchase,invoice,2026-02-01,,,\n", name="b.csv")
    r = (await run_import(stores, later)).result
    assert (r.contacts_created, r.consents_added) == (0, 1)
    kinds = await conn.fetch(
        "SELECT kind FROM consents WHERE topic_id IS NULL ORDER BY obtained_at"
    )
    assert [k["kind"] for k in kinds] == ["implied_inquiry", "implied_purchase"]


@pytest.mark.usefixtures("topics")
async def test_an_import_never_resubscribes_a_topic_the_person_left(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path, "d@example.com,D,en,express,form,2025-01-01,promotions,,\n")
    await run_import(stores, path)
    await conn.execute("UPDATE contact_topics SET subscribed = false")
    await run_import(stores, path)
    assert await conn.fetchval("SELECT subscribed FROM contact_topics") is False


BAD_ROWS = [
    ("not-an-address,X,en,express,form,2025-01-01,,,", "email"),
    (",X,en,express,form,2025-01-01,,,", "email: empty"),
    ("zoë@exämple.com,X,en,express,form,2025-01-01,,,", "needs SMTPUTF8"),
    ("e@example.com,X,en,telepathy,form,2025-01-01,,,", "consent: unknown kind"),
    ("e@example.com,X,en,express,,2025-01-01,,,", "consent_source: required"),
    ("e@example.com,X,en,express,form,01/02/2025,,,", "consent_date"),
    ("e@example.com,X,en,express,form,2999-01-01,,,", "in the future"),
    ("e@example.com,X,english!,express,form,2025-01-01,,,", "locale"),
    ("e@example.com,X,en,express,form,2025-01-01,nosuchtopic,,", "unknown topic"),
    ("e@example.com,X,en,express,form,2025-01-01,,yesterday,", "last_activity"),
    ("e@example.com,X,en,express,form", "expected 9 fields"),
]


@pytest.mark.usefixtures("topics")
@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
async def test_each_kind_of_bad_row_is_reported_with_its_line_and_nothing_is_imported(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, row: str, reason: str
) -> None:
    path = write(tmp_path, f"ok@example.com,Ok,en,express,form,2025-01-01,,,\n{row}\n")
    with pytest.raises(ImportRefused) as caught:
        await run_import(stores, path)
    assert [(r.line, reason in r.reason) for r in caught.value.examples] == [(3, True)]
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
    assert await conn.fetchval("SELECT count(*) FROM imports") == 0
    with imports.rejects_path_for(path).open(encoding="utf-8") as fh:
        rejects = list(csv.reader(fh))
    assert rejects[1][0] == "3"
    assert reason in rejects[1][1]


@pytest.mark.usefixtures("topics")
async def test_skip_invalid_imports_the_valid_rows_and_reports_the_rest(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "ok@example.com,Ok,en,express,form,2025-01-01,,,\nbroken@,X,en,express,form,2025-01-01,,,\n",
    )
    outcome = await run_import(stores, path, skip_invalid=True)
    assert (outcome.result.rows_valid, outcome.result.rows_rejected) == (1, 1)
    assert outcome.rejects_file is not None
    assert outcome.rejects_file.exists()
    assert await conn.fetchval("SELECT count(*) FROM contacts") == 1


@pytest.mark.usefixtures("topics")
async def test_command_line_defaults_fill_missing_columns(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path, "f@example.com\n", header="email\n")
    defaults = Defaults(
        consent="express", source="Salon E-commerce Paris", consent_date="2012-09-19"
    )
    await run_import(stores, path, defaults=defaults)
    assert await conn.fetchval("SELECT source FROM consents") == "Salon E-commerce Paris"


async def test_a_file_without_an_email_column_fails_at_once(stores: Stores, tmp_path: Path) -> None:
    path = write(tmp_path, "x,y\n", header="mail,name\n")
    with pytest.raises(FileError, match="no 'email' column"):
        await run_import(stores, path)


async def test_an_unknown_column_is_named(stores: Stores, tmp_path: Path) -> None:
    path = write(tmp_path, "a@example.com,2024\n", header="email,consent_dte\n")
    with pytest.raises(FileError, match="column 2: unknown column 'consent_dte'"):
        await run_import(stores, path)


async def test_a_binary_file_is_not_taken_for_a_csv(stores: Stores, tmp_path: Path) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(FileError, match="not a CSV file"):
        await run_import(stores, path)


async def test_suppression_import_blocks_addresses_known_or_not(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "registry.txt"
    path.write_text("Known@Example.com\nstranger@example.net\nnot an address\n", encoding="utf-8")

    async def suppress() -> tuple[SuppressionImportResult, list[Rejected]]:
        return await imports.import_suppressions(
            stores.contacts,
            path,
            reason="registry",
            scope="global",
            channel=None,
            topic_id=None,
            source="DNC",
        )

    result, rejected = await suppress()
    assert (result.added, result.rows_rejected, [r.line for r in rejected]) == (2, 1, [3])
    again, _ = await suppress()
    assert again.added == 0
    hashes = {
        bytes(r["email_hash"]) for r in await conn.fetch("SELECT email_hash FROM suppressions")
    }
    assert hashes == {address_hash("known@example.com"), address_hash("stranger@example.net")}


async def test_importing_a_suppressed_address_counts_it_as_suppressed(
    stores: Stores, tmp_path: Path
) -> None:
    registry = tmp_path / "registry.csv"
    registry.write_text("email\ng@example.com\n", encoding="utf-8")
    await imports.import_suppressions(
        stores.contacts,
        registry,
        reason="registry",
        scope="global",
        channel=None,
        topic_id=None,
        source="x",
    )
    path = write(tmp_path, "g@example.com,G,en,express,form,2025-01-01,,,\n")
    assert (await run_import(stores, path)).result.suppressed == 1


@pytest.mark.usefixtures("topics")
async def test_numeric_and_boolean_attributes_are_typed_and_codes_with_leading_zeros_are_not(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        "t@example.com,48200,true,01234,2026-12-01\n",
        header="email,attr.mileage,attr.vip,attr.postal,attr.next_service\n",
    )
    await run_import(stores, path)
    attributes = await conn.fetchval("SELECT attributes::text FROM contacts")
    assert attributes == (
        '{"vip": true, "postal": "01234", "mileage": 48200, "next_service": "2026-12-01"}'
    )


@pytest.mark.usefixtures("topics")
@pytest.mark.parametrize("chunk", [1, 2, 25_000])
async def test_an_address_repeated_across_batches_and_chunks_merges_as_within_one(
    stores: Stores,
    conn: asyncpg.Connection,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    # chunk 1: every line its own chunk; 2: the repeat in the same chunk's second batch.
    monkeypatch.setattr(batches, "CHUNK_ROWS", chunk)
    path = write(
        tmp_path,
        "dup@example.com,First,en,express,form,2024-01-01,service,2024-01-01,SUV\n"
        "DUP@example.com,,fr,purchase,invoice,2025-06-01,promotions,2025-02-01,\n"
        "other@example.com,Other,en,,,,,,\n"
        "dup@example.com,Last,,express,form,2024-01-01,service,2023-01-01,sedan\n",
    )
    r = (await run_import(stores, path)).result
    assert (r.contacts_created, r.contacts_updated, r.consents_added, r.topics_added) == (
        2,
        0,
        2,
        2,
    )
    row = await conn.fetchrow("SELECT * FROM contacts WHERE email = 'dup@example.com'")
    assert row is not None
    assert (row["name"], row["locale"], row["attributes"]) == ("Last", "fr", '{"vehicle": "sedan"}')
    assert row["last_activity_at"].date().isoformat() == "2025-02-01"
    evidence = await conn.fetch("SELECT evidence->>'line' AS line FROM consents ORDER BY id")
    assert [e["line"] for e in evidence] == ["2", "3"]  # the first line stating each grant
    topics = await conn.fetch("SELECT source FROM contact_topics ORDER BY topic_id")
    assert [t["source"] for t in topics] == [
        f"import {r.import_id} line 2",
        f"import {r.import_id} line 3",
    ]


@pytest.mark.usefixtures("topics")
async def test_new_contacts_take_their_ids_in_address_order_within_a_batch(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Rows are inserted in address order; ids given in the same order fill the primary key
    at its right edge instead of splitting its pages (bench/README.md, "Import")."""
    path = write(
        tmp_path,
        "carole@example.com,,,,,,,,\n"
        "alain@example.com,,,express,form,2024-01-01,service,,\n"
        "bruno@example.com,,,,,,,,\n",
    )
    await run_import(stores, path)
    rows = await conn.fetch("SELECT email FROM contacts ORDER BY id")
    assert [r["email"] for r in rows] == [
        "alain@example.com",
        "bruno@example.com",
        "carole@example.com",
    ]
    line = await conn.fetchval("SELECT evidence->>'line' FROM consents")
    assert line == "3"  # the evidence still names the file's line


@pytest.mark.usefixtures("topics")
async def test_reimporting_a_file_whose_lines_disagree_across_chunks_changes_nothing(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "CHUNK_ROWS", 1)
    path = write(
        tmp_path,
        "a@example.com,Ann,en,express,form,2024-01-01,,,SUV\n"
        "b@example.com,Ben,en,,,,,,\n"
        "a@example.com,Anne,fr,,,,,,sedan\n",
    )
    await run_import(stores, path)
    before = await conn.fetch("SELECT id, name, locale, attributes, updated_at FROM contacts")
    again = (await run_import(stores, path)).result
    assert (again.contacts_created, again.contacts_updated, again.consents_added) == (0, 0, 0)
    assert await conn.fetch("SELECT id, name, locale, attributes, updated_at FROM contacts") == (
        before
    )
    assert {r["name"] for r in before} == {"Anne", "Ben"}


@pytest.mark.usefixtures("topics")
async def test_the_import_record_keeps_the_files_hash_and_how_it_was_read(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "semicolons.csv"
    path.write_bytes("email;name\r\nrene@example.com;René\r\n".encode("cp1252"))
    outcome = await imports.import_contacts(
        stores.contacts, path, Defaults(), default_locale="en", skip_invalid=False,
        encoding="cp1252",
    )  # fmt: skip
    record = await conn.fetchrow(
        "SELECT file_sha256, summary->>'encoding' AS encoding, "
        "summary->>'delimiter' AS delimiter FROM imports"
    )
    assert record is not None
    assert bytes(record["file_sha256"]) == hashlib.sha256(path.read_bytes()).digest()
    assert (record["encoding"], record["delimiter"]) == ("cp1252", ";")
    assert outcome.dialect.describe() == "cp1252, ';'-delimited, CRLF line ends"


@pytest.mark.usefixtures("topics")
@pytest.mark.parametrize("chunk", [1, 25_000])
async def test_a_suppressed_address_counts_once_however_many_lines_and_batches_list_it(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(batches, "CHUNK_ROWS", chunk)
    registry = tmp_path / "registry.txt"
    registry.write_text("old@example.com\nnew@example.com\n", encoding="utf-8")
    await imports.import_suppressions(
        stores.contacts,
        registry,
        reason="registry",
        scope="global",
        channel=None,
        topic_id=None,
        source="DNC",
    )
    await run_import(stores, write(tmp_path, "old@example.com,Old,en,,,,,,\n", name="a.csv"))
    twice = "old@example.com,Old,en,,,,,,\nnew@example.com,New,en,,,,,,\n" * 2
    r = (await run_import(stores, write(tmp_path, twice, name="b.csv"))).result
    assert (r.contacts_created, r.suppressed) == (1, 2)
