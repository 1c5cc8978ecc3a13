"""Consent rules: the ledger's vocabulary, and which grant is valid when under the law.

Pure functions over values. The ledger is append-only: a later row about the same
channel and kind supersedes an earlier one, a withdraw row cancels every grant before
it, and expiry is always computed from the law's figures, never read from `expire` rows.
Whether a contact may receive a campaign (suppressions, preferences, segment, activity,
then this consent verdict) is mailer/core/eligibility.py.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    POSTAL = "postal"
    PHONE = "phone"


DIGITAL_CHANNELS = frozenset({Channel.EMAIL, Channel.SMS})


class Kind(StrEnum):
    EXPRESS = "express"
    IMPLIED_PURCHASE = "implied_purchase"  # purchase, lease or contract transaction
    IMPLIED_CONTRACT = "implied_contract"  # ongoing contract or subscription
    IMPLIED_INQUIRY = "implied_inquiry"  # inquiry or application
    IMPLIED_PUBLICATION = "implied_publication"  # conspicuous publication, business card


class Action(StrEnum):
    GRANT = "grant"
    WITHDRAW = "withdraw"
    EXPIRE = "expire"


class Policy(StrEnum):
    CASL = "casl"
    CAN_SPAM = "can_spam"
    GDPR = "gdpr"


class Reason(StrEnum):
    """Exclusion reasons; declaration order is evaluation order (first failing wins)."""

    SEGMENT = "segment"
    ERASED = "erased"
    HARD_BOUNCED = "hard_bounced"
    COMPLAINED = "complained"
    REGISTRY = "registry"
    SUPPRESSED_GLOBAL = "suppressed_global"
    UNSUBSCRIBED_CHANNEL = "unsubscribed_channel"
    UNSUBSCRIBED_TOPIC = "unsubscribed_topic"
    NOT_SUBSCRIBED_TOPIC = "not_subscribed_topic"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    NO_CONSENT = "no_consent"
    CONSENT_EXPIRED = "consent_expired"
    INACTIVE = "inactive"


# One plain-English line per exclusion reason, for audience reports and the preference centre.
REASON_TEXT: dict[Reason, str] = {
    Reason.SEGMENT: "not in the campaign's segment",
    Reason.ERASED: "personal data erased at the person's request",
    Reason.HARD_BOUNCED: "address hard-bounced",
    Reason.COMPLAINED: "reported a message as spam",
    Reason.REGISTRY: "listed in an imported do-not-contact registry",
    Reason.SUPPRESSED_GLOBAL: "suppressed from all mailings",
    Reason.UNSUBSCRIBED_CHANNEL: "unsubscribed from this channel",
    Reason.UNSUBSCRIBED_TOPIC: "unsubscribed from this topic",
    Reason.NOT_SUBSCRIBED_TOPIC: "never subscribed to this opt-in topic",
    Reason.CONSENT_WITHDRAWN: "consent withdrawn",
    Reason.NO_CONSENT: "no consent on record",
    Reason.CONSENT_EXPIRED: "implied consent expired",
    Reason.INACTIVE: "no activity within the campaign's activity window",
}


class SuppressionReason(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    REGISTRY = "registry"
    MANUAL = "manual"
    ERASURE = "erasure"


class SuppressionScope(StrEnum):
    GLOBAL = "global"
    CHANNEL = "channel"
    TOPIC = "topic"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: int
    channel: Channel
    action: Action
    kind: Kind | None
    source: str
    obtained_at: datetime
    ends_at: datetime | None = None
    topic_id: int | None = None
    # Given as a date, not a time: printed as given (mailer.core.consent_dates).
    obtained_date_only: bool = False

    def __post_init__(self) -> None:
        # Fail at construction, naming the row, rather than deep inside a comparison.
        if self.action is Action.GRANT and self.kind is None and self.topic_id is None:
            # Topic rows (a subscription to a topic) carry no consent kind.
            raise ValueError(f"ledger row {self.id}: a consent grant needs a kind")
        if self.obtained_at.tzinfo is None:
            raise ValueError(f"ledger row {self.id}: obtained_at must be timezone-aware")
        if self.ends_at is not None and self.ends_at.tzinfo is None:
            raise ValueError(f"ledger row {self.id}: ends_at must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Suppression:
    scope: SuppressionScope
    reason: SuppressionReason
    channel: Channel | None = None
    topic_id: int | None = None


@dataclass(frozen=True, slots=True)
class ContactRecord:
    """Everything the rules need about one contact, as read from the database."""

    email: str
    name: str | None
    locale: str
    attributes: dict[str, Any]
    last_activity_at: datetime | None
    erased: bool
    ledger: tuple[LedgerEntry, ...]
    suppressions: tuple[Suppression, ...]
    channel_prefs: dict[Channel, bool]
    topic_prefs: dict[int, bool]
    subscribed_topics: frozenset[str]


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Reason | None
    consent: LedgerEntry | None  # the grant that justifies sending; None when excluded
    detail: str

    @property
    def eligible(self) -> bool:
        """True when no exclusion reason applies."""
        return self.reason is None


def add_months(dt: datetime, n: int) -> datetime:
    """Add n calendar months, clamping the day to the target month's end (Postgres rule)."""
    # Postgres adds an interval on the wall clock of the session zone; the audience query
    # runs in UTC, so aware datetimes are shifted in UTC and handed back in their own zone.
    tz = dt.tzinfo
    base = dt.astimezone(UTC) if tz is not None else dt
    year, month0 = divmod(base.year * 12 + base.month - 1 + n, 12)
    day = min(base.day, calendar.monthrange(year, month0 + 1)[1])
    shifted = base.replace(year=year, month=month0 + 1, day=day)
    return shifted.astimezone(tz) if tz is not None else shifted


def add_years(dt: datetime, n: int) -> datetime:
    """Add n calendar years (2024-02-29 + 1 year = 2025-02-28)."""
    return add_months(dt, 12 * n)


def valid_until(entry: LedgerEntry) -> datetime | None:
    """End instant (exclusive) of a grant's validity under CASL; None means no end."""
    match entry.kind:
        case Kind.IMPLIED_PURCHASE:
            # CASL s.10(10)(a)/(b): two years after the purchase, lease or contract
            return add_years(entry.obtained_at, 2)
        case Kind.IMPLIED_CONTRACT:
            # CASL s.10(10)(b): two years after an ongoing contract or subscription ends
            return None if entry.ends_at is None else add_years(entry.ends_at, 2)
        case Kind.IMPLIED_INQUIRY:
            # CASL s.10(10)(c): six months after an inquiry or application
            return add_months(entry.obtained_at, 6)
        case Kind.IMPLIED_PUBLICATION:
            # CASL s.10(9)(b): while the published address is relevant to the person's role
            return entry.ends_at
        case _:
            # CASL s.10(1): express consent lasts until withdrawn
            return None


def is_valid_at(entry: LedgerEntry, t: datetime) -> bool:
    """Whether a grant is valid at t (expired on the exact expiry instant)."""
    end = valid_until(entry)
    return entry.obtained_at <= t and (end is None or t < end)


def _order(entry: LedgerEntry) -> tuple[datetime, int]:
    return (entry.obtained_at, entry.id)


def _live_grants(
    ledger: Iterable[LedgerEntry], channel: Channel, t: datetime
) -> tuple[list[LedgerEntry], LedgerEntry | None]:
    """Latest grant per kind after the last withdrawal, and that withdrawal."""
    rows = sorted(
        (
            e
            for e in ledger
            if e.channel == channel
            and e.topic_id is None  # topic rows are preference history, not consent
            and e.action in (Action.GRANT, Action.WITHDRAW)  # expire rows are audit only
            and e.obtained_at <= t
        ),
        key=_order,
    )
    withdrawal: LedgerEntry | None = None
    latest: dict[Kind, LedgerEntry] = {}
    for row in rows:
        if row.action is Action.WITHDRAW:
            withdrawal = row
            latest.clear()  # a withdrawal cancels every grant before it
        elif row.kind is not None:
            latest[row.kind] = row  # a later row about the same kind supersedes
    return list(latest.values()), withdrawal


def _best(grants: Sequence[LedgerEntry]) -> LedgerEntry:
    """Express first, else the latest end (no end counts as latest), ties to the higher id."""
    for g in grants:
        if g.kind is Kind.EXPRESS:
            return g

    def key(g: LedgerEntry) -> tuple[bool, datetime, int]:
        end = valid_until(g)
        return (end is None, end or g.obtained_at, g.id)

    return max(grants, key=key)


_KIND_PHRASE: dict[Kind, str] = {
    Kind.EXPRESS: "express consent",
    Kind.IMPLIED_PURCHASE: "implied consent from purchase",
    Kind.IMPLIED_CONTRACT: "implied consent from contract",
    Kind.IMPLIED_INQUIRY: "implied consent from inquiry",
    Kind.IMPLIED_PUBLICATION: "implied consent from publication",
}


def utc_day(dt: datetime) -> str:
    """The instant's day in UTC, as YYYY-MM-DD: how verdicts and descriptions print dates."""
    return dt.astimezone(UTC).date().isoformat()


def _phrase(entry: LedgerEntry) -> str:
    return _KIND_PHRASE[entry.kind] if entry.kind is not None else "consent"


def describe(entry: LedgerEntry) -> str:
    """Plain-English origin and term of a grant, as shown in reports and the preference centre."""
    phrase = _phrase(entry)
    if entry.kind is Kind.EXPRESS:
        return f"{phrase} on {utc_day(entry.obtained_at)} ({entry.source})"
    end = valid_until(entry)
    if end is not None:
        return f"{phrase} on {utc_day(entry.obtained_at)}, valid until {utc_day(end)}"
    if entry.kind is Kind.IMPLIED_CONTRACT:
        return f"{phrase} on {utc_day(entry.obtained_at)}, while the contract is ongoing"
    return f"{phrase} on {utc_day(entry.obtained_at)}, while relevant to the person's role"


def evaluate_consent(
    ledger: Iterable[LedgerEntry], channel: Channel, policy: Policy, t: datetime
) -> Verdict:
    """Consent verdict for one contact's ledger on a channel at instant t under a policy."""
    grants, withdrawal = _live_grants(ledger, channel, t)
    if policy is Policy.GDPR:
        # GDPR art. 7 as configured here: only express consent counts, implied is ignored.
        grants = [g for g in grants if g.kind is Kind.EXPRESS]
    valid = [g for g in grants if is_valid_at(g, t)]

    if policy is Policy.CAN_SPAM:
        # CAN-SPAM 15 U.S.C. 7704(a)(4): opt-out model, only an unrenewed opt-out excludes.
        if withdrawal is not None and not grants:
            return _withdrawn(withdrawal)
        if valid:
            best = _best(valid)
            return Verdict(None, best, describe(best))
        return Verdict(None, None, "no opt-out on record (CAN-SPAM opt-out model)")

    if valid:
        best = _best(valid)
        return Verdict(None, best, describe(best))
    if grants:
        # Every kept grant has lapsed (express never does): report the one that lasted longest.
        lapsed = _best(grants)
        end = valid_until(lapsed)
        assert end is not None  # an invalid grant obtained by t always has an end
        detail = f"{_phrase(lapsed)} on {utc_day(lapsed.obtained_at)} expired on {utc_day(end)}"
        return Verdict(Reason.CONSENT_EXPIRED, None, detail)
    if withdrawal is not None:
        return _withdrawn(withdrawal)
    qualifier = "express " if policy is Policy.GDPR else ""
    return Verdict(Reason.NO_CONSENT, None, f"no {qualifier}{channel} consent on record")


def _withdrawn(withdrawal: LedgerEntry) -> Verdict:
    detail = f"consent withdrawn on {utc_day(withdrawal.obtained_at)}"
    return Verdict(Reason.CONSENT_WITHDRAWN, None, detail)


def expiring(
    ledger: Iterable[LedgerEntry], channel: Channel, at: datetime, within: timedelta
) -> list[tuple[LedgerEntry, datetime]]:
    """Live implied grants valid at `at` whose validity ends in [at, at + within), soonest first."""
    grants, _ = _live_grants(ledger, channel, at)
    soon: list[tuple[LedgerEntry, datetime]] = []
    for g in grants:
        end = valid_until(g)
        implied = g.kind is not Kind.EXPRESS
        if implied and end is not None and is_valid_at(g, at) and at <= end < at + within:
            soon.append((g, end))
    return sorted(soon, key=lambda pair: (pair[1], pair[0].id))
