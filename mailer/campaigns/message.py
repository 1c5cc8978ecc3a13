"""Wire bytes for one message, assembled directly from a per-campaign skeleton.

`email.message.EmailMessage` manages ~360 messages/s per core (header parsing and folding
dominate) and compat32 ~940; writing the MIME ourselves from a skeleton whose constant
headers are pre-encoded reaches ~3,000. The format is deliberately narrow: a
multipart/alternative with a UTF-8 text/plain and a text/html part, CRLF everywhere, every
line within RFC 5322's 998 octets. A plain ASCII part goes as 7bit (no work, and base64 over
ASCII is a spam signal); any other goes as base64 (binascii: ~15 µs for 6 KB, where
quoted-printable costs ~70, HTML being full of "=" that QP escapes). The boundary starts
with "=_", which base64 cannot produce, and carries the Message-ID's 64 random bits, which
no 7bit body can guess.

`Composer` is the per-campaign pipeline the engine calls once per delivery: sign the tokens,
render, assemble, optionally DKIM-sign, hash. Its `Composed.archive` is what
archive.render_inputs stores, and `reproduce()` turns that back into the same bytes.

DKIM and the archive: the SHA-256 covers the bytes handed to SMTP, signatures included, and
the archive keeps the DKIM-Signature fields as sent. A signature carries its time (t=), and
re-signing would need the key of the day (rotated since, perhaps): reproduction re-renders
the unsigned message and puts the archived fields back in front, so `archive show` proves
the exact bytes, and the archived signature still verifies against them while the selector's
public key is published.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from mailer.campaigns.campaign_file import from_mapping
from mailer.campaigns.definition import CampaignDefinition
from mailer.campaigns.deliverability import one_click_allowed
from mailer.campaigns.guards import MESSAGE_TOO_LARGE
from mailer.campaigns.render import LimitError, MessageError, Renderer
from mailer.campaigns.render_inputs import CampaignFields, RenderedParts, RenderInputs
from mailer.campaigns.template_set import TemplateSet
from mailer.core.consent import Kind
from mailer.core.dkim import DkimSigner
from mailer.core.settings import Settings
from mailer.core.tokens import Keyring, Purpose, Token

__all__ = [
    "Composed",
    "Composer",
    "Envelope",
    "HeaderInjection",
    "InvalidRecipient",
    "Recipient",
    "Skeleton",
    "reproduce",
]

CRLF = b"\r\n"
_ONE_CLICK = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
# CR/LF would start a new header (injection); other C0 controls, DEL and the Unicode line
# separators break parsers or get "repaired" differently along the way.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# An ASCII addr-spec with a dot-atom local part: what the To header can carry unquoted.
_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
# A display name that needs neither quoting nor encoding (atext and spaces, no "=?").
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~ -]+")
_RAW_SUBJECT_MAX = 900  # longer ASCII subjects are folded as encoded words (998-octet lines)
# RFC 2045 s.6.8: base64 lines of at most 76 characters. Slicing with prepared slices
# is ~35 % faster than computing them for each message (measured on a 6 KB part).
_BASE64_LINES = tuple(slice(i, i + 76) for i in range(0, 1 << 18, 76))  # 256 KiB of base64
_MAX_LINE = 998  # RFC 5322 s.2.1.1, without the CRLF
_WORD_BYTES = 45  # 45 UTF-8 bytes -> 60 base64 chars -> a 72-char encoded word (max 75)


class HeaderInjection(MessageError):
    """A header value from data holds CR, LF or another control character."""

    reason = "header_injection"


class InvalidRecipient(MessageError):
    """The contact's address cannot go into a To header (not an ASCII addr-spec)."""

    reason = "invalid_address"


@dataclass(frozen=True, slots=True)
class Envelope:
    """Per-message header values that are not render inputs; archived with them."""

    message_id: str
    date: str
    list_unsubscribe: str
    feedback_id: str
    return_path: str  # the SMTP MAIL FROM (VERP); not in the bytes, MTAs add Return-Path

    def to_json(self) -> dict[str, str]:
        """JSON-ready dict."""
        return {
            "message_id": self.message_id,
            "date": self.date,
            "list_unsubscribe": self.list_unsubscribe,
            "feedback_id": self.feedback_id,
            "return_path": self.return_path,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Envelope:
        """Inverse of to_json()."""
        return cls(**data)


class Skeleton:
    """A campaign's constant headers, pre-encoded; assemble() adds one message's values."""

    def __init__(self, campaign: CampaignFields) -> None:
        sender = _format_address(campaign.from_name, campaign.from_address, "from")
        self._from = b"From: " + sender + CRLF
        self._reply_to = b""
        if campaign.reply_to:
            self._reply_to = b"Reply-To: " + _format_address(None, campaign.reply_to) + CRLF

    def assemble(
        self, parts: RenderedParts, *, name: str | None, email: str, envelope: Envelope
    ) -> bytes:
        """The message bytes, CRLF line endings, ready for SMTP (before dot-stuffing)."""
        for label, value in (
            ("message_id", envelope.message_id),
            ("date", envelope.date),
            ("list_unsubscribe", envelope.list_unsubscribe),
            ("feedback_id", envelope.feedback_id),
        ):
            _check(value, label)
        to = _format_address(name, email, "to")
        subject = _encode_subject(parts.subject)
        boundary = b"=_" + envelope.message_id.strip("<>").partition("@")[0].encode("ascii")
        text_encoding, text = _body(parts.text)
        html_encoding, html = _body(parts.html)
        return b"".join(
            (
                self._from,
                b"To: ",
                to,
                b"\r\nSubject: ",
                subject,
                b"\r\nDate: ",
                envelope.date.encode("ascii"),
                b"\r\nMessage-ID: ",
                envelope.message_id.encode("ascii"),
                CRLF,
                self._reply_to,
                b"List-Unsubscribe: ",
                envelope.list_unsubscribe.encode("ascii"),
                CRLF,
                _one_click(envelope.list_unsubscribe),
                b"Feedback-ID: ",
                envelope.feedback_id.encode("ascii"),
                b'\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="',
                boundary,
                b'"\r\n\r\n--',
                boundary,
                b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: ",
                text_encoding,
                b"\r\n\r\n",
                text,
                b"--",
                boundary,
                b"\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: ",
                html_encoding,
                b"\r\n\r\n",
                html,
                b"--",
                boundary,
                b"--\r\n",
            )
        )


def _one_click(list_unsubscribe: str) -> bytes:
    """RFC 8058 s.3.1: one-click only with an HTTPS URI (a tracker on http:// keeps the link
    and the mailto without claiming one-click; `campaign check` fails such a campaign).
    Loopback counts as secure: nothing crosses a network (the demo's tracker)."""
    # "<scheme://host[:port]/u/…>, <mailto:…>": the origin decides, and is cached.
    end = list_unsubscribe.find("/", list_unsubscribe.find("://") + 3)
    return _ONE_CLICK if one_click_allowed(list_unsubscribe[1:end]) else b""


def _check(value: str, label: str) -> None:
    if _CONTROL.search(value):
        raise HeaderInjection(f"{label}: control character (CR/LF?) in a header value")


def _format_address(name: str | None, address: str, label: str = "address") -> bytes:
    _check(address, label)
    if name:
        _check(name, f"{label} name")
    if not address.isascii() or not _ADDRESS.fullmatch(address):
        # Non-ASCII addresses would need SMTPUTF8 end to end; refuse rather than mangle.
        raise InvalidRecipient(f"{label}: {address!r} is not an ASCII address")
    if not name:
        return address.encode("ascii")
    if name.isascii():
        # Unquoted, runs of spaces are folding whitespace a reader may collapse: quote those.
        if _PLAIN_PHRASE.fullmatch(name) and name.strip() == name and "  " not in name:
            return f"{name} <{address}>".encode("ascii")
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{address}>'.encode("ascii")
    return _encoded_words(name) + f" <{address}>".encode("ascii")


def _encode_subject(subject: str) -> bytes:
    _check(subject, "subject")
    if subject.isascii() and len(subject) <= _RAW_SUBJECT_MAX and "=?" not in subject:
        return subject.encode("ascii")
    return _encoded_words(subject)


def _encoded_words(text: str) -> bytes:
    """RFC 2047 B-encoded words, split between characters, folded one per line."""
    data = text.encode("utf-8")
    words: list[bytes] = []
    start = 0
    while len(data) - start > _WORD_BYTES:
        end = start + _WORD_BYTES
        while data[end] & 0xC0 == 0x80:  # never split inside a UTF-8 sequence (RFC 2047 s.5)
            end -= 1
        words.append(_b_word(data[start:end]))
        start = end
    words.append(_b_word(data[start:]))
    return b"\r\n ".join(words)


def _b_word(chunk: bytes) -> bytes:
    return b"=?utf-8?b?" + binascii.b2a_base64(chunk, newline=False) + b"?="


def _body(text: str) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded part) for one text part."""
    # RFC 2046 s.4.1.1: text parts travel with CRLF line breaks. On bytes: ~2x faster than
    # on a non-ASCII str, and UTF-8 never hides a CR or LF inside a character.
    data = text.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    data = data.replace(b"\n", b"\r\n")
    if data.isascii() and b"\0" not in data and max(map(len, data.split(CRLF))) <= _MAX_LINE:
        # Plain ASCII needs no encoding; base64 over it would even look like a spam trick
        # (SpamAssassin's MIME_BASE64_TEXT). The CRLF before a boundary belongs to the
        # boundary (RFC 2046 s.5.1.1), so one is always added.
        return b"7bit", data + CRLF
    encoded = binascii.b2a_base64(data, newline=False)
    count = (len(encoded) + 75) // 76
    slices = (
        _BASE64_LINES[:count]
        if count <= len(_BASE64_LINES)
        else [slice(i, i + 76) for i in range(0, len(encoded), 76)]
    )
    lines = [encoded[line] for line in slices]
    lines.append(b"")
    return b"base64", CRLF.join(lines)


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
        _check(self._feedback_id, "feedback_id")

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
