"""`mailer console serve` as an operator runs it: a process that answers on console.port,
with its headers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.smtp_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
async def test_console_serve_answers_on_its_port_and_stops_on_sigterm(db_url: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "MAILER_CONSOLE_PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MAILER_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", "console", "serve",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(600):  # a new process's imports: up to a minute on a loaded machine
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
                        if health.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            async with session.get(f"http://127.0.0.1:{port}/login") as login:
                assert login.status == 200
                assert "frame-ancestors 'none'" in login.headers["Content-Security-Policy"]
                assert 'name="csrf"' in await login.text()
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, out.decode()
    assert f"console on http://127.0.0.1:{port}" in out.decode()
