"""Reference pages: topics (everyone), API keys and webhook endpoints (admin; their changes
are integration_pages', the operations of `mailer api-keys` and `mailer webhooks`)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from mailer.api.keys import SCOPES
from mailer.api.store import ApiStore
from mailer.console.accounts import Role
from mailer.console.web import console_of, render, requires
from mailer.webhooks.dispatcher import EVENT_TYPES
from mailer.webhooks.store import WebhookStore


@requires(Role.VIEWER)
async def topics_page(request: web.Request) -> web.Response:
    topics = await console_of(request).contacts.topics_list()
    return render(request, "topics.html", topics=topics)


@requires(Role.ADMIN)
async def keys_page(request: web.Request) -> web.Response:
    keys = await ApiStore(console_of(request).pool).key_list()
    return render(request, "keys.html", keys=keys, now=datetime.now(UTC), scopes=SCOPES)


@requires(Role.ADMIN)
async def webhooks_page(request: web.Request) -> web.Response:
    endpoints = await WebhookStore(console_of(request).pool).endpoint_list()
    return render(request, "webhooks.html", endpoints=endpoints, event_types=EVENT_TYPES)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/topics", topics_page, name="topics")
    router.add_get("/keys", keys_page, name="keys")
    router.add_get("/webhooks", webhooks_page, name="webhooks")
