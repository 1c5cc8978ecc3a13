"""Render processes: they go when their worker goes, however it goes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, base64, dataclasses, sys, time
sys.path.insert(0, {root!r})
from mailer.core.settings import load
from mailer.send.render_pool import RenderPool

async def main() -> None:
    base = load(environ={{}})
    settings = dataclasses.replace(base, token_keys="1:" + base64.b64encode(b"k" * 32).decode())
    pool = RenderPool(settings, 1)
    await pool.start()
    print(pool.pids()[0], flush=True)
    time.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it is gone for our purpose once reaped or defunct.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def test_a_render_process_exits_soon_after_its_worker_is_killed_outright(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)), encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    ) as worker:
        assert worker.stdout is not None
        child = int(worker.stdout.readline())
        assert _alive(child)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)
