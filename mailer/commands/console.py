"""What every command shares: the terminal, the database pool, the handler shape."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from mailer.core.settings import Settings
from mailer.db import Pool, connect

console = Console()
err = Console(stderr=True)

# Every sub-command: parsed arguments and settings in, exit status out.
Handler = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def open_pool(settings: Settings) -> AbstractAsyncContextManager[Pool]:
    """The command's connection pool, closed when the command ends."""
    db = settings.database
    return connect(db.url, min_size=db.pool_min, max_size=db.pool_max)


def day(value: Any) -> str:
    """A timestamp as its UTC date, or '-'."""
    return value.date().isoformat() if value is not None else "-"


def at_of(args: argparse.Namespace) -> datetime:
    """The --at option (ISO 8601, UTC when no zone is given), or now."""
    if getattr(args, "at", None):
        parsed = datetime.fromisoformat(args.at)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)
