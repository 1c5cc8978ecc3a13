"""What the tracker's handlers share: the Tracker (keys, store, buffer, metrics, pages) under
the app key TRACKER, and the answers common to its pages (404, 403, 503, the recipient)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from mailer.core.settings import Settings
from mailer.core.tokens import Keyring, Purpose, Token, TokenError
from mailer.optouts.store import message_ref
from tracker import forms, ipprefix
from tracker.buffer import EventBuffer
from tracker.clicks import ClickTargets
from tracker.events import USER_AGENT_MAX, Hit, to_event
from tracker.metrics import Metrics
from tracker.pages import HEADERS as PAGE_HEADERS
from tracker.pages import Pages
from tracker.rows import Recipient
from tracker.store import TrackerStore, Unavailable
from tracker.wording import Lang, language

log = logging.getLogger(__name__)

# RFC 9110 s.10.2.3: when to try again after a 503. Mailbox providers retry one-click POSTs;
# a person reads "try again in a few minutes".
RETRY_AFTER_S = 30
_LAST_HOP_MAX = 64  # characters of X-Forwarded-For kept: the longest address text is 45
# How long shutdown keeps retrying the final flush while Postgres is away.
SHUTDOWN_FLUSH_S = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Tracker:
    """What the handlers share: keys, store, buffer, metrics, pages."""

    def __init__(self, settings: Settings, *, shutdown_flush_s: float = SHUTDOWN_FLUSH_S) -> None:
        spec = settings.require_token_keys()
        self.settings = settings
        self.keyring = Keyring.from_spec(spec)
        self.csrf_key = forms.csrf_key(spec)
        base = urlsplit(settings.tracker.base_url)
        self.origins = frozenset({f"{base.scheme}://{base.netloc}"})
        db = settings.database
        self.store = TrackerStore(
            db.url,
            min_size=db.pool_min,
            max_size=db.pool_max,
            timeout_ms=settings.tracker.db_timeout_ms,
            statement_timeout_ms=settings.tracker.db_statement_timeout_ms,
        )
        self.metrics = Metrics()
        self.buffer: EventBuffer[Hit] = EventBuffer(
            self.write_hits,
            capacity=settings.tracker.buffer_max,
            interval_s=settings.tracker.flush_interval_ms / 1000,
            observer=self.metrics,
        )
        self.metrics.watch_buffer(lambda: len(self.buffer))
        self.pages = Pages()
        self.clicks = ClickTargets(self.store, self.metrics)
        self.shutdown_flush_s = shutdown_flush_s

    def verify(self, text: str, purpose: Purpose, route: str) -> Token | None:
        """The token if it is genuine and for this route, else None (counted)."""
        try:
            token = self.keyring.verify(text, now=int(time.time()))
        except TokenError as exc:
            self.metrics.token_rejections.labels(route, exc.reason).inc()
            return None
        if token.purpose is not purpose:
            self.metrics.token_rejections.labels(route, "wrong_purpose").inc()
            return None
        return token

    def record(
        self, request: web.Request, kind: str, token: Token, sent_at: datetime | None = None
    ) -> None:
        """Note a hit for the flusher; never waits, never raises for a full buffer."""
        headers = request.headers
        agent = headers.get("User-Agent")
        forwarded = headers.get("X-Forwarded-For")
        hit = Hit(
            time.time(),
            kind,
            token.delivery_id,
            token.link_id,
            request.method == "HEAD",
            # Cut now, not at flush: a full buffer of 8 KB agents would hold 400 MB.
            agent[:USER_AGENT_MAX] if agent else None,
            request.remote,
            forwarded[-_LAST_HOP_MAX:] if forwarded else None,  # only the last hop is read
            sent_at.timestamp() if sent_at is not None else None,
        )
        self.buffer.add(hit)

    async def write_hits(self, hits: Sequence[Hit]) -> int:
        """Turn a batch of hits into event rows and write them (the buffer's writer)."""
        rows = [to_event(hit) for hit in hits]
        written = await self.store.write_events([event for event, _ in rows])
        # Counted once written: a failed batch is retried and must not count twice.
        for (kind, why), count in Counter((event.kind, why) for event, why in rows).items():
            self.metrics.event(kind, why, count)
        return written

    def evidence(self, request: web.Request, recipient: Recipient, method: str) -> dict[str, Any]:
        """What the ledger keeps about an opt-out or a preference change (CASL s.13 proof)."""
        address = ipprefix.client_address(request.remote, request.headers.get("X-Forwarded-For"))
        agent = request.headers.get("User-Agent")
        return {
            **message_ref(recipient.delivery_id, recipient.campaign_id),
            "ip_prefix": ipprefix.truncate(address),
            "user_agent": agent[:USER_AGENT_MAX] if agent else None,
            "method": method,
        }

    def preferences_path(self, delivery_id: int) -> str:
        """A relative link to this delivery's preference centre, freshly signed."""
        token = Token(Purpose.PREFERENCES, delivery_id, None, int(time.time()))
        return f"/p/{self.keyring.sign(token)}"

    def form_allowed(self, request: web.Request, token_text: str, submitted: Any) -> bool:
        """CSRF field and the browser's Origin / Sec-Fetch-Site both say: our own page."""
        headers = request.headers
        return forms.csrf_ok(
            self.csrf_key, token_text, submitted if isinstance(submitted, str) else None
        ) and forms.same_origin(
            headers.get("Sec-Fetch-Site"), headers.get("Origin"), request.host, self.origins
        )


TRACKER = web.AppKey("tracker", Tracker)


def html_page(
    body: str, status: int = 200, headers: Mapping[str, str] = PAGE_HEADERS
) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=headers
    )


def message_page(tracker: Tracker, key: str, status: int, lang: Lang | None = None) -> web.Response:
    return html_page(tracker.pages.message(key, lang), status)


_UNAVAILABLE_HEADERS = {**PAGE_HEADERS, "Retry-After": str(RETRY_AFTER_S)}


def unavailable(tracker: Tracker, route: str, lang: Lang | None = None) -> web.Response:
    """The 503 for a database that could not answer in time: try again (Retry-After)."""
    tracker.metrics.database_unavailable.labels(route, "503").inc()
    body = tracker.pages.message("unavailable", lang)
    return html_page(body, 503, _UNAVAILABLE_HEADERS)


def lang_of(recipient: Recipient) -> Lang:
    return language(recipient.locale)


def forged(
    request: web.Request, form: Mapping[str, Any], recipient: Recipient, purpose: str
) -> web.Response | None:
    """The 403 for a form not posted from our own page (counted by purpose), else None."""
    tracker = request.app[TRACKER]
    if tracker.form_allowed(request, request.match_info["token"], form.get("csrf")):
        return None
    tracker.metrics.token_rejections.labels(purpose, "csrf").inc()
    return message_page(tracker, "forbidden", 403, lang_of(recipient))


async def recipient_for(
    request: web.Request, purpose: Purpose, route: str
) -> tuple[Token, Recipient] | web.Response:
    """Verify the token and load its recipient, or the page that says why not."""
    tracker = request.app[TRACKER]
    token = tracker.verify(request.match_info["token"], purpose, route)
    if token is None:
        return message_page(tracker, "not_found", 404)
    try:
        recipient = await tracker.store.recipient(token.delivery_id)
    except Unavailable as exc:
        log.warning("%s lookup failed: %s", route, exc)
        return unavailable(tracker, route)
    if recipient is None:
        tracker.metrics.token_rejections.labels(route, "unknown_delivery").inc()
        return message_page(tracker, "not_found", 404)
    if recipient.erased:
        return message_page(tracker, "erased", 200, lang_of(recipient))
    return token, recipient
