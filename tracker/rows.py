"""What the tracker's store returns (tracker/store.py builds them from its named queries):
the link and delivery of a click, the recipient behind a token, a contact's snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from mailer.core.topics import topic_name
from tracker.preferences import LedgerRow, Preferences


@dataclass(frozen=True, slots=True)
class Link:
    """A campaign link as registered: never changed afterwards, so cacheable by its id."""

    url: str
    campaign_id: int


@dataclass(frozen=True, slots=True)
class SentDelivery:
    """What a click needs of its delivery: whose campaign, and when it was sent."""

    campaign_id: int
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a delivery went to and what it was about: what the pages show and act on."""

    delivery_id: int
    campaign_id: int | None  # None: a transactional message (mailer/transactional)
    contact_id: int
    email: str | None
    email_hash: bytes | None
    name: str | None
    locale: str
    erased: bool
    sender: str | None  # the business's name; None only for a definition lacking it
    channel: str
    topic_id: int | None  # None: an exempt transactional message, about no topic
    topic_name: str  # the default name; pages show topic_label(lang)
    topic_slug: str = ""
    topic_names: Mapping[str, str] = field(default_factory=dict)
    # The campaign's time zone (IANA name; None: UTC), in which its footer printed dates.
    timezone: str | None = None

    def topic_label(self, lang: str) -> str:
        """The campaign topic's name for a reader of `lang` (mailer.core.topics' fallback rule)."""
        if self.topic_id is None:
            return ""
        return topic_name(self.topic_names, self.topic_name, self.topic_slug, lang)


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A re-permission campaign's ledger source and the exact wording asked for."""

    source: str
    consent_text: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A contact's consent history and current preferences, read together."""

    ledger: tuple[LedgerRow, ...]
    preferences: Preferences
