"""Imports: upload a contacts CSV (`mailer contacts import`), watch it, read its summary,
download its rejects; the list of past uploads, newest first (keyset pages)."""

from __future__ import annotations

import gzip
from typing import Any

from aiohttp import web

from mailer.console.accounts import Role
from mailer.console.uploads import UPLOADS, UploadRefused, discard, read_upload
from mailer.console.web import Handler, console_of, operator_of, record, render, requires
from mailer.contacts.csvfile import Defaults
from mailer.core.consent import Kind
from mailer.core.counts import parse_count

PAGE = 50
ENCODINGS = ("utf-8", "utf-8-sig", "cp1252", "latin-1")
DELIMITERS = (",", ";", "tab")
CHANNELS = ("email", "sms", "postal", "phone")


def streams_upload(handler: Handler) -> Handler:
    """Mark a handler that reads its multipart body itself (see uploads.read_upload)."""
    handler.streams_upload = True  # type: ignore[attr-defined]
    return handler


def _choices() -> dict[str, Any]:
    return {
        "kinds": [k.value for k in Kind],
        "encodings": ENCODINGS,
        "delimiters": DELIMITERS,
        "channels": CHANNELS,
    }


def upload_id_of(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such import") from None


def _keyset(request: web.Request, name: str) -> int | None:
    return parse_count(request.query.get(name, ""))


async def _imports(
    request: web.Request, status: int = 200, error: str | None = None
) -> web.Response:
    """Console uploads and every import record (CLI's, API's too), each list its own keyset."""
    console = console_of(request)
    rows = await console.accounts.uploads_page(_keyset(request, "before"), PAGE)
    records = await console.accounts.import_records_page(_keyset(request, "before_record"), PAGE)
    topics = await console.contacts.topics_list()
    return render(
        request,
        "imports.html",
        status,
        uploads=rows,
        records=records,
        topics=topics,
        error=error,
        next_before=rows[-1].id if len(rows) == PAGE else None,
        next_record=records[-1].id if len(records) == PAGE else None,
        **_choices(),
    )


@requires(Role.VIEWER)
async def imports_page(request: web.Request) -> web.Response:
    return await _imports(request)


def _option(fields: dict[str, str], name: str) -> str | None:
    value = fields.get(name, "").strip()
    return value or None


@requires(Role.SENDER)
@streams_upload
async def imports_upload(request: web.Request) -> web.StreamResponse:
    """Save the file, record the upload, start the CLI's import on it, show its page."""
    me = operator_of(request)
    try:
        fields, path = await read_upload(request, me.csrf_token)
    except UploadRefused as exc:
        if exc.key == "csrf":
            return render(request, "error.html", 403, message_key="csrf")
        return await _imports(request, exc.status, exc.key)
    started = False
    try:  # until its import task owns the file, a failure here removes it
        options: dict[str, Any] = {
            name: _option(fields, name)
            for name in (
                "consent",
                "source",
                "consent_date",
                "channel",
                "locale",
                "topics",
                "encoding",
                "delimiter",
            )
        }
        options["skip_invalid"] = fields.get("skip_invalid") == "on"
        defaults = Defaults(
            consent=options["consent"],
            source=options["source"],
            consent_date=options["consent_date"],
            channel=options["channel"] or "email",
            locale=options["locale"],
            topics=options["topics"],
        )
        upload_id = await request.app[UPLOADS].begin("contacts", path, me.email, options)
        request.app[UPLOADS].start_contacts(upload_id, me.email, path, defaults, options)
        started = True
    finally:
        if not started:
            discard(path)
    raise web.HTTPSeeOther(f"/imports/{upload_id}")


async def _upload_or_404(request: web.Request) -> Any:
    upload = await console_of(request).accounts.upload_get(upload_id_of(request))
    if upload is None:
        raise web.HTTPNotFound(text="no such import")
    return upload


@requires(Role.VIEWER)
async def import_page(request: web.Request) -> web.Response:
    upload = await _upload_or_404(request)
    rows_read = request.app[UPLOADS].rows_read(upload.id)
    return render(request, "import.html", u=upload, rows_read=rows_read)


@requires(Role.VIEWER)
async def import_status(request: web.Request) -> web.Response:
    """The status block alone, for htmx to poll while the import runs."""
    upload = await _upload_or_404(request)
    rows_read = request.app[UPLOADS].rows_read(upload.id)
    return render(request, "_import_status.html", u=upload, rows_read=rows_read)


@requires(Role.SENDER)
async def import_rejects(request: web.Request) -> web.Response:
    """The rejected rows, each with its line and reason, to fix and upload again: a file of
    addresses with every column, so for those who may upload, not every viewer."""
    upload_id = upload_id_of(request)
    kept = await console_of(request).accounts.upload_rejects(upload_id)
    if kept is None:
        raise web.HTTPNotFound(text="this import rejected no row")
    # The rejects hold addresses: who took a copy is in the operator log, as for an export.
    await record(request, "import.rejects_download", "upload", str(upload_id))
    return web.Response(
        body=gzip.decompress(kept),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="import-{upload_id}.rejects.csv"'},
    )


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/imports", imports_page, name="imports")
    router.add_post("/imports", imports_upload, name="imports_upload")
    router.add_get("/imports/{id}", import_page, name="import_page")
    router.add_get("/imports/{id}/status", import_status, name="import_status")
    router.add_get("/imports/{id}/rejects.csv", import_rejects, name="import_rejects")
