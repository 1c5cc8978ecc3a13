"""/api/v1/transactional: enqueue a transactional notice (mailer.transactional.enqueue, the
operation `mailer send` runs) and read its status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mailer.api.context import KEY, POOL, SETTINGS, body_of
from mailer.api.problems import Problem
from mailer.api.writes import Conn, json_response, write
from mailer.core.counts import parse_count
from mailer.transactional.enqueue import (
    EnqueueError,
    IdempotencyConflict,
    UnknownTemplate,
    enqueue,
)
from mailer.transactional.store import TransactionalStore


async def send(request: web.Request) -> web.Response:
    """202 when accepted (committed before this answer); 200 with the refusal otherwise
    (a refusal is an answer: the message is kept as refused, a retry gets the same)."""
    document = await body_of(request, "TransactionalIn")
    store = TransactionalStore.for_settings(request.app[POOL], request.app[SETTINGS])
    idem = request.headers.get("Idempotency-Key")

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            # enqueue commits on its own (durably, before we answer); the same
            # Idempotency-Key makes a retry after a crash here find that message again.
            result = await enqueue(
                store,
                template=document["template"],
                to=document["to"],
                data=document.get("data", {}),
                idempotency_key=idem,
                locale=document.get("locale"),
            )
        except UnknownTemplate as exc:
            raise Problem(404, str(exc)) from None
        except IdempotencyConflict as exc:
            raise Problem(409, str(exc)) from None
        except EnqueueError as exc:
            pointer = {"idempotency_key": ""}.get(exc.field, f"/{exc.field}")
            raise Problem(
                422, str(exc), errors=[{"pointer": pointer, "detail": str(exc)}]
            ) from None
        body = {
            "message_id": result.message_id,
            "accepted": result.accepted,
            "duplicate": result.duplicate,
            "refusal": None
            if result.refusal is None
            else {"reason": result.refusal.reason, "detail": result.refusal.detail},
            "note": result.note,
        }
        return (202 if result.accepted else 200), body, str(result.message_id)

    return await write(
        request,
        request.app[POOL],
        request[KEY],
        action="transactional.send",
        object_kind="transactional",
        work=work,
        detail={"template": document["template"]},
    )


async def status(request: web.Request) -> web.Response:
    text = request.match_info["id"]
    if (message_id := parse_count(text)) is None:
        raise Problem(400, "id: expected a message id")
    store = TransactionalStore.for_settings(request.app[POOL], request.app[SETTINGS])
    found = await store.message(message_id)
    if found is None:
        raise Problem(404, f"no transactional message {text}")
    return json_response(
        {
            "message_id": found.id,
            "template": found.template,
            "basis": found.basis,
            "status": found.status,
            "email": found.email,
            "refusal": found.refusal,
            "note": found.note,
            "attempts": found.attempts,
            "smtp_code": found.smtp_code,
            "enqueued_at": found.enqueued_at,
            "sent_at": found.sent_at,
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/transactional", send, name="sendTransactional"),
        web.get("/api/v1/transactional/{id}", status, name="getTransactional"),
    ]
