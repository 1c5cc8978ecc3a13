"""`mailer console serve`: the operators' browser console.

create_app(settings) builds the aiohttp app: a pool in cleanup_ctx, one route table, and
three middlewares, outermost first: who is really asking (X-Forwarded-* only from the
configured proxies), security headers on every answer, then the session, its role and
its CSRF token. Handlers live in the page modules; each is marked with the role it needs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailer.console import (
    admin_pages,
    campaign_pages,
    contact_pages,
    dashboard,
    form_pages,
    import_pages,
    integration_pages,
    operator_pages,
    report_pages,
    sessions,
    suppression_pages,
    transactional_pages,
    uploads,
)
from mailer.console.accounts import same_token, token_hash
from mailer.console.sessions import PRE_COOKIE, SESSION_COOKIE
from mailer.console.web import (
    CONSOLE,
    HEADERS,
    HERE,
    LANG,
    OPERATOR,
    PRE_CSRF,
    Console,
    Handler,
    count_query,
    jinja_environment,
    queries_run,
    render,
    required_role,
)
from mailer.console.wording import pick
from mailer.core.settings import Settings
from mailer.db import connect

log = logging.getLogger(__name__)

HSTS = "max-age=31536000"  # RFC 6797; sent only over https (a browser ignores it on http)


def _networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.console.trusted_proxies]


def _trusted(
    address: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_of(
    remote: str | None,
    forwarded_for: str | None,
    proto: str | None,
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> tuple[str | None, str | None]:
    """(client address, scheme) as the trusted proxies report them, else the peer's own.

    X-Forwarded-For is read from the right, skipping our own proxies: the first address not
    one of them is the client (anything further left was written by the client itself).
    """
    if not _trusted(remote, networks):
        return remote, None
    client = remote
    for hop in reversed([h.strip() for h in (forwarded_for or "").split(",") if h.strip()]):
        client = hop
        if not _trusted(hop, networks):
            break
    scheme = (proto or "").split(",")[-1].strip().lower() or None
    return client, scheme if scheme in ("http", "https") else None


def make_forwarded_middleware(settings: Settings) -> Middleware:
    networks = _networks(settings)

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if networks:
            remote, scheme = client_of(
                request.remote,
                request.headers.get("X-Forwarded-For"),
                request.headers.get("X-Forwarded-Proto"),
                networks,
            )
            if remote is not None:
                request = request.clone(remote=remote, scheme=scheme or request.scheme)
        return await handler(request)

    return forwarded


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _add_headers(request, exc)
        raise
    _add_headers(request, response)
    return response


@web.middleware
async def refuse_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in the path, query or a plain form: Postgres text cannot hold one (a
    search, a suppression's source were 500s). Multipart uploads stream: not read here."""
    if "\x00" in request.path or any("\x00" in k + v for k, v in request.query.items()):
        raise web.HTTPBadRequest(text="a NUL character (%00) in the address or query")
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()  # kept by aiohttp: the handler reads it again for free
        if any("\x00" in k + str(v) for k, v in form.items()):
            raise web.HTTPBadRequest(text="a NUL character (%00) in a form field")
    return await handler(request)


def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # an event stream already sent its headers (with these)
        return
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers["Strict-Transport-Security"] = HSTS
    if not request.path.startswith("/static/"):
        # Pages show personal data: no shared or back-button cache (OWASP session sheet).
        response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def session_and_csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Load the session, check the role the route needs, and the CSRF token of a POST."""
    console = request.app[CONSOLE]
    counter = [0]
    token = queries_run.set(counter)
    try:
        return await _guarded(request, handler, console)
    finally:
        queries_run.reset(token)
        if request.match_info.route.name:
            console.queries_by_route[request.match_info.route.name] = counter[0]


async def _guarded(request: web.Request, handler: Handler, console: Console) -> web.StreamResponse:
    match = request.match_info
    resource = match.route.resource
    public = match.http_exception is not None or isinstance(resource, web.StaticResource)
    needed = None if public else required_role(match.handler)
    unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
    if needed is None:  # public: login, set-password link, static files, health
        request[LANG] = pick(request.headers.get("Accept-Language"))
        request[PRE_CSRF] = request.cookies.get(PRE_COOKIE, "")
        if unsafe:
            form = await request.post()
            field = form.get("csrf")
            pre = request.cookies.get(PRE_COOKIE)
            if not pre or not same_token(pre, field if isinstance(field, str) else None):
                return render(request, "error.html", 403, message_key="csrf")
        return await handler(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    settings = console.settings.console
    operator = (
        await console.accounts.session_touch(
            token_hash(cookie), settings.idle_minutes * 60.0, settings.absolute_hours * 3600.0
        )
        if cookie
        else None
    )
    if operator is None:
        if unsafe or request.headers.get("Accept") == "text/event-stream":
            raise web.HTTPUnauthorized(text="log in first")
        raise web.HTTPSeeOther(f"/login?next={request.rel_url.raw_path_qs}")
    request[OPERATOR] = operator
    # A file upload streams its body to disk: its handler checks the form's CSRF field
    # before anything is written (mailer/console/uploads.py), the header here as usual.
    streams = getattr(match.handler, "streams_upload", False)
    if unsafe and not (streams and "X-CSRF-Token" not in request.headers):
        # Synchroniser token (OWASP CSRF sheet): a form field, or htmx's header.
        given = request.headers.get("X-CSRF-Token")
        if given is None:
            form = await request.post()
            field = form.get("csrf")
            given = field if isinstance(field, str) else None
        if not same_token(operator.csrf_token, given):
            return render(request, "error.html", 403, message_key="csrf")
    if not operator.may(needed):
        return render(request, "error.html", 403, message_key="forbidden")
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


healthz.role = None  # type: ignore[attr-defined]


def create_app(settings: Settings) -> web.Application:
    """The console app; its pool opens and closes with the app (cleanup_ctx)."""
    app = web.Application(
        middlewares=[
            make_forwarded_middleware(settings),
            security_headers,
            refuse_nul,
            session_and_csrf,
        ],
        client_max_size=2 * 1024 * 1024,  # a campaign file or a contacts search, not bulk data
    )

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        db = settings.database
        # A wrong database.url stops the start with connect's one line (DatabaseUnreachable).
        async with connect(
            db.url, min_size=db.pool_min, max_size=db.pool_max, on_query=count_query
        ) as pool:
            app[CONSOLE] = console = Console(settings, pool, jinja_environment())
            try:
                yield
            finally:
                await console.close()

    app.cleanup_ctx.append(pool_ctx)
    app.cleanup_ctx.append(uploads.uploads_ctx)  # after the pool: imports stop before it closes
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_static("/static", HERE / "static", name="static")
    for module in (
        sessions,
        dashboard,
        campaign_pages,
        contact_pages,
        operator_pages,
        admin_pages,
        report_pages,
        import_pages,
        suppression_pages,
        form_pages,
        transactional_pages,
        integration_pages,
    ):
        module.add_routes(app.router)
    return app


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (0), or until the console's upkeep dies (1)."""
    c = settings.console
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(_serve(create_app(settings), c.host, c.port, c.base_url))


async def _serve(app: web.Application, host: str, port: int, base_url: str) -> int:
    # No access log: its lines would carry addresses (/contacts/{email}, ?email=) into
    # logs that no erasure reaches.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("console on http://%s:%d (public URL %s)", host, port, base_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        upkeep = app[uploads.UPKEEP]
        await asyncio.wait([stopping, upkeep], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not stop.is_set():
            # Watched: without it uploads would stay unleased and rejects kept.
            why = "cancelled" if upkeep.cancelled() else repr(upkeep.exception())
            log.critical("console upkeep stopped (%s): stopping the console", why)
            return 1
        return 0
    finally:
        await runner.cleanup()
