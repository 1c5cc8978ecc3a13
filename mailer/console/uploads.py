"""Imports started from the console: the CLI's own import, run in the background and watched.

An upload is saved to a private temporary folder, recorded (console_uploads), and handed
to a task that runs `mailer contacts import` (mailer.contacts.imports.import_contacts) or
`mailer suppress import` (import_suppressions) on it. The page polls the row, and this
process's live row count while the task runs. Every outcome (done, refused with nothing
written, failed) is recorded with the rejects file, and the import in the operator log.
On shutdown running imports are cancelled: their one transaction rolls back, and the row
says so. A process killed outright says nothing: it stops renewing its uploads' leases, and
the upkeep of the next console process marks them `interrupted` (console/upkeep.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import logging
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from mailer.console.accounts import same_token
from mailer.console.upkeep import LEASE_S, upkeep
from mailer.console.web import CONSOLE, Console
from mailer.contacts import imports
from mailer.contacts.batches import Tally
from mailer.contacts.csvfile import Defaults, FileError, RejectsWriter
from mailer.contacts.store import ImportRefused
from mailer.core.addresses import InvalidAddress, address_hash, normalise

log = logging.getLogger(__name__)

# What the task body returns: (state, import id, summary, error, rows rejected).
Finished = tuple[str, int | None, dict[str, Any], str | None, int]


@dataclass
class Uploads:
    """The imports this console process is running, by upload id (web.AppKey UPLOADS)."""

    console: Console
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    tallies: dict[int, Tally] = field(default_factory=dict)

    def rows_read(self, upload_id: int) -> int | None:
        """Rows read so far by a running import of this process (None: not running here)."""
        tally = self.tallies.get(upload_id)
        return None if tally is None else tally.valid + tally.rejected

    async def begin(self, kind: str, path: Path, actor: str, options: dict[str, Any]) -> int:
        """Record an upload; if that fails, its file goes (nothing would ever read it)."""
        try:
            return await self.console.accounts.upload_begin(
                kind, path.name, actor, options, LEASE_S
            )
        except BaseException:
            discard(path)
            raise

    def start_contacts(
        self, upload_id: int, actor: str, path: Path, defaults: Defaults, options: dict[str, Any]
    ) -> None:
        tally = Tally()
        settings = self.console.settings

        async def body(rejects: Path) -> Finished:
            outcome = await imports.import_contacts(
                self.console.contacts,
                path,
                defaults,
                default_locale=settings.imports.default_locale,
                skip_invalid=bool(options.get("skip_invalid")),
                rejects_path=rejects,
                encoding=options.get("encoding") or None,
                delimiter=options.get("delimiter") or None,
                tally=tally,
            )
            r = outcome.result
            summary = {
                "rows_read": r.rows_read,
                "rows_valid": r.rows_valid,
                "contacts_created": r.contacts_created,
                "contacts_updated": r.contacts_updated,
                "consents_added": r.consents_added,
                "topics_added": r.topics_added,
                "suppressed": r.suppressed,
                "dialect": outcome.dialect.describe(),
            }
            return "done", r.import_id, summary, None, r.rows_rejected

        self.tallies[upload_id] = tally
        self._spawn(upload_id, actor, "contacts.import", path, body)

    def start_suppressions(
        self,
        upload_id: int,
        actor: str,
        path: Path,
        target: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        async def body(rejects: Path) -> Finished:
            result, rejected = await imports.import_suppressions(
                self.console.contacts,
                path,
                encoding=options.get("encoding") or None,
                delimiter=options.get("delimiter") or None,
                **target,
            )
            with RejectsWriter(rejects) as writer:
                for row in rejected:
                    writer.write(row)
            summary = {"rows_valid": result.rows_valid, "added": result.added}
            return "done", None, summary, None, result.rows_rejected

        self._spawn(upload_id, actor, "suppressions.import", path, body)

    def _spawn(
        self,
        upload_id: int,
        actor: str,
        action: str,
        path: Path,
        body: Callable[[Path], Awaitable[Finished]],
    ) -> None:
        task = asyncio.create_task(
            self._run(upload_id, actor, action, path, body), name=f"upload-{upload_id}"
        )
        self.tasks[upload_id] = task
        task.add_done_callback(lambda done: self._forget(upload_id, done))

    def _forget(self, upload_id: int, done: asyncio.Task[None] | None = None) -> None:
        self.tasks.pop(upload_id, None)
        self.tallies.pop(upload_id, None)
        if done is not None and not done.cancelled() and done.exception() is not None:
            # Its end could not be recorded (the database, the rejects' size): said here,
            # since nothing awaits the task; its lease is no longer renewed, so the upkeep
            # marks it `interrupted` once the lease runs out.
            log.error("upload %d: recording its end failed: %r", upload_id, done.exception())

    async def _run(
        self,
        upload_id: int,
        actor: str,
        action: str,
        path: Path,
        body: Callable[[Path], Awaitable[Finished]],
    ) -> None:
        rejects = path.with_name("rejects.csv")
        finished: Finished
        try:  # the uploaded file (a whole contacts list) never outlives its import
            try:
                finished = await body(rejects)
            except ImportRefused as exc:
                finished = ("refused", None, {"rows_valid": exc.valid}, str(exc), exc.rejected)
            except (FileError, UnicodeError, LookupError, OSError, ValueError) as exc:
                # Expected bad input (the file's encoding, header, a default's value): said,
                # not a traceback. The CLI prints the same messages.
                finished = ("failed", None, {}, str(exc), 0)
            except asyncio.CancelledError:
                finished = ("failed", None, {}, "the console stopped: nothing was imported", 0)
                await self._finish(upload_id, actor, action, rejects, finished)
                raise
            except Exception:
                log.exception("upload %d: import failed", upload_id)
                finished = ("failed", None, {}, "internal error (see the console's log)", 0)
            await self._finish(upload_id, actor, action, rejects, finished)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)

    async def _finish(
        self, upload_id: int, actor: str, action: str, rejects: Path, finished: Finished
    ) -> None:
        state, import_id, summary, error, rejected = finished
        kept, hashes = await asyncio.to_thread(_rejects_kept, rejects)
        console = self.console
        await console.accounts.upload_finish(
            upload_id,
            state,
            import_id=import_id,
            summary=summary,
            error=error,
            rows_rejected=rejected,
            rejects_gz=kept,
            rejects_hashes=hashes,
        )
        await console.compliance.log_operator_action(
            "operator",
            actor,
            action,
            "upload",
            str(upload_id),
            {"via": "console", "state": state, "import_id": import_id, "rejected": rejected},
        )

    async def close(self) -> None:
        """Cancel the running imports and wait for each to record that it stopped."""
        running = list(self.tasks.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


# Anything shaped like an address in a reason's text; an apostrophe may be inside the local
# part (o'brien@…), and one in front is the CSV-injection guard's (spreadsheet.csv_writer).
_ADDRESS_LIKE = re.compile(r"[^\s,;:<>\"()\[\]]+@[^\s,;:<>\"()\[\]]+")


def addresses_hashed(text: str) -> list[bytes]:
    """The sha256 (address_hash) of each valid address in `text`, sorted, once each: what
    an erasure looks for in a rejects file it cannot read (compliance.sql: erase_rejects).
    Each CSV cell is tried whole (an address may hold any character a local part allows),
    then anything address-shaped inside the cells (a reason quoting one)."""
    candidates: set[str] = set(_ADDRESS_LIKE.findall(text))
    with contextlib.suppress(csv.Error):  # a NUL byte: the text search above still ran
        for row in csv.reader(io.StringIO(text)):
            candidates.update(cell for cell in row if "@" in cell)
    found = set()
    for token in candidates:
        bare = token.strip().strip("<>")
        for address in {bare, bare.removeprefix("'")}:
            with contextlib.suppress(InvalidAddress):
                found.add(address_hash(normalise(address)))
    return sorted(found)


def _rejects_kept(path: Path) -> tuple[bytes | None, list[bytes] | None]:
    """The rejects file gzipped, and the hashes of the addresses in it."""
    if not path.exists():
        return None, None
    raw = path.read_bytes()
    return gzip.compress(raw), addresses_hashed(raw.decode("utf-8", errors="replace"))


UPLOADS = web.AppKey("uploads", Uploads)


UPKEEP = web.AppKey("upkeep", asyncio.Task[None])


async def uploads_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the pool's context: imports stop (and say so) before the pool closes. The
    upkeep (console/upkeep.py) runs beside them; `serve` watches it (app[UPKEEP])."""
    app[UPLOADS] = uploads = Uploads(app[CONSOLE])
    stop = asyncio.Event()
    app[UPKEEP] = task = asyncio.create_task(upkeep(uploads, stop), name="console-upkeep")
    try:
        yield
    finally:
        stop.set()
        try:
            await uploads.close()
        finally:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("console upkeep had stopped: %r", task.exception())
            else:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


# Contacts files run to hundreds of megabytes: the upload is streamed to disk (the app's
# client_max_size bounds only bodies read whole), up to this size.
UPLOAD_MAX_BYTES = 1024 * 1024 * 1024
# A suppression list is read whole into memory (its reader keeps each rejected row): a
# smaller bound, still ~2 million addresses.
SUPPRESSION_UPLOAD_MAX_BYTES = 64 * 1024 * 1024
_FIELD_MAX_BYTES = 64 * 1024
_FIELDS_MAX = 32


class UploadRefused(Exception):
    """The upload cannot be taken: `status` and a page's message key."""

    def __init__(self, status: int, key: str) -> None:
        super().__init__(key)
        self.status = status
        self.key = key


def discard(path: Path) -> None:
    """Remove an uploaded file and its private folder."""
    shutil.rmtree(path.parent, ignore_errors=True)


def _safe_name(filename: str | None) -> str:
    name = Path((filename or "").replace("\\", "/")).name.strip()
    return name if name and not name.startswith(".") else "upload.csv"


async def read_upload(
    request: web.Request, csrf_token: str, max_bytes: int = UPLOAD_MAX_BYTES
) -> tuple[dict[str, str], Path]:
    """The form's fields and the uploaded file, saved in a new private folder.

    The CSRF token is the form's first field (browsers send fields in document order) and is
    checked before anything is written, unless the X-CSRF-Token header carried it (checked
    by the middleware).
    """
    checked = "X-CSRF-Token" in request.headers
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError):  # not multipart/form-data, or no boundary
        raise UploadRefused(400, "no_file") from None
    fields: dict[str, str] = {}
    saved: Path | None = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.filename is not None:
                if not checked:
                    raise UploadRefused(403, "csrf")
                if part.name != "file" or saved is not None:
                    continue
                saved = Path(tempfile.mkdtemp(prefix="mailer-upload-")) / _safe_name(part.filename)
                size = 0
                with saved.open("wb") as out:
                    while chunk := await part.read_chunk():
                        size += len(chunk)
                        if size > max_bytes:
                            raise UploadRefused(413, "too_big")
                        out.write(chunk)
                continue
            value = bytearray()
            while chunk := await part.read_chunk():
                value += chunk
                if len(value) > _FIELD_MAX_BYTES:
                    raise UploadRefused(413, "too_big")
            text = value.decode("utf-8", errors="replace")
            if not checked:
                if part.name != "csrf" or not same_token(csrf_token, text):
                    raise UploadRefused(403, "csrf")
                checked = True
                continue
            fields[part.name] = text
            if len(fields) > _FIELDS_MAX:
                raise UploadRefused(413, "too_big")
        if not checked:
            raise UploadRefused(403, "csrf")
        if saved is None or saved.stat().st_size == 0:
            raise UploadRefused(400, "no_file")
    except BaseException:
        if saved is not None:
            shutil.rmtree(saved.parent, ignore_errors=True)
        raise
    return fields, saved
