"""/api/v1/contacts/{email}/export and /erase: a person's data rights (GDPR art. 15 and
17, PIPEDA principle 4.9), by mailer.compliance.rights, as `mailer contacts export|erase`
and the console's contact page run them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mailer.api.context import KEY, POOL, email_of
from mailer.api.problems import Problem
from mailer.api.writes import Conn, json_response, write
from mailer.compliance.privacy import ErasureBusy
from mailer.compliance.rights import erase_contact, export_contact
from mailer.compliance.store import ComplianceStore, log_operator_action

# The operator log is append-only and outlives an erasure: it names the person by the
# SHA-256 of the address (what the suppression kept after an erasure holds), never by the
# address, so the routes are logged without it.
EXPORT_ROUTE = "GET /api/v1/contacts/{email}/export"
ERASE_ROUTE = "POST /api/v1/contacts/{email}/erase"


async def export(request: web.Request) -> web.Response:
    """Everything held about the address, as the JSON a person receives; logged, since it
    hands one person's data to a system (whose key, when: the operator log)."""
    email, email_hash = email_of(request)
    pool, key = request.app[POOL], request[KEY]
    document = await export_contact(ComplianceStore(pool), email, datetime.now(UTC))
    held = {name: len(rows) for name, rows in document["tables"].items() if rows}
    await log_operator_action(
        pool, "api_key", key.prefix, "contacts.export", "contact", email_hash.hex(),
        {"route": EXPORT_ROUTE, "tables": held},
    )  # fmt: skip
    return json_response(document)


async def erase(request: web.Request) -> web.Response:
    """Erase the person's data everywhere, keep a hashed suppression; the erasure and its
    line in the operator log commit together. 409 while a message to them is in flight."""
    email, email_hash = email_of(request)
    store, key = ComplianceStore(request.app[POOL]), request[KEY]

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            done = await erase_contact(store, email, f"api:{key.prefix}", conn)
        except ErasureBusy as exc:
            raise Problem(409, str(exc), headers={"Retry-After": "60"}) from None
        # No address in the answer either: an idempotent replay keeps it for a day.
        body = {**dataclasses.asdict(done), "lines": done.lines()}
        return 200, body, email_hash.hex()

    return await write(
        request, request.app[POOL], key, action="contacts.erase", object_kind="contact",
        work=work, detail={"route": ERASE_ROUTE},
    )  # fmt: skip


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/contacts/{email}/export", export, name="exportContact"),
        web.post("/api/v1/contacts/{email}/erase", erase, name="eraseContact"),
    ]
