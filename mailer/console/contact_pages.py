"""Contact pages: search (paged by address), the consent story, explain for a campaign."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from mailer.campaigns import audience
from mailer.compliance.privacy import ErasureBusy
from mailer.compliance.rights import erase_contact, export_contact
from mailer.console.accounts import Role
from mailer.console.web import console_of, logged_write, operator_of, record, render, requires
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.consent import REASON_TEXT
from mailer.core.counts import parse_count
from mailer.report.store import ContactDelivery, ContactEvent

PAGE = 50
HISTORY_PAGE = 25  # deliveries and events per page of a contact


def _delivery_cursor(text: str) -> int | None:
    """`?deliveries=ID`: the page below that delivery id (keyset, no OFFSET)."""
    if not text:
        return None
    if (delivery_id := parse_count(text)) is None:
        raise web.HTTPBadRequest(text="deliveries: a delivery id")
    return delivery_id


def _event_cursor(text: str) -> tuple[datetime, str, int, int] | None:
    """`?events=TIME~KIND~REF~TIE`: the page below that event (keyset on the timeline's order;
    TIE tells apart events of one delivery in the same microsecond)."""
    if not text:
        return None
    try:
        at, kind, ref, tie = text.split("~")
        when = datetime.fromisoformat(at)
        ref_id, tie_id = parse_count(ref), parse_count(tie)
        if ref_id is None or tie_id is None or when.tzinfo is None:
            raise ValueError(text)
    except ValueError:
        raise web.HTTPBadRequest(text="events: TIME~KIND~REF~TIE from a next-page link") from None
    return when, kind, ref_id, tie_id


def event_key(event: ContactEvent) -> str:
    return f"{event.at.isoformat()}~{event.kind}~{event.ref}~{event.tie}"


def _email(request: web.Request) -> str:
    try:
        return normalise(request.match_info["email"])
    except InvalidAddress:
        raise web.HTTPNotFound(text="not a valid address") from None


@requires(Role.VIEWER)
async def contact_search(request: web.Request) -> web.Response:
    query = request.query.get("q", "").strip()
    after = request.query.get("after", "")
    found = await console_of(request).contacts.contacts_search(query, after=after, limit=PAGE)
    return render(
        request,
        "contacts.html",
        q=query,
        found=found,
        next_after=found[-1].email if len(found) == PAGE else None,
    )


@requires(Role.VIEWER)
async def contact_page(request: web.Request) -> web.Response:
    email = _email(request)
    console = console_of(request)
    d_before = _delivery_cursor(request.query.get("deliveries", ""))
    e_before = _event_cursor(request.query.get("events", ""))
    story = await console.contacts.contact_story(email, address_hash(email))
    if story is None:
        raise web.HTTPNotFound(text="no contact and no suppression for this address")
    deliveries: list[ContactDelivery] = []
    events: list[ContactEvent] = []
    if story.contact is not None:
        # One more row than shown tells whether a next page exists.
        deliveries = await console.reports.contact_deliveries(
            story.contact.id, d_before, HISTORY_PAGE + 1
        )
        events = await console.reports.contact_activity(
            story.contact.id, e_before, HISTORY_PAGE + 1
        )
    more_d, more_e = len(deliveries) > HISTORY_PAGE, len(events) > HISTORY_PAGE
    deliveries, events = deliveries[:HISTORY_PAGE], events[:HISTORY_PAGE]
    here = dict(request.query)
    next_d = {**here, "deliveries": str(deliveries[-1].id)} if more_d else None
    next_e = {**here, "events": event_key(events[-1])} if more_e else None
    return render(
        request,
        "contact.html",
        email=email,
        story=story,
        deliveries=deliveries,
        events=events,
        next_deliveries=None if next_d is None else urlencode(next_d),
        next_events=None if next_e is None else urlencode(next_e),
    )


@requires(Role.VIEWER)
async def explain_page(request: web.Request) -> web.Response:
    """`mailer contacts explain`: the same verdict, from the same rule (audience.explain)."""
    console = console_of(request)
    email = _email(request)
    slug = request.query.get("campaign", "")
    spec = await console.campaigns.campaign_spec(slug)
    inputs = await console.contacts.contact_rule_inputs(email)
    if spec is None or inputs is None:
        raise web.HTTPNotFound(text="no such campaign or contact")
    at = datetime.now(UTC)
    verdict = audience.explain(inputs, spec, at)
    return render(
        request,
        "explain.html",
        email=email,
        slug=slug,
        verdict=verdict,
        at=at,
        # The English detail says more than the reason (a date) or the same: shown if more.
        english_reason=REASON_TEXT.get(verdict.reason) if verdict.reason else None,
    )


@requires(Role.ADMIN)
async def export_json(request: web.Request) -> web.Response:
    """The person's access export (`mailer contacts export`), as a download."""
    console = console_of(request)
    email = _email(request)
    document = await export_contact(console.compliance, email, datetime.now(UTC))
    # The operator log is append-only and outlives an erasure: it names the person by the
    # hash of their address (GDPR art. 17), as the API's log lines do.
    await record(request, "contact.export", "contact", address_hash(email).hex())
    return web.Response(
        text=json.dumps(document, ensure_ascii=False, indent=2, default=str),
        content_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="contact-export.json"'},
    )


@requires(Role.ADMIN)
async def erase_page(request: web.Request) -> web.Response:
    return render(request, "erase.html", email=_email(request), done=None, error=None)


@requires(Role.ADMIN)
async def erase(request: web.Request) -> web.Response:
    """`mailer contacts erase`, confirmed by typing the address again."""
    console = console_of(request)
    email = _email(request)
    form = await request.post()
    if str(form.get("confirm", "")).strip().lower() != email:
        return render(request, "erase.html", 400, email=email, done=None, error="confirm")
    try:
        # The erasure and its log line commit together, as the API's do.
        async with logged_write(
            request, "contact.erase", "contact", address_hash(email).hex()
        ) as w:
            done = await erase_contact(
                console.compliance, email, operator_of(request).email, conn=w.conn
            )
            w.detail["contacts"] = done.contacts
    except ErasureBusy as exc:
        return render(request, "erase.html", 409, email=email, done=None, error=str(exc))
    return render(request, "erase.html", email=email, done=done.lines(), error=None)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/contacts/{email}/export.json", export_json, name="contact_export")
    router.add_get("/contacts/{email}/erase", erase_page, name="erase_page")
    router.add_post("/contacts/{email}/erase", erase, name="erase")
    router.add_get("/contacts", contact_search, name="contacts")
    router.add_get("/contacts/{email}", contact_page, name="contact")
    router.add_get("/contacts/{email}/explain", explain_page, name="explain")
