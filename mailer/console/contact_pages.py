"""Contact pages: search (paged by address), the consent story, explain for a campaign."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from mailer.campaigns import audience
from mailer.console.accounts import Role
from mailer.console.web import console_of, render, requires
from mailer.core.addresses import InvalidAddress, address_hash, normalise

PAGE = 50


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
    story = await console_of(request).contacts.contact_story(email, address_hash(email))
    if story is None:
        raise web.HTTPNotFound(text="no contact and no suppression for this address")
    return render(request, "contact.html", email=email, story=story)


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
    return render(request, "explain.html", email=email, slug=slug, verdict=verdict, at=at)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/contacts", contact_search, name="contacts")
    router.add_get("/contacts/{email}", contact_page, name="contact")
    router.add_get("/contacts/{email}/explain", explain_page, name="explain")
