"""/api/v1/suppressions and /api/v1/webhooks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from mailer.api.context import KEY, POOL, body_of, email_of
from mailer.api.problems import Problem
from mailer.api.writes import Conn, json_response, write
from mailer.contacts import imports
from mailer.contacts.csvfile import FileError
from mailer.contacts.store import ContactStore
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.webhooks.endpoints import WebhookInputError, check_events, check_url, new_secret
from mailer.webhooks.store import WebhookStore


async def add_suppressions(request: web.Request) -> web.Response:
    """A registry or manual list, all or nothing (the same statements as `mailer suppress
    import`); only the addresses' hashes are kept."""
    document = await body_of(request, "SuppressionsIn")
    hashes: list[tuple[int, bytes]] = []
    errors = []
    for i, text in enumerate(document["emails"]):
        try:
            hashes.append((i + 1, address_hash(normalise(text))))
        except InvalidAddress as exc:
            errors.append({"index": i, "pointer": f"/emails/{i}", "detail": str(exc)})
    if errors:
        raise Problem(422, f"{len(errors)} invalid address(es): nothing was written", errors=errors)
    store = ContactStore(request.app[POOL])
    key = request[KEY]
    digest = hashlib.sha256(b"\n".join(h for _, h in hashes)).digest()

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        result = await store.import_suppressions(
            hashes,
            file_name=f"api:{key.prefix}",
            file_sha256=digest,
            reason=document.get("reason", "manual"),
            scope="global",
            channel=None,
            topic_id=None,
            source=document["source"],
            rejected=0,
            conn=conn,
        )
        return 200, {"received": len(hashes), "added": result.added}, None

    return await write(
        request, request.app[POOL], key, action="suppressions.add", object_kind="suppression",
        work=work, detail={"count": len(hashes), "source": document["source"]},
    )  # fmt: skip


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise Problem(400, f"{name}: expected one of {', '.join(choices)}")
    return value


async def import_suppressions(request: web.Request) -> web.Response:
    """A registry file uploaded as the body (CSV with an `email` column, or one address per
    line), read by `mailer suppress import`'s own reader; all or nothing: any invalid line
    is named by its number and nothing is written."""
    key = request[KEY]
    reason = _choice(request, "reason", imports.SUPPRESSION_REASONS, "registry")
    scope = _choice(request, "scope", imports.SUPPRESSION_SCOPES, "global")
    channel = request.query.get("channel")
    if channel is not None and channel not in imports.CHANNELS:
        raise Problem(400, f"channel: expected one of {', '.join(imports.CHANNELS)}")
    source = request.query.get("source") or f"api:{key.prefix} upload"
    store = ContactStore(request.app[POOL])
    try:
        topic_id = await imports.suppression_target(
            store, reason=reason, scope=scope, channel=channel, topic=request.query.get("topic")
        )
    except imports.SuppressionTargetError as exc:
        raise Problem(400, f"{exc.option}: {exc}") from None
    raw = await request.read()

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        with tempfile.TemporaryDirectory() as folder:
            # The reader takes a file (its encoding and delimiter sniffing, its line count).
            path = Path(folder) / "body.csv"
            await asyncio.to_thread(path.write_bytes, raw)
            try:
                result, _ = await imports.import_suppressions(
                    store, path, reason=reason, scope=scope, channel=channel,
                    topic_id=topic_id, source=source, file_name=f"api:{key.prefix}",
                    all_or_nothing=True, conn=conn,
                )  # fmt: skip
            except imports.SuppressionsRejected as exc:
                errors = [
                    {"line": r.line, "pointer": "/email", "detail": r.reason}
                    for r in exc.rejected[:100]
                ]
                raise Problem(422, str(exc), errors=errors) from None
            except FileError as exc:
                detail = str(exc).replace(str(path), "body")
                line = re.search(r"line (\d+)", detail)
                errors = (
                    []
                    if line is None
                    else [{"line": int(line.group(1)), "pointer": "", "detail": detail}]
                )
                raise Problem(422, detail, errors=errors) from None
        body = {"received": result.rows_valid, "added": result.added}
        return 200, body, None

    return await write(
        request, request.app[POOL], key, action="suppressions.import", object_kind="suppression",
        work=work, detail={"reason": reason, "scope": scope, "source": source},
    )  # fmt: skip


async def check_suppression(request: web.Request) -> web.Response:
    email, email_hash = email_of(request)
    found = await ContactStore(request.app[POOL]).contact_story(email, email_hash)
    lines = [] if found is None else [dataclasses.asdict(s) for s in found.suppressions]
    for line in lines:
        line.pop("detail", None)
    return json_response({"email": email, "suppressed": bool(lines), "suppressions": lines})


def _endpoint_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "url": e.url,
        "events": e.events,
        "enabled": e.disabled_at is None,
        "disabled_why": e.disabled_why,
        "pending": e.pending,
        "failed": e.failed,
        "delivered": e.delivered,
        "oldest_pending_s": e.oldest_pending_s,
    }


async def list_webhooks(request: web.Request) -> web.Response:
    endpoints = await WebhookStore(request.app[POOL]).endpoint_list()
    return json_response({"items": [_endpoint_json(e) for e in endpoints]})


async def add_webhook(request: web.Request) -> web.Response:
    document = await body_of(request, "WebhookIn")
    try:
        url, events = check_url(document["url"]), check_events(document["events"])
    except WebhookInputError as exc:
        field = "/url" if str(exc).startswith("url") else "/events"
        raise Problem(422, str(exc), errors=[{"pointer": field, "detail": str(exc)}]) from None
    secret = new_secret()
    store = WebhookStore(request.app[POOL])

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        endpoint = await store.endpoint_add(url, events, secret, conn)
        # The secret is in this answer only (and in an idempotent replay of it).
        return 201, {**_endpoint_json(endpoint), "secret": secret}, str(endpoint.id)

    return await write(
        request, request.app[POOL], request[KEY], action="webhook.add", object_kind="webhook",
        work=work, detail={"url": url, "events": events},
    )  # fmt: skip


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/suppressions", add_suppressions, name="addSuppressions"),
        web.post("/api/v1/suppressions/import", import_suppressions, name="importSuppressions"),
        web.get("/api/v1/suppressions/{email}", check_suppression, name="checkSuppression"),
        web.get("/api/v1/webhooks", list_webhooks, name="listWebhooks"),
        web.post("/api/v1/webhooks", add_webhook, name="addWebhook"),
    ]
