"""A campaign's audience: who may receive it, and why the others may not.

The set-based SQL in queries.sql (`audience`) decides for millions of
contacts at once; this module answers for one contact, in plain words, with
the pure rules of mailer/consent.py that the SQL is proven equal to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailer.core import consent, segment
from mailer.core.consent import (
    Action,
    AudienceSpec,
    Channel,
    ContactFacts,
    Kind,
    LedgerEntry,
    Policy,
    Suppression,
    SuppressionReason,
    SuppressionScope,
    Verdict,
)
from mailer.db import queries


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
    sql = queries.get("audience")
    args: list[Any] = [
        spec.topic_id,
        spec.topic_default_subscribed,
        spec.channel,
        spec.policy,
        at,
        spec.active_within_months,
    ]
    if spec.segment:
        fragment, params = segment.compile_sql(
            segment.parse(spec.segment), first_param=len(args) + 1, now_param="$5"
        )
        sql = sql.replace("/*segment*/ true", f"({fragment})")
        args += params
    if contact_ids is not None:
        args.append(contact_ids)
        for name in _MARKERS:
            fragment = queries.get(f"audience_fragment_{name}").replace(":ids", f"${len(args)}")
            sql = sql.replace(f"/*{name}*/", fragment)
    elif id_range is not None:
        args += list(id_range)
        lo, hi = f"${len(args) - 1}", f"${len(args)}"
        for name in _MARKERS:
            if name not in _WHOLE_IN_RANGES:
                fragment = queries.get(f"audience_range_{name}").replace(":lo", lo)
                sql = sql.replace(f"/*{name}*/", fragment.replace(":hi", hi))
    return sql, args


def id_ranges(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """[lo, hi] cut into at most `parts` inclusive ranges of (nearly) equal width."""
    width = max(1, -(-(hi - lo + 1) // parts))
    return [(start, min(hi, start + width - 1)) for start in range(lo, hi + 1, width)]


_DURATION = re.compile(r"(\d+)\s*(d|day|days|w|week|weeks|m|month|months)")


def parse_duration(text: str, *, now: datetime) -> timedelta:
    """'30d', '2w', '6m' (calendar months from now) as a timedelta; ValueError names the problem."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 2w or 6m")
    amount, unit = int(match.group(1)), match.group(2)[0]
    if unit == "d":
        return timedelta(days=amount)
    if unit == "w":
        return timedelta(weeks=amount)
    return consent.add_months(now, amount) - now


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def explain(inputs: dict[str, Any], spec: CampaignSpec, at: datetime) -> Verdict:
    """The verdict for one contact (from Store.contact_rule_inputs) and a campaign."""
    ledger = [
        LedgerEntry(
            id=row["id"],
            channel=Channel(row["channel"]),
            action=Action(row["action"]),
            kind=Kind(row["kind"]) if row["kind"] else None,
            source=row["source"],
            obtained_at=datetime.fromisoformat(row["obtained_at"]),
            ends_at=_when(row["ends_at"]),
            topic_id=row["topic_id"],
        )
        for row in inputs["ledger"]
    ]
    suppressions = [
        Suppression(
            SuppressionScope(s["scope"]),
            SuppressionReason(s["reason"]),
            Channel(s["channel"]) if s["channel"] else None,
            s["topic_id"],
        )
        for s in inputs["suppressions"]
    ]
    in_segment = True
    if spec.segment:
        facts = segment.SegmentFacts(
            email=inputs["email"],
            name=inputs["name"],
            locale=inputs["locale"],
            attributes=inputs["attributes"],
            last_activity_at=inputs["last_activity_at"],
            topics=frozenset(inputs["topic_slugs"]),
        )
        in_segment = segment.evaluate(segment.parse(spec.segment), facts, at)
    facts_ = ContactFacts(
        erased=inputs["erased_at"] is not None,
        last_activity_at=inputs["last_activity_at"],
        channel_prefs={Channel(k): v for k, v in inputs["channels"].items()},
        topic_prefs={int(k): v for k, v in inputs["topics"].items()},
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
    return consent.evaluate(facts_, ledger, suppressions, audience_spec)
