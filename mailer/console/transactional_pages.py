"""Transactional messages: the templates with their basis and check (`mailer transactional
check`), the week's counts by state (`… report`), recent messages by keyset pages, and one
message as `… show` prints it, archive check included. Read-only: messages are enqueued by
the business's systems (API) or `mailer send`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from mailer.console.accounts import Role
from mailer.console.web import console_of, render, requires
from mailer.core.counts import parse_count
from mailer.transactional import template as template_file
from mailer.transactional.basis import BASIS_TEXT, Basis
from mailer.transactional.compose import check
from mailer.transactional.enqueue import EnqueueError, archive_reproduces, load_template, status
from mailer.transactional.store import TransactionalStore

PAGE = 50
WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class TemplateLine:
    name: str
    basis: str | None
    basis_text: str | None
    problems: list[str]


def _templates(templates_dir: Path, max_bytes: int) -> list[TemplateLine]:
    """Each template as `mailer transactional check` judges it."""
    lines = []
    for name in template_file.names(templates_dir):
        try:
            loaded = load_template(templates_dir, name)
        except EnqueueError as exc:
            lines.append(TemplateLine(name, None, None, [str(exc)]))
            continue
        problems = [str(p) for p in check(loaded, max_message_bytes=max_bytes)]
        basis = loaded.basis
        lines.append(TemplateLine(name, basis.value, BASIS_TEXT[basis], problems))
    return lines


# Checking renders every template's samples: 0.3-0.9 s for the three sample templates
# (measured under load, bench/README.md "Console"), CPU the event loop must not spend while
# other operators wait. So it runs in a thread, and its result is kept until a file of the
# folder changes (by name, size and modification time), as the check depends on them alone.
_Signature = tuple[int, tuple[tuple[str, int, int], ...]]
_checked: dict[Path, tuple[_Signature, list[TemplateLine]]] = {}


def _signature(templates_dir: Path, max_bytes: int) -> _Signature:
    files = []
    for path in sorted(templates_dir.rglob("*")) if templates_dir.is_dir() else []:
        with contextlib.suppress(OSError):  # removed meanwhile: the next visit sees it
            if path.is_file():
                stat = path.stat()
                files.append((str(path), stat.st_mtime_ns, stat.st_size))
    return max_bytes, tuple(files)


def _templates_checked(templates_dir: Path, max_bytes: int) -> list[TemplateLine]:
    signature = _signature(templates_dir, max_bytes)
    kept = _checked.get(templates_dir)
    if kept is not None and kept[0] == signature:
        return kept[1]
    lines = _templates(templates_dir, max_bytes)
    _checked[templates_dir] = (signature, lines)
    return lines


def _store(request: web.Request) -> TransactionalStore:
    console = console_of(request)
    return TransactionalStore.for_settings(console.pool, console.settings)


@requires(Role.VIEWER)
async def transactional_page(request: web.Request) -> web.Response:
    console = console_of(request)
    store = _store(request)
    before = request.query.get("before", "")
    chosen = request.query.get("template", "") or None
    after_id = parse_count(before)
    messages = await store.messages_page(after_id, chosen, PAGE)
    since = datetime.now(UTC) - WEEK
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in await store.report(since):
        counts[line.template][line.status] += line.messages
    states = sorted({s for by_state in counts.values() for s in by_state})
    templates = await asyncio.to_thread(
        _templates_checked, store.templates_dir, console.settings.engine.max_message_bytes
    )
    return render(
        request,
        "transactional.html",
        templates=templates,
        counts=counts,
        states=states,
        since=since,
        messages=messages,
        chosen=chosen or "",
        next_before=messages[-1].id if len(messages) == PAGE else None,
    )


@requires(Role.VIEWER)
async def message_page(request: web.Request) -> web.Response:
    try:
        message_id = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such message") from None
    found = await status(_store(request), message_id)
    if found is None:
        raise web.HTTPNotFound(text="no such message")
    return render(
        request,
        "transactional_message.html",
        m=found,
        basis_text=BASIS_TEXT[Basis(found.basis)],
        reproduces=archive_reproduces(found),
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/transactional", transactional_page, name="transactional")
    router.add_get("/transactional/{id}", message_page, name="transactional_message")
