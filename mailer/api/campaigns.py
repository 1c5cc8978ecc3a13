"""/api/v1/campaigns: list, status, pause / resume / cancel (mailer.campaigns.lifecycle,
the same transitions as `mailer campaign pause|resume|cancel`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mailer.api.context import KEY, POOL, page_limit
from mailer.api.problems import Problem
from mailer.api.writes import Conn, json_response, write
from mailer.campaigns.lifecycle import CampaignError, transition
from mailer.campaigns.store import CampaignStore

# The API's verbs and the state each asks for (lifecycle.TRANSITIONS checks the edge).
TARGETS = {"pause": "paused", "resume": "running", "cancel": "cancelled"}


async def list_campaigns(request: web.Request) -> web.Response:
    after = request.query.get("after", "")
    limit = page_limit(request)
    # Keyset on the slug. Campaigns number in the hundreds: the store's list is read
    # whole and cut here (no OFFSET either way).
    listed = sorted(await CampaignStore(request.app[POOL]).campaigns_list(), key=lambda c: c.slug)
    page = [c for c in listed if c.slug > after][:limit]
    more = len(page) == limit and any(c.slug > page[-1].slug for c in listed)
    return json_response(
        {"items": [dataclasses.asdict(c) for c in page], "next": page[-1].slug if more else None}
    )


async def _status(store: CampaignStore, slug: str) -> dict[str, Any]:
    campaign = await store.campaign_by_slug(slug)
    if campaign is None:
        raise Problem(404, f"no campaign {slug!r}")
    return {
        "slug": campaign.slug,
        "status": campaign.status,
        "audience_at": campaign.audience_at,
        "audience_counts": campaign.audience_counts,
        "started_at": campaign.started_at,
        "finished_at": campaign.finished_at,
        "pause_reason": campaign.pause_reason,
        "deliveries": await store.campaign_status_counts(campaign.id),
    }


async def status(request: web.Request) -> web.Response:
    store = CampaignStore(request.app[POOL])
    return json_response(await _status(store, request.match_info["slug"]))


def _mover(verb: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def move(request: web.Request) -> web.Response:
        slug = request.match_info["slug"]
        store = CampaignStore(request.app[POOL])
        await _status(store, slug)  # 404 before anything is written

        async def work(conn: Conn) -> tuple[int, Any, str | None]:
            # The transition commits on its own connection (the campaign store's); the
            # log line follows in this transaction.
            try:
                await transition(store, slug, TARGETS[verb])
            except CampaignError as exc:
                raise Problem(409, str(exc)) from None
            return 200, await _status(store, slug), slug

        return await write(
            request,
            request.app[POOL],
            request[KEY],
            action=f"campaign.{verb}",
            object_kind="campaign",
            work=work,
        )

    return move


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/campaigns", list_campaigns, name="listCampaigns"),
        web.get("/api/v1/campaigns/{slug}", status, name="getCampaign"),
        *(
            web.post(f"/api/v1/campaigns/{{slug}}/{verb}", _mover(verb), name=f"{verb}Campaign")
            for verb in TARGETS
        ),
    ]
