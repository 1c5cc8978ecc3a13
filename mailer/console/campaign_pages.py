"""Campaign pages: list, create (editor or upload, lint live), the campaign, its audience
with reasons and samples, launch with a confirmation, pause/resume/cancel, resend-uncertain,
and the report. Every rule is the campaigns role's (lifecycle, lint, audience)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup

from mailer.campaigns import deliverability, lifecycle
from mailer.campaigns.definition import CampaignFileError
from mailer.campaigns.lifecycle import CampaignError
from mailer.campaigns.limits import RenderLimits
from mailer.campaigns.preview import PreviewError, compose_preview
from mailer.campaigns.rows import Campaign, ReasonBreakdown
from mailer.campaigns.template_set import TemplateFileError
from mailer.console.accounts import Role
from mailer.console.web import Handler, console_of, logged_write, render, requires
from mailer.core import consent
from mailer.core.reputation import describe
from mailer.core.spreadsheet import csv_writer
from mailer.core.tokens import Keyring
from mailer.report.figures import figures
from mailer.report.html import bar_chart, line_chart
from mailer.report.sections import headline, sections

STATES = ("queued", "sending", "sent", "deferred", "bounced", "failed", "skipped", "uncertain")


@dataclass(frozen=True)
class PreviewParts:
    """A composed message as the preview page shows it."""

    subject: str
    html: str
    text: str

    @classmethod
    def of(cls, data: bytes) -> PreviewParts:
        message = message_from_bytes(data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        return cls(
            str(message["Subject"]),
            "" if html is None else str(html.get_content()),
            "" if text is None else str(text.get_content()),
        )


def _templates_dir(request: web.Request) -> Path:
    return Path(console_of(request).settings.console.templates_dir)


def _limits(request: web.Request) -> RenderLimits:
    return RenderLimits.from_settings(console_of(request).settings.engine)


async def _campaign_or_404(request: web.Request) -> Campaign:
    row = await console_of(request).campaigns.campaign_by_slug(request.match_info["slug"])
    if row is None:
        raise web.HTTPNotFound(text="no such campaign")
    return row


@requires(Role.VIEWER)
async def campaign_list(request: web.Request) -> web.Response:
    campaigns = await console_of(request).campaigns.campaigns_overview(finished=100)
    return render(request, "campaigns.html", campaigns=campaigns)


def _sample_files(request: web.Request) -> list[str]:
    folder = _templates_dir(request)
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


@requires(Role.SENDER)
async def new_campaign(request: web.Request) -> web.Response:
    samples = _sample_files(request)
    start = request.query.get("from", "")
    text = ""
    if start in samples:  # only a listed name: never a path from the request
        text = (_templates_dir(request) / f"{start}.toml").read_text(encoding="utf-8")
    return render(request, "campaign_new.html", samples=samples, text=text, result=None, error=None)


async def _posted_text(request: web.Request) -> str:
    form = await request.post()
    upload = form.get("file")
    if isinstance(upload, web.FileField) and upload.filename:
        data: bytes = upload.file.read()
        if data.strip():
            return data.decode("utf-8", errors="replace")
    return str(form.get("text", ""))


@requires(Role.SENDER)
async def lint_fragment(request: web.Request) -> web.Response:
    """htmx: the lint result of the editor's text, as the textarea changes."""
    text = await _posted_text(request)
    result = await lifecycle.lint_text(text, _templates_dir(request), _limits(request))
    findings = (
        deliverability.check(console_of(request).settings, result.definition)
        if result.definition
        else []
    )
    return render(request, "_lint.html", result=result, findings=findings)


@requires(Role.SENDER)
async def create_campaign(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    text = await _posted_text(request)
    try:
        # The draft and its log line commit together, or neither does.
        async with logged_write(request, "campaign.create", "campaign") as w:
            _, definition = await lifecycle.create_from_text(
                console.campaigns, text, _templates_dir(request), conn=w.conn
            )
            w.object_id = definition.slug
    except (CampaignFileError, CampaignError, TemplateFileError) as exc:
        return render(
            request,
            "campaign_new.html",
            422,
            samples=_sample_files(request),
            text=text,
            result=None,
            error=str(exc),
        )
    raise web.HTTPSeeOther(f"/campaigns/{definition.slug}")


@requires(Role.VIEWER)
async def campaign_page(request: web.Request) -> web.Response:
    row = await _campaign_or_404(request)
    counts = await console_of(request).campaigns.campaign_status_counts(row.id)
    return render(
        request,
        "campaign.html",
        c=row,
        counts=counts,
        states=STATES,
        frozen=sum(counts.values()),
        pause_text=describe(row.pause_reason) if row.pause_reason else None,
        lint=None,
        findings=None,
    )


@requires(Role.SENDER)
async def check_campaign(request: web.Request) -> web.Response:
    """`campaign check`: lint the stored campaign, and the sending setup."""
    console = console_of(request)
    row = await _campaign_or_404(request)
    problems = await lifecycle.lint_campaign(console.campaigns, row, _limits(request))
    _, definition = await lifecycle.load_definition(console.campaigns, row.slug)
    counts = await console.campaigns.campaign_status_counts(row.id)
    return render(
        request,
        "campaign.html",
        c=row,
        counts=counts,
        states=STATES,
        frozen=sum(counts.values()),
        pause_text=describe(row.pause_reason) if row.pause_reason else None,
        lint=problems,
        findings=deliverability.check(console.settings, definition),
    )


@requires(Role.VIEWER)
async def audience_page(request: web.Request) -> web.Response:
    """Who is in and who is out, by reason, with a few people per reason.

    A launched campaign shows the audience as it was frozen (the counts recorded at the
    freeze: what the deliveries are); `?live=1`, or a draft, shows it as it stands, with
    samples. That is one pass of the audience query over every contact (seconds at a
    million), so it runs in the background (console/background.py): the page waits
    console.page_wait_ms for it, then shows the last result with its age, or that it is
    being computed, and htmx fetches the page again until the new result is there.
    """
    console = console_of(request)
    row = await _campaign_or_404(request)
    live = request.query.get("live") == "1" or row.audience_counts is None
    refreshing, error, age = False, None, None
    lines: list[ReasonBreakdown] | None
    if live:
        spec = await console.campaigns.campaign_spec(row.slug)
        assert spec is not None

        async def compute() -> list[ReasonBreakdown]:
            return await console.campaigns.audience_breakdown(spec, datetime.now(UTC))

        snapshot = await console.audiences.get(row.id, compute)
        lines, at, refreshing, error = (
            snapshot.value,
            snapshot.at,
            snapshot.refreshing,
            snapshot.error,
        )
        age = None if snapshot.age_s is None else round(snapshot.age_s)
    else:
        assert row.audience_counts is not None
        assert row.audience_at is not None
        at = row.audience_at
        lines = [ReasonBreakdown(k, int(v), []) for k, v in row.audience_counts.items()]
    eligible = next((line.contacts for line in lines or [] if line.reason == "eligible"), 0)
    excluded = [line for line in lines or [] if line.reason != "eligible"]
    order = {r.value: i for i, r in enumerate(consent.Reason)}
    excluded.sort(key=lambda line: order.get(line.reason, 99))
    return render(
        request,
        "audience.html",
        slug=row.slug,
        at=at,
        live=live,
        ready=lines is not None,
        refreshing=refreshing,
        error=error,
        age=age,
        eligible=eligible,
        excluded=excluded,
        total=sum(line.contacts for line in lines or []),
    )


@requires(Role.SENDER)
async def launch_page(request: web.Request) -> web.Response:
    """The confirmation: the audience count as it stands now, before anything is frozen."""
    console = console_of(request)
    row = await _campaign_or_404(request)
    spec = await console.campaigns.campaign_spec(row.slug)
    assert spec is not None
    lines = await console.campaigns.audience_breakdown(spec, datetime.now(UTC), sample=0)
    eligible = next((line.contacts for line in lines if line.reason == "eligible"), 0)
    return render(request, "launch.html", c=row, eligible=eligible, error=None)


@requires(Role.SENDER)
async def launch(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    row = await _campaign_or_404(request)
    _, definition = await lifecycle.load_definition(console.campaigns, row.slug)
    try:
        lifecycle.sending_setup(console.settings, row.slug, definition)
        # The status change and its log line in one transaction. This connection plus the
        # freeze's (audience_parts, capped below the pool's size) fit in the pool.
        async with logged_write(request, "campaign.launch", "campaign", row.slug) as w:
            launched = await lifecycle.launch(
                console.campaigns, row.slug, datetime.now(UTC), _limits(request), conn=w.conn
            )
            w.detail.update(status=launched.status, audience=launched.freeze.counts)
    except CampaignError as exc:
        return render(request, "launch.html", 409, c=row, eligible=None, error=str(exc))
    raise web.HTTPSeeOther(f"/campaigns/{row.slug}")


def _transition(action: str, target: str) -> Handler:
    @requires(Role.SENDER)
    async def handler(request: web.Request) -> web.StreamResponse:
        slug = request.match_info["slug"]
        console = console_of(request)
        try:
            # The transition and its log line commit together, or neither does.
            async with logged_write(request, f"campaign.{action}", "campaign", slug) as w:
                await lifecycle.transition(console.campaigns, slug, target, conn=w.conn)
        except CampaignError as exc:
            return render(request, "error.html", 409, message_key=None, message=str(exc))
        raise web.HTTPSeeOther(f"/campaigns/{slug}")

    return handler


@requires(Role.SENDER)
async def resend_uncertain(request: web.Request) -> web.StreamResponse:
    row = await _campaign_or_404(request)
    console = console_of(request)
    async with logged_write(request, "campaign.resend_uncertain", "campaign", row.slug) as w:
        w.detail["count"] = await console.campaigns.resend_uncertain(row.id, w.conn)
    raise web.HTTPSeeOther(f"/campaigns/{row.slug}")


@requires(Role.VIEWER)
async def report_page(request: web.Request) -> web.StreamResponse:
    row = await _campaign_or_404(request)
    found = await figures(console_of(request).reports, row.id)
    if request.match_info.get("format") == ".csv":
        out = io.StringIO()
        writer = csv_writer(out)  # cells starting = + - @ neutralised (OWASP)
        for section in sections(found):
            writer.writerow([section.title])
            writer.writerow(section.head)
            writer.writerows(section.rows)
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{row.slug}-report.csv"'},
        )
    return render(
        request,
        "report.html",
        c=row,
        headline=headline(found),
        sections=sections(found),
        # The report's own SVG charts (report/html.py escapes every value it writes).
        chart=Markup(bar_chart(found.outcomes)),  # noqa: S704 - escaped by report/html.py
        timeline=Markup(line_chart(found.hourly)),  # noqa: S704 - likewise
    )


def add_routes(router: web.UrlDispatcher) -> None:
    add_preview_routes(router)
    router.add_get("/campaigns", campaign_list, name="campaigns")
    router.add_get("/campaigns/new", new_campaign, name="campaign_new")
    router.add_post("/campaigns/lint", lint_fragment, name="campaign_lint")
    router.add_post("/campaigns", create_campaign, name="campaign_create")
    router.add_get("/campaigns/{slug}", campaign_page, name="campaign")
    router.add_post("/campaigns/{slug}/check", check_campaign, name="campaign_check")
    router.add_get("/campaigns/{slug}/audience", audience_page, name="audience")
    router.add_get("/campaigns/{slug}/launch", launch_page, name="launch_page")
    router.add_post("/campaigns/{slug}/launch", launch, name="launch")
    for action, target in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        router.add_post(f"/campaigns/{{slug}}/{action}", _transition(action, target), name=action)
    router.add_post("/campaigns/{slug}/resend-uncertain", resend_uncertain, name="resend")
    router.add_get("/campaigns/{slug}/report{format:(\\.csv)?}", report_page, name="report")


# The preview frame shows operator-authored HTML: no script, no same-origin access, no
# navigation (the iframe's sandbox attribute AND this CSP's sandbox). Images load as in a
# mail client (https only), so the operator sees the logo; a preview's open pixel names
# delivery 0, which the tracker refuses without writing anything.
PREVIEW_CSP = (
    "sandbox; default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'"
)


async def _preview(request: web.Request) -> tuple[Campaign, str, str, PreviewParts | None, str]:
    console = console_of(request)
    row = await _campaign_or_404(request)
    email = request.query.get("to", "").strip().lower()
    lang = request.query.get("lang", "")
    if not email:
        return row, email, lang, None, ""
    record = await console.contacts.contact_rule_inputs(email)
    if record is None:
        return row, email, lang, None, f"no contact {email}"
    try:
        composed, _ = compose_preview(
            await lifecycle.content_of(console.campaigns, row),
            record,
            Keyring.from_spec(console.settings.require_token_keys()),
            console.settings,
            datetime.now(UTC),
            limits=_limits(request),
            locale=lang or None,
        )
    except PreviewError as exc:
        return row, email, lang, None, str(exc)
    return row, email, lang, PreviewParts.of(composed.data), ""


@requires(Role.VIEWER)
async def preview_page(request: web.Request) -> web.Response:
    """Preview as a chosen contact, in a chosen language: subject, HTML (framed), text."""
    row, email, lang, parts, error = await _preview(request)
    query = urlencode({"to": email, "lang": lang})
    return render(
        request,
        "preview.html",
        c=row,
        email=email,
        lang_choice=lang,
        parts=parts,
        error=error,
        frame=f"/campaigns/{row.slug}/preview.html?{query}",
    )


@requires(Role.VIEWER)
async def preview_frame(request: web.Request) -> web.Response:
    _, _, _, parts, error = await _preview(request)
    return web.Response(
        text=parts.html if parts else error,
        content_type="text/html",
        headers={"Content-Security-Policy": PREVIEW_CSP, "X-Frame-Options": "SAMEORIGIN"},
    )


def add_preview_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/campaigns/{slug}/preview", preview_page, name="preview")
    router.add_get("/campaigns/{slug}/preview.html", preview_frame, name="preview_frame")
