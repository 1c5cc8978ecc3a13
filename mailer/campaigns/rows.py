"""The typed rows the campaign store returns (store.py builds them from campaigns.sql's
answers): plain values, so the pages, the CLI and the audit read them without asyncpg."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple


class AudienceRow(NamedTuple):
    contact_id: int
    domain: str
    reason: str | None
    consent_id: int | None
    consent_kind: str | None
    consent_source: str | None
    consent_obtained_at: datetime | None
    consent_valid_until: datetime | None = None  # None: no end (express) or not eligible


@dataclass(frozen=True, slots=True)
class Campaign:
    id: int
    slug: str
    status: str
    definition: dict[str, Any]
    template_version_id: int | None
    scheduled_at: datetime | None
    audience_at: datetime | None
    audience_counts: dict[str, int] | None
    started_at: datetime | None
    finished_at: datetime | None
    topic_slug: str
    # Why the reputation guard paused it (mailer/inbound/guard.py); None otherwise.
    pause_reason: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CampaignListing:
    slug: str
    name: str
    status: str
    topic: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deliveries: int


@dataclass(frozen=True, slots=True)
class ExpiringConsent:
    """An implied consent about to lapse: someone to ask for express consent."""

    email: str
    name: str | None
    locale: str
    kind: str
    source: str
    obtained_at: datetime
    valid_until: datetime
    obtained_date_only: bool
    ends_date_only: bool


@dataclass(frozen=True, slots=True)
class CampaignOverview:
    """A campaign as the console's dashboard shows it: state, progress, pause reason."""

    id: int
    slug: str
    name: str
    status: str
    topic: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None
    pause_reason: dict[str, Any] | None
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Deliveries with a final state."""
        return sum(n for s, n in self.counts.items() if s not in ("queued", "sending", "deferred"))


@dataclass(frozen=True, slots=True)
class ReasonBreakdown:
    """One line of an audience: a reason (or 'eligible'), its count, a few addresses."""

    reason: str
    contacts: int
    sample: list[str]


class Unbuilt(NamedTuple):
    """A message that could not be built for its contact, and why (campaign status)."""

    email: str | None  # None: the contact was erased since
    reason: str
    error: str


@dataclass(frozen=True)
class FreezeResult:
    added: int
    counts: dict[str, int]
