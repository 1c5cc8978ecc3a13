"""What every console handler shares: the app's objects, rendering, role requirements."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from mailer.campaigns.rows import ReasonBreakdown
from mailer.campaigns.store import CampaignStore
from mailer.compliance import logged
from mailer.compliance.logged import LoggedWrite
from mailer.compliance.store import ComplianceStore
from mailer.console.accounts import Operator, Role
from mailer.console.background import Background
from mailer.console.store import ConsoleStore
from mailer.console.wording import lint_text, reason_text, translator
from mailer.contacts.store import ContactStore
from mailer.core.settings import Settings
from mailer.db import Pool
from mailer.report.store import ReportStore

# CSP without inline script or style (htmx is configured from a <meta> tag, not eval);
# frame-ancestors 'none' forbids framing us (clickjacking); the campaign preview is the
# only frame, same origin, and sandboxed by both its iframe and its own CSP.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HERE = Path(__file__).resolve().parent

# The statements the current request has run (asyncpg's query logger adds to it): pages
# are held to a query budget by the tests, and the count is kept per route.
_POOL_RESET = "SELECT pg_advisory_unlock_all()"
queries_run: contextvars.ContextVar[list[int]] = contextvars.ContextVar("queries_run")


def count_query(record: object) -> None:
    """asyncpg's query logger: one more statement for the current request.

    The pool's own reset when a connection is handed back is not the page's doing.
    """
    counter = queries_run.get(None)
    if counter is not None and not str(getattr(record, "query", "")).startswith(_POOL_RESET):
        counter[0] += 1


@dataclass
class Console:
    """The console's shared objects, one per app (web.AppKey CONSOLE)."""

    settings: Settings
    pool: Pool
    jinja: jinja2.Environment
    accounts: ConsoleStore = field(init=False)
    campaigns: CampaignStore = field(init=False)
    contacts: ContactStore = field(init=False)
    reports: ReportStore = field(init=False)
    compliance: ComplianceStore = field(init=False)
    # Route name -> statements its last request ran (see queries_run).
    queries_by_route: dict[str, int] = field(default_factory=dict)
    # Slow reads computed in the background (console/background.py): live audiences by
    # campaign, and the unsubscribe-SLA check of the dashboard.
    audiences: Background[list[ReasonBreakdown]] = field(init=False)
    sla: Background[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.accounts = ConsoleStore(self.pool)
        self.campaigns = CampaignStore(
            self.pool, audience_parts=self.settings.database.audience_parts
        )
        self.contacts = ContactStore(self.pool)
        self.reports = ReportStore(self.pool)
        self.compliance = ComplianceStore(self.pool)
        c = self.settings.console
        wait = c.page_wait_ms / 1000.0
        self.audiences = Background(float(c.audience_max_age_seconds), wait)
        self.sla = Background(float(c.sla_max_age_seconds), wait, keep=1)

    async def close(self) -> None:
        """Stop the background reads (before the pool closes under them)."""
        await self.audiences.close()
        await self.sla.close()

    @property
    def secure(self) -> bool:
        return self.settings.console.base_url.startswith("https://")


CONSOLE = web.AppKey("console", Console)
# Request storage: the logged-in operator (set by the session middleware), and for public
# pages the browser's language and the login form's double-submit token.
OPERATOR = web.RequestKey("operator", Operator)
LANG = web.RequestKey("lang", str)
PRE_CSRF = web.RequestKey("pre_csrf", str)


def jinja_environment() -> jinja2.Environment:
    """Templates with autoescaping on (operator and contact data are never trusted markup)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["n"] = lambda value: f"{value:,}".replace(",", "\u202f")
    env.filters["when"] = lambda value: "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"
    env.filters["day"] = lambda value: "-" if value is None else f"{value:%Y-%m-%d}"
    return env


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def operator_of(request: web.Request) -> Operator:
    return request[OPERATOR]


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page in the operator's language, with the CSRF token for its forms."""
    operator = request.get(OPERATOR)
    lang = operator.locale if operator else request.get(LANG, "en")
    body = (
        console_of(request)
        .jinja.get_template(template)
        .render(
            t=translator(lang),
            lang=lang,
            me=operator,
            csrf=operator.csrf_token if operator else request.get(PRE_CSRF, ""),
            Role=Role,
            path=request.path,
            # The rules' results worded from their codes in the operator's language.
            reason_of=lambda code: reason_text(code, lang),
            lint_of=lambda problem: lint_text(problem, lang),
            **context,
        )
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


async def record(
    request: web.Request,
    action: str,
    object_kind: str | None = None,
    object_id: str | None = None,
    detail: dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> None:
    """One line in the operator log (#19's, mailer/compliance), actor: the logged-in operator.

    For an action that is its own change (a login, a download); a page that changes data
    writes through `logged_write`, so the change and its line commit together.
    """
    who = actor or request[OPERATOR].email
    said = {"via": "console", **(detail or {})}
    await console_of(request).compliance.log_operator_action(
        "operator", who, action, object_kind, object_id, said
    )


def logged_write(
    request: web.Request,
    action: str,
    object_kind: str | None = None,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> AbstractAsyncContextManager[LoggedWrite]:
    """A transaction for a page's write and its operator-log line, written on success by the
    logged-in operator (or `actor`, on a page with no session): both commit, or neither.

    The CLI's commands write through the same helper (mailer.commands.oplog.logged_write).
    """
    who = actor or request[OPERATOR].email
    said = {"via": "console", **(detail or {})}
    pool = console_of(request).pool
    return logged.logged_write(pool, "operator", who, action, object_kind, object_id, said)


def requires(role: Role | None) -> Callable[[Handler], Handler]:
    """Mark a handler with the least role it needs (None: public, no session)."""

    def mark(handler: Handler) -> Handler:
        handler.role = role  # type: ignore[attr-defined]
        return handler

    return mark


def required_role(handler: object) -> Role | None:
    role: Role | None = getattr(handler, "role", Role.ADMIN)  # unmarked: the strictest
    return role
