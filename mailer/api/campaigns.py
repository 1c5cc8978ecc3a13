"""/api/v1/campaigns: list, create, status, check, audience, send, pause / resume / cancel,
report: mailer.campaigns.lifecycle and mailer.report, as `mailer campaign …` runs them.

Every transition (send, pause, resume, cancel) happens on the write's connection, so the
state change and its line in the operator log commit together, or neither does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from mailer.api.context import KEY, POOL, SETTINGS, page_limit
from mailer.api.problems import Problem
from mailer.api.writes import Conn, json_response, write
from mailer.campaigns import deliverability, lifecycle
from mailer.campaigns.definition import CampaignFileError
from mailer.campaigns.lifecycle import CampaignError, transition
from mailer.campaigns.limits import RenderLimits
from mailer.campaigns.store import CampaignStore
from mailer.campaigns.template_set import TemplateFileError
from mailer.core import consent
from mailer.report.document import render_json
from mailer.report.figures import figures
from mailer.report.store import ReportStore

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


async def _status(store: CampaignStore, slug: str, conn: Conn | None = None) -> dict[str, Any]:
    campaign = await store.campaign_by_slug(slug, conn)
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
        "deliveries": await store.campaign_status_counts(campaign.id, conn),
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
            # On this transaction's connection: the log line commits with the transition.
            try:
                await transition(store, slug, TARGETS[verb], conn=conn)
            except CampaignError as exc:
                raise Problem(409, str(exc)) from None
            return 200, await _status(store, slug, conn), slug

        return await write(
            request,
            request.app[POOL],
            request[KEY],
            action=f"campaign.{verb}",
            object_kind="campaign",
            work=work,
        )

    return move


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, f"the body is not UTF-8 text: {exc}") from None


# "field: reason" as the campaign file's checker words each problem (field_checker.py).
_FIELD = re.compile(r"([a-z_][a-z0-9_]*(?:\.[A-Za-z0-9_-]+)*): (.+)", re.S)


def _file_problem(exc: CampaignFileError) -> Problem:
    """A campaign file's problems with JSON pointers into the TOML document's tables."""
    errors = []
    for text in exc.problems:
        match = _FIELD.fullmatch(text)
        pointer = "" if match is None else "/" + match.group(1).replace(".", "/")
        errors.append({"pointer": pointer, "detail": text})
    return Problem(422, "the campaign file is invalid; each problem is in `errors`", errors=errors)


async def create(request: web.Request) -> web.Response:
    """A draft from a campaign file's TOML, as `mailer campaign create FILE` makes it."""
    text = _text(await request.read())
    templates = Path(request.app[SETTINGS].api.templates_dir)
    store = CampaignStore(request.app[POOL])

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            _, definition = await lifecycle.create_from_text(
                store, text, templates, "request body", conn=conn
            )
        except CampaignFileError as exc:
            raise _file_problem(exc) from None
        except TemplateFileError as exc:
            errors = [{"pointer": "/template", "detail": str(exc)}]
            raise Problem(422, str(exc), errors=errors) from None
        except CampaignError as exc:  # "<source>: <field>: why"
            field, _, why = str(exc).removeprefix("request body: ").partition(": ")
            status = 409 if field == "slug" else 422
            errors = [{"pointer": f"/{field}", "detail": why}]
            raise Problem(status, str(exc), errors=errors) from None
        return 201, await _status(store, definition.slug, conn), definition.slug

    return await write(
        request, request.app[POOL], request[KEY], action="campaign.create",
        object_kind="campaign", work=work,
    )  # fmt: skip


async def check(request: web.Request) -> web.Response:
    """`mailer campaign check`: the rendered samples' lint and the sending setup."""
    slug, settings = request.match_info["slug"], request.app[SETTINGS]
    store = CampaignStore(request.app[POOL])
    try:
        problems = await lifecycle.check(store, slug, RenderLimits.from_settings(settings.engine))
        _, definition = await lifecycle.load_definition(store, slug)
    except CampaignError as exc:
        raise Problem(404, str(exc)) from None
    findings = deliverability.check(settings, definition)
    return json_response(
        {
            "campaign": slug,
            # What `campaign check` exits 1 on: a lint problem or a fatal setup finding.
            "ok": not problems and not any(f.fatal for f in findings),
            "lint": [
                {
                    "kind": None if p.kind is None else p.kind.value,
                    "locale": p.locale,
                    "part": p.part,
                    "element": p.element,
                    "text": str(p),
                }
                for p in problems
            ],
            "setup": [_finding(f) for f in findings],
        }
    )


def _finding(f: deliverability.Finding) -> dict[str, Any]:
    return {"setting": f.setting, "message": f.message, "fatal": f.fatal}


async def audience_counts(request: web.Request) -> web.Response:
    """`mailer campaign audience`: eligible, and everyone excluded by reason, at a time."""
    slug = request.match_info["slug"]
    text = request.query.get("at")
    try:
        at = datetime.now(UTC) if text is None else datetime.fromisoformat(text)
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or out of range once in UTC
        raise Problem(400, f"at: {str(text)[:50]!r} is not an ISO 8601 time") from None
    pool, settings = request.app[POOL], request.app[SETTINGS]
    store = CampaignStore(pool, audience_parts=settings.database.audience_parts)
    spec = await store.campaign_spec(slug)
    if spec is None:
        raise Problem(404, f"no campaign {slug!r}")
    counts = await store.audience_counts(spec, at)
    why = {r.value: text for r, text in consent.REASON_TEXT.items()}
    order = {r.value: i for i, r in enumerate(consent.Reason)}
    excluded = [
        {"reason": reason, "contacts": n, "why": why.get(reason, reason)}
        for reason, n in sorted(counts.items(), key=lambda item: order.get(item[0], 99))
        if reason != "eligible"
    ]
    return json_response(
        {
            "campaign": slug,
            "at": at,
            "eligible": counts.get("eligible", 0),
            "excluded": excluded,
            "total": sum(counts.values()),
        }
    )


async def send(request: web.Request) -> web.Response:
    """Launch, as `mailer campaign send` does before its progress bar: the setup and lint
    checks, the audience frozen, the campaign running (or scheduled). The workers
    (`mailer worker`) send it; pause, resume and cancel steer it."""
    slug, settings = request.match_info["slug"], request.app[SETTINGS]
    # One audience connection: with the write's own, two per send; the freeze's parallel
    # parts are the CLI's and the console's (a whole pool for one API call is too much).
    store = CampaignStore(request.app[POOL])
    try:
        _, definition = await lifecycle.load_definition(store, slug)
    except CampaignError as exc:
        raise Problem(404, str(exc)) from None
    limits = RenderLimits.from_settings(settings.engine)

    async def work(conn: Conn) -> tuple[int, Any, str | None]:
        try:
            findings = lifecycle.sending_setup(settings, slug, definition)
            launched = await lifecycle.launch(store, slug, datetime.now(UTC), limits, conn=conn)
        except CampaignError as exc:
            raise Problem(409, str(exc)) from None
        body = {
            **await _status(store, slug, conn),
            "added": launched.freeze.added,
            "setup": [_finding(f) for f in findings],
        }
        return 200, body, slug

    return await write(
        request, request.app[POOL], request[KEY], action="campaign.send",
        object_kind="campaign", work=work,
    )  # fmt: skip


async def report(request: web.Request) -> web.Response:
    """`mailer campaign report --json`: the same document."""
    slug = request.match_info["slug"]
    pool = request.app[POOL]
    spec = await CampaignStore(pool).campaign_spec(slug)
    if spec is None:
        raise Problem(404, f"no campaign {slug!r}")
    text = render_json(await figures(ReportStore(pool), spec.id))
    return web.Response(text=text, content_type="application/json")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v1/campaigns", list_campaigns, name="listCampaigns"),
        web.post("/api/v1/campaigns", create, name="createCampaign"),
        web.get("/api/v1/campaigns/{slug}", status, name="getCampaign"),
        web.get("/api/v1/campaigns/{slug}/check", check, name="checkCampaign"),
        web.get("/api/v1/campaigns/{slug}/audience", audience_counts, name="campaignAudience"),
        web.post("/api/v1/campaigns/{slug}/send", send, name="sendCampaign"),
        web.get("/api/v1/campaigns/{slug}/report", report, name="campaignReport"),
        *(
            web.post(f"/api/v1/campaigns/{{slug}}/{verb}", _mover(verb), name=f"{verb}Campaign")
            for verb in TARGETS
        ),
    ]
