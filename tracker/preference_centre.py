"""The preference centre (/p/TOKEN): per channel and per topic switches with the consent history;
a POST applies the switches and logs each change in the ledger (its model: tracker.preferences)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mailer.core.counts import parse_count
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
from tracker.store import Unavailable

log = logging.getLogger(__name__)


async def preferences_page(request: web.Request) -> web.Response:
    """GET /p/TOKEN: the switches and the consent history."""
    tracker = request.app[TRACKER]
    found = await recipient_for(request, Purpose.PREFERENCES, "preferences")
    if isinstance(found, web.Response):
        return found
    _, recipient = found
    try:
        snap = await tracker.store.snapshot(recipient, datetime.now(UTC))
    except Unavailable as exc:
        log.warning("preference centre lookup failed: %s", exc)
        return unavailable(tracker, "preferences", lang_of(recipient))
    saved = {"1": True, "0": False}.get(request.query.get("saved", ""))
    body = tracker.pages.preferences(
        recipient,
        snap.preferences,
        snap.ledger,
        csrf=forms.csrf_field(tracker.csrf_key, request.match_info["token"]),
        saved=saved,
    )
    return html_page(body)


def _ints(values: list[Any]) -> set[int]:
    return {n for v in values if (n := parse_count(v)) is not None}


async def save_preferences(request: web.Request) -> web.Response:
    """POST /p/TOKEN: apply the switches, log each change in the ledger, then show the page."""
    tracker = request.app[TRACKER]
    found = await recipient_for(request, Purpose.PREFERENCES, "preferences")
    if isinstance(found, web.Response):
        return found
    _, recipient = found
    form = await request.post()
    if (refused := forged(request, form, recipient, "preferences")) is not None:
        return refused
    try:
        diff = await tracker.store.save_preferences(
            recipient,
            channels_wanted={v for v in form.getall("channel", []) if isinstance(v, str)},
            topics_wanted=_ints(form.getall("topic", [])),
            topics_shown=_ints(form.getall("shown", [])),
            evidence=tracker.evidence(request, recipient, "preference centre"),
            now=datetime.now(UTC),
        )
    except Unavailable as exc:
        log.error("preferences of delivery %d not saved: %s", recipient.delivery_id, exc)
        return unavailable(tracker, "preferences", lang_of(recipient))
    if diff is None:
        return message_page(tracker, "erased", 200, lang_of(recipient))
    for change, items in (
        ("channel_on", diff.channels_on),
        ("channel_off", diff.channels_off),
        ("topic_on", diff.topics_on),
        ("topic_off", diff.topics_off),
    ):
        if items:
            tracker.metrics.preference_changes.labels(change).inc(len(items))
    # Post/redirect/get: a reload does not submit the form again.
    location = f"{request.path}?saved={1 if diff else 0}"
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
