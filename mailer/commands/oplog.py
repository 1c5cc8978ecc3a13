"""The CLI's writes in the operator log (issue #19's, kept by mailer.compliance): each command
that changes something logs a line as actor_kind 'cli', the OS user who ran it, in the same
transaction as the change where the change can take a connection (as the API's writes do),
so the change and its line commit together, or neither does."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from mailer.compliance import logged
from mailer.compliance.logged import LoggedWrite
from mailer.compliance.privacy import operator
from mailer.db import Pool


def cli_actor() -> str:
    """The OS user running the command ('unknown' where none can be told: some containers)."""
    return operator() or "unknown"


def logged_write(
    pool: Pool,
    action: str,
    object_kind: str,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AbstractAsyncContextManager[LoggedWrite]:
    """A transaction for one command's write and its operator-log line (written on success);
    the console's pages write through the same helper (mailer.console.web.logged_write)."""
    said = {"via": "cli", **(detail or {})}
    return logged.logged_write(pool, "cli", cli_actor(), action, object_kind, object_id, said)
