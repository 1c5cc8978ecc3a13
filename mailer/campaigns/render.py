"""Rendering a campaign's subject, HTML and text for one contact, in a Jinja2 sandbox.

A `Renderer` compiles a `TemplateSet` (mailer.campaigns.template_set) once, in the sandbox of
mailer.campaigns.sandbox, with its links planned as slots (mailer.campaigns.link_slots), and
renders `RenderInputs` (mailer.campaigns.render_inputs), the JSON-ready values the archive
keeps, so re-rendering an archived message gives the same bytes. A personalised template's
links are found and rewritten here, per message. The errors a message can fail with, for the
engine to skip that contact by reason, are here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Template, TemplateSyntaxError
from jinja2 import TemplateNotFound as JinjaNotFound
from markupsafe import Markup, escape

from mailer.campaigns.guards import OverLimit, TooLarge, bounded_join
from mailer.campaigns.link_slots import plan_links
from mailer.campaigns.render_inputs import (
    CampaignFields,
    RenderedParts,
    RenderInputs,
    resolve_locale,
)
from mailer.campaigns.sandbox import environment
from mailer.campaigns.template_set import LOCALE_VARIANT, TemplateFileError, TemplateSet
from mailer.campaigns.text_part import html_to_text
from mailer.core.consent_dates import consent_day
from mailer.core.footer import LABELS, consent_sentence
from mailer.core.links import FoundLink, add_pixel, find_links, rewrite

__all__ = [
    "LimitError",
    "MessageError",
    "RenderError",
    "Renderer",
    "UnregisteredLinks",
]


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


class Renderer:
    """A compiled TemplateSet: render(inputs) per message, nothing re-parsed.

    With `max_output`, a message's parts together may render at most that many characters
    and the sandbox refuses values bigger than that (mailer.guards); None: unbounded
    (reproducing an archived message, which rendered within its limits once).
    """

    def __init__(self, templates: TemplateSet, *, max_output: int | None = None) -> None:
        self.templates = templates
        self.max_output = max_output
        slots, personalised, sources = plan_links(templates.files)
        self._slots = slots
        # The distinct trackable URLs to register once per campaign (empty when personalised).
        self.links: tuple[str, ...] = tuple(dict.fromkeys(url for url, _ in slots))
        self.personalised_links = personalised
        self._env = environment(sources, max_output)
        for filename in sorted(sources):
            # Layouts are only loaded when a child renders: compile every file now so that a
            # broken layout stops the campaign here, not once per contact.
            self._compile(filename)
        self._parts: dict[str, tuple[Template, Template | None]] = {}
        name = templates.name
        variant_locales = {
            m[1] for f in templates.files if (m := LOCALE_VARIANT.fullmatch(f[len(name) :]))
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
