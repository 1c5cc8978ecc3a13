"""The CLI's writes in the operator log (issue #19's, kept by mailer.compliance): each command
that changes something logs a line as actor_kind 'cli', the OS user who ran it, in the same
transaction as the change where the change can take a connection (as the API's writes do),
so the change and its line commit together, or neither does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mailer.compliance.privacy import operator
from mailer.compliance.store import Conn, log_operator_action
from mailer.db import Pool


def cli_actor() -> str:
    """The OS user running the command ('unknown' where none can be told: some containers)."""
    return operator() or "unknown"


@dataclass
class CliWrite:
    """The transaction's connection; what the line will name, set by the command as it goes."""

    conn: Conn
    object_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # Set when the command found nothing to change (a text already worded so, an endpoint
    # already off): the transaction commits without a line, as the console logs nothing then.
    unchanged: bool = False


@asynccontextmanager
async def logged_write(
    pool: Pool,
    action: str,
    object_kind: str,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AsyncIterator[CliWrite]:
    """A transaction for one command's write and its operator-log line (written on success)."""
    async with pool.acquire() as conn, conn.transaction():
        write = CliWrite(conn, object_id, {"via": "cli", **(detail or {})})
        yield write
        if not write.unchanged:
            await log_operator_action(
                conn, "cli", cli_actor(), action, object_kind, write.object_id, write.detail
            )
