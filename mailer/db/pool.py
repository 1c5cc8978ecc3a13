"""The one way a process opens Postgres: a pool with UTC sessions and JSON codecs.

json and jsonb columns and parameters are Python values (dicts, lists) on both
sides, so no query needs a hand-written json.dumps / json.loads around it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

# What a caller may retry or report as "database unavailable" rather than a bug; at start,
# what `connect` turns into DatabaseUnreachable (the one place that message is made).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
)

Pool = asyncpg.Pool

# Postgres unreachable, restarting, shedding load or too slow: failures a
# process waits out and retries. Any other database error is a bug to report
# with its traceback (a syntax error, a constraint the code should not break).
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # connection refused, reset, lost
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    OSError,
    TimeoutError,
)


class DatabaseUnreachable(Exception):
    """No connection to database.url at start: a wrong host, database, role or password."""


def _unreachable(dsn: str, error: BaseException) -> DatabaseUnreachable:
    """The operator's message for a pool that could not open: where (never the password), why."""
    try:
        parts = urlsplit(dsn)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        where += f" as {parts.username}" if parts.username else ""
    except ValueError:  # a malformed port: the URL itself is the problem
        where = "(malformed URL)"
    return DatabaseUnreachable(
        f"cannot connect to Postgres (database.url or DATABASE_URL: {where}): "
        f"{error or type(error).__name__}"
    )


def unavailable(error: BaseException) -> bool:
    """True when `error` says the database could not be reached or used just now."""
    if isinstance(error, _UNAVAILABLE):
        return True
    # asyncpg's own word for a connection found closed or a pool going away.
    return isinstance(error, asyncpg.InterfaceError) and "closed" in str(error)


class _OutageWithoutTraceback(logging.Filter):
    """asyncpg's pool logs each failed reconnect with a traceback: one line is enough.

    An outage is expected; the engine already summarises it (mailer/send/failure_log.py).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and unavailable(error):
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


# Installed once, at import: every pool of the process is asyncpg's.
logging.getLogger("asyncpg.pool").addFilter(_OutageWithoutTraceback())


def _dumps(value: Any) -> str:
    """JSON text of a parameter: orjson, ~10x faster than json.dumps on an archive record
    (measured 8.5 against 94 us; the engine encodes one per message sent). Integers beyond
    64 bits, which orjson refuses and jsonb keeps exactly, go through json.dumps. Decoding
    stays json.loads: orjson reads such integers back as floats, losing digits."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=_dumps, decoder=json.loads, schema="pg_catalog")


def _init_with_logger(on_query: Callable[[Any], None]) -> Callable[[Any], Awaitable[None]]:
    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        conn.add_query_logger(on_query)

    return init


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    server_settings: Mapping[str, str] | None = None,
    on_query: Callable[[Any], None] | None = None,
    **options: Any,
) -> asyncpg.Pool:
    """A pool of connections in the UTC zone, json/jsonb decoded to Python values.

    UTC sessions: interval arithmetic on timestamptz (consent expiry, "active
    within N months") follows the session zone. `server_settings` are sent at
    connect (no round trip); `options` go to asyncpg.create_pool (timeouts, reset).
    `on_query` is called after each statement (the console counts a page's queries).
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection if on_query is None else _init_with_logger(on_query),
        server_settings={"timezone": "UTC", **(server_settings or {})},
        **options,
    )


@asynccontextmanager
async def connect(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    on_query: Callable[[Any], None] | None = None,
) -> AsyncIterator[asyncpg.Pool]:
    """A pool for the block's lifetime (create_pool's), closed on the way out.

    A pool that cannot open raises DatabaseUnreachable naming the setting and the cause
    (connection refused, database "x" does not exist, password authentication failed…):
    at start these are settings to fix, not bugs, so a command or a server prints one line
    instead of asyncpg's traceback. Every process's start opens its pool here (the CLI, the
    console, the API, the workers), so that line is worded once.
    """
    try:
        pool = await create_pool(dsn, min_size=min_size, max_size=max_size, on_query=on_query)
    except TRANSIENT_ERRORS as exc:
        raise _unreachable(dsn, exc) from exc
    try:
        yield pool
    finally:
        await pool.close()


def affected(status: str) -> int:
    """Rows affected, from a command tag such as 'INSERT 0 42' or 'UPDATE 7'."""
    return int(status.rsplit(" ", 1)[-1])
