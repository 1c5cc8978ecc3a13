"""The operator API's aiohttp application and `mailer api serve`.

One route table, named by the OpenAPI document's operationIds; the scope each operation
needs is read from the document (`x-scope`), so the contract and the checks cannot drift.
Middlewares: problem+json for every error, then key, scope and rate limit before any
handler runs (a refused request writes nothing). The webhook dispatcher runs beside it
(api.dispatch_webhooks), watched: if it dies, the server stops instead of silently
no longer delivering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mailer.api import admin, campaigns, contacts, rights, transactional
from mailer.api.auth import RateLimiter, authenticate, require
from mailer.api.context import BACKGROUND, KEY, KEYS, LIMITER, POOL, SETTINGS
from mailer.api.contract import document, document_text, warm
from mailer.api.problems import Problem
from mailer.api.store import ApiStore
from mailer.api.writes import route_of
from mailer.core.settings import Settings
from mailer.db import connect
from mailer.webhooks.dispatcher import WebhookMetrics, dispatch
from mailer.webhooks.store import WebhookStore

log = logging.getLogger("mailer.api")
REGISTRY = web.AppKey("registry", CollectorRegistry)
STOP = web.AppKey("stop", asyncio.Event)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def scopes() -> dict[str, str]:
    """operationId → the scope it needs, from the document."""
    found = {}
    for item in document()["paths"].values():
        for operation in item.values():
            if operation.get("x-scope"):
                found[operation["operationId"]] = operation["x-scope"]
    return found


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mailer_api_requests",
            "API requests by operation and status",
            ["operation", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "mailer_api_request_seconds", "API request latency", ["operation"], registry=registry
        )


METRICS = web.AppKey("metrics", _Metrics)


@web.middleware
async def problems(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every error as RFC 9457 problem+json; a bug is a 500 problem and a logged traceback."""
    operation = getattr(request.match_info.route, "name", None) or "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except Problem as exc:
        status = exc.status
        return exc.response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status = exc.status
        detail = exc.text if exc.status != 404 else f"no route {request.method} {request.path}"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return Problem(exc.status, detail or exc.reason, headers=headers).response(request.path)
    except Exception:
        log.exception("%s failed", route_of(request))  # its pattern: no address in the log
        return Problem(500, "internal error (logged)").response(request.path)
    finally:
        metrics = request.app[METRICS]
        metrics.requests.labels(operation, str(status)).inc()
        metrics.seconds.labels(operation).observe(time.perf_counter() - started)


def _guard(needs: dict[str, str]) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        name = getattr(request.match_info.route, "name", None)
        scope = needs.get(name or "")
        if scope is None:  # the document, health, metrics, or no route (404 / 405)
            return await handler(request)
        key = await authenticate(request.app[KEYS], request.headers.get("Authorization"))
        require(key, scope)
        request.app[LIMITER].take(key.id)
        request[KEY] = key
        await request.app[KEYS].key_touch(key.id)
        return await handler(request)

    return guard


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=document_text(), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    await request.app[POOL].fetchval("SELECT 1")
    return web.Response(text="ok")


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[REGISTRY]),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def _purge_idempotency(keys: ApiStore, stop: asyncio.Event) -> None:
    """Idempotency records older than a day go, hourly (api.sql: idempotency_purge)."""
    while not stop.is_set():
        await keys.idempotency_purge()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 3600)


def create_app(settings: Settings, *, dispatch_webhooks: bool | None = None) -> web.Application:
    """The API on `settings`; the webhook dispatcher too unless told otherwise."""
    app = web.Application(
        middlewares=[problems, _guard(scopes())],
        client_max_size=settings.api.max_body_mb * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[LIMITER] = RateLimiter(settings.api.rate_per_key, settings.api.rate_burst)
    app[REGISTRY] = registry = CollectorRegistry()
    app[METRICS] = _Metrics(registry)
    app[STOP] = asyncio.Event()
    run_dispatcher = (
        settings.api.dispatch_webhooks if dispatch_webhooks is None else dispatch_webhooks
    )

    async def database(app: web.Application) -> AsyncIterator[None]:
        warm()
        db = settings.database
        async with connect(db.url, min_size=db.pool_min, max_size=db.pool_max) as pool:
            app[POOL] = pool
            app[KEYS] = ApiStore(pool)
            yield

    async def background(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_purge_idempotency(app[KEYS], stop), name="purge")]
        if run_dispatcher:
            webhooks = WebhookStore(app[POOL])
            metrics = WebhookMetrics(registry)
            tasks.append(
                asyncio.create_task(
                    dispatch(webhooks, settings.webhooks, metrics, stop), name="dispatcher"
                )
            )
        app[BACKGROUND] = tasks
        yield
        stop.set()  # the dispatcher finishes the batch in hand, then stops
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(background)
    app.add_routes(
        [
            web.get("/api/v1/openapi.json", openapi, name="openapi"),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics_page),
            *contacts.routes(),
            *rights.routes(),
            *campaigns.routes(),
            *admin.routes(),
            *transactional.routes(),
        ]
    )
    return app
