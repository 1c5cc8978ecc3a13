from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from mailer.campaigns import audience
from mailer.core.addresses import address_hash
from mailer.demo.stores import Stores

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


async def add_contact(
    conn: asyncpg.Connection,
    email: str,
    kind: str | None,
    obtained: datetime,
    ends: datetime | None = None,
) -> int:
    """A contact and, unless `kind` is None, its email consent grant."""
    cid = await conn.fetchval(
        "INSERT INTO contacts (email, email_hash) VALUES ($1, $2) RETURNING id",
        email,
        address_hash(email),
    )
    if kind is not None:
        await conn.execute(
            "INSERT INTO consents (contact_id, channel, action, kind, source, obtained_at, "
            "ends_at) VALUES ($1, 'email', 'grant', $2, 'Salon E-commerce Paris', $3, $4)",
            cid,
            kind,
            obtained,
            ends,
        )
    return int(cid)


@pytest.fixture
async def campaign(stores: Stores, conn: asyncpg.Connection) -> int:
    topic = await stores.contacts.topic_upsert("service", "Service reminders")
    await add_contact(conn, "express@example.com", "express", AT - timedelta(days=4000))
    await add_contact(conn, "bought@example.com", "implied_purchase", AT - timedelta(days=300))
    await add_contact(conn, "lapsed@example.com", "implied_inquiry", AT - timedelta(days=200))
    await add_contact(conn, "stranger@example.com", None, AT)
    return await stores.campaigns.campaign_insert_minimal("spring-service", topic)


async def test_freezing_creates_one_delivery_per_eligible_contact_with_its_consent(
    stores: Stores, conn: asyncpg.Connection, campaign: int
) -> None:
    result = await stores.campaigns.freeze_audience(campaign, AT)
    assert result.added == 2
    assert result.counts == {"eligible": 2, "consent_expired": 1, "no_consent": 1}
    rows = await conn.fetch(
        "SELECT c.email, d.status, d.domain, d.consent_kind, d.consent_source "
        "FROM deliveries d JOIN contacts c ON c.id = d.contact_id ORDER BY c.email"
    )
    assert [tuple(r) for r in rows] == [
        (
            "bought@example.com",
            "queued",
            "example.com",
            "implied_purchase",
            "Salon E-commerce Paris",
        ),
        ("express@example.com", "queued", "example.com", "express", "Salon E-commerce Paris"),
    ]
    recorded = await conn.fetchval("SELECT audience_counts->>'eligible' FROM campaigns")
    assert recorded == "2"


async def test_relaunching_never_adds_a_duplicate_delivery(
    stores: Stores, conn: asyncpg.Connection, campaign: int
) -> None:
    await stores.campaigns.freeze_audience(campaign, AT)
    again = await stores.campaigns.freeze_audience(campaign, AT)
    assert again.added == 0
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 2


async def test_a_contact_who_opts_out_after_the_freeze_is_found_ineligible_at_send_time(
    stores: Stores, conn: asyncpg.Connection, campaign: int
) -> None:
    await stores.campaigns.freeze_audience(campaign, AT)
    await conn.execute(
        "INSERT INTO suppressions (email_hash, scope, channel, reason, source) "
        "VALUES ($1, 'channel', 'email', 'unsubscribe', 'one-click')",
        address_hash("bought@example.com"),
    )
    frozen = [r["contact_id"] for r in await conn.fetch("SELECT contact_id FROM deliveries")]
    spec = await stores.campaigns.campaign_spec("spring-service")
    assert spec is not None
    rows = await stores.campaigns.audience(spec, AT + timedelta(hours=1), frozen)
    reasons = {r.contact_id: r.reason for r in rows}
    bought = await conn.fetchval("SELECT id FROM contacts WHERE email = 'bought@example.com'")
    assert reasons.pop(bought) == "unsubscribed_channel"
    assert set(reasons.values()) == {None}


async def test_the_audience_counts_match_the_freeze_without_writing_anything(
    stores: Stores, conn: asyncpg.Connection, campaign: int
) -> None:
    spec = await stores.campaigns.campaign_spec("spring-service")
    assert spec is not None
    counts = await stores.campaigns.audience_counts(spec, AT)
    assert counts == {"eligible": 2, "consent_expired": 1, "no_consent": 1}
    assert await conn.fetchval("SELECT count(*) FROM deliveries") == 0


async def test_explain_names_the_consent_that_expired_in_plain_words(
    stores: Stores, campaign: int
) -> None:
    spec = await stores.campaigns.campaign_spec("spring-service")
    inputs = await stores.contacts.contact_rule_inputs("lapsed@example.com")
    assert spec is not None
    assert inputs is not None
    verdict = audience.explain(inputs, spec, AT)
    assert verdict.reason is not None
    assert verdict.reason.value == "consent_expired"
    assert "expired on" in verdict.detail


async def test_expiring_lists_implied_consents_about_to_lapse(
    stores: Stores, campaign: int
) -> None:
    rows = await stores.campaigns.consents_expiring("email", AT, AT + timedelta(days=30))
    assert rows == []
    soon = await stores.campaigns.consents_expiring(
        "email", AT + timedelta(days=420), AT + timedelta(days=460)
    )
    assert [r.email for r in soon] == ["bought@example.com"]


@pytest.mark.parametrize(("text", "days"), [("30d", 30), ("2w", 14), ("1m", 30)])
def test_durations_read_days_weeks_and_calendar_months(text: str, days: int) -> None:
    assert audience.parse_duration(text, now=datetime(2026, 6, 1, tzinfo=UTC)).days == days


def test_a_bad_duration_is_named() -> None:
    with pytest.raises(ValueError, match="'soon' is not a duration"):
        audience.parse_duration("soon", now=AT)
