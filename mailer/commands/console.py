"""What every command shares: the terminal, the database pool, the handler shape."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
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
    # A write and its operator-log line hold one connection (oplog.logged_write) while the
    # command still reads, and a launch freezes its audience on audience_parts more: a
    # pool smaller than that would wait on itself for ever.
    return connect(db.url, min_size=db.pool_min, max_size=max(db.pool_max, db.audience_parts + 2))


def day(value: Any) -> str:
    """A timestamp as its UTC date, or '-'."""
    return value.date().isoformat() if value is not None else "-"


class UsageError(Exception):
    """An option's value the command cannot use; the message names the option."""


def at_of(args: argparse.Namespace) -> datetime:
    """The --at option (ISO 8601, UTC when no zone is given), or now."""
    if getattr(args, "at", None):
        try:
            parsed = datetime.fromisoformat(args.at)
        except ValueError:
            raise UsageError(
                f"--at: {args.at!r} is not an ISO 8601 time (2026-03-10 or 2026-03-10T09:00-05:00)"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, console: Console) -> Iterator[None]:
    """First SIGTERM/SIGINT: graceful stop. Second: cancel everything. Removed on the way out."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal(name: str) -> None:
        if stop.is_set():
            console.print(f"[red]{name} again: cancelling[/]")
            if main is not None:
                main.cancel()
            return
        console.print(f"[yellow]{name}: finishing the messages in hand, handing back the rest…[/]")
        stop.set()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
