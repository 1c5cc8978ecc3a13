"""The tracking server: pixel, click redirect, unsubscribe, preference centre, health, metrics,
and the re-permission "I agree" page (/a/TOKEN).

One app factory and one route table, here; the handlers live by job (tracker.hits,
.unsubscribe, .preference_centre, .repermission, .signup, .confirm) and share what
tracker.context holds. They stay thin: route → token → event or store call → metrics. The
token is verified before anything touches the database, and a bad one writes nothing
(DESIGN "Tokens").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailer.core.settings import Settings
from mailer.forms.confirmation import TransactionalConfirmer
from mailer.forms.signup import Confirmer, Step, expire_requests
from tracker import confirm, signup
from tracker.context import SHUTDOWN_FLUSH_S, TRACKER, Handler, Tracker, message_page
from tracker.hits import click, open_pixel
from tracker.preference_centre import preferences_page, save_preferences
from tracker.repermission import agree, agree_page
from tracker.store import TrackerStore
from tracker.unsubscribe import unsubscribe, unsubscribe_page

log = logging.getLogger(__name__)

_FORM_MAX_BYTES = 64 * 1024
_PARTITION_CHECK_S = 6 * 3600


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
    return message_page(request.app[TRACKER], "not_found", 404)


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


async def _expire_signups(app: web.Application) -> None:
    """Every forms.expiry_interval_s, delete expired sign-up requests (and count them)."""
    s = app[signup.SIGNUP]
    while True:
        await asyncio.sleep(s.settings.expiry_interval_s)
        try:
            for slug, count in (await expire_requests(s.store)).items():
                if count:
                    s.metrics.signups.labels(slug, str(Step.EXPIRED)).inc(count)
        except Exception as exc:  # Postgres away: the next sweep deletes them
            log.warning("could not delete expired sign-up requests: %s", exc)


async def _signup_expiry(app: web.Application) -> AsyncIterator[None]:
    # Pending requests carry personal data until confirmed; expiry deletes them (GDPR art.
    # 5(1)(e)). Every tracker sweeps: the DELETE is idempotent, so several instances agree.
    sweeper = asyncio.create_task(_expire_signups(app), name="tracker-signup-expiry")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


async def _event_buffer(app: web.Application) -> AsyncIterator[None]:
    # Registered after _database, so cleanup runs first here: flush, then close the pool.
    tracker = app[TRACKER]
    tracker.buffer.start()
    yield
    await tracker.buffer.close(timeout_s=tracker.shutdown_flush_s)


def create_app(
    settings: Settings,
    *,
    shutdown_flush_s: float = SHUTDOWN_FLUSH_S,
    confirmer: Confirmer | None = None,
) -> web.Application:
    """The tracker as an aiohttp application (one route table, shared state under TRACKER)."""
    app = web.Application(client_max_size=_FORM_MAX_BYTES)
    tracker = app[TRACKER] = Tracker(settings, shutdown_flush_s=shutdown_flush_s)
    bounded = tracker.store.bounded
    app[signup.SIGNUP] = signup.Signup(
        settings,
        tracker.keyring,
        bounded,
        tracker.metrics,
        confirmer
        or TransactionalConfirmer(
            lambda: bounded.pool,
            Path(settings.transactional.templates_dir),
            settings.forms.confirmation_template,
        ),
        tracker.origins,
    )
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
            web.get("/s/{form}", counted("signup")(signup.form_page)),
            web.post("/s/{form}", counted("signup")(signup.submit)),
            web.get("/s/{form}/token", counted("signup")(signup.form_token)),
            web.get("/confirm/{token}", counted("signup_confirm")(confirm.confirm_page)),
            web.post("/confirm/{token}", counted("signup_confirm")(confirm.confirm)),
            web.get("/healthz", counted("healthz")(healthz)),
            web.get("/metrics", counted("metrics")(metrics)),
            # Last: whatever matched nothing above, so that it is counted too.
            web.route("*", "/{tail:.*}", counted("other")(not_found)),
        ]
    )
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_event_buffer)
    app.cleanup_ctx.append(_signup_expiry)
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
