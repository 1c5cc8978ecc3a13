"""Running the `mailer` command as an operator would, and reading what it printed."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from mailer import cli


async def run_cli(monkeypatch: pytest.MonkeyPatch, db_url: str, *argv: str) -> tuple[int, str]:
    """`mailer ARGV` against `db_url`: its exit code and everything it printed.

    In a thread, since the command runs its own event loop; its consoles are wide enough that
    no table cell is wrapped.
    """
    printed = io.StringIO()
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    monkeypatch.setattr(cli, "console", Console(file=printed, width=250))
    monkeypatch.setattr(cli, "err", Console(file=printed, width=250))
    code = await asyncio.to_thread(cli.main, list(argv))
    return code, printed.getvalue()
