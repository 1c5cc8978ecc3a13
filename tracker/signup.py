"""Hosted sign-up forms: GET/POST /s/FORM and GET /s/FORM/token (embeds); the confirmation
link is tracker/confirm.py.

Thin handlers over mailer.forms.signup (the operations the API will call too). The order of
checks on a POST is cheapest first, so a flood is refused before it costs a query: the form
(cached), the browser's origin, the signed form token, the honeypot, the per-IP-prefix limit,
the proof-of-work, and only then the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from mailer.core.counts import parse_count
from mailer.core.settings import FormsSettings, Settings
from mailer.core.tokens import Keyring
from mailer.db.bounded import Unavailable
from mailer.forms import abuse, signup
from mailer.forms.embed import SOLVER_JS
from mailer.forms.model import ConsentText, Form
from mailer.forms.signup import Confirmer, Step, Submission, Visit
from mailer.forms.store import FormStore, Lender
from mailer.forms.wording import TEXT, Lang, language
from tracker import forms as csrf
from tracker import ipprefix
from tracker.events import USER_AGENT_MAX
from tracker.metrics import Metrics
from tracker.pages import HEADERS

log = logging.getLogger(__name__)

FORM_CACHE_S = 5.0  # a disabled form stops taking sign-ups within this time
_URL_MAX = 500  # characters of referrer / page URL kept as evidence


def _page_headers(form: Form | None, nonce: str | None = None) -> dict[str, str]:
    """The tracker's page headers; a form page may be framed by its embedding sites."""
    headers = dict(HEADERS)
    ancestors = " ".join(["'self'", *(form.origins if form else ())])
    script = f" script-src 'nonce-{nonce}';" if nonce else ""
    headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline';{script} form-action 'self'; "
        f"frame-ancestors {ancestors}; base-uri 'none'"
    )
    # The form page carries no secret in its URL; its referrer to the site is harmless.
    headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    return headers


class Signup:
    """What the sign-up handlers share: store, keys, limits, pages, the confirmation lane."""

    def __init__(
        self,
        settings: Settings,
        keyring: Keyring,
        db: Lender,
        metrics: Metrics,
        confirmer: Confirmer,
        origins: frozenset[str],
    ) -> None:
        self.settings: FormsSettings = settings.forms
        self.base_url = settings.tracker.base_url
        self.keyring = keyring
        self.store = FormStore(db)
        self.metrics = metrics
        self.confirmer = confirmer
        self.own_origins = origins
        self.limiter = abuse.PrefixLimiter(
            self.settings.ip_prefix_limit,
            self.settings.ip_prefix_window_s,
            self.settings.ip_prefix_tracked,
        )
        metrics.signup_limited.set_function(lambda: len(self.limiter))
        self.csrf_key = csrf.csrf_key(settings.require_token_keys())
        self.pow_key = self.csrf_key  # ALTCHA's HMAC key: derived, never a token key itself
        self.equaliser = abuse.Equaliser()
        self._forms: dict[str, tuple[float, Form | None]] = {}
        self._refusals: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        self._env = Environment(
            loader=PackageLoader("tracker", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            auto_reload=False,
        )

    # ------------------------------------------------------------ helpers

    async def form(self, slug: str) -> Form | None:
        """The enabled form of that slug (cached a few seconds), else None."""
        now = time.monotonic()
        cached = self._forms.get(slug)
        if cached is not None and now - cached[0] < FORM_CACHE_S:
            return cached[1]
        found = await self.store.form(slug)
        form = found if found is not None and found.enabled else None
        if len(self._forms) > 1000:
            self._forms.clear()  # slugs probed by a scanner must not grow memory
        self._forms[slug] = (now, form)
        return form

    def count(self, form: str, step: Step | str) -> None:
        self.metrics.signups.labels(form, str(step)).inc()

    def render(self, name: str, lang: Lang, title: str, **context: Any) -> str:
        return self._env.get_template(name).render(
            lang=lang, t=TEXT[lang], title=title, identity=self.settings, **context
        )

    def message(
        self, key: str, lang: Lang, status: int, form: Form | None = None, **values: str
    ) -> web.Response:
        t = TEXT[lang]
        body = self.render(
            "signup_message.html",
            lang,
            t[f"{key}_title"],
            message=t[key].format(business=self.settings.business_name, **values),
        )
        return html_response(body, status, _page_headers(form))

    def too_many(self, form: Form, lang: Lang) -> web.Response:
        """The 429 of a prefix over its limit, rendered once per form and language."""
        key = (form.slug, lang)
        cached = self._refusals.get(key)
        if cached is None:
            page = self.message("rate", lang, 429, form)
            headers = {**page.headers, "Retry-After": str(self.settings.ip_prefix_window_s)}
            cached = self._refusals[key] = (page.text or "", headers)
        return web.Response(
            text=cached[0], status=429, headers=cached[1], content_type=None, charset=None
        )

    def visit(self, request: web.Request, form_fields: Mapping[str, Any] | None = None) -> Visit:
        """The evidence a request carries: address (per the tracker's proxy rule), agent, page."""
        address = ipprefix.client_address(request.remote, request.headers.get("X-Forwarded-For"))
        agent = request.headers.get("User-Agent")
        page = (form_fields or {}).get("page_url")
        referrer = request.headers.get("Referer")
        return Visit(
            ip=address,
            ip_prefix=ipprefix.truncate(address),
            user_agent=agent[:USER_AGENT_MAX] if agent else None,
            referrer=referrer[:_URL_MAX] if referrer else None,
            page_url=page[:_URL_MAX] if isinstance(page, str) and page else None,
        )

    def origin_allowed(self, request: web.Request, form: Form) -> bool:
        """Our own page, or a page of one of the form's --origin sites (the embed)."""
        headers = request.headers
        origin = headers.get("Origin")
        if origin is not None and origin in form.origins:
            return True
        return csrf.same_origin(
            headers.get("Sec-Fetch-Site"), origin, request.host, self.own_origins
        )

    async def text_for(self, form: Form, lang: str, text_id: object) -> ConsentText | None:
        """The text the page showed (its id travels with the POST) if it is this form's and
        this language's; the current one when the POST names none."""
        current = form.texts.get(lang)
        if (shown := parse_count(text_id)) is None:
            return current
        if current is not None and shown == current.id:
            return current
        older = await self.store.text(form.id, shown)
        return older if older is not None and older.locale == lang else None


def html_response(body: str, status: int, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=headers
    )


SIGNUP = web.AppKey("signup", Signup)


def _lang_of(request: web.Request, form: Form, given: object = None) -> Lang:
    if isinstance(given, str) and given:
        return language(form.language(given))
    wanted = request.query.get("lang") or request.headers.get("Accept-Language") or ""
    return language(form.language(wanted.split(",")[0].strip()))


async def _form_or_404(request: web.Request) -> Form | web.Response:
    signup_ = request.app[SIGNUP]
    try:
        form = await signup_.form(request.match_info["form"])
    except Unavailable as exc:
        log.warning("form lookup failed: %s", exc)
        return signup_.message("unavailable", "en", 503)
    if form is None:
        return signup_.message("not_found", "en", 404)
    return form


async def form_page(request: web.Request) -> web.Response:
    """GET /s/FORM: the form in the visitor's language, with a fresh signed form token."""
    s = request.app[SIGNUP]
    form = await _form_or_404(request)
    if isinstance(form, web.Response):
        return form
    lang = _lang_of(request, form)
    nonce = secrets.token_urlsafe(12) if form.proof_of_work else None
    body = s.render(
        "signup_form.html",
        lang,
        TEXT[lang]["form_title"],
        form=form,
        text=form.texts[lang],
        topics=[{"slug": t.slug, "label": t.label(lang)} for t in form.topics],
        form_token=signup.form_token(s.keyring, form.id),
        page_url=str(request.url)[:_URL_MAX],
        email="",
        problem=None,
        pow_json=json.dumps(abuse.pow_challenge(s.pow_key, form.slug)) if nonce else "",
        nonce=nonce or "",
        solver=SOLVER_JS,
    )
    return html_response(body, 200, _page_headers(form, nonce))


async def form_token(request: web.Request) -> web.Response:
    """GET /s/FORM/token: what an embedded form fetches (CORS only for the form's origins)."""
    s = request.app[SIGNUP]
    form = await _form_or_404(request)
    if isinstance(form, web.Response):
        return form
    lang = _lang_of(request, form, request.query.get("locale"))
    text = form.texts[lang]
    payload: dict[str, Any] = {
        "token": signup.form_token(s.keyring, form.id),
        "text": {"id": text.id, "version": text.version, "locale": lang, "text": text.text},
    }
    if form.proof_of_work:
        payload["pow"] = abuse.pow_challenge(s.pow_key, form.slug)
    headers = {"Cache-Control": "no-store", "Vary": "Origin"}
    origin = request.headers.get("Origin")
    if origin is not None and origin in form.origins:
        headers["Access-Control-Allow-Origin"] = origin
    return web.json_response(payload, headers=headers)


async def submit(request: web.Request) -> web.Response:
    """POST /s/FORM: step one. Known, unknown, suppressed: the same answer."""
    s = request.app[SIGNUP]
    form = await _form_or_404(request)
    if isinstance(form, web.Response):
        return form
    started = time.perf_counter()
    # The per-prefix limit first: a flood is refused before its body is read or any token is
    # checked, from a page rendered once (refusing must cost less than accepting).
    address = ipprefix.client_address(request.remote, request.headers.get("X-Forwarded-For"))
    if not s.limiter.allow(ipprefix.truncate(address)):
        s.count(form.slug, Step.REFUSED_RATE)
        return s.too_many(form, _lang_of(request, form))
    try:
        fields = await request.post()
    except ConnectionResetError:  # the client went away mid-body: nobody to answer
        return web.Response(status=400)
    lang = _lang_of(request, form, fields.get("locale"))
    if not s.origin_allowed(request, form):
        s.count(form.slug, Step.REFUSED_INVALID)
        s.metrics.token_rejections.labels("signup", "origin").inc()
        return s.message("forbidden", lang, 403, form)
    if not signup.form_token_ok(
        s.keyring, fields.get("form_token"), form.id, s.settings.form_token_max_age_s
    ):
        s.count(form.slug, Step.REFUSED_INVALID)
        s.metrics.token_rejections.labels("signup", "form_token").inc()
        return s.message("expired_form", lang, 400, form)
    email = fields.get("email")
    email_text = email.strip()[:254] if isinstance(email, str) else ""
    if abuse.honeypot_tripped(fields.get(abuse.HONEYPOT_FIELD)):
        # A bot gets the answer a person gets: nothing to learn, nothing to adapt to.
        s.count(form.slug, Step.REFUSED_BOT)
        await _as_slow_as_a_mail(s, started)
        return _sent(s, form, lang, email_text)
    visit = s.visit(request, fields)
    if form.proof_of_work and not abuse.pow_ok(s.pow_key, form.slug, fields.get(abuse.POW_FIELD)):
        s.count(form.slug, Step.REFUSED_BOT)
        return s.message("invalid", lang, 400, form)
    try:
        text = await s.text_for(form, lang, fields.get("text_id"))
    except Unavailable as exc:
        log.error("sign-up on form %s not recorded: %s", form.slug, exc)
        return s.message("unavailable", lang, 503, form)
    if text is None:
        s.count(form.slug, Step.REFUSED_INVALID)
        return s.message("invalid", lang, 400, form)
    # The evidence cites the words the page showed: an embed fetched before a rewording
    # still records the version its visitor read.
    shown = (
        form if text is form.texts.get(lang) else replace(form, texts={**form.texts, lang: text})
    )
    name = fields.get("name")
    submission = Submission(
        email=email_text,
        name=name if isinstance(name, str) else None,
        locale=lang,
        topics=[v for v in fields.getall("topic", []) if isinstance(v, str)],
        consent=fields.get("consent") == "yes",
    )
    try:
        result = await signup.request_signup(
            s.store,
            shown,
            submission,
            visit,
            settings=s.settings,
            keyring=s.keyring,
            confirmer=s.confirmer,
            base_url=s.base_url,
        )
    except Unavailable as exc:
        log.error("sign-up on form %s not recorded: %s", form.slug, exc)
        return s.message("unavailable", lang, 503, form)
    s.count(form.slug, result.step)
    if result.step is Step.REQUESTED:
        s.equaliser.observe(time.perf_counter() - started)
    elif result.step in signup.SAME_AS_SUCCESS:
        await _as_slow_as_a_mail(s, started)
    if result.step is Step.REFUSED_INVALID:
        return s.message("invalid", lang, 400, form)
    if form.redirect_url:
        return web.Response(status=303, headers={"Location": form.redirect_url})
    if result.step is Step.CONFIRMED:
        return s.message("single", lang, 200, form, email=email_text)
    return _sent(s, form, lang, email_text)


async def _as_slow_as_a_mail(s: Signup, started: float) -> None:
    """Wait until a silent refusal has taken as long as queueing a mail would (no timing
    difference between a blocked address and a new one)."""
    elapsed = time.perf_counter() - started
    await asyncio.sleep(s.equaliser.remaining(elapsed, secrets.randbelow(1000) / 1000))


def _sent(s: Signup, form: Form, lang: Lang, email: str) -> web.Response:
    if form.redirect_url:
        return web.Response(status=303, headers={"Location": form.redirect_url})
    key = "sent" if form.double_opt_in else "single"
    return s.message(key, lang, 200, form, email=email)
