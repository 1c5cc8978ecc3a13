"""The recipient-facing HTML pages: Jinja2 templates with autoescaping, in English or French.

Templates are compiled once per process (compiling per request costs ~40x, DESIGN.md);
everything a page shows comes in as plain text and is escaped on output, names and
sources included, since contacts and operators both supply them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from mailer.core.consent_dates import zone
from tracker.forms import REASON_MAX
from tracker.preferences import LedgerRow, Preferences, Scope
from tracker.rows import Recipient
from tracker.wording import TEXT, Lang, block_reason, channel_label, history_line, language

# Pages carry a capability token in their URL: never let it leak to another site through a
# Referer ("same-origin", not "no-referrer", which makes browsers send `Origin: null` on our own
# form posts), never cache, never frame, run no script, and post forms only back to ourselves.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _sender(recipient: Recipient, lang: Lang) -> str:
    """The business that sends, as every page names it (CASL s.6(2)(a))."""
    return recipient.sender or TEXT[lang]["sender_unknown"]


@dataclass(frozen=True, slots=True)
class SwitchView:
    value: str
    label: str
    on: bool
    blocked: str | None
    description: str = ""


class Pages:
    """Renders each page from its template."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("tracker", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            auto_reload=False,
        )

    def _render(self, name: str, lang: Lang, title: str, **context: Any) -> str:
        template = self._env.get_template(name)
        return template.render(lang=lang, t=TEXT[lang], title=title, **context)

    def message(self, key: str, lang: Lang | None = None) -> str:
        """A short page (not found, unavailable…); in both languages when we cannot tell."""
        shown: Lang = lang or "en"
        other = None
        if lang is None:
            fr = TEXT["fr"]
            other = {"lang": "fr", "title": fr[f"{key}_title"], "message": fr[key]}
        t = TEXT[shown]
        return self._render("message.html", shown, t[f"{key}_title"], message=t[key], other=other)

    def unsubscribe(self, recipient: Recipient, *, csrf: str, preferences_url: str) -> str:
        """The confirmation page a GET shows: who, from what, and the choices."""
        lang = language(recipient.locale)
        return self._render(
            "unsubscribe.html",
            lang,
            TEXT[lang]["unsubscribe_title"],
            email=recipient.email or "",
            sender=_sender(recipient, lang),
            topic=recipient.topic_label(lang),
            csrf=csrf,
            reason_max=REASON_MAX,
            preferences_url=preferences_url,
        )

    def unsubscribed(
        self, recipient: Recipient, scope: Scope, *, preferences_url: str | None
    ) -> str:
        """The answer once the opt-out is recorded."""
        lang = language(recipient.locale)
        t = TEXT[lang]
        done = t[f"done_{scope.value}"].format(
            email=recipient.email or "",
            sender=_sender(recipient, lang),
            topic=recipient.topic_label(lang),
        )
        return self._render(
            "unsubscribed.html", lang, t["done_title"], done=done, preferences_url=preferences_url
        )

    def agree(self, recipient: Recipient, *, consent_text: str, csrf: str) -> str:
        """The re-permission question: who asks, the exact consent text, an "I agree" button."""
        lang = language(recipient.locale)
        return self._render(
            "agree.html",
            lang,
            TEXT[lang]["agree_title"],
            email=recipient.email or "",
            sender=_sender(recipient, lang),
            consent_text=consent_text,
            csrf=csrf,
        )

    def agreed(self, recipient: Recipient) -> str:
        """The answer once the express consent is recorded."""
        lang = language(recipient.locale)
        return self._render(
            "agreed.html",
            lang,
            TEXT[lang]["agreed_title"],
            email=recipient.email or "",
            sender=_sender(recipient, lang),
        )

    def preferences(
        self,
        recipient: Recipient,
        prefs: Preferences,
        ledger: Iterable[LedgerRow],
        *,
        csrf: str,
        saved: bool | None,
    ) -> str:
        """The preference centre: switches, then the consent history in plain words."""
        lang = language(recipient.locale)
        channels = [
            SwitchView(
                s.channel.value,
                channel_label(s.channel, lang),
                s.on,
                block_reason(s.blocked_by, lang) if s.blocked_by else None,
            )
            for s in prefs.channels
        ]
        topics = sorted(
            (
                SwitchView(
                    str(s.topic.id),
                    s.topic.label(lang),
                    s.on,
                    block_reason(s.blocked_by, lang) if s.blocked_by else None,
                    s.topic.description,
                )
                for s in prefs.topics
            ),
            # By the name the reader sees (accents folded: "Événements" among the E's).
            key=lambda view: unicodedata.normalize("NFKD", view.label).casefold(),
        )
        # The campaign's zone was checked when it was created; a page never fails on it.
        try:
            sender_zone = zone(recipient.timezone)
        except ValueError:
            sender_zone = zone(None)
        return self._render(
            "preferences.html",
            lang,
            TEXT[lang]["preferences_title"],
            email=recipient.email or "",
            sender=_sender(recipient, lang),
            channels=channels,
            topics=topics,
            history=[history_line(row, lang, sender_zone) for row in ledger],
            csrf=csrf,
            saved=saved,
        )
