"""Running the `mailer` command as an operator would, and reading what it printed."""

from __future__ import annotations

import asyncio
import io

import pytest

from mailer.commands import console as terminal
from mailer.commands.main import main


async def run_cli(monkeypatch: pytest.MonkeyPatch, db_url: str, *argv: str) -> tuple[int, str]:
    """`mailer ARGV` against `db_url`: its exit code and everything it printed.

    In a thread, since the command runs its own event loop; its consoles are wide enough that
    no table cell is wrapped.
    """
    printed = io.StringIO()
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    for console in (terminal.console, terminal.err):
        # The shared consoles of every command; their private fields, restored afterwards.
        monkeypatch.setattr(console, "_file", printed)
        monkeypatch.setattr(console, "_width", 250)
    code = await asyncio.to_thread(main, list(argv))
    return code, printed.getvalue()
