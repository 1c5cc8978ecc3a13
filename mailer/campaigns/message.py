"""A campaign's message pipeline: sign the tokens, render, assemble, optionally DKIM-sign, hash.

`Composer` is the per-campaign pipeline the engine calls once per delivery; it keeps what is
constant for the campaign (the pre-encoded Skeleton of mailer/campaigns/mime.py, the
Feedback-ID, the link ids, the Date string of the current second). Its `Composed.archive`
is what archive.render_inputs stores, and `reproduce()` turns that back into the same bytes.

DKIM and the archive: the SHA-256 covers the bytes handed to SMTP, signatures included, and
the archive keeps the DKIM-Signature fields as sent. A signature carries its time (t=), and
re-signing would need the key of the day (rotated since, perhaps): reproduction re-renders
the unsigned message and puts the archived fields back in front, so `archive show` proves
the exact bytes, and the archived signature still verifies against them while the selector's
public key is published.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from mailer.campaigns.campaign_file import from_mapping
from mailer.campaigns.definition import CampaignDefinition
from mailer.campaigns.guards import MESSAGE_TOO_LARGE
from mailer.campaigns.headers import check_header
from mailer.campaigns.mime import Envelope, Skeleton
from mailer.campaigns.render import LimitError, Renderer
from mailer.campaigns.render_inputs import CampaignFields, RenderInputs
from mailer.campaigns.template_set import TemplateSet
from mailer.core.consent import Kind
from mailer.core.dkim import DkimSigner
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring, Purpose, Token

__all__ = [
    "CampaignContent",
    "Composed",
    "Composer",
    "Recipient",
    "campaign_composer",
    "reproduce",
]


@dataclass(frozen=True, slots=True)
class Recipient:
    """One delivery as the engine claims it: contact values and the consent frozen on it."""

    delivery_id: int
    email: str
    name: str | None
    locale: str
    attributes: Mapping[str, Any]
    consent_kind: Kind | None
    consent_source: str
    consent_obtained_at: datetime | None
    tracking: bool = True  # contacts.tracking
    # The consent was given as a calendar date (consents.obtained_date_only): printed as given.
    consent_date_only: bool = False


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready for SMTP, with what the archive keeps about it."""

    data: bytes
    sha256: str  # hex, over exactly `data`
    return_path: str  # SMTP MAIL FROM: bounces+TOKEN@domain
    archive: dict[str, Any]  # archive.render_inputs: reproduce(template_set, archive) == data


class _ClickMap(dict[str, str]):
    """Signs a click URL the first time a registered link is looked up; holds those it signed.

    A dict, so lookups after the first and the archive copy stay at C speed.
    """

    __slots__ = ("_base", "_delivery_id", "_ids", "_issued_at", "_sign")

    def __init__(
        self,
        ids: Mapping[str, int],
        sign: Callable[[Token], str],
        delivery_id: int,
        issued_at: int,
        base: str,
    ) -> None:
        super().__init__()
        self._ids = ids
        self._sign = sign
        self._delivery_id = delivery_id
        self._issued_at = issued_at
        self._base = base

    def __missing__(self, url: str) -> str:
        token = Token(Purpose.CLICK, self._delivery_id, self._ids[url], self._issued_at)
        signed = self[url] = f"{self._base}/c/{self._sign(token)}"
        return signed


class Composer:
    """A campaign's message pipeline: compose(recipient, now) per delivery."""

    def __init__(
        self,
        definition: CampaignDefinition,
        renderer: Renderer,
        keyring: Keyring,
        *,
        tracker_base_url: str,
        sender_domain: str,
        bounce_local_part: str = "bounces",
        unsubscribe_mailbox: str = "unsubscribe",
        link_ids: Mapping[str, int] | None = None,
        dkim: DkimSigner | None = None,
        max_bytes: int | None = None,
        random_part: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.campaign = CampaignFields.from_definition(definition)
        self._campaign_json = self.campaign.to_json()
        self._tracking = definition.tracking
        self._renderer = renderer
        self._sign = keyring.sign
        self._base = tracker_base_url.rstrip("/")
        self._domain = sender_domain
        self._bounce = bounce_local_part
        self._mailbox = unsubscribe_mailbox
        self._link_ids: dict[str, int] = dict(link_ids or {})
        self.dkim = dkim
        self._max_bytes = max_bytes
        self._random_part = random_part
        self._skeleton = Skeleton(self.campaign)
        self._feedback_id = f"{definition.slug}:{definition.topic}:{sender_domain}"
        self._date_second = -1
        self._date = ""
        check_header(self._feedback_id, "feedback_id")

    @classmethod
    def for_settings(
        cls,
        definition: CampaignDefinition,
        renderer: Renderer,
        keyring: Keyring,
        settings: Settings,
        *,
        link_ids: Mapping[str, int] | None = None,
    ) -> Composer:
        """Build from Settings; with DKIM keys configured, signs as the From domain (DMARC)."""
        sender = settings.sender
        dkim = None
        if settings.dkim_keys:
            # DMARC alignment: d= is the From domain (each campaign's own), so every
            # From domain publishes the selectors' keys.
            dkim = DkimSigner(settings.dkim_keys, definition.from_address.rpartition("@")[2])
        return cls(
            definition,
            renderer,
            keyring,
            tracker_base_url=settings.tracker.base_url,
            # Empty [sender] domain: the From domain, aligned for DMARC (deliverability.py).
            sender_domain=sender.domain_for(definition.from_address),
            bounce_local_part=sender.bounce_local_part,
            unsubscribe_mailbox=sender.unsubscribe_mailbox,
            link_ids=link_ids,
            dkim=dkim,
            max_bytes=settings.engine.max_message_bytes,
        )

    @property
    def renderer(self) -> Renderer:
        return self._renderer

    def add_links(self, link_ids: Mapping[str, int]) -> None:
        """Register link ids (links.id by url), e.g. after UnregisteredLinks."""
        self._link_ids.update(link_ids)

    def link_ids(self) -> dict[str, int]:
        """A copy of the link ids known so far (links.id by url)."""
        return dict(self._link_ids)

    def compose(self, recipient: Recipient, now: datetime) -> Composed:
        """Build one message; raises MessageError (skip the contact) or UnregisteredLinks."""
        issued = int(now.timestamp())
        did = recipient.delivery_id
        sign = self._sign
        base = self._base
        unsubscribe = sign(Token(Purpose.UNSUBSCRIBE, did, None, issued))
        tracking = self._tracking and recipient.tracking
        clicks = _ClickMap(self._link_ids, sign, did, issued, base)
        inputs = RenderInputs(
            delivery_id=did,
            email=recipient.email,
            name=recipient.name,
            locale=recipient.locale,
            attributes=recipient.attributes,
            consent_kind=recipient.consent_kind,
            consent_source=recipient.consent_source,
            consent_obtained_at=recipient.consent_obtained_at,
            campaign=self.campaign,
            unsubscribe_url=f"{base}/u/{unsubscribe}",
            preferences_url=f"{base}/p/{sign(Token(Purpose.PREFERENCES, did, None, issued))}",
            tracking=tracking,
            pixel_url=f"{base}/o/{sign(Token(Purpose.OPEN, did, None, issued))}"
            if tracking
            else None,
            click_urls=clicks,
            # Always signed (cheap); only re-permission templates show it.
            confirm_url=f"{base}/a/{sign(Token(Purpose.CONFIRM, did, None, issued))}",
            consent_date_only=recipient.consent_date_only,
        )
        parts = self._renderer.render(inputs)
        bounce = sign(Token(Purpose.BOUNCE, did, None, issued))
        if issued != self._date_second:  # one Date string per second, not per message
            self._date_second, self._date = issued, format_datetime(now)
        envelope = Envelope(
            message_id=f"<{did}.{self._random_part()}@{self._domain}>",
            date=self._date,
            # RFC 8058: the HTTPS one-click URI, plus a mailto for clients without it.
            list_unsubscribe=(
                f"<{inputs.unsubscribe_url}>, "
                f"<mailto:{self._mailbox}+{unsubscribe}@{self._domain}?subject=unsubscribe>"
            ),
            feedback_id=self._feedback_id,
            return_path=f"{self._bounce}+{bounce}@{self._domain}",
        )
        data = self._skeleton.assemble(
            parts, name=recipient.name, email=recipient.email, envelope=envelope
        )
        signature = None
        if self.dkim is not None:
            signature = self.dkim.sign(data, issued)
            data = signature + data
        if self._max_bytes is not None and len(data) > self._max_bytes:
            # The rendered parts fit (Renderer's max_output); their MIME encoding may not.
            raise LimitError(
                MESSAGE_TOO_LARGE,
                f"{len(data):,} bytes, over engine.max_message_bytes ({self._max_bytes:,})",
            )
        return Composed(
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
            return_path=envelope.return_path,
            archive={
                "version": 1,
                # click_urls: only the links this message showed, as signed for it.
                "render": inputs.to_json(self._campaign_json),
                "envelope": envelope.to_json(),
                # The DKIM-Signature field(s) as sent: re-signing would need the key and
                # give another t= (see the module's docstring).
                "dkim_signature": None if signature is None else signature.decode("ascii"),
            },
        )


def reproduce(
    templates: TemplateSet, archive: Mapping[str, Any], *, renderer: Renderer | None = None
) -> bytes:
    """The exact bytes of an archived message, from its template version and archive record."""
    inputs = RenderInputs.from_json(archive["render"])
    envelope = Envelope.from_json(archive["envelope"])
    parts = (renderer or Renderer(templates)).render(inputs)
    data = Skeleton(inputs.campaign).assemble(
        parts, name=inputs.name, email=inputs.email, envelope=envelope
    )
    signature = archive.get("dkim_signature")
    return data if signature is None else signature.encode("ascii") + data


@dataclass(frozen=True)
class CampaignContent:
    """What composing a campaign's messages needs from Postgres (picklable: render processes)."""

    definition: dict[str, Any]
    template: str
    files: dict[str, str]
    links: dict[str, int]


def campaign_composer(
    content: CampaignContent, keyring: Keyring, settings: Settings
) -> tuple[CampaignDefinition, Composer]:
    """A campaign's definition and Composer, from what the engine read of it."""
    definition = from_mapping(content.definition, templates_dir=None)
    renderer = Renderer(
        TemplateSet(content.template, content.files), max_output=settings.engine.max_message_bytes
    )
    composer = Composer.for_settings(
        definition, renderer, keyring, settings, link_ids=content.links
    )
    return definition, composer
