"""The re-permission "I agree" page (/a/TOKEN): the exact consent text on GET, the express grant
with its evidence on POST, committed before the answer."""

from __future__ import annotations

import logging

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
from tracker.rows import ConsentRequest, Recipient
from tracker.store import Unavailable

log = logging.getLogger(__name__)


async def _consent_request(
    request: web.Request,
) -> tuple[Recipient, ConsentRequest] | web.Response:
    """The recipient and what their re-permission campaign asks, or the page that says why not."""
    tracker = request.app[TRACKER]
    found = await recipient_for(request, Purpose.CONFIRM, "confirm")
    if isinstance(found, web.Response):
        return found
    _, recipient = found
    if recipient.campaign_id is None:  # a transactional message asks for no consent
        tracker.metrics.token_rejections.labels("confirm", "not_repermission").inc()
        return message_page(tracker, "not_found", 404)
    try:
        asked = await tracker.store.consent_request(recipient.campaign_id)
    except Unavailable as exc:
        log.warning("confirm lookup failed: %s", exc)
        return unavailable(tracker, "confirm", lang_of(recipient))
    if asked is None:  # a genuine token, but its campaign asks for nothing
        tracker.metrics.token_rejections.labels("confirm", "not_repermission").inc()
        return message_page(tracker, "not_found", 404)
    return recipient, asked


async def agree_page(request: web.Request) -> web.Response:
    """GET /a/TOKEN: who, the exact consent text and an "I agree" button; a GET records nothing.

    Link scanners and mail proxies GET every link: consent must be an act of the person.
    """
    tracker = request.app[TRACKER]
    found = await _consent_request(request)
    if isinstance(found, web.Response):
        return found
    recipient, asked = found
    csrf = forms.csrf_field(tracker.csrf_key, request.match_info["token"])
    return html_page(tracker.pages.agree(recipient, consent_text=asked.consent_text, csrf=csrf))


async def agree(request: web.Request) -> web.Response:
    """POST /a/TOKEN: record express consent with its evidence, committed before we answer."""
    tracker = request.app[TRACKER]
    found = await _consent_request(request)
    if isinstance(found, web.Response):
        return found
    recipient, asked = found
    form = await request.post()
    if (refused := forged(request, form, recipient, "confirm")) is not None:
        return refused
    # CASL s.10(1) and DESIGN "Consent": the proof is who, when, how, and the words agreed to.
    evidence = tracker.evidence(request, recipient, "confirm link")
    evidence["consent_text"] = asked.consent_text
    try:
        added = await tracker.store.grant_express(recipient, asked.source, evidence)
    except Unavailable as exc:
        log.error("consent of delivery %d not recorded: %s", recipient.delivery_id, exc)
        return unavailable(tracker, "confirm", lang_of(recipient))
    if added is None:
        return message_page(tracker, "erased", 200, lang_of(recipient))
    return html_page(tracker.pages.agreed(recipient))
