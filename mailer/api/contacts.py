"""/api/v1/contacts and /api/v1/consents: upsert, list, story, explain, opt-out, consent."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mailer.api.context import KEY, POOL, SETTINGS, body_of, email_of, page_limit
from mailer.api.problems import Problem
from mailer.api.writes import Conn, json_response, write
from mailer.campaigns import audience
from mailer.campaigns.store import CampaignStore
from mailer.contacts.store import ContactStore
from mailer.contacts.upsert import ItemsRejected, upsert_contacts
from mailer.core.counts import parse_count
from mailer.optouts.by_address import OptOutRefused, opt_out_address


def _rejected(exc: ItemsRejected, prefix: str = "/contacts") -> Problem:
    errors = [
        {"index": e.index, "pointer": f"{prefix}/{e.index}{e.pointer}", "detail": e.reason}
        for e in exc.errors
    ]
    return Problem(422, f"{exc}; each rejected item is listed in `errors`", errors=errors)


async def upsert(request: web.Request) -> web.Response:
    settings, key = request.app[SETTINGS], request[KEY]
    document = await body_of(request, "ContactBatch")
    items: list[dict[str, Any]] = document["contacts"]
    if len(items) > settings.api.max_batch:
        raise Problem(413, f"at most {settings.api.max_batch} contacts per request (api.max_batch)")
    store = ContactStore(request.app[POOL])
    body_sha256 = hashlib.sha256(await request.read()).digest()
    # Evidence per item goes to the operator log (the ledger rows name the item as the
    # import's line: import id + line lead from a grant to its proof).
    evidence = {
        str(i + 1): item["consent"]["evidence"]
        for i, item in enumerate(items)
        if isinstance(item.get("consent"), dict) and item["consent"].get("evidence")
    }

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            result = await upsert_contacts(
                store,
                items,
                origin=f"api:{key.prefix}",
                default_locale=settings.imports.default_locale,
                conn=conn,
                body_sha256=body_sha256,
            )
        except ItemsRejected as exc:
            raise _rejected(exc) from None
        body = {
            "import_id": result.import_id,
            "received": len(items),
            "created": result.contacts_created,
            "updated": result.contacts_updated,
            "consents_added": result.consents_added,
            "topics_added": result.topics_added,
            "suppressed": result.suppressed,
        }
        return 200, body, str(result.import_id)

    return await write(
        request,
        request.app[POOL],
        key,
        action="contacts.upsert",
        object_kind="import",
        work=work,
        detail={"items": len(items), "evidence": evidence},
    )


async def list_contacts(request: web.Request) -> web.Response:
    after = page_after_int(request)
    limit = page_limit(request)
    rows = await ContactStore(request.app[POOL]).contacts_page(after, limit)
    items = [dataclasses.asdict(r) for r in rows]
    return json_response({"items": items, "next": rows[-1].id if len(rows) == limit else None})


def page_after_int(request: web.Request) -> int:
    after = parse_count(request.query.get("after", "0"))
    if after is None:
        raise Problem(400, "after: expected the last id of the previous page")
    return after


async def story(request: web.Request) -> web.Response:
    email, email_hash = email_of(request)
    found = await ContactStore(request.app[POOL]).contact_story(email, email_hash)
    if found is None:
        raise Problem(404, f"no contact {email}")
    body = dataclasses.asdict(found)
    for line in body["suppressions"]:
        line.pop("detail", None)
    return json_response(body)


async def explain(request: web.Request) -> web.Response:
    email, _ = email_of(request)
    slug = request.query.get("campaign", "")
    pool = request.app[POOL]
    spec = await CampaignStore(pool).campaign_spec(slug)
    if spec is None:
        raise Problem(404, f"no campaign {slug!r}")
    inputs = await ContactStore(pool).contact_rule_inputs(email)
    if inputs is None:
        raise Problem(404, f"no contact {email}")
    verdict = audience.explain(inputs, spec, datetime.now(UTC))
    return json_response(
        {
            "email": email,
            "campaign": slug,
            "eligible": verdict.eligible,
            "reason": None if verdict.reason is None else verdict.reason.value,
            "detail": verdict.detail,
        }
    )


async def opt_out(request: web.Request) -> web.Response:
    address = request.match_info["email"]
    document = await body_of(request, "OptOutIn")
    return await _opt_out(
        request,
        address,
        channels=document.get("channels"),
        topics=document.get("topics", []),
        source=document["source"],
        evidence=document.get("evidence") or {},
        action="contacts.opt_out",
    )


async def _opt_out(
    request: web.Request,
    address: str,
    *,
    channels: list[str] | None,
    topics: list[str],
    source: str,
    evidence: dict[str, Any],
    action: str,
    pointers: dict[str, str] | None = None,
    as_consent: bool = False,
) -> web.Response:
    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            done = await opt_out_address(
                conn, address, channels=channels, topics=topics, source=source, evidence=evidence
            )
        except OptOutRefused as exc:
            if exc.missing:
                raise Problem(404, str(exc)) from None
            pointer = (pointers or {}).get(exc.pointer, exc.pointer)
            raise Problem(
                422, str(exc), errors=[{"pointer": pointer, "detail": str(exc)}]
            ) from None
        body: dict[str, Any] = dataclasses.asdict(done)
        if as_consent:  # POST /consents answers in its own shape (ConsentResult)
            body = {"email": done.email, "action": "withdraw", "changed": done.changed}
        return 200, body, str(done.contact_id)

    return await write(
        request, request.app[POOL], request[KEY], action=action, object_kind="contact", work=work
    )


async def change_consent(request: web.Request) -> web.Response:
    """A grant is an upsert of one contact with that consent; a withdrawal is an opt-out of
    that channel: the ledger gains rows through the same statements either way."""
    document = await body_of(request, "ConsentChange")
    key = request[KEY]
    if document["action"] == "withdraw":
        response = await _opt_out(
            request,
            document["email"],
            channels=[document.get("channel", "email")],
            topics=[],
            source=document["source"],
            evidence=document.get("evidence") or {},
            action="consents.withdraw",
            pointers={"/channels": "/channel"},
            as_consent=True,
        )
        return response
    missing = [f for f in ("kind", "obtained_at") if f not in document]
    if missing:
        raise Problem(
            422,
            "a grant needs kind and obtained_at",
            errors=[{"pointer": f"/{f}", "detail": "required for a grant"} for f in missing],
        )
    consent: dict[str, Any] = {
        k: document[k] for k in ("kind", "source", "obtained_at", "ends_at") if k in document
    }
    consent["channel"] = document.get("channel", "email")
    settings = request.app[SETTINGS]
    store = ContactStore(request.app[POOL])

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            result = await upsert_contacts(
                store,
                [{"email": document["email"], "consent": consent}],
                origin=f"api:{key.prefix}",
                default_locale=settings.imports.default_locale,
                conn=conn,
            )
        except ItemsRejected as exc:
            errors = [{"pointer": _flat(e.pointer), "detail": e.reason} for e in exc.errors]
            raise Problem(422, str(exc), errors=errors) from None
        body = {"email": document["email"], "action": "grant", "changed": result.consents_added > 0}
        return 200, body, str(result.import_id)

    return await write(
        request,
        request.app[POOL],
        key,
        action="consents.grant",
        object_kind="import",
        work=work,
        detail={"evidence": document.get("evidence") or {}},
    )


def _flat(pointer: str) -> str:
    """An upsert item's pointer (/consent/kind) as the consent body's (/kind)."""
    return pointer.removeprefix("/consent")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/contacts", list_contacts, name="listContacts"),
        web.post("/api/v1/contacts", upsert, name="upsertContacts"),
        web.get("/api/v1/contacts/{email}", story, name="getContact"),
        web.get("/api/v1/contacts/{email}/explain", explain, name="explainContact"),
        web.post("/api/v1/contacts/{email}/opt-out", opt_out, name="optOutContact"),
        web.post("/api/v1/consents", change_consent, name="changeConsent"),
    ]
