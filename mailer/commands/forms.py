"""`mailer forms add|list|show|text|disable|embed`: sign-up forms the tracker hosts at /s/SLUG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from mailer.commands.console import console, day, err, open_pool
from mailer.commands.oplog import logged_write
from mailer.core.settings import Settings
from mailer.forms import authoring, embed
from mailer.forms.authoring import NewForm
from mailer.forms.model import FormError
from mailer.forms.store import ConnLender, FormStore, PoolLender


def _fail(message: str) -> int:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    return 2


def _file_or_text(value: str) -> str:
    """A sentence given on the command line, or read from @FILE (UTF-8)."""
    return Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value


async def forms_add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        texts = {
            lang: _file_or_text(given)
            for lang in ("en", "fr")
            if (given := getattr(args, f"text_{lang}", None)) is not None
        }
    except OSError as exc:
        return _fail(str(exc))
    new = NewForm(
        slug=args.slug,
        source=args.source,
        locales=args.locale.split(","),
        topics=(args.topics or "").split(","),
        double_opt_in=args.double_opt_in,
        welcome=args.welcome,
        redirect=args.redirect,
        origins=args.origin or [],
        proof_of_work=args.proof_of_work,
        texts=texts,
    )
    async with open_pool(settings) as pool:
        try:
            async with logged_write(pool, "form.add", "form", None, {"source": new.source}) as w:
                store = FormStore(ConnLender(w.conn))
                form_id, slug = await authoring.create_form(store, settings, new)
                w.object_id = slug
                w.detail.update(id=form_id)
        except FormError as exc:
            return _fail(str(exc))
    base = settings.tracker.base_url.rstrip("/")
    mode = "double opt-in" if args.double_opt_in else "single opt-in"
    console.print(f"form {slug} (id {form_id}, {mode}): {base}/s/{slug}")
    return 0


async def forms_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        store = FormStore(PoolLender(pool))
        forms = await store.forms()
        counts = await store.counts()
    table = Table("slug", "source", "languages", "mode", "topics", "pending", "state", "since")
    for form in forms:
        c = counts.get(form.id)
        table.add_row(
            form.slug,
            form.source,
            ",".join(form.locales),
            "double" if form.double_opt_in else "single",
            ",".join(t.slug for t in form.topics) or "-",
            str(c.pending if c else 0),
            "enabled" if form.enabled else f"disabled {day(form.disabled_at)}",
            day(form.created_at),
        )
    console.print(table)
    return 0


async def forms_show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        store = FormStore(PoolLender(pool))
        form = await store.form(args.slug)
        if form is None:
            return _fail(f"no form {args.slug!r} (mailer forms list)")
        history = await store.text_history(form.id)
    base = settings.tracker.base_url.rstrip("/")
    console.print(
        f"[bold]{escape(form.slug)}[/]  {base}/s/{form.slug}  source={escape(form.source)}  "
        f"{'double' if form.double_opt_in else 'single'} opt-in  "
        f"languages={','.join(form.locales)}  "
        f"topics={','.join(t.slug for t in form.topics) or '-'}  "
        f"proof-of-work={'on' if form.proof_of_work else 'off'}  "
        f"origins={','.join(form.origins) or '-'}  "
        f"{'enabled' if form.enabled else 'disabled since ' + day(form.disabled_at)}",
        highlight=False,
    )
    table = Table(
        "language", "version", "current", "since", "sha256", "text", title="consent texts"
    )
    for t in history:
        current = form.texts.get(t.locale)
        table.add_row(
            t.locale,
            str(t.version),
            "yes" if current is not None and current.id == t.id else "",
            day(t.created_at),
            t.sha256_hex,
            escape(t.text),
        )
    console.print(table)
    return 0


async def forms_text(args: argparse.Namespace, settings: Settings) -> int:
    lang = args.locale.strip().lower()
    try:
        raw = _file_or_text(args.text)
    except OSError as exc:
        return _fail(str(exc))
    async with open_pool(settings) as pool:
        try:
            async with logged_write(pool, "form.text", "form", args.slug, {"locale": lang}) as w:
                store = FormStore(ConnLender(w.conn))
                form, version = await authoring.reword(store, args.slug, lang, raw)
                # Worded so already: no new version, nothing to log (as the console does).
                w.object_id, w.unchanged = form.slug, not version
                w.detail.update(version=version)
        except FormError as exc:
            return _fail(str(exc))
    if not version:
        console.print(f"{form.slug} ({lang}): unchanged, still version {form.texts[lang].version}")
    else:
        # Recorded versions are never changed: grants already given keep citing theirs.
        console.print(f"{form.slug} ({lang}): version {version}")
    return 0


async def forms_disable(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        try:
            async with logged_write(pool, "form.disable", "form", args.slug) as w:
                await authoring.disable(FormStore(ConnLender(w.conn)), args.slug)
        except FormError as exc:
            return _fail(str(exc))
    console.print(f"form {args.slug} disabled: /s/{args.slug} answers 404; its records stay")
    return 0


async def forms_embed(args: argparse.Namespace, settings: Settings) -> int:
    async with open_pool(settings) as pool:
        form = await FormStore(PoolLender(pool)).form(args.slug)
    if form is None:
        return _fail(f"no form {args.slug!r} (mailer forms list)")
    lang = form.language(args.locale)
    # Printed as is (no markup, no wrapping): it is meant to be pasted into a page.
    console.print(
        embed.snippet(form, lang, settings.tracker.base_url, settings.forms),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if not form.origins:
        err.print(
            f"note: form {form.slug} lists no --origin; browsers on other sites will be refused "
            "(recreate it with --origin https://www.example.com)"
        )
    return 0


def register(sub: Any) -> None:
    forms = sub.add_parser("forms", help="sign-up forms hosted by the tracker").add_subparsers(
        dest="f", required=True
    )
    add = forms.add_parser("add", help="create a sign-up form")
    add.add_argument("slug")
    add.add_argument("--source", required=True, help="the ledger source, e.g. 'Site web'")
    add.add_argument("--topics", help="comma-separated topic slugs the visitor may choose")
    add.add_argument("--locale", default="en", help="comma-separated languages, first default")
    mode = add.add_mutually_exclusive_group()
    mode.add_argument("--double-opt-in", dest="double_opt_in", action="store_true", default=True)
    mode.add_argument(
        "--single", dest="double_opt_in", action="store_false", help="no confirmation mail"
    )
    add.add_argument("--welcome", help="transactional template sent once confirmed")
    add.add_argument("--redirect", help="where the browser goes after submitting")
    add.add_argument(
        "--origin", action="append", help="a site allowed to embed the form (repeatable)"
    )
    add.add_argument("--proof-of-work", action="store_true", help="require an ALTCHA solution")
    for lang in ("en", "fr"):
        add.add_argument(
            f"--text-{lang}", metavar="TEXT", help=f"the consent sentence in {lang} (@FILE)"
        )
    add.set_defaults(handler=forms_add)
    forms.add_parser("list").set_defaults(handler=forms_list)
    show = forms.add_parser("show", help="a form and every version of its consent texts")
    show.add_argument("slug")
    show.set_defaults(handler=forms_show)
    text = forms.add_parser("text", help="new wording: adds a version, never changes one")
    text.add_argument("slug")
    text.add_argument("--locale", required=True)
    text.add_argument("text", help="the new sentence (or @FILE)")
    text.set_defaults(handler=forms_text)
    disable = forms.add_parser("disable", help="stop taking sign-ups")
    disable.add_argument("slug")
    disable.set_defaults(handler=forms_disable)
    emb = forms.add_parser("embed", help="print an HTML snippet for another site's page")
    emb.add_argument("slug")
    emb.add_argument("--locale", help="the snippet's language (default: the form's first)")
    emb.set_defaults(handler=forms_embed)
