"""What one message is rendered from, and what it renders to.

`RenderInputs` are JSON-ready values: the archive keeps them with the template version, so
re-rendering an archived message gives the same bytes. `CampaignFields` is their campaign
part, identical in every message of a campaign.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.campaigns.definition import CampaignDefinition, Sender
from mailer.core.consent import Kind

__all__ = ["CampaignFields", "RenderInputs", "RenderedParts", "resolve_locale"]


@dataclass(frozen=True, slots=True)
class CampaignFields:
    """The campaign values a message needs; identical in every archived message of a campaign."""

    slug: str
    name: str
    topic: str
    subject: Mapping[str, str]
    locales: tuple[str, ...]
    timezone: str
    sender: Sender
    from_name: str
    from_address: str
    reply_to: str | None
    # Re-permission: the exact wording asked for, shown in the message and on the tracker page.
    consent_text: str | None = None

    @classmethod
    def from_definition(cls, d: CampaignDefinition) -> CampaignFields:
        """Take the message-relevant fields of a campaign definition."""
        return cls(
            d.slug,
            d.name,
            d.topic,
            dict(d.subject),
            d.locales,
            d.timezone,
            d.sender,
            d.from_name,
            d.from_address,
            d.reply_to,
            d.consent_text,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        s = self.sender
        return {
            "slug": self.slug,
            "name": self.name,
            "topic": self.topic,
            "subject": dict(self.subject),
            "locales": list(self.locales),
            "timezone": self.timezone,
            "sender": {
                "business_name": s.business_name,
                "postal_address": s.postal_address,
                "phone": s.phone,
                "email": s.email,
                "web": s.web,
            },
            "from_name": self.from_name,
            "from_address": self.from_address,
            "reply_to": self.reply_to,
        } | ({} if self.consent_text is None else {"consent_text": self.consent_text})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CampaignFields:
        """Inverse of to_json()."""
        return cls(
            slug=data["slug"],
            name=data["name"],
            topic=data["topic"],
            subject=dict(data["subject"]),
            locales=tuple(data["locales"]),
            timezone=data["timezone"],
            sender=Sender(**data["sender"]),
            from_name=data["from_name"],
            from_address=data["from_address"],
            reply_to=data["reply_to"],
            consent_text=data.get("consent_text"),  # absent before re-permission campaigns
        )


@dataclass(frozen=True, slots=True)
class RenderInputs:
    """Everything one message is rendered from; archived as JSON to reproduce it."""

    delivery_id: int
    email: str
    name: str | None
    locale: str  # the contact's own; the campaign's locales decide what is rendered
    attributes: Mapping[str, Any]  # JSON values
    consent_kind: Kind | None  # None only under CAN-SPAM's opt-out model
    consent_source: str
    consent_obtained_at: datetime | None
    campaign: CampaignFields
    unsubscribe_url: str
    preferences_url: str
    tracking: bool = False  # campaign and contact both allow tracking
    pixel_url: str | None = None
    # original URL -> signed click URL; at send time a lazy map that signs on first use
    click_urls: Mapping[str, str] = field(default_factory=dict)
    # Re-permission "I agree" link (/a/TOKEN); None in archives written before it existed.
    confirm_url: str | None = None
    # The consent was given as a calendar date, without a time (consents.obtained_date_only):
    # the footer prints that date as given. False in archives written before it existed, which
    # printed every consent date in the sender's zone and must re-render as they were sent.
    consent_date_only: bool = False

    def __post_init__(self) -> None:
        if self.tracking and self.pixel_url is None:
            raise ValueError("tracking needs a pixel_url")
        if self.consent_kind is not None and self.consent_obtained_at is None:
            raise ValueError("a consent kind needs consent_obtained_at")

    def to_json(self, campaign_json: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready dict; pass a cached campaign_json to skip re-encoding the campaign part."""
        obtained = self.consent_obtained_at
        return {
            "delivery_id": self.delivery_id,
            "email": self.email,
            "name": self.name,
            "locale": self.locale,
            "attributes": self.attributes,
            "consent_kind": None if self.consent_kind is None else self.consent_kind.value,
            "consent_source": self.consent_source,
            "consent_obtained_at": None if obtained is None else obtained.isoformat(),
            "campaign": self.campaign.to_json() if campaign_json is None else campaign_json,
            "unsubscribe_url": self.unsubscribe_url,
            "preferences_url": self.preferences_url,
            "tracking": self.tracking,
            "pixel_url": self.pixel_url,
            "click_urls": dict(self.click_urls),
            "confirm_url": self.confirm_url,
            "consent_date_only": self.consent_date_only,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RenderInputs:
        """Inverse of to_json()."""
        obtained = data["consent_obtained_at"]
        kind = data["consent_kind"]
        return cls(
            delivery_id=data["delivery_id"],
            email=data["email"],
            name=data["name"],
            locale=data["locale"],
            attributes=data["attributes"],
            consent_kind=None if kind is None else Kind(kind),
            consent_source=data["consent_source"],
            consent_obtained_at=None if obtained is None else datetime.fromisoformat(obtained),
            campaign=CampaignFields.from_json(data["campaign"]),
            unsubscribe_url=data["unsubscribe_url"],
            preferences_url=data["preferences_url"],
            tracking=data["tracking"],
            pixel_url=data["pixel_url"],
            click_urls=dict(data["click_urls"]),
            confirm_url=data.get("confirm_url"),  # absent from older archives
            consent_date_only=data.get("consent_date_only", False),  # absent before 0007
        )


@dataclass(frozen=True, slots=True)
class RenderedParts:
    """A rendered message: one-line subject, final HTML (tracked, with pixel) and text."""

    subject: str
    html: str
    text: str


def resolve_locale(contact_locale: str, locales: tuple[str, ...]) -> str:
    """The campaign locale to use for a contact: exact tag, then language, then the first."""
    tag = contact_locale.strip().lower().replace("_", "-")
    if tag in locales:
        return tag
    language = tag.partition("-")[0]
    return language if language in locales else locales[0]
