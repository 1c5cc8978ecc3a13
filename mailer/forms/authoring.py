"""Creating and editing sign-up forms: the one set of checks `mailer forms add|text|disable`
and the console's forms page both call. Errors name the CLI's option (the console's form
fields carry the same names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailer.core.settings import Settings
from mailer.forms.model import (
    Form,
    FormError,
    check_locales,
    check_origin,
    check_redirect,
    check_slug,
    check_text,
)
from mailer.forms.store import FormStore
from mailer.transactional.enqueue import EnqueueError, load_template


@dataclass(frozen=True)
class NewForm:
    """What `mailer forms add` is told (texts by language; a missing one is an error)."""

    slug: str
    source: str
    locales: Sequence[str] = ("en",)
    topics: Sequence[str] = ()
    double_opt_in: bool = True
    welcome: str | None = None
    redirect: str | None = None
    origins: Sequence[str] = ()
    proof_of_work: bool = False
    texts: Mapping[str, str] = field(default_factory=dict)


def identity_missing(settings: Settings) -> str | None:
    """Why no form may be created yet, if the business is not named in the settings."""
    f = settings.forms
    for name in ("business_name", "postal_address", "contact"):
        if not getattr(f, name).strip():
            # CASL s.6(2)(a): every form page and confirmation mail names the business.
            return (
                f"forms.{name} is not set: every form page names the business "
                "(name, postal address, a contact)"
            )
    return None


async def create_form(store: FormStore, settings: Settings, new: NewForm) -> tuple[int, str]:
    """Check and create a form; (its id, its slug). FormError names what is wrong."""
    if (missing := identity_missing(settings)) is not None:
        raise FormError(missing)
    slug = check_slug(new.slug)
    locales = check_locales(list(new.locales))
    origins = [check_origin(o) for o in new.origins]
    redirect = check_redirect(new.redirect)
    texts = {}
    for lang in locales:
        text = new.texts.get(lang)
        if text is None or not text.strip():
            raise FormError(
                f"--text-{lang}: the consent sentence {lang} visitors read beside the box"
            )
        texts[lang] = check_text(text, lang)
    if new.welcome is not None:
        try:
            # Checked now, not at the first confirmation: a typo must not lose welcomes.
            load_template(Path(settings.transactional.templates_dir), new.welcome)
        except EnqueueError as exc:
            raise FormError(f"--welcome: {exc}") from None
    if not new.source.strip():
        raise FormError("--source: the ledger source of every grant this form records")
    wanted = [t.strip() for t in new.topics if t.strip()]
    found = await store.topic_ids(wanted)
    unknown = [t for t in wanted if t not in found]
    if unknown:
        raise FormError(f"--topics: no topic {unknown[0]!r} (mailer topics add {unknown[0]})")
    form_id = await store.add(
        slug=slug,
        source=new.source.strip(),
        topic_ids=[found[t] for t in wanted],
        locales=locales,
        double_opt_in=new.double_opt_in,
        welcome=new.welcome,
        redirect_url=redirect,
        origins=origins,
        proof_of_work=new.proof_of_work,
        texts=texts,
    )
    if form_id is None:
        raise FormError(f"a form {slug!r} exists already (mailer forms show {slug})")
    return form_id, slug


async def reword(store: FormStore, slug: str, locale: str, raw: str) -> tuple[Form, int]:
    """Add a version of a form's consent text: (the form, the new version, 0 if unchanged).

    Recorded versions are never changed: grants already given keep citing theirs.
    """
    lang = locale.strip().lower()
    text = check_text(raw, lang)
    form = await store.form(slug)
    if form is None:
        raise FormError(f"no form {slug!r} (mailer forms list)")
    if lang not in form.locales:
        raise FormError(f"--locale {lang!r}: form {form.slug} is in {','.join(form.locales)}")
    version = await store.edit_text(form.slug, lang, text)
    return form, version or 0


async def disable(store: FormStore, slug: str) -> None:
    """Stop a form taking sign-ups (its page answers 404; its records stay)."""
    if not await store.disable(slug):
        raise FormError(f"no form {slug!r} (mailer forms list)")
