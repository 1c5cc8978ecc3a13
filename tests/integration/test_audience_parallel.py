"""A whole audience computed on several connections at once, each over a range of contact ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.campaigns.audience import CampaignSpec, id_ranges
from mailer.demo.stores import Stores, open_stores
from tests.integration.test_audience_freeze import add_contact

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
KINDS = [None, "express", "implied_purchase", "implied_inquiry", "implied_contract"]


@given(lo=st.integers(0, 10_000), width=st.integers(0, 10_000), parts=st.integers(1, 16))
def test_id_ranges_cover_every_id_exactly_once_in_at_most_the_parts_asked(
    lo: int, width: int, parts: int
) -> None:
    hi = lo + width
    ranges = id_ranges(lo, hi, parts)
    assert 1 <= len(ranges) <= parts
    covered = [i for start, end in ranges for i in range(start, end + 1)]
    assert covered == list(range(lo, hi + 1))


@pytest.fixture
async def people(stores: Stores, conn: asyncpg.Connection) -> int:
    """60 contacts with every kind of consent (some none, some withdrawn); a topic id."""
    topic = await stores.contacts.topic_upsert("service", "Service reminders")
    for n in range(60):
        kind = KINDS[n % len(KINDS)]
        cid = await add_contact(
            conn,
            f"p{n}@example.com",
            kind,
            AT - timedelta(days=40 * n),
            AT + timedelta(days=30) if kind == "implied_contract" else None,
        )
        if n % 7 == 0:
            await conn.execute(
                "INSERT INTO consents (contact_id, channel, action, source, obtained_at) "
                "VALUES ($1, 'email', 'withdraw', 'form', $2)",
                cid,
                AT - timedelta(days=20 * n),
            )
    return int(topic)


async def _frozen(conn: asyncpg.Connection, campaign: int) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT contact_id, domain, consent_id, consent_kind, consent_source, "
        "consent_obtained_at FROM deliveries WHERE campaign_id = $1 ORDER BY contact_id",
        campaign,
    )
    return [tuple(r) for r in rows]


async def test_a_freeze_split_over_three_connections_equals_one_on_a_single_connection(
    db_url: str, conn: asyncpg.Connection, people: int
) -> None:
    async with open_stores(db_url, max_size=2, audience_parts=1) as single:
        assert single.campaigns.audience_parts == 1
        one = await single.campaigns.campaign_insert_minimal("one", people)
        alone = await single.campaigns.freeze_audience(one, AT)
        counted_alone = await single.campaigns.audience_counts(await _spec(single, "one"), AT)
    async with open_stores(db_url, max_size=4, audience_parts=3) as split:
        assert split.campaigns.audience_parts == 3
        three = await split.campaigns.campaign_insert_minimal("three", people)
        together = await split.campaigns.freeze_audience(three, AT)
        counted_together = await split.campaigns.audience_counts(await _spec(split, "three"), AT)
    assert together == alone
    assert counted_together == counted_alone == alone.counts
    assert sum(alone.counts.values()) == 60
    assert await _frozen(conn, three) == await _frozen(conn, one)


async def test_a_part_that_fails_rolls_back_every_part_and_records_nothing(
    db_url: str, conn: asyncpg.Connection, people: int
) -> None:
    last = await conn.fetchval("SELECT max(id) FROM contacts")
    # A real failure inside one part only: the last contact's delivery row is refused.
    await conn.execute(
        "CREATE FUNCTION refuse_last() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.contact_id = {int(last)} THEN RAISE EXCEPTION 'refused'; END IF; "
        "RETURN NEW; END $$"
    )
    await conn.execute(
        "CREATE TRIGGER refuse_last BEFORE INSERT ON deliveries "
        "FOR EACH ROW EXECUTE FUNCTION refuse_last()"
    )
    await conn.execute(
        "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at) "
        "VALUES ($1, 'email', 'grant', 'express', 'shop', $2)",
        last,
        AT - timedelta(days=1),
    )
    async with open_stores(db_url, max_size=4, audience_parts=3) as split:
        campaign = await split.campaigns.campaign_insert_minimal("doomed", people)
        with pytest.raises(asyncpg.RaiseError, match="refused"):
            await split.campaigns.freeze_audience(campaign, AT)
        # The pool's connections came back usable.
        assert await split.pool.fetchval("SELECT 1") == 1
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0
    assert await conn.fetchval("SELECT audience_at FROM campaigns WHERE id = $1", campaign) is None


async def _spec(stores: Stores, slug: str) -> CampaignSpec:
    spec = await stores.campaigns.campaign_spec(slug)
    assert spec is not None
    return spec
