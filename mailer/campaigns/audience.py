"""A campaign's audience: who may receive it, and why the others may not.

The set-based SQL in queries.sql (`audience`) decides for millions of
contacts at once; this module answers for one contact, in plain words, with
the pure rules of mailer/core/eligibility.py that the SQL is proven equal to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailer.core import consent, eligibility, segment, segment_eval, segment_parser, segment_sql
from mailer.core.consent import Channel, ContactRecord, Policy, Verdict
from mailer.core.eligibility import AudienceSpec, ContactFacts
from mailer.db import Queries

# The audience SQL and its fragments (campaigns.sql); the store runs what this composes.
_SQL = Queries("mailer.campaigns", "campaigns.sql")


@dataclass(frozen=True)
class CampaignSpec:
    """The campaign fields the audience query needs."""

    id: int
    topic_id: int
    topic_default_subscribed: bool
    channel: str
    policy: str
    segment: str | None
    active_within_months: int | None

    @classmethod
    def from_row(cls, row: Any) -> CampaignSpec:
        return cls(
            id=row["id"],
            topic_id=row["topic_id"],
            topic_default_subscribed=row["default_subscribed"],
            channel=row["channel"],
            policy=row["policy"],
            segment=row["segment"],
            active_within_months=row["active_within_months"],
        )


# Markers /*NAME*/ in the audience SQL, replaced to narrow it to some contacts by
# `audience_fragment_NAME` (a list of ids) or `audience_range_NAME` (an id range).
_MARKERS = (
    "current_contacts",
    "suppression_contacts",
    "channel_contacts",
    "topic_contacts",
    "contacts",
)
# Few rows, keyed by address hash: a range reads the whole table.
_WHOLE_IN_RANGES = frozenset({"suppression_contacts"})


def audience_query(
    spec: CampaignSpec,
    at: datetime,
    contact_ids: list[int] | None,
    id_range: tuple[int, int] | None = None,
) -> tuple[str, list[Any]]:
    """The audience SQL for a campaign, with its segment compiled to parameters.

    Narrowed to `contact_ids` (the engine's re-check) or to ids within
    `id_range` inclusive (one part of a whole audience computed in parallel).
    Only fixed fragments from queries.sql and the segment compiler's output
    (which never inlines a value) are spliced in; every value is a parameter.
    """
    sql = _SQL("audience")
    args: list[Any] = [
        spec.topic_id,
        spec.topic_default_subscribed,
        spec.channel,
        spec.policy,
        at,
        spec.active_within_months,
    ]
    if spec.segment:
        fragment, params = segment_sql.compile_sql(
            segment_parser.parse(spec.segment), first_param=len(args) + 1, now_param="$5"
        )
        sql = sql.replace("/*segment*/ true", f"({fragment})")
        args += params
    if contact_ids is not None:
        args.append(contact_ids)
        for name in _MARKERS:
            fragment = _SQL(f"audience_fragment_{name}").replace(":ids", f"${len(args)}")
            sql = sql.replace(f"/*{name}*/", fragment)
    elif id_range is not None:
        args += list(id_range)
        lo, hi = f"${len(args) - 1}", f"${len(args)}"
        for name in _MARKERS:
            if name not in _WHOLE_IN_RANGES:
                fragment = _SQL(f"audience_range_{name}").replace(":lo", lo)
                sql = sql.replace(f"/*{name}*/", fragment.replace(":hi", hi))
    return sql, args


def id_ranges(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi] cut into at most `parts` inclusive ranges of (nearly) equal width."""
    width = max(1, -(-(hi - lo + 1) // parts))
    return [(start, min(hi, start + width - 1)) for start in range(lo, hi + 1, width)]


_DURATION = re.compile(r"(\d+)\s*(d|day|days|w|week|weeks|m|month|months)")


_LONGEST = {"d": 36_525, "w": 5_218, "m": 1_200}  # 100 years in each unit


def parse_duration(text: str, *, now: datetime) -> timedelta:
    """'30d', '2w', '6m' (calendar months from now) as a timedelta; ValueError names the problem."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 2w or 6m")
    amount, unit = int(match.group(1)), match.group(2)[0]
    # Past a century the window is a typo, and past ~8,000 years no date can hold its end.
    if amount > _LONGEST[unit]:
        raise ValueError(f"{text!r} is longer than 100 years")
    if unit == "d":
        return timedelta(days=amount)
    if unit == "w":
        return timedelta(weeks=amount)
    return consent.add_months(now, amount) - now


def explain(record: ContactRecord, spec: CampaignSpec, at: datetime) -> Verdict:
    """The verdict for one contact (ContactStore.contact_rule_inputs) and a campaign."""
    in_segment = True
    if spec.segment:
        facts = segment.SegmentFacts(
            email=record.email,
            name=record.name,
            locale=record.locale,
            attributes=record.attributes,
            last_activity_at=record.last_activity_at,
            topics=record.subscribed_topics,
        )
        in_segment = segment_eval.evaluate(segment_parser.parse(spec.segment), facts, at)
    facts_ = ContactFacts(
        erased=record.erased,
        last_activity_at=record.last_activity_at,
        channel_prefs=record.channel_prefs,
        topic_prefs=record.topic_prefs,
        in_segment=in_segment,
    )
    audience_spec = AudienceSpec(
        channel=Channel(spec.channel),
        topic_id=spec.topic_id,
        topic_default_subscribed=spec.topic_default_subscribed,
        policy=Policy(spec.policy),
        at=at,
        active_within_months=spec.active_within_months,
    )
    return eligibility.evaluate(facts_, record.ledger, record.suppressions, audience_spec)
