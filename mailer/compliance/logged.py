"""A write and its operator-log line in one transaction, for every face that writes by hand
(the CLI's commands, the console's pages): the change and its line commit together, or
neither does. The API's writes add their Idempotency-Key record (mailer.api.writes)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from mailer.compliance.store import ActorKind, Conn, log_operator_action
from mailer.db import Pool


@dataclass
class LoggedWrite:
    """The transaction's connection; what the line will name, set by the caller as it goes."""

    conn: Conn
    object_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # Set when the write found nothing to change (a text already worded so, an endpoint
    # already off): the transaction commits without a line.
    unchanged: bool = False


@asynccontextmanager
async def logged_write(
    pool: Pool,
    actor_kind: ActorKind,
    actor: str,
    action: str,
    object_kind: str | None,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AsyncIterator[LoggedWrite]:
    """A transaction for one write and its operator-log line (written unless the block raised)."""
    async with pool.acquire() as conn, conn.transaction():
        write = LoggedWrite(conn, object_id, dict(detail or {}))
        yield write
        if not write.unchanged:
            await log_operator_action(
                conn, actor_kind, actor, action, object_kind, write.object_id, write.detail
            )
