"""The audience SQL and the pure rules (mailer/core/eligibility.py) agree on every contact."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.campaigns.audience import CampaignSpec, audience_query
from mailer.core import consent, eligibility, segment, segment_eval, segment_parser
from mailer.core.addresses import address_hash
from mailer.core.consent import (
    Action,
    Channel,
    Kind,
    LedgerEntry,
    Policy,
    Suppression,
    SuppressionReason,
    SuppressionScope,
)
from mailer.core.eligibility import AudienceSpec, ContactFacts
from mailer.demo.stores import Stores

AT = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
# Instants near every boundary the rules have, plus Feb 29 and month ends,
# and around the send time itself: a contact with rows dated after it is
# answered from the ledger, the others from consent_current.
_BOUNDARIES = [
    AT,
    consent.add_months(AT, -24),
    consent.add_months(AT, -6),
    datetime(2024, 2, 29, 12, 0, tzinfo=UTC),
    datetime(2025, 12, 31, 12, 0, tzinfo=UTC),
    datetime(2025, 8, 31, 12, 0, tzinfo=UTC),
]
instants = st.one_of(
    st.sampled_from(_BOUNDARIES).flatmap(
        lambda b: st.sampled_from(
            [b, b - timedelta(days=1), b + timedelta(days=1), b + timedelta(seconds=1)]
        )
    ),
    st.datetimes(
        min_value=datetime(2022, 1, 1), max_value=datetime(2026, 7, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
)
TOPICS = (1, 2)


@dataclass
class FakeContact:
    locale: str
    last_activity_at: datetime | None
    channel_prefs: dict[Channel, bool]
    topic_prefs: dict[int, bool]
    ledger: list[Row]
    suppressions: list[Suppression]


ledger_rows = st.tuples(
    st.sampled_from([Channel.EMAIL, Channel.EMAIL, Channel.SMS]),
    st.sampled_from([Action.GRANT, Action.GRANT, Action.WITHDRAW, Action.EXPIRE]),
    st.sampled_from(list(Kind)),
    instants,
    st.one_of(st.none(), instants),
    st.sampled_from([None, None, None, 1]),
)
suppressions = st.builds(
    lambda scope, reason, channel, topic: Suppression(
        scope,
        reason,
        channel if scope is SuppressionScope.CHANNEL else None,
        topic if scope is SuppressionScope.TOPIC else None,
    ),
    st.sampled_from(list(SuppressionScope)),
    st.sampled_from(list(SuppressionReason)),
    st.sampled_from([Channel.EMAIL, Channel.SMS]),
    st.sampled_from(TOPICS),
)
contacts = st.builds(
    FakeContact,
    locale=st.sampled_from(["fr", "en"]),
    last_activity_at=st.one_of(st.none(), instants),
    channel_prefs=st.dictionaries(st.sampled_from([Channel.EMAIL, Channel.SMS]), st.booleans()),
    topic_prefs=st.dictionaries(st.sampled_from(TOPICS), st.booleans()),
    ledger=st.lists(ledger_rows, max_size=5),
    suppressions=st.lists(suppressions, max_size=2),
)
specs = st.tuples(
    st.sampled_from(TOPICS),
    st.booleans(),
    st.sampled_from(list(Policy)),
    st.sampled_from([None, None, 6, 12]),
    st.sampled_from([None, None, "locale = fr"]),
)


Row = tuple[Channel, Action, Kind | None, datetime, datetime | None, int | None]


def _normalised_row(row: Row) -> Row:
    """Shape a random row like the ones the product writes."""
    channel, action, kind, obtained, ends, topic = row
    if topic is not None:
        kind = None  # topic rows record a preference, not a consent kind
    if action is Action.WITHDRAW:
        kind, ends = None, None
    if ends is not None and ends < obtained:
        ends = None
    if kind not in (Kind.IMPLIED_CONTRACT, Kind.IMPLIED_PUBLICATION):
        ends = None
    return channel, action, kind, obtained, ends, topic


async def _load(
    conn: asyncpg.Connection,
    people: list[FakeContact],
    erased: list[bool],
    batched: bool = False,
) -> list[int]:
    """The people into the tables; `batched`: each ledger in one statement (one
    merge into consent_current per contact) rather than a statement per row."""
    await conn.execute(
        "TRUNCATE contacts, consents, suppressions, contact_topics, contact_channels "
        "RESTART IDENTITY"
    )
    await conn.execute(
        "INSERT INTO topics (id, slug, name) OVERRIDING SYSTEM VALUE "
        "VALUES (1, 'one', 'One'), (2, 'two', 'Two') ON CONFLICT DO NOTHING"
    )
    ids = []
    for i, (person, gone) in enumerate(zip(people, erased, strict=True)):
        email = f"p{i}@example.com"
        cid = await conn.fetchval(
            "INSERT INTO contacts (email, email_hash, locale, last_activity_at, erased_at) "
            "VALUES ($1, $2, $3, $4, $5) RETURNING id",
            None if gone else email,
            None if gone else address_hash(email),
            person.locale,
            person.last_activity_at,
            AT - timedelta(days=1) if gone else None,
        )
        ids.append(cid)
        rows = [_normalised_row(row) for row in person.ledger]
        for chunk in [rows] if batched else [[row] for row in rows]:
            await conn.execute(
                "INSERT INTO consents (contact_id, channel, action, kind, topic_id, source, "
                "obtained_at, ends_at) SELECT $1, r.c, r.a, r.k, r.t, 'test', r.o, r.e "
                "FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], "
                "$6::timestamptz[], $7::timestamptz[]) WITH ORDINALITY AS r (c, a, k, t, o, e, n) "
                "ORDER BY r.n",
                cid,
                [channel.value for channel, _, _, _, _, _ in chunk],
                [action.value for _, action, _, _, _, _ in chunk],
                [kind.value if kind else None for _, _, kind, _, _, _ in chunk],
                [topic for _, _, _, _, _, topic in chunk],
                [obtained for _, _, _, obtained, _, _ in chunk],
                [ends for _, _, _, _, ends, _ in chunk],
            )
        for ch, enabled in person.channel_prefs.items():
            await conn.execute(
                "INSERT INTO contact_channels (contact_id, channel, enabled) VALUES ($1, $2, $3)",
                cid,
                ch.value,
                enabled,
            )
        for topic_id, subscribed in person.topic_prefs.items():
            await conn.execute(
                "INSERT INTO contact_topics (contact_id, topic_id, subscribed, source) "
                "VALUES ($1, $2, $3, 'test')",
                cid,
                topic_id,
                subscribed,
            )
        if not gone:
            for s in person.suppressions:
                await conn.execute(
                    "INSERT INTO suppressions (email_hash, scope, channel, topic_id, reason, "
                    "source) VALUES ($1, $2, $3, $4, $5, 'test') ON CONFLICT DO NOTHING",
                    address_hash(email),
                    s.scope.value,
                    s.channel.value if s.channel else None,
                    s.topic_id,
                    s.reason.value,
                )
    return ids


def _python_verdicts(
    people: list[FakeContact],
    erased: list[bool],
    ids: list[int],
    spec: AudienceSpec,
    seg: str | None,
) -> dict[int, tuple[str | None, str | None]]:
    verdicts: dict[int, tuple[str | None, str | None]] = {}
    for cid, person, gone in zip(ids, people, erased, strict=True):
        entries = []
        for n, row in enumerate(person.ledger):
            channel, action, kind, obtained, ends, topic = _normalised_row(row)
            # Ledger ids follow insertion order across contacts; only order within one matters.
            entries.append(LedgerEntry(n + 1, channel, action, kind, "test", obtained, ends, topic))
        in_segment = True
        if seg is not None:
            facts = segment.SegmentFacts(
                email=None if gone else "x@example.com",
                name=None,
                locale=person.locale,
                attributes={},
                last_activity_at=person.last_activity_at,
                topics=frozenset(),
            )
            in_segment = segment_eval.evaluate(segment_parser.parse(seg), facts, AT)
        verdict = eligibility.evaluate(
            ContactFacts(
                gone, person.last_activity_at, person.channel_prefs, person.topic_prefs, in_segment
            ),
            entries,
            [] if gone else person.suppressions,
            spec,
        )
        justified = verdict.consent.kind if verdict.consent else None
        verdicts[cid] = (
            verdict.reason.value if verdict.reason else None,
            justified.value if justified else None,
        )
    return verdicts


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    people=st.lists(contacts, min_size=1, max_size=6),
    erased=st.lists(st.sampled_from([False, False, False, True]), min_size=6, max_size=6),
    spec_values=specs,
    batched=st.booleans(),
)
async def test_the_audience_sql_and_the_python_rules_agree_on_every_contact(
    stores: Stores,
    conn: asyncpg.Connection,
    people: list[FakeContact],
    erased: list[bool],
    spec_values: tuple[int, bool, Policy, int | None, str | None],
    batched: bool,
) -> None:
    topic_id, default_subscribed, policy, active, seg = spec_values
    gone = erased[: len(people)]
    ids = await _load(conn, people, gone, batched)
    spec = AudienceSpec(Channel.EMAIL, topic_id, default_subscribed, policy, AT, active)
    campaign = CampaignSpec(0, topic_id, default_subscribed, "email", policy.value, seg, active)
    rows = await stores.campaigns.audience(campaign, AT)
    got = {r.contact_id: (r.reason, r.consent_kind) for r in rows}
    assert got == _python_verdicts(people, gone, ids, spec, seg)


def test_a_hostile_segment_reaches_the_audience_sql_only_as_a_parameter() -> None:
    hostile = 'attributes.x = "\'; DROP TABLE contacts; --"'
    campaign = CampaignSpec(0, 1, True, "email", "casl", hostile, None)
    sql, args = audience_query(campaign, AT, None)
    assert "DROP TABLE" not in sql
    assert "'; DROP TABLE contacts; --" in args


async def test_two_grants_without_an_end_pick_the_later_obtained_in_sql_as_in_python(
    stores: Stores, conn: asyncpg.Connection
) -> None:
    # An ongoing contract (no end yet) obtained last year, then an older published address
    # (no end) recorded afterwards, so with the higher ledger id: the later obtained wins.
    person = FakeContact(
        locale="en",
        last_activity_at=AT,
        channel_prefs={},
        topic_prefs={1: True},
        ledger=[
            (
                Channel.EMAIL,
                Action.GRANT,
                Kind.IMPLIED_CONTRACT,
                AT - timedelta(days=150),
                None,
                None,
            ),
            (
                Channel.EMAIL,
                Action.GRANT,
                Kind.IMPLIED_PUBLICATION,
                AT - timedelta(days=500),
                None,
                None,
            ),
        ],
        suppressions=[],
    )
    ids = await _load(conn, [person], [False])
    spec = AudienceSpec(Channel.EMAIL, 1, True, Policy.CASL, AT, None)
    rows = await stores.campaigns.audience(
        CampaignSpec(0, 1, True, "email", "casl", None, None), AT
    )
    got = {r.contact_id: (r.reason, r.consent_kind) for r in rows}
    assert got == _python_verdicts([person], [False], ids, spec, None)
    assert got[ids[0]] == (None, "implied_contract")
