"""Unsubscribe (/u/TOKEN): a confirmation page on GET, the opt-out on POST, from the page's form
or as an RFC 8058 one-click POST; written durably before the answer."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from mailer.core.tokens import Purpose
from tracker import forms
from tracker.context import (
    TRACKER,
    forged,
    html_page,
    lang_of,
    message_page,
    recipient_for,
    unavailable,
)
from tracker.preferences import Scope, channels_for
from tracker.store import Unavailable

log = logging.getLogger(__name__)


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET /u/TOKEN: a confirmation page; a GET never unsubscribes (link scanners GET)."""
    tracker = request.app[TRACKER]
    found = await recipient_for(request, Purpose.UNSUBSCRIBE, "unsubscribe")
    if isinstance(found, web.Response):
        return found
    token, recipient = found
    body = tracker.pages.unsubscribe(
        recipient,
        csrf=forms.csrf_field(tracker.csrf_key, request.match_info["token"]),
        preferences_url=tracker.preferences_path(token.delivery_id),
    )
    return html_page(body)


async def unsubscribe(request: web.Request) -> web.Response:
    """POST /u/TOKEN: the page's form, or RFC 8058 one-click; recorded before we answer."""
    tracker = request.app[TRACKER]
    found = await recipient_for(request, Purpose.UNSUBSCRIBE, "unsubscribe")
    if isinstance(found, web.Response):
        return found
    token, recipient = found
    form = await request.post()
    # RFC 8058 s.3.1: the body carries List-Unsubscribe=One-Click; no cookie, no page.
    one_click = form.get(forms.ONE_CLICK_FIELD) == forms.ONE_CLICK_VALUE
    if one_click:
        scope, method, source = Scope.DIGITAL, "one-click", "one-click"
    else:
        if (refused := forged(request, form, recipient, "unsubscribe")) is not None:
            return refused
        try:
            scope = Scope(str(form.get("scope") or Scope.DIGITAL.value))
        except ValueError:
            scope = Scope.DIGITAL  # an unknown choice falls back to the widest, the default
        method, source = "form", "unsubscribe page"
        if scope is Scope.TOPIC and recipient.topic_id is None:
            scope = Scope.DIGITAL  # a transactional notice is about no topic: its sender's email
    evidence = tracker.evidence(request, recipient, method)
    reason = form.get("reason")
    evidence["reason"] = forms.clean_reason(reason if isinstance(reason, str) else None)
    started = time.perf_counter()
    try:
        changed = await tracker.store.opt_out(
            recipient,
            channels=[c.value for c in channels_for(scope)],
            topic_ids=[recipient.topic_id]
            if scope is Scope.TOPIC and recipient.topic_id is not None
            else [],
            source=source,
            evidence=evidence,
        )
    except Unavailable as exc:
        # Not recorded in time: 503 and Retry-After, so the mailbox provider (or the person)
        # retries; never 200 for an opt-out not committed. (If the deadline caught a COMMIT
        # in flight, it may land anyway: the retry then finds it done. mailer/db/bounded.py.)
        log.error("opt-out of delivery %d not recorded: %s", token.delivery_id, exc)
        return unavailable(tracker, "unsubscribe", lang_of(recipient))
    if changed is None:
        return message_page(tracker, "erased", 200, lang_of(recipient))
    outcome = "recorded" if changed else "already"
    tracker.metrics.optouts.labels(scope.value, method, outcome).inc()
    tracker.metrics.optout_seconds.observe(time.perf_counter() - started)
    body = tracker.pages.unsubscribed(
        recipient, scope, preferences_url=tracker.preferences_path(token.delivery_id)
    )
    return html_page(body)
