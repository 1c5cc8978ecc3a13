"""Sign-up forms: the list with pending and confirmed requests, a form with every version of
its consent texts; create, reword and disable through the checks `mailer forms` runs
(mailer.forms.authoring)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from mailer.console.accounts import Role
from mailer.console.web import console_of, logged_write, render, requires
from mailer.forms import authoring, embed
from mailer.forms.model import FormError
from mailer.forms.store import ConnLender, FormStore, PoolLender

LANGS = ("en", "fr")


def _store(request: web.Request) -> FormStore:
    return FormStore(PoolLender(console_of(request).pool))


async def _list(
    request: web.Request, status: int = 200, error: str | None = None, given: Any = None
) -> web.Response:
    store = _store(request)
    forms = await store.forms()
    counts = await store.counts()
    topics = await console_of(request).contacts.topics_list()
    return render(
        request,
        "forms.html",
        status,
        forms=forms,
        counts=counts,
        topics=topics,
        langs=LANGS,
        error=error,
        given=given or {},
        base=console_of(request).settings.tracker.base_url.rstrip("/"),
    )


@requires(Role.VIEWER)
async def forms_page(request: web.Request) -> web.Response:
    return await _list(request)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace(",", "\n").splitlines() if line.strip()]


def _new_form(form: MultiDictProxy[Any]) -> authoring.NewForm:
    def text(name: str) -> str:
        return str(form.get(name, "")).strip()

    locales = [lang for lang in LANGS if form.get(f"locale_{lang}") == "on"]
    return authoring.NewForm(
        slug=text("slug"),
        source=text("source"),
        locales=locales or [""],  # none ticked: check_locales says so
        topics=[str(t) for t in form.getall("topics", [])],
        double_opt_in=form.get("single") != "on",
        welcome=text("welcome") or None,
        redirect=text("redirect") or None,
        origins=_lines(text("origins")),
        proof_of_work=form.get("proof_of_work") == "on",
        texts={lang: text(f"text_{lang}") for lang in LANGS if text(f"text_{lang}")},
    )


@requires(Role.SENDER)
async def forms_add(request: web.Request) -> web.Response:
    """`mailer forms add`, from the form's fields."""
    console = console_of(request)
    form = await request.post()
    new = _new_form(form)
    try:
        async with logged_write(request, "form.add", "form") as w:
            store = FormStore(ConnLender(w.conn))
            form_id, slug = await authoring.create_form(store, console.settings, new)
            w.object_id = slug
            w.detail.update(id=form_id, source=new.source)
    except FormError as exc:
        return await _list(request, 400, str(exc), {k: form.get(k) for k in form})
    raise web.HTTPSeeOther(f"/forms/{slug}")


async def _show(
    request: web.Request, status: int = 200, error: str | None = None, notice: Any = None
) -> web.Response:
    store = _store(request)
    form = await store.form(request.match_info["slug"])
    if form is None:
        raise web.HTTPNotFound(text="no such form")
    history = await store.text_history(form.id)
    counts = (await store.counts()).get(form.id)
    settings = console_of(request).settings
    snippets = {
        lang: embed.snippet(form, lang, settings.tracker.base_url, settings.forms)
        for lang in form.locales
    }
    return render(
        request,
        "form.html",
        status,
        form=form,
        history=history,
        counts=counts,
        snippets=snippets,
        error=error,
        notice=notice,
        base=settings.tracker.base_url.rstrip("/"),
    )


@requires(Role.VIEWER)
async def form_page(request: web.Request) -> web.Response:
    return await _show(request)


@requires(Role.SENDER)
async def form_reword(request: web.Request) -> web.Response:
    """`mailer forms text`: a new version of one language's consent sentence."""
    slug = request.match_info["slug"]
    form = await request.post()
    lang = str(form.get("locale", ""))
    try:
        async with logged_write(request, "form.text", "form", slug, {"locale": lang}) as w:
            text = str(form.get("text", ""))
            _, version = await authoring.reword(FormStore(ConnLender(w.conn)), slug, lang, text)
            # The same words as the current version: nothing new, no line.
            w.unchanged = not version
            w.detail["version"] = version
    except FormError as exc:
        return await _show(request, 400, error=str(exc))
    return await _show(request, notice=version)


@requires(Role.SENDER)
async def form_disable(request: web.Request) -> web.Response:
    """`mailer forms disable`: no more sign-ups; every record stays."""
    slug = request.match_info["slug"]
    try:
        async with logged_write(request, "form.disable", "form", slug) as w:
            await authoring.disable(FormStore(ConnLender(w.conn)), slug)
    except FormError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    raise web.HTTPSeeOther(f"/forms/{slug}")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/forms", forms_page, name="forms")
    router.add_post("/forms", forms_add, name="forms_add")
    router.add_get("/forms/{slug}", form_page, name="form")
    router.add_post("/forms/{slug}/text", form_reword, name="form_reword")
    router.add_post("/forms/{slug}/disable", form_disable, name="form_disable")
