"""Suppressions: the list (newest first, keyset pages, by reason), check an address, suppress
one address, upload a suppression list (`mailer suppress import`: the same reader and the
same statements, mailer.contacts.imports)."""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from mailer.console.accounts import Role
from mailer.console.import_pages import ENCODINGS, streams_upload
from mailer.console.uploads import (
    SUPPRESSION_UPLOAD_MAX_BYTES,
    UPLOADS,
    UploadRefused,
    discard,
    read_upload,
)
from mailer.console.web import console_of, logged_write, operator_of, render, requires
from mailer.contacts import imports
from mailer.core.addresses import InvalidAddress, address_hash, normalise
from mailer.core.counts import parse_count

PAGE = 50


def _target(fields: Any) -> dict[str, str | None]:
    """The list's reason, scope, channel and topic as the form gives them (empty: none)."""
    return {
        name: (str(fields.get(name, "")).strip() or None)
        for name in ("reason", "scope", "channel", "topic")
    }


async def _page(
    request: web.Request,
    status: int = 200,
    *,
    error: str | None = None,
    message: str | None = None,
    notice: tuple[str, str] | None = None,
) -> web.Response:
    console = console_of(request)
    before = request.query.get("before", "")
    reason = request.query.get("reason", "") or None
    if reason not in (None, *imports.SUPPRESSION_REASONS, "erasure"):
        reason = None
    rows = await console.accounts.suppressions_page(parse_count(before), reason, PAGE)
    checked, found = None, None
    if (email_text := request.query.get("email", "").strip()) and status == 200:
        try:
            checked = normalise(email_text)
        except InvalidAddress:
            error = "bad_address"
        else:
            story = await console.contacts.contact_story(checked, address_hash(checked))
            found = [] if story is None else story.suppressions
    topics = await console.contacts.topics_list()
    return render(
        request,
        "suppressions.html",
        status,
        rows=rows,
        reason=reason or "",
        reasons=imports.SUPPRESSION_REASONS,
        all_reasons=(*imports.SUPPRESSION_REASONS, "erasure"),
        scopes=imports.SUPPRESSION_SCOPES,
        channels=imports.CHANNELS,
        encodings=ENCODINGS,
        topics=topics,
        checked=checked,
        found=found,
        error=error,
        message=message,
        notice=notice,
        next_before=rows[-1].id if len(rows) == PAGE else None,
    )


@requires(Role.VIEWER)
async def suppressions_page(request: web.Request) -> web.Response:
    return await _page(request)


@requires(Role.SENDER)
async def suppress_one(request: web.Request) -> web.Response:
    """One address, as a one-line suppression list: the same statement, the same record."""
    console = console_of(request)
    me = operator_of(request)
    form = await request.post()
    source = str(form.get("source", "")).strip()
    try:
        email = normalise(str(form.get("email", "")))
    except InvalidAddress:
        return await _page(request, 400, error="bad_address")
    target = _target(form)
    try:
        topic_id = await imports.suppression_target(
            console.contacts,
            reason=target["reason"] or "manual",
            scope=target["scope"] or "global",
            channel=target["channel"],
            topic=target["topic"],
        )
    except imports.SuppressionTargetError as exc:
        return await _page(request, 400, message=str(exc))
    if not source:
        return await _page(request, 400, message="source: where this suppression comes from")
    hashed = address_hash(email)
    # In the suppression's own transaction, as the API's POST /suppressions logs it.
    said = {"count": 1, "source": source}
    async with logged_write(request, "suppressions.add", "suppression", None, said) as w:
        result = await console.contacts.import_suppressions(
            [(1, hashed)],
            file_name=f"console:{me.email}",
            file_sha256=hashlib.sha256(hashed).digest(),
            reason=target["reason"] or "manual",
            scope=target["scope"] or "global",
            channel=target["channel"],
            topic_id=topic_id,
            source=source,
            rejected=0,
            conn=w.conn,
        )
        w.detail["added"] = result.added
    key = "added_suppression" if result.added else "already_suppressed"
    return await _page(request, notice=(key, email))


@requires(Role.SENDER)
@streams_upload
async def suppressions_upload(request: web.Request) -> web.StreamResponse:
    """Save the list, check what it suppresses, and run the CLI's import on it."""
    console = console_of(request)
    me = operator_of(request)
    try:
        fields, path = await read_upload(request, me.csrf_token, SUPPRESSION_UPLOAD_MAX_BYTES)
    except UploadRefused as exc:
        if exc.key == "csrf":
            return render(request, "error.html", 403, message_key="csrf")
        return await _page(request, exc.status, error=exc.key)
    started = False
    try:  # until its import task owns the file, a failure here removes it
        target = _target(fields)
        reason, scope = target["reason"] or "registry", target["scope"] or "global"
        try:
            topic_id = await imports.suppression_target(
                console.contacts,
                reason=reason,
                scope=scope,
                channel=target["channel"],
                topic=target["topic"],
            )
        except imports.SuppressionTargetError as exc:
            return await _page(request, 400, message=str(exc))
        options = {
            **target,
            "source": fields.get("source", "").strip() or path.name,
            "encoding": fields.get("encoding", "").strip() or None,
            "delimiter": fields.get("delimiter", "").strip() or None,
        }
        upload_id = await request.app[UPLOADS].begin("suppressions", path, me.email, options)
        request.app[UPLOADS].start_suppressions(
            upload_id,
            me.email,
            path,
            {
                "reason": reason,
                "scope": scope,
                "channel": target["channel"],
                "topic_id": topic_id,
                "source": options["source"],
            },
            options,
        )
        started = True
    finally:
        if not started:
            discard(path)
    raise web.HTTPSeeOther(f"/imports/{upload_id}")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/suppressions", suppressions_page, name="suppressions")
    router.add_post("/suppressions", suppress_one, name="suppress_one")
    router.add_post("/suppressions/upload", suppressions_upload, name="suppressions_upload")
