"""API keys and webhook endpoints, changed (admin): the operations of `mailer api-keys` and
`mailer webhooks` (mailer.api.key_admin, mailer.webhooks.endpoints), each in the operator
log. The lists themselves are admin_pages' (GET /keys, GET /webhooks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mailer.api import key_admin
from mailer.api.keys import SCOPES, ApiKeyError
from mailer.api.store import ApiStore
from mailer.console.accounts import Role
from mailer.console.web import console_of, logged_write, operator_of, render, requires
from mailer.webhooks.dispatcher import EVENT_TYPES
from mailer.webhooks.endpoints import WebhookInputError, add_endpoint, replay_window
from mailer.webhooks.store import WebhookStore

VIA = {"via": "console"}


async def _keys(request: web.Request, status: int = 200, **shown: Any) -> web.Response:
    keys = await ApiStore(console_of(request).pool).key_list()
    return render(
        request, "keys.html", status, keys=keys, now=datetime.now(UTC), scopes=SCOPES, **shown
    )


@requires(Role.ADMIN)
async def key_create(request: web.Request) -> web.Response:
    """`mailer api-keys create`: the key is on this answer only."""
    form = await request.post()
    try:
        key, _, text = await key_admin.create_key(
            console_of(request).pool,
            operator_of(request).email,
            str(form.get("name", "")),
            ",".join(str(s) for s in form.getall("scopes", [])),
            str(form.get("expires", "")).strip() or None,
            VIA,
        )
    except ApiKeyError as exc:
        return await _keys(request, 400, error=str(exc))
    return await _keys(request, created=(key.prefix, text))


@requires(Role.ADMIN)
async def key_change(request: web.Request) -> web.Response:
    """`mailer api-keys revoke|expire`, by the key's prefix."""
    form = await request.post()
    prefix, action = request.match_info["prefix"], request.match_info["action"]
    at = None
    if action == "expire" and (text := str(form.get("at", "")).strip()):
        try:
            at = key_admin.when(text, "at")
        except ApiKeyError as exc:
            return await _keys(request, 400, error=str(exc))
    changed = await key_admin.change_key(
        console_of(request).pool, operator_of(request).email, prefix, action, at, VIA
    )
    if not changed:
        return await _keys(request, 404, error_key="no_key")
    return await _keys(request, done=True)


async def _hooks(request: web.Request, status: int = 200, **shown: Any) -> web.Response:
    endpoints = await WebhookStore(console_of(request).pool).endpoint_list()
    return render(
        request, "webhooks.html", status, endpoints=endpoints, event_types=EVENT_TYPES, **shown
    )


def _endpoint(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such endpoint") from None


@requires(Role.ADMIN)
async def webhook_add(request: web.Request) -> web.Response:
    """`mailer webhooks add`: the signing secret is on this answer only."""
    form = await request.post()
    events = [str(e) for e in form.getall("events", [])]
    store = WebhookStore(console_of(request).pool)
    try:
        async with logged_write(request, "webhook.add", "webhook") as w:
            url = str(form.get("url", "")).strip()
            endpoint, secret = await add_endpoint(store, url, events, w.conn)
            w.object_id = str(endpoint.id)
            w.detail.update(url=endpoint.url, events=endpoint.events)
    except WebhookInputError as exc:
        return await _hooks(request, 400, error=str(exc))
    return await _hooks(request, secret=(endpoint.id, secret))


@requires(Role.ADMIN)
async def webhook_switch(request: web.Request) -> web.Response:
    """`mailer webhooks enable|disable`."""
    endpoint_id = _endpoint(request)
    action = request.match_info["action"]
    store = WebhookStore(console_of(request).pool)
    if not await store.endpoint_exists(endpoint_id):
        raise web.HTTPNotFound(text="no such endpoint")
    me = operator_of(request).email
    # Each change and its log line in one transaction: both commit, or neither.
    async with logged_write(request, f"webhook.{action}", "webhook", str(endpoint_id)) as w:
        if action == "enable":
            w.detail["due"] = await store.endpoint_enable(endpoint_id, w.conn)
        else:  # an endpoint already off is no change: no line
            w.unchanged = not await store.endpoint_disable(endpoint_id, f"disabled by {me}", w.conn)
    return await _hooks(request, done=True)


@requires(Role.ADMIN)
async def webhook_replay(request: web.Request) -> web.Response:
    """`mailer webhooks replay`: the range's events queued again for this endpoint."""
    endpoint_id = _endpoint(request)
    form = await request.post()
    store = WebhookStore(console_of(request).pool)
    if not await store.endpoint_exists(endpoint_id):
        raise web.HTTPNotFound(text="no such endpoint")
    try:
        since, until = replay_window(str(form.get("since", "")), None)
    except WebhookInputError as exc:
        return await _hooks(request, 400, error=str(exc))
    window = {"since": since.isoformat(), "until": until.isoformat()}
    async with logged_write(request, "webhook.replay", "webhook", str(endpoint_id), window) as w:
        queued = w.detail["queued"] = await store.replay(endpoint_id, since, until, w.conn)
    return await _hooks(request, replayed=queued)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/keys", key_create, name="key_create")
    router.add_post("/keys/{prefix}/{action:revoke|expire}", key_change, name="key_change")
    router.add_post("/webhooks", webhook_add, name="webhook_add")
    router.add_post("/webhooks/{id}/{action:enable|disable}", webhook_switch, name="webhook_switch")
    router.add_post("/webhooks/{id}/replay", webhook_replay, name="webhook_replay")
