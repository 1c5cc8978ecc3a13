"""The tracking server: pixel, click redirect, unsubscribe, preference centre, health, metrics,
and the re-permission "I agree" page (/a/TOKEN).

Handlers stay thin: route → token → event or store call → metrics. The token is verified
before anything touches the database, and a bad one writes nothing (DESIGN "Tokens").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailer.core.settings import Settings
from mailer.core.tokens import Keyring, Purpose, Token, TokenError
from tracker import forms, ipprefix
from tracker.buffer import EventBuffer
from tracker.clicks import ClickTargets
from tracker.events import USER_AGENT_MAX, Hit, to_event
from tracker.metrics import Metrics
from tracker.pages import HEADERS as PAGE_HEADERS
from tracker.pages import Pages
from tracker.preferences import Scope, channels_for
from tracker.store import ConsentRequest, Recipient, TrackerStore, Unavailable
from tracker.wording import Lang, language

log = logging.getLogger(__name__)

# The smallest transparent GIF: 1x1, one transparent colour (43 bytes).
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
GIF_HEADERS = {
    "Content-Type": "image/gif",
    # Every fetch must reach us to be counted. (No Pragma/Expires: HTTP/1.0 caches are gone,
    # and each extra header is paid on every pixel.)
    "Cache-Control": "no-store, no-cache, private, max-age=0",
}
_OPEN_OK = ("open", "200")
# RFC 9110 s.10.2.3: when to try again after a 503. Mailbox providers retry one-click POSTs;
# a person reads "try again in a few minutes".
RETRY_AFTER_S = 30
_LAST_HOP_MAX = 64  # characters of X-Forwarded-For kept: the longest address text is 45
_FORM_MAX_BYTES = 64 * 1024
# How long shutdown keeps retrying the final flush while Postgres is away.
SHUTDOWN_FLUSH_S = 10.0
_PARTITION_CHECK_S = 6 * 3600

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
            "delivery_id": recipient.delivery_id,
            "campaign_id": recipient.campaign_id,
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


def _page(body: str, status: int = 200, headers: Mapping[str, str] = PAGE_HEADERS) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=headers
    )


def _message(tracker: Tracker, key: str, status: int, lang: Lang | None = None) -> web.Response:
    return _page(tracker.pages.message(key, lang), status)


_UNAVAILABLE_HEADERS = {**PAGE_HEADERS, "Retry-After": str(RETRY_AFTER_S)}


def _unavailable(tracker: Tracker, route: str, lang: Lang | None = None) -> web.Response:
    """The 503 for a database that could not answer in time: try again (Retry-After)."""
    tracker.metrics.database_unavailable.labels(route, "503").inc()
    body = tracker.pages.message("unavailable", lang)
    return _page(body, 503, _UNAVAILABLE_HEADERS)


def _lang(recipient: Recipient) -> Lang:
    return language(recipient.locale)


def _forged(
    request: web.Request, form: Mapping[str, Any], recipient: Recipient, purpose: str
) -> web.Response | None:
    """The 403 for a form not posted from our own page (counted by purpose), else None."""
    tracker = request.app[TRACKER]
    if tracker.form_allowed(request, request.match_info["token"], form.get("csrf")):
        return None
    tracker.metrics.token_rejections.labels(purpose, "csrf").inc()
    return _message(tracker, "forbidden", 403, _lang(recipient))


# ---------------------------------------------------------------- handlers


async def open_pixel(request: web.Request) -> web.Response:
    """GET /o/TOKEN: the GIF, always; a genuine token queues an open."""
    tracker = request.app[TRACKER]
    try:
        token = tracker.verify(request.match_info["token"], Purpose.OPEN, "open")
        if token is not None:
            tracker.record(request, "open", token)
    except Exception:
        # The pixel is answered whatever happens: a broken image in someone's inbox helps
        # nobody. The bug is logged with its traceback and counted.
        log.exception("recording an open failed")
        tracker.metrics.dropped("error", 1)
    # Counted here rather than by `counted`: the pixel always answers 200, and it is the hot
    # path (a wrapper coroutine per hit is measurable at 10,000 hits/s on one core).
    tracker.metrics.requests.add(_OPEN_OK)
    return web.Response(body=GIF, headers=GIF_HEADERS)


async def click(request: web.Request) -> web.StreamResponse:
    """GET /c/TOKEN: 302 to the URL registered for the link, and queue a click."""
    tracker = request.app[TRACKER]
    token = tracker.verify(request.match_info["token"], Purpose.CLICK, "click")
    if token is None:
        return _message(tracker, "not_found", 404)
    try:
        target = await tracker.clicks.target(token)
    except Unavailable as exc:
        log.warning("click lookup failed: %s", exc)
        return _unavailable(tracker, "click")
    # Only http(s) targets: a javascript: or data: URL in the links table is never followed.
    if target is None or urlsplit(target[0]).scheme not in ("http", "https"):
        tracker.metrics.token_rejections.labels("click", "unknown_link").inc()
        return _message(tracker, "not_found", 404)
    url, sent_at = target
    tracker.record(request, "click", token, sent_at)
    return web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})


async def _recipient_for(
    request: web.Request, purpose: Purpose, route: str
) -> tuple[Token, Recipient] | web.Response:
    """Verify the token and load its recipient, or the page that says why not."""
    tracker = request.app[TRACKER]
    token = tracker.verify(request.match_info["token"], purpose, route)
    if token is None:
        return _message(tracker, "not_found", 404)
    try:
        recipient = await tracker.store.recipient(token.delivery_id)
    except Unavailable as exc:
        log.warning("%s lookup failed: %s", route, exc)
        return _unavailable(tracker, route)
    if recipient is None:
        tracker.metrics.token_rejections.labels(route, "unknown_delivery").inc()
        return _message(tracker, "not_found", 404)
    if recipient.erased:
        return _message(tracker, "erased", 200, _lang(recipient))
    return token, recipient


async def unsubscribe_page(request: web.Request) -> web.Response:
    """GET /u/TOKEN: a confirmation page; a GET never unsubscribes (link scanners GET)."""
    tracker = request.app[TRACKER]
    found = await _recipient_for(request, Purpose.UNSUBSCRIBE, "unsubscribe")
    if isinstance(found, web.Response):
        return found
    token, recipient = found
    body = tracker.pages.unsubscribe(
        recipient,
        csrf=forms.csrf_field(tracker.csrf_key, request.match_info["token"]),
        preferences_url=tracker.preferences_path(token.delivery_id),
    )
    return _page(body)


async def unsubscribe(request: web.Request) -> web.Response:
    """POST /u/TOKEN: the page's form, or RFC 8058 one-click; recorded before we answer."""
    tracker = request.app[TRACKER]
    found = await _recipient_for(request, Purpose.UNSUBSCRIBE, "unsubscribe")
    if isinstance(found, web.Response):
        return found
    token, recipient = found
    form = await request.post()
    # RFC 8058 s.3.1: the body carries List-Unsubscribe=One-Click; no cookie, no page.
    one_click = form.get(forms.ONE_CLICK_FIELD) == forms.ONE_CLICK_VALUE
    if one_click:
        scope, method, source = Scope.DIGITAL, "one-click", "one-click"
    else:
        if (refused := _forged(request, form, recipient, "unsubscribe")) is not None:
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
        return _unavailable(tracker, "unsubscribe", _lang(recipient))
    if changed is None:
        return _message(tracker, "erased", 200, _lang(recipient))
    outcome = "recorded" if changed else "already"
    tracker.metrics.optouts.labels(scope.value, method, outcome).inc()
    tracker.metrics.optout_seconds.observe(time.perf_counter() - started)
    body = tracker.pages.unsubscribed(
        recipient, scope, preferences_url=tracker.preferences_path(token.delivery_id)
    )
    return _page(body)


async def preferences_page(request: web.Request) -> web.Response:
    """GET /p/TOKEN: the switches and the consent history."""
    tracker = request.app[TRACKER]
    found = await _recipient_for(request, Purpose.PREFERENCES, "preferences")
    if isinstance(found, web.Response):
        return found
    _, recipient = found
    try:
        snap = await tracker.store.snapshot(recipient, datetime.now(UTC))
    except Unavailable as exc:
        log.warning("preference centre lookup failed: %s", exc)
        return _unavailable(tracker, "preferences", _lang(recipient))
    saved = {"1": True, "0": False}.get(request.query.get("saved", ""))
    body = tracker.pages.preferences(
        recipient,
        snap.preferences,
        snap.ledger,
        csrf=forms.csrf_field(tracker.csrf_key, request.match_info["token"]),
        saved=saved,
    )
    return _page(body)


def _ints(values: list[Any]) -> set[int]:
    return {int(v) for v in values if isinstance(v, str) and v.isascii() and v.isdigit()}


async def save_preferences(request: web.Request) -> web.Response:
    """POST /p/TOKEN: apply the switches, log each change in the ledger, then show the page."""
    tracker = request.app[TRACKER]
    found = await _recipient_for(request, Purpose.PREFERENCES, "preferences")
    if isinstance(found, web.Response):
        return found
    _, recipient = found
    form = await request.post()
    if (refused := _forged(request, form, recipient, "preferences")) is not None:
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
        return _unavailable(tracker, "preferences", _lang(recipient))
    if diff is None:
        return _message(tracker, "erased", 200, _lang(recipient))
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


async def _consent_request(
    request: web.Request,
) -> tuple[Recipient, ConsentRequest] | web.Response:
    """The recipient and what their re-permission campaign asks, or the page that says why not."""
    tracker = request.app[TRACKER]
    found = await _recipient_for(request, Purpose.CONFIRM, "confirm")
    if isinstance(found, web.Response):
        return found
    _, recipient = found
    if recipient.campaign_id is None:  # a transactional message asks for no consent
        tracker.metrics.token_rejections.labels("confirm", "not_repermission").inc()
        return _message(tracker, "not_found", 404)
    try:
        asked = await tracker.store.consent_request(recipient.campaign_id)
    except Unavailable as exc:
        log.warning("confirm lookup failed: %s", exc)
        return _unavailable(tracker, "confirm", _lang(recipient))
    if asked is None:  # a genuine token, but its campaign asks for nothing
        tracker.metrics.token_rejections.labels("confirm", "not_repermission").inc()
        return _message(tracker, "not_found", 404)
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
    return _page(tracker.pages.agree(recipient, consent_text=asked.consent_text, csrf=csrf))


async def agree(request: web.Request) -> web.Response:
    """POST /a/TOKEN: record express consent with its evidence, committed before we answer."""
    tracker = request.app[TRACKER]
    found = await _consent_request(request)
    if isinstance(found, web.Response):
        return found
    recipient, asked = found
    form = await request.post()
    if (refused := _forged(request, form, recipient, "confirm")) is not None:
        return refused
    # CASL s.10(1) and DESIGN "Consent": the proof is who, when, how, and the words agreed to.
    evidence = tracker.evidence(request, recipient, "confirm link")
    evidence["consent_text"] = asked.consent_text
    try:
        added = await tracker.store.grant_express(recipient, asked.source, evidence)
    except Unavailable as exc:
        log.error("consent of delivery %d not recorded: %s", recipient.delivery_id, exc)
        return _unavailable(tracker, "confirm", _lang(recipient))
    if added is None:
        return _message(tracker, "erased", 200, _lang(recipient))
    return _page(tracker.pages.agreed(recipient))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the pool answers, else 503 (a balancer takes us out)."""
    tracker = request.app[TRACKER]
    ok = await tracker.store.ping()
    return web.json_response(
        {"status": "ok" if ok else "degraded", "database": ok, "buffer": len(tracker.buffer)},
        status=200 if ok else 503,
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    registry = request.app[TRACKER].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def counted(route: str) -> Callable[[Handler], Handler]:
    """Count a handler's answers in tracker_requests{route, status}, errors included.

    A wrapper per handler rather than a middleware: aiohttp's middleware chain cost ~8 µs per
    request here, a tenth of the pixel's whole budget; this costs one coroutine frame.
    """

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def counting(request: web.Request) -> web.StreamResponse:
            count = request.app[TRACKER].metrics.request
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                count(route, exc.status)
                raise
            except Exception:
                count(route, 500)
                raise
            count(route, response.status)
            return response

        return counting

    return wrap


async def not_found(request: web.Request) -> web.Response:
    """Any other path: a plain 404 (counted under route "other")."""
    return _message(request.app[TRACKER], "not_found", 404)


# ---------------------------------------------------------------- app


async def _ensure_partitions(store: TrackerStore) -> None:
    try:
        await store.ensure_event_partitions()
    except Exception as exc:  # events_default takes the rows meanwhile
        log.warning("could not create event partitions: %s", exc)


async def _keep_partitions(store: TrackerStore) -> None:
    """Every few hours, make sure the next months' event partitions exist.

    A month's rows that land in events_default before its partition exists would block
    creating that partition later, so a long-running tracker keeps three months ahead.
    """
    while True:
        await asyncio.sleep(_PARTITION_CHECK_S)
        await _ensure_partitions(store)


async def _database(app: web.Application) -> AsyncIterator[None]:
    store = app[TRACKER].store
    if await store.start():
        await _ensure_partitions(store)
    keeper = asyncio.create_task(_keep_partitions(store), name="tracker-event-partitions")
    yield
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    await store.close()


async def _event_buffer(app: web.Application) -> AsyncIterator[None]:
    # Registered after _database, so cleanup runs first here: flush, then close the pool.
    tracker = app[TRACKER]
    tracker.buffer.start()
    yield
    await tracker.buffer.close(timeout_s=tracker.shutdown_flush_s)


def create_app(
    settings: Settings, *, shutdown_flush_s: float = SHUTDOWN_FLUSH_S
) -> web.Application:
    """The tracker as an aiohttp application (one route table, shared state under TRACKER)."""
    app = web.Application(client_max_size=_FORM_MAX_BYTES)
    app[TRACKER] = Tracker(settings, shutdown_flush_s=shutdown_flush_s)
    app.add_routes(
        [
            web.get("/o/{token}", open_pixel),
            web.get("/c/{token}", counted("click")(click)),
            web.get("/u/{token}", counted("unsubscribe")(unsubscribe_page)),
            web.post("/u/{token}", counted("unsubscribe")(unsubscribe)),
            web.get("/p/{token}", counted("preferences")(preferences_page)),
            web.post("/p/{token}", counted("preferences")(save_preferences)),
            web.get("/a/{token}", counted("confirm")(agree_page)),
            web.post("/a/{token}", counted("confirm")(agree)),
            web.get("/healthz", counted("healthz")(healthz)),
            web.get("/metrics", counted("metrics")(metrics)),
            # Last: whatever matched nothing above, so that it is counted too.
            web.route("*", "/{tail:.*}", counted("other")(not_found)),
        ]
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_event_buffer)
    return app


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or `stop`), then drain requests and flush the buffer."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # The handler only sets the stop event; shutdown runs below, in order.
        loop.add_signal_handler(sig, stop.set)
    # No access log: it would keep full client addresses, which we truncate everywhere else.
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.tracker.host, settings.tracker.port)
        await site.start()
        # Everything built so far lives as long as the process: keep it out of the collector's
        # full passes, which otherwise re-walk jinja2, aiohttp and asyncpg on every gen-2 run.
        gc.collect()
        gc.freeze()
        log.info("tracker listening on %s:%d", settings.tracker.host, settings.tracker.port)
        await stop.wait()
        log.info("tracker stopping: draining requests and flushing events")
    finally:
        await runner.cleanup()
        gc.unfreeze()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve(settings: Settings) -> None:
    """Run the tracker in this process (uvloop when installed): `mailer tracker serve`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))
