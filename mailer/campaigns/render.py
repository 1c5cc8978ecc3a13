"""Rendering a campaign's subject, HTML and text for one contact, in a Jinja2 sandbox.

A `TemplateSet` is every file a campaign template needs (itself, its locale variants, the
layouts it extends), read once from `templates/`; it is what a template version stores and
hashes. A `Renderer` compiles a set once and renders `RenderInputs`, the JSON-ready values the
archive keeps, so re-rendering an archived message gives the same bytes.

Link tracking without parsing every message. Finding and rewriting links costs ~790 µs per
6 KB message, three times the render itself, so it is done once per campaign on the template
*source*: every literal `href="https://…"` becomes a slot `{{ _mailer_links[N] }}` that renders
the contact's signed click URL (or the original text, byte for byte, when tracking is off).
This holds because a literal href renders to itself. An href with Jinja in it
(`href="https://x/?vin={{ attributes.vin }}"`) renders differently per contact, so a template
holding one is *personalised*: it gets no slots, and each rendered message goes through
`links.find_links` + `links.rewrite` instead. The footer's own links
(`{{ unsubscribe_url }}`, `{{ preferences_url }}`), the re-permission `{{ confirm_url }}`,
mailto:/tel: links and links marked `data-notrack` or `rel="notrack"` are never tracked, so
they keep a template static. In a static template, a link that only a `|safe` value produces
is not in the source: it stays untracked, never broken. Slots are proved equal to
per-message rewriting by a property test.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2 import TemplateNotFound as JinjaNotFound
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from markupsafe import Markup, escape

from mailer.campaigns.definition import CampaignDefinition, Sender
from mailer.campaigns.guards import GuardedSandbox, OverLimit, TooLarge, bounded_join
from mailer.core.consent import Kind
from mailer.core.consent_dates import consent_day
from mailer.core.footer import LABELS, SUPPORTED_LOCALES, consent_sentence, format_date
from mailer.core.links import FoundLink, add_pixel, find_links, rewrite

__all__ = [
    "CampaignFields",
    "LimitError",
    "MessageError",
    "RenderError",
    "RenderInputs",
    "RenderedParts",
    "Renderer",
    "TemplateFileError",
    "TemplateSet",
    "UnregisteredLinks",
    "html_to_text",
    "resolve_locale",
]

# A referenced template name: relative, no "..", no backslashes, no absolute paths.
_REFERENCE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_LOCALE_VARIANT = re.compile(r"\.([a-z]{2})\.(html|txt)")
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_JINJA_RAW = re.compile(r"\{%-?\s*raw\b")
_JINJA_MARK = re.compile(r"\{[{%#]")
_FOOTER_HREF = re.compile(
    r"\s*\{\{-?\s*(?:unsubscribe_url|preferences_url|confirm_url)\s*-?\}\}\s*"
)
_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9+.-]*):")
_NOTRACK = re.compile(r"\sdata-notrack\b|\srel\s*=\s*['\"]?[^'\">]*\bnotrack\b", re.IGNORECASE)
_SLOT = "{{{{ _mailer_links[{}] }}}}"


class TemplateFileError(ValueError):
    """A template file is missing or invalid; the message names the file (and line)."""


class MessageError(Exception):
    """This contact's message cannot be built: the engine marks the delivery skipped."""

    reason = "message_error"  # the deliveries skip reason, also a metric label


class RenderError(MessageError):
    """The template failed for this contact (missing attribute, sandbox refusal, …)."""

    reason = "render_error"


class LimitError(MessageError):
    """The message went over a render limit (time, size, memory): skipped with that reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # render_timeout, message_too_large, render_memory, …

    def __reduce__(self) -> tuple[type[LimitError], tuple[str, str]]:
        # Rebuilt from its reason and text: it crosses from render processes.
        return (LimitError, (self.reason, str(self)))


class UnregisteredLinks(Exception):
    """Trackable URLs without a registered link id: register them, then render again."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        super().__init__(f"{len(urls)} link(s) not registered for the campaign: {urls[0]}")
        self.urls = urls

    def __reduce__(self) -> tuple[type[UnregisteredLinks], tuple[tuple[str, ...]]]:
        # Rebuilt from its urls, not its message: it crosses from render processes.
        return (UnregisteredLinks, (self.urls,))


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """The files one campaign template needs, {filename: source}; stored as a template version."""

    name: str
    files: Mapping[str, str]

    @classmethod
    def load(cls, templates_dir: Path, name: str) -> TemplateSet:
        """Read `<name>.html`, its .txt and locale variants, and every template they reference."""
        if not _TEMPLATE_NAME.fullmatch(name):
            raise TemplateFileError(f"{name!r}: not a template name ([a-z0-9_-], no suffix)")
        main = f"{name}.html"
        if not (templates_dir / main).is_file():
            raise TemplateFileError(f"{templates_dir / main}: template not found")
        wanted = [main]
        for path in sorted(templates_dir.glob(f"{name}.*")):
            rest = path.name[len(name) :]
            if rest == ".txt" or _LOCALE_VARIANT.fullmatch(rest):
                wanted.append(path.name)
        files: dict[str, str] = {}
        parser = ImmutableSandboxedEnvironment()  # parsing only, to find references
        while wanted:
            filename = wanted.pop()
            if filename in files:
                continue
            path = templates_dir / filename
            try:
                # read_text translates CRLF to LF, so the stored version never depends on it.
                source = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise TemplateFileError(f"{path}: {exc.strerror}") from None
            files[filename] = source
            wanted.extend(_references(parser, filename, source))
        return cls(name, dict(sorted(files.items())))

    def canonical_json(self) -> bytes:
        """The files as canonical JSON (sorted keys, no spaces, UTF-8): what the hash covers."""
        return json.dumps(
            dict(self.files), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")

    def sha256(self) -> str:
        """Hex SHA-256 of canonical_json(): template_versions.sha256."""
        return hashlib.sha256(self.canonical_json()).hexdigest()


def _references(parser: ImmutableSandboxedEnvironment, filename: str, source: str) -> list[str]:
    try:
        ast = parser.parse(source, name=filename)
    except TemplateSyntaxError as exc:
        raise TemplateFileError(f"{filename}:{exc.lineno}: {exc.message}") from None
    names: list[str] = []
    for ref in meta.find_referenced_templates(ast):
        # A stored version must be complete, so every dependency has to be known up front.
        if ref is None:
            raise TemplateFileError(f"{filename}: extends/include with a computed name")
        if not _REFERENCE.fullmatch(ref) or ".." in ref.split("/"):
            raise TemplateFileError(f"{filename}: template name {ref!r} is not allowed")
        names.append(ref)
    return names


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


class Renderer:
    """A compiled TemplateSet: render(inputs) per message, nothing re-parsed.

    With `max_output`, a message's parts together may render at most that many characters
    and the sandbox refuses values bigger than that (mailer.guards); None: unbounded
    (reproducing an archived message, which rendered within its limits once).
    """

    def __init__(self, templates: TemplateSet, *, max_output: int | None = None) -> None:
        self.templates = templates
        self.max_output = max_output
        slots, personalised, sources = _plan_links(templates.files)
        self._slots = slots
        # The distinct trackable URLs to register once per campaign (empty when personalised).
        self.links: tuple[str, ...] = tuple(dict.fromkeys(url for url, _ in slots))
        self.personalised_links = personalised
        self._env = _environment(sources, max_output)
        for filename in sorted(sources):
            # Layouts are only loaded when a child renders: compile every file now so that a
            # broken layout stops the campaign here, not once per contact.
            self._compile(filename)
        self._parts: dict[str, tuple[Template, Template | None]] = {}
        name = templates.name
        variant_locales = {
            m[1] for f in templates.files if (m := _LOCALE_VARIANT.fullmatch(f[len(name) :]))
        }
        generic_html, generic_text = f"{name}.html", f"{name}.txt"
        for locale in ("", *sorted(variant_locales)):
            html_name = f"{name}.{locale}.html"
            if html_name not in sources:
                html_name = generic_html
            text_name: str | None = f"{name}.{locale}.txt"
            if text_name not in sources:
                # The generic text only goes with the generic HTML, so a French HTML part
                # never travels with the (English) generic text: it gets a derived one.
                usable = html_name == generic_html and generic_text in sources
                text_name = generic_text if usable else None
            self._parts[locale] = (
                self._compile(html_name),
                None if text_name is None else self._compile(text_name),
            )
        self._subjects: dict[tuple[str, str], Template] = {}
        self._labels = {locale: dict(labels) for locale, labels in LABELS.items()}
        self._campaign: CampaignFields | None = None
        self._globals = dict(self._env.globals)
        self._campaign_values: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self._zones: dict[str, ZoneInfo] = {}

    def _compile(self, filename: str) -> Template:
        try:
            return self._env.get_template(filename)
        except TemplateSyntaxError as exc:
            raise TemplateFileError(f"{exc.name or filename}:{exc.lineno}: {exc.message}") from None
        except JinjaNotFound as exc:
            raise TemplateFileError(f"{filename}: references missing template {exc.name}") from None

    def _subject(self, locale: str, source: str) -> Template:
        key = (locale, source)
        template = self._subjects.get(key)
        if template is None:
            name = f"subject.{locale}"  # neither .html nor .txt: no autoescape in a header
            try:
                code = self._env.compile(source, name, name)
            except TemplateSyntaxError as exc:
                raise TemplateFileError(f"{name}: {exc.message}") from None
            template = self._env.template_class.from_code(
                self._env, code, self._env.make_globals(None)
            )
            self._subjects[key] = template
        return template

    def links_for(self, inputs: RenderInputs) -> list[str]:
        """The trackable URLs this message will need registered (renders when personalised)."""
        if not self.personalised_links:
            return list(self.links)
        locale = resolve_locale(inputs.locale, inputs.campaign.locales)
        html_t, _ = self._parts.get(locale) or self._parts[""]
        html = self._run(html_t, self._context(inputs, locale, None))
        return _distinct_trackable(_found(html, inputs))

    def render(self, inputs: RenderInputs) -> RenderedParts:
        """Render subject, HTML (links tracked, pixel added when tracking) and text."""
        campaign = inputs.campaign
        locale = resolve_locale(inputs.locale, campaign.locales)
        html_t, text_t = self._parts.get(locale) or self._parts[""]
        clicks = inputs.click_urls if inputs.tracking else None
        context = self._context(inputs, locale, clicks)
        html = self._run(html_t, context)
        if clicks is not None and self.personalised_links:
            found = _found(html, inputs)
            missing = tuple(url for url in _distinct_trackable(found) if not _signed(clicks, url))
            if missing:
                raise UnregisteredLinks(missing)
            html = rewrite(html, found, clicks.__getitem__)
        text = html_to_text(html) if text_t is None else self._run(text_t, context, len(html))
        subject_t = self._subject(locale, campaign.subject[locale])
        subject = self._run(subject_t, context, len(html) + len(text)).strip()
        if inputs.tracking and inputs.pixel_url is not None:
            html = _with_pixel(html, inputs.pixel_url)
        return RenderedParts(subject, html, text)

    def consent_sentence(self, inputs: RenderInputs) -> str:
        """The consent-origin sentence this message's footer carries (lint looks for it)."""
        return self._sentence(inputs, resolve_locale(inputs.locale, inputs.campaign.locales))[1]

    def _sentence(self, inputs: RenderInputs, locale: str) -> tuple[datetime | None, str]:
        campaign = inputs.campaign
        obtained = inputs.consent_obtained_at
        day = None
        if obtained is not None:
            # The footer cites a date-only consent as given and a timestamp as its day in the
            # sender's zone, not UTC's (a 22:00 sign-up in Québec is not "the next day").
            zone = self._zones.get(campaign.timezone)
            if zone is None:
                zone = self._zones[campaign.timezone] = ZoneInfo(campaign.timezone)
            day = consent_day(obtained, zone, date_only=inputs.consent_date_only)
            # Templates see the moment in the sender's zone; a date-only consent as the start
            # of its own day there, so `{{ consent.obtained_at | date }}` prints the same day.
            obtained = (
                datetime.combine(day, time(), zone)
                if inputs.consent_date_only
                else obtained.astimezone(zone)
            )
        sentence = consent_sentence(
            inputs.consent_kind,
            inputs.consent_source,
            day,
            locale,
            business_name=campaign.sender.business_name,
        )
        return obtained, sentence

    def _context(
        self, inputs: RenderInputs, locale: str, clicks: Mapping[str, str] | None
    ) -> dict[str, Any]:
        campaign = inputs.campaign
        obtained, sentence = self._sentence(inputs, locale)
        if campaign is not self._campaign:
            # Built once per campaign and shared: the immutable sandbox cannot change them.
            sender = campaign.sender
            self._campaign = campaign
            self._campaign_values = (
                {
                    "business_name": sender.business_name,
                    "postal_address": sender.postal_address,
                    "phone": sender.phone or "",
                    "email": sender.email or "",
                    "web": sender.web or "",
                },
                {"name": campaign.name, "slug": campaign.slug},
            )
        sender_values, campaign_values = self._campaign_values
        return {
            **self._globals,
            "locale": locale,
            "contact": {"name": inputs.name or "", "email": inputs.email},
            "attributes": inputs.attributes,
            "sender": sender_values,
            "campaign": campaign_values,
            "consent": {
                "kind": "" if inputs.consent_kind is None else inputs.consent_kind.value,
                "source": inputs.consent_source,
                "obtained_at": obtained,
                "sentence": sentence,
            },
            "consent_sentence": sentence,
            "unsubscribe_url": inputs.unsubscribe_url,
            "preferences_url": inputs.preferences_url,
            "confirm_url": inputs.confirm_url or "",
            "consent_text": campaign.consent_text or "",
            "footer": self._labels[locale],
            "_mailer_links": _Slots(self._slots, clicks),
        }

    def _run(self, template: Template, context: dict[str, Any], used: int = 0) -> str:
        """Render one template; `used`: characters the message's other parts already took."""
        # Template.render() would merge the globals into a copy of the context on every call
        # (a ChainMap walk, ~5 µs); the context already holds them, so it is passed as is.
        try:
            pieces = template.root_render_func(template.new_context(context, True))
            if self.max_output is None:
                return self._env.concat(pieces)
            return bounded_join(pieces, self.max_output - used)
        except (UnregisteredLinks, MemoryError):
            raise  # MemoryError: the render process ends, and is replaced (mailer.render_pool)
        except (OverLimit, TooLarge) as over:
            # A limit, not a template error: skipped with the limit's reason, naming the line
            # the render had reached.
            try:
                self._env.handle_exception()
            except (OverLimit, TooLarge) as exc:
                raise LimitError(
                    over.reason, f"{_location(exc, template)}: {over.detail}"
                ) from None
            raise  # not reached: handle_exception() always raises
        except Exception:
            # Operator templates can fail in any way for one contact's data (a missing
            # attribute under StrictUndefined, a sandbox refusal, 1/0): skip that contact,
            # say where, and keep the campaign going.
            try:
                self._env.handle_exception()  # re-raises, traceback in template file lines
            except Exception as exc:
                raise RenderError(f"{_location(exc, template)}: {exc}") from exc
            raise  # not reached: handle_exception() always raises


def _with_pixel(html: str, pixel_url: str) -> str:
    """links.add_pixel, without scanning the whole message for the last `</body`."""
    # Every candidate at or after the last "</body>" lies in the tail, and the tail holds
    # at least that one, so add_pixel on the tail picks the same place as on the whole.
    end = html.rfind("</body>")
    if end < 0:
        return add_pixel(html, pixel_url)
    return html[:end] + add_pixel(html[end:], pixel_url)


def _signed(clicks: Mapping[str, str], url: str) -> bool:
    # Indexing, not `in`: at send time click_urls signs a registered link on first lookup.
    try:
        clicks[url]
    except KeyError:
        return False
    return True


def _found(html: str, inputs: RenderInputs) -> list[FoundLink]:
    return find_links(
        html, skip_urls=(inputs.unsubscribe_url, inputs.preferences_url, inputs.confirm_url or "")
    )


def _distinct_trackable(found: list[FoundLink]) -> list[str]:
    return list(dict.fromkeys(link.url for link in found if link.trackable))


class _Slots:
    """`_mailer_links[N]`: slot N's href, tracked (signed on first use) or exactly as written.

    Indexing is a plain `obj[i]` in the sandbox, where a call would cost its safety checks.
    """

    __slots__ = ("_clicks", "_slots")

    def __init__(self, slots: tuple[tuple[str, str], ...], clicks: Mapping[str, str] | None):
        self._slots = slots
        self._clicks = clicks

    def __getitem__(self, index: int) -> Markup:
        url, raw = self._slots[index]
        if self._clicks is None:
            # The operator's own template text, which autoescape never touched either.
            return Markup(raw)  # noqa: S704
        try:
            return escape(self._clicks[url])
        except KeyError:
            raise UnregisteredLinks((url,)) from None


def _location(exc: BaseException, template: Template) -> str:
    # Jinja rewrites tracebacks so template frames carry the template's file name and line.
    where = template.name or "template"
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.endswith(".py") and not filename.startswith("<"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def _plan_links(
    files: Mapping[str, str],
) -> tuple[tuple[tuple[str, str], ...], bool, dict[str, str]]:
    """Slots for the literal trackable hrefs: (slots (url, raw), personalised?, new sources)."""
    sources = dict(files)
    slots: list[tuple[str, str]] = []
    for filename, source in sorted(files.items()):
        if not filename.endswith(".html"):
            continue
        if _JINJA_RAW.search(source):
            return (), True, dict(files)  # {% raw %} would print a slot verbatim
        comments = [m.span() for m in _JINJA_COMMENT.finditer(source)]
        pieces: list[str] = []
        done = 0
        for link in find_links(source):
            if any(start <= link.start < end for start, end in comments):
                continue
            raw = source[link.start : link.end]
            if _JINJA_MARK.search(raw):
                if _never_tracked(source, link, raw):
                    continue
                return (), True, dict(files)
            if not link.trackable:
                continue
            pieces += (source[done : link.start], _SLOT.format(len(slots)))
            slots.append((link.url, raw))
            done = link.end
        if pieces:
            sources[filename] = "".join(pieces) + source[done:]
    return tuple(slots), False, sources


def _never_tracked(source: str, link: FoundLink, raw: str) -> bool:
    """An href with Jinja in it that can never be tracked, so it keeps the template static."""
    if _FOOTER_HREF.fullmatch(raw):
        return True
    scheme = _SCHEME.match(raw)
    if scheme and scheme[1].lower() not in ("http", "https"):
        return True  # mailto:{{ … }}, tel:{{ … }}
    if raw.lstrip().startswith("#"):
        return True
    tag = source[source.rfind("<", 0, link.start) : source.find(">", link.end) + 1]
    return bool(_NOTRACK.search(tag))


class _FilesLoader(BaseLoader):
    """Templates from the stored files only: no filesystem at render time."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self._files = files

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source = self._files.get(template)
        if source is None:
            raise JinjaNotFound(template)
        # The name as "filename" puts file names into tracebacks, for error messages.
        return source, template, lambda: True


class _Sandbox(GuardedSandbox):
    """The guarded immutable sandbox with a fast path for `name.key` on plain dicts."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The stock path tries getattr() first and catches an AttributeError for every
        # `sender.business_name` (~2 µs each, half the sandbox's cost per message). For a plain
        # dict and a name that is not a dict attribute that lookup always fails, so going
        # straight to the item gives the same result.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


_DICT_ATTRIBUTES = frozenset(dir(dict))


def _environment(sources: Mapping[str, str], max_output: int | None) -> _Sandbox:
    # Immutable sandbox: operator templates must not reach Python internals nor mutate the
    # render inputs (a template calling attributes.update() would change the archive).
    env = _Sandbox(
        max_output=max_output,
        loader=_FilesLoader(sources),
        autoescape=_autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=-1,
    )
    env.filters["date"] = _date_filter
    env.filters["number"] = _number_filter
    return env


def _autoescape(name: str | None) -> bool:
    return name is not None and name.endswith((".html", ".htm"))


@pass_context
def _date_filter(context: Context, value: Any, locale: str | None = None) -> str:
    """`{{ attributes.next_service | date }}`: a date in words in the message's locale."""
    chosen = locale or context.get("locale") or "en"
    if chosen not in SUPPORTED_LOCALES:
        chosen = "en"
    if not isinstance(value, str | date):
        raise TypeError(f"date filter expects a date or an ISO 8601 string, got {value!r}")
    return _long_date(value, chosen)


@lru_cache(maxsize=4096)
def _long_date(value: str | date, locale: str) -> str:
    # The same few hundred dates recur across a campaign's contacts; parsing and writing one
    # out costs ~3 µs, several times per message.
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, locale)


@pass_context
def _number_filter(context: Context, value: Any) -> str:
    """`{{ attributes.mileage | number }}`: 48,200 in English, 48 200 in French."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"number filter expects a number, got {value!r}")
    grouped = f"{value:,}"
    if context.get("locale") == "fr":
        # French groups digits with a (no-break) space and uses a decimal comma.
        grouped = grouped.replace(",", "\u00a0").replace(".", ",")
    return grouped


# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "div", "dl", "dt", "fieldset",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "main",
    "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
})
# fmt: on
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "template"})
_SPACES = re.compile(r"\s+")


def html_to_text(html: str) -> str:
    """A readable text part from HTML: paragraphs, list dashes, link URLs kept visible."""
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    lines: list[str] = []
    for line in "".join(converter.out).split("\n"):
        words = " ".join(line.split())
        if words or (lines and lines[-1]):
            lines.append(words)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


class _TextConverter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._anchors: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        if self._skip:
            return
        if tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)
        elif tag == "a":
            self._anchors.append((dict(attrs).get("href") or "", len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "a" and self._anchors:
            href, start = self._anchors.pop()
            shown = _shown_url(href.strip())
            if shown and shown not in "".join(self.out[start:]):
                self.out.append(f" ({shown})")
        elif tag in _BLOCK_TAGS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(_SPACES.sub(" ", data))


def _shown_url(href: str) -> str:
    # Keep destinations visible in plain text; anchors and scripts mean nothing there.
    lowered = href.lower()
    if lowered.startswith(("http://", "https://")):
        return href
    if lowered.startswith(("mailto:", "tel:")):
        return href.partition(":")[2].partition("?")[0]
    return ""
