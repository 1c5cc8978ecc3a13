"""The confirmation link of a sign-up: GET /confirm/TOKEN shows, POST /confirm/TOKEN records.

The GET writes nothing (link scanners and mail proxies fetch every link, HEAD included); the
POST, from the page's own button, records the express grant with the evidence of both steps
through mailer.forms.signup.confirm_signup, committed before the answer.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from mailer.db.bounded import Unavailable
from mailer.forms import signup
from mailer.forms.signup import Step
from mailer.forms.wording import TEXT, language
from tracker import forms as csrf
from tracker.pages import HEADERS
from tracker.signup import SIGNUP, html_response

log = logging.getLogger(__name__)


async def _pending(request: web.Request) -> tuple[int, Any] | web.Response:
    s = request.app[SIGNUP]
    found = signup.read_confirmation(
        s.keyring, request.match_info["token"], s.settings.pending_days * 86_400
    )
    if isinstance(found, str):
        s.metrics.token_rejections.labels("signup_confirm", found).inc()
        if found == "expired":
            return s.message("stale", "en", 410)
        return s.message("not_found", "en", 404)
    try:
        pending = await s.store.peek(found)
    except Unavailable as exc:
        log.warning("confirmation lookup failed: %s", exc)
        return s.message("unavailable", "en", 503)
    if pending is None:  # expired and deleted, or never ours
        s.metrics.token_rejections.labels("signup_confirm", "unknown_request").inc()
        return s.message("stale", "en", 410)
    return found, pending


async def confirm_page(request: web.Request) -> web.Response:
    """GET /confirm/TOKEN: who, the exact words, a button. Writes nothing (link scanners)."""
    s = request.app[SIGNUP]
    found = await _pending(request)
    if isinstance(found, web.Response):
        return found
    _, pending = found
    lang = language(pending.locale)
    if pending.state == "confirmed":
        return s.message("already", lang, 200)
    if pending.expired:
        return s.message("stale", lang, 410)
    form_evidence = (pending.evidence or {}).get("form", {})
    body = s.render(
        "signup_confirm.html",
        lang,
        TEXT[lang]["confirm_title"],
        email=pending.email or "",
        source=form_evidence.get("source", ""),
        consent_text=form_evidence.get("text", ""),
        csrf=csrf.csrf_field(s.csrf_key, request.match_info["token"]),
    )
    return html_response(body, 200, HEADERS)


async def confirm(request: web.Request) -> web.Response:
    """POST /confirm/TOKEN: the express grant with both steps' evidence, committed first."""
    s = request.app[SIGNUP]
    found = await _pending(request)
    if isinstance(found, web.Response):
        return found
    request_id, pending = found
    lang = language(pending.locale)
    fields = await request.post()
    submitted = fields.get("csrf")
    if not csrf.csrf_ok(
        s.csrf_key, request.match_info["token"], submitted if isinstance(submitted, str) else None
    ) or not csrf.same_origin(
        request.headers.get("Sec-Fetch-Site"),
        request.headers.get("Origin"),
        request.host,
        s.own_origins,
    ):
        s.metrics.token_rejections.labels("signup_confirm", "csrf").inc()
        return s.message("forbidden", lang, 403)
    try:
        done = await signup.confirm_signup(
            s.store, request_id, s.visit(request), settings=s.settings, confirmer=s.confirmer
        )
    except Unavailable as exc:
        log.error("confirmation of request %d not recorded: %s", request_id, exc)
        return s.message("unavailable", lang, 503)
    slug = str(((pending.evidence or {}).get("form") or {}).get("slug", "?"))
    if done.outcome == "confirmed":
        s.count(slug, Step.CONFIRMED)
        return s.message("confirmed", lang, 200, email=pending.email or "")
    if done.outcome == "already":
        return s.message("already", lang, 200)
    return s.message("stale", lang, 410)
