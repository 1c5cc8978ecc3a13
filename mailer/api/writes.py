"""Every write of the API in one transaction with its Idempotency-Key record and its line
in the operator log: the change, the log and the remembered answer commit together."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

from aiohttp import web

from mailer.api.keys import ApiKey
from mailer.api.problems import Problem
from mailer.api.store import ApiStore, WriteConn
from mailer.compliance.store import log_operator_action
from mailer.db import Pool

# The connection of a write's transaction, and the work done on it: (status, body, object id).
Conn = WriteConn
Work = Callable[[Conn], Awaitable[tuple[int, Any, str | None]]]


def _default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON: {type(value).__name__}")


def dumps(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, default=_default)


def json_response(body: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status, text=dumps(body), content_type="application/json", headers=headers
    )


async def write(
    request: web.Request,
    pool: Pool,
    key: ApiKey,
    *,
    action: str,
    object_kind: str,
    work: Work,
    detail: dict[str, Any] | None = None,
) -> web.Response:
    """Run `work` once per Idempotency-Key, logged in the operator log, in one transaction.

    A retry with the same key and the same request gets the first answer (and the header
    Idempotent-Replayed: true) without running anything; the same key with another
    request is a 409. Concurrent retries wait on the first one's row (api.sql).
    """
    idem = request.headers.get("Idempotency-Key")
    if idem is not None and not 1 <= len(idem) <= 200:
        raise Problem(400, "Idempotency-Key: 1 to 200 characters")
    raw = await request.read()
    digest = hashlib.sha256(
        request.method.encode() + b" " + request.path_qs.encode() + b"\n" + raw
    ).digest()
    async with pool.acquire() as conn, conn.transaction():
        if idem is not None and not await ApiStore.idempotency_claim(conn, key.id, idem, digest):
            prior = await ApiStore.idempotency_get(conn, key.id, idem)
            assert prior is not None  # the row we waited on, committed with its answer
            assert prior.status is not None
            if prior.request_hash != digest:
                raise Problem(409, "this Idempotency-Key was used for a different request")
            return web.Response(
                status=prior.status,
                text=prior.body,
                content_type="application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        status, body, object_id = await work(conn)
        await log_operator_action(
            conn,
            "api_key",
            key.prefix,
            action,
            object_kind,
            object_id,
            {
                # The route's pattern, not its values (an address in the path): the log
                # is append-only and outlives an erasure.
                "route": route_of(request),
                "idempotency_key": idem,
                **(detail or {}),
            },
        )
        # Stored as the text sent, so a replay answers exactly what the first did.
        text = dumps(body)
        if idem is not None:
            await ApiStore.idempotency_save(conn, key.id, idem, status, text)
    return web.Response(status=status, text=text, content_type="application/json")


def route_of(request: web.Request) -> str:
    """`METHOD /api/v1/contacts/{email}/opt-out`: the route as declared, never its values."""
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else '(unmatched)'}"
