"""Logging in and out, the one-time set-password link, the operator's language.

Sessions follow OWASP's session management sheet: a new random token at each login (a
token from before the login never becomes a session: no fixation), only its SHA-256 in
Postgres, idle and absolute timeouts checked by the lookup itself, HttpOnly + SameSite
cookies (Secure and HSTS when the console is served over https), and "log out
everywhere" deleting every session of the operator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from mailer.console import accounts
from mailer.console.accounts import Role, new_token, token_hash
from mailer.console.web import (
    PRE_CSRF,
    console_of,
    logged_write,
    operator_of,
    record,
    render,
    requires,
)
from mailer.console.wording import LANGS

SESSION_COOKIE = "console_session"
PRE_COOKIE = "console_pre"


def _safe_next(target: str | None) -> str:
    """Only a path on this site (an open redirect would help phishing)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        secure=request.secure or console_of(request).secure,
        path="/",
    )


@requires(None)
async def login_page(request: web.Request) -> web.Response:
    return _login_form(request)


def _login_form(request: web.Request, error: str | None = None, **kw: object) -> web.Response:
    pre = request.cookies.get(PRE_COOKIE) or new_token()
    request[PRE_CSRF] = pre
    response = render(
        request,
        "login.html",
        401 if error else 200,
        error=error,
        next=_safe_next(request.query.get("next")),
        **kw,
    )
    _set_cookie(response, request, PRE_COOKIE, pre)
    return response


@requires(None)
async def login(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    c = console.settings.console
    form = await request.post()
    email = str(form.get("email", "")).strip().lower()
    password = str(form.get("password", ""))
    keys = [f"email:{email}", f"ip:{request.remote}"]
    locked = await console.accounts.login_locked_until(keys)
    if locked is not None:
        # Locked: the password is not even checked (no oracle while locked).
        seconds = max(1, int((locked - datetime.now(UTC)).total_seconds()))
        return _login_form(request, error="locked", seconds=seconds)
    account = await console.accounts.operator_by_email(email)
    stored = None if account is None or account.disabled else account.password_hash
    if account is None or not accounts.verify_password(stored, password):
        locked = await console.accounts.login_failure_record(
            keys,
            max_failures=c.login_max_failures,
            # One address gets a few tries; one client, across addresses, a few more.
            ip_max_failures=c.login_max_failures * 4,
            lockout_s=float(c.lockout_seconds),
            lockout_max_s=float(c.lockout_max_seconds),
            quiet_window_s=float(c.login_failure_window_seconds),
        )
        if locked is not None:
            await record(
                request,
                "console.lockout",
                "operator",
                email,
                {"until": locked.isoformat(), "ip": request.remote},
                actor=email,
            )
            seconds = max(1, int((locked - datetime.now(UTC)).total_seconds()))
            return _login_form(request, error="locked", seconds=seconds)
        return _login_form(request, error="bad_login")
    await console.accounts.login_failures_clear(keys[0])
    await console.accounts.sessions_sweep(c.idle_minutes * 60.0, c.absolute_hours * 3600.0)
    token = new_token()  # always new: rotation on login
    await console.accounts.session_create(
        token_hash(token),
        account.id,
        new_token(),
        request.remote,
        request.headers.get("User-Agent", "")[:256],
    )
    await record(
        request, "console.login", "operator", account.email, {"ip": request.remote}, actor=email
    )
    response = web.HTTPSeeOther(_safe_next(str(form.get("next", "/"))))
    _set_cookie(response, request, SESSION_COOKIE, token)
    response.del_cookie(PRE_COOKIE, path="/")
    raise response


@requires(Role.VIEWER)
async def logout(request: web.Request) -> web.StreamResponse:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    await console_of(request).accounts.session_delete(token_hash(cookie))
    await record(request, "console.logout")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@requires(Role.VIEWER)
async def logout_everywhere(request: web.Request) -> web.StreamResponse:
    await console_of(request).accounts.sessions_delete_for_operator(operator_of(request).id)
    await record(request, "console.logout_everywhere")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


@requires(Role.VIEWER)
async def set_language(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    lang = str(form.get("lang", ""))
    if lang in LANGS:
        await console_of(request).accounts.operator_set_locale(operator_of(request).id, lang)
    raise web.HTTPSeeOther(_safe_next(str(form.get("next", "/"))))


@requires(None)
async def setup_page(request: web.Request) -> web.Response:
    account = await console_of(request).accounts.operator_by_setup_token(
        token_hash(request.match_info["token"])
    )
    pre = request.cookies.get(PRE_COOKIE) or new_token()
    request[PRE_CSRF] = pre
    response = render(request, "setup.html", 200 if account else 404, account=account, error=None)
    _set_cookie(response, request, PRE_COOKIE, pre)
    return response


@requires(None)
async def setup(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    account = await console.accounts.operator_by_setup_token(
        token_hash(request.match_info["token"])
    )
    if account is None:
        return render(request, "setup.html", 404, account=None, error=None)
    form = await request.post()
    problem = accounts.password_problem(
        str(form.get("password", "")), str(form.get("password_again", ""))
    )
    if problem:
        return render(request, "setup.html", 400, account=account, error=problem)
    hashed = accounts.hash_password(str(form["password"]))
    # The password and its log line commit together, or neither does.
    who = account.email  # no session yet: the account setting its password
    async with logged_write(request, "operator.set_password", "operator", who, actor=who) as w:
        await console.accounts.operator_set_password(account.id, hashed, w.conn)
    raise web.HTTPSeeOther("/login?done=1")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/login", login_page, name="login_page")
    router.add_post("/login", login, name="login")
    router.add_post("/logout", logout, name="logout")
    router.add_post("/logout-everywhere", logout_everywhere, name="logout_everywhere")
    router.add_post("/language", set_language, name="language")
    router.add_get("/setup/{token}", setup_page, name="setup_page")
    router.add_post("/setup/{token}", setup, name="setup")
