"""Templates have limits (issue #13, item 6): CPU time, size and memory per message, at send
time and in `campaign check`; a worker stops on SIGTERM whatever a render is doing."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from mailer.campaigns import lifecycle
from mailer.commands.main import main as mailer_main
from mailer.core.settings import ConfigError, load
from mailer.demo.stores import Stores
from tests.cli_run import run_cli
from tests.engine_setup import KEYS, NOW, ROOT, TEMPLATES, add_contacts, engine_for, settings_for
from tests.smtp_servers import smtp_server, wait_until

# Ten billion turns of an empty loop: Python bytecode, so the CPU-time limit interrupts it.
LOOP_FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
SUBJECT = (
    'en = "{{ attributes.vehicle }}: your service is due on {{ attributes.next_service | date }}"'
)


def for_vips(snippet: str) -> str:
    """A part of the template that only runs for some contacts: lint's sample is not one."""
    return "{% if attributes.vip is defined %}" + snippet + "{% endif %}"


def campaign_file(folder: Path, snippet: str = "", subject: str | None = None) -> Path:
    """The sample campaign's files copied to `folder`, its layout ending with `snippet`."""
    shutil.copytree(TEMPLATES, folder, dirs_exist_ok=True)
    layout = folder / "layout.html"
    marker = "{% block content %}{% endblock %}"
    layout.write_text(layout.read_text().replace(marker, marker + snippet))
    path = folder / "service_reminder.toml"
    text = path.read_text().replace("service-reminder-2024-10", f"limits-{uuid.uuid4().hex[:8]}")
    if subject is not None:
        assert SUBJECT in text
        text = text.replace(SUBJECT, f"en = {subject}")
    path.write_text(text)
    return path


async def create(
    stores: Stores, folder: Path, snippet: str = "", subject: str | None = None
) -> str:
    await stores.contacts.topic_upsert("service", "Service reminders")
    _, definition = await lifecycle.create(
        stores.campaigns, campaign_file(folder, snippet, subject), folder
    )
    return definition.slug


async def vips(conn: asyncpg.Connection, emails: list[str], vip: int = 1) -> None:
    await conn.execute(
        "UPDATE contacts SET attributes = attributes || jsonb_build_object('vip', $2::int) "
        "WHERE email = ANY($1)",
        emails,
        vip,
    )


async def outcomes(conn: asyncpg.Connection) -> dict[str, tuple[str, str | None, str | None]]:
    rows = await conn.fetch(
        "SELECT c.email, d.status, d.skip_reason, d.smtp_reply FROM deliveries d "
        "JOIN contacts c ON c.id = d.contact_id"
    )
    return {r["email"]: (r["status"], r["skip_reason"], r["smtp_reply"]) for r in rows}


async def send_with_vips(
    stores: Stores,
    conn: asyncpg.Connection,
    folder: Path,
    snippet: str,
    *,
    vip: int = 1,
    size_limit: int | None = None,
    **engine: float,
) -> tuple[list[str], dict[str, tuple[str, str | None, str | None]], list[bytes]]:
    """Eight contacts, two of them VIPs, sent through the real engine to a sink."""
    emails = await add_contacts(conn, 8, domains=("a.example", "b.example"))
    await vips(conn, emails[:2], vip)
    slug = await create(stores, folder, for_vips(snippet))
    await lifecycle.launch(stores.campaigns, slug, NOW)
    with smtp_server(data_size_limit=size_limit) as (port, sink):
        engine_run = engine_for(stores, settings_for(port, **engine)).run(until_idle=True)
        await asyncio.wait_for(engine_run, 120)  # the worker ends: nothing stays in flight
        received = [m.data for m in sink.messages]
        assert sorted(sink.recipients) == sorted(emails[2:])
    return emails, await outcomes(conn), received


@pytest.mark.parametrize("processes", [1, 0])
async def test_a_loop_that_runs_away_for_some_contacts_skips_them_and_sends_the_others(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, processes: int
) -> None:
    emails, rows, _ = await send_with_vips(
        stores, conn, tmp_path, LOOP_FOREVER, render_processes=processes, render_timeout_ms=200
    )
    for vip in emails[:2]:
        status, reason, reply = rows[vip]
        assert (status, reason) == ("skipped", "render_timeout")
        assert reply is not None
        assert "layout.html:28" in reply
        assert "engine.render_timeout_ms" in reply
    assert {rows[e][0] for e in emails[2:]} == {"sent"}  # nothing left `sending`


async def test_a_render_process_killed_mid_batch_costs_one_contact_not_the_batch(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    emails = await add_contacts(conn, 8)
    await vips(conn, emails[3:4])
    await lifecycle.launch(
        stores.campaigns, await create(stores, tmp_path, for_vips(LOOP_FOREVER)), NOW
    )
    with smtp_server() as (port, sink):
        # A render that would run for ten minutes, killed the way its hard timer kills it.
        engine = engine_for(stores, settings_for(port, render_timeout_ms=600_000))
        run = asyncio.create_task(engine.run(until_idle=True))
        await wait_until(
            lambda: (
                engine.composition.render_pool is not None
                and bool(engine.composition.render_pool.pids())
            )
        )
        assert engine.composition.render_pool is not None
        pool = engine.composition.render_pool
        await wait_until(lambda: pool.in_hand() == [3])  # three composed, the fourth runs away
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGPROF)
        await asyncio.wait_for(run, 60)
        assert sorted(sink.recipients) == sorted(emails[:3] + emails[4:])
    assert pool.replaced == 1
    status, reason, reply = (await outcomes(conn))[emails[3]]
    assert (status, reason) == ("skipped", "render_timeout")
    assert reply == (
        "render process killed after 1,201,000 ms of CPU time (engine.render_timeout_ms = 600,000)"
    )


def test_a_render_process_busy_in_one_c_call_is_killed_at_twice_its_limit_plus_a_second() -> None:
    # A single C call never reaches the next bytecode, where the CPU-time limit interrupts a
    # template: the kernel kills the process (SIGPROF's default action) instead.
    script = (
        "import hashlib\n"
        "from mailer.campaigns.limits import RenderLimits, timed_hard\n"
        "limits = RenderLimits(timeout_ms=100)\n"
        "timed_hard(limits, hashlib.pbkdf2_hmac, 'sha256', b'x', b'y', 10**9)\n"
        "print('not killed')\n"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGPROF
    assert "not killed" not in done.stdout
    assert time.monotonic() - started < 20


async def test_a_render_over_the_memory_limit_is_skipped_and_its_process_replaced(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    emails, rows, _ = await send_with_vips(
        stores,
        conn,
        tmp_path,
        "{{ ('x' * 400000000) | length }}",
        max_message_bytes=10**9,
        render_memory_mb=256,
    )
    for vip in emails[:2]:
        status, reason, reply = rows[vip]
        assert (status, reason) == ("skipped", "render_memory")
        assert reply is not None
        assert "engine.render_memory_mb = 256" in reply
    assert {rows[e][0] for e in emails[2:]} == {"sent"}


@pytest.mark.parametrize("processes", [1, 0])
async def test_a_huge_output_is_skipped_message_too_large_before_it_is_built(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path, processes: int
) -> None:
    emails, rows, received = await send_with_vips(
        stores,
        conn,
        tmp_path,
        "{{ 'x' * (attributes.vip * 1000000) }}",
        vip=136,
        render_processes=processes,
    )
    for vip in emails[:2]:
        status, reason, reply = rows[vip]
        assert (status, reason) == ("skipped", "message_too_large")
        assert reply is not None
        assert "136,000,000" in reply
        assert "engine.max_message_bytes" in reply
    assert max(len(data) for data in received) < 100_000


async def test_a_message_over_the_relays_advertised_size_is_skipped_never_offered(
    stores: Stores, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    emails, rows, received = await send_with_vips(
        stores,
        conn,
        tmp_path,
        "{{ 'x' * (attributes.vip * 1000) }}",
        vip=136,  # 136 kB: well within engine.max_message_bytes, over the relay's SIZE
        size_limit=100_000,
    )
    for vip in emails[:2]:
        status, reason, reply = rows[vip]
        assert (status, reason) == ("skipped", "message_too_large")
        assert reply is not None
        assert "SIZE 100,000" in reply
    assert len(received) == 6
    assert max(len(data) for data in received) <= 100_000


# ---------------------------------------------------------------- campaign check


async def check(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    db_url: str,
    slug: str,
    **env: str,
) -> tuple[int, str, float]:
    """`mailer campaign check SLUG`: exit code, output (spaces normalised), seconds taken."""
    monkeypatch.delenv("MAILER_CONFIG", raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    code = await asyncio.to_thread(mailer_main, ["campaign", "check", slug])
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split()), elapsed


async def test_campaign_check_of_a_template_that_never_ends_answers_promptly(
    stores: Stores,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slug = await create(stores, tmp_path, LOOP_FOREVER)
    code, out, elapsed = await check(monkeypatch, capsys, db_url, slug)
    assert code == 1
    assert elapsed < 30
    assert "render: over a limit: layout.html:28: took more than 500 ms of CPU time" in out
    assert "(engine.render_timeout_ms)" in out


async def test_campaign_check_of_a_template_that_exhausts_its_memory_names_it_and_the_limit(
    stores: Stores,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slug = await create(stores, tmp_path, "{{ ('x' * 400000000) | length }}")
    code, out, elapsed = await check(
        monkeypatch,
        capsys,
        db_url,
        slug,
        # The size guards would refuse the repetition; let the memory limit stop it.
        MAILER_ENGINE_MAX_MESSAGE_BYTES=str(10**9),
        MAILER_ENGINE_RENDER_MEMORY_MB="256",
    )
    assert code == 1
    assert elapsed < 30
    assert (
        "template 'service_reminder': render process ran out of memory "
        "(engine.render_memory_mb = 256)"
    ) in out


async def test_campaign_check_of_a_template_whose_output_never_stops_growing(
    stores: Stores,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grows = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"  # 100 MB
    slug = await create(stores, tmp_path, grows)
    code, out, elapsed = await check(monkeypatch, capsys, db_url, slug)
    assert code == 1
    assert elapsed < 30
    assert "over engine.max_message_bytes (10,000,000)" in out


async def test_campaign_check_fails_a_subject_that_renders_a_line_break(
    stores: Stores,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In the file, TOML's \\r\\n leaves \r\n for Jinja's string literal, which makes CR LF.
    injected = "\"Service reminder{{ '\\\\r\\\\nBcc: everyone@example.com' }}\""
    slug = await create(stores, tmp_path, subject=injected)
    code, out, _ = await check(monkeypatch, capsys, db_url, slug)
    assert code == 1
    assert "en, headers: subject: control character (CR/LF?) in a header value" in out
    assert "every message would be skipped (header_injection)" in out
    assert "fr, headers" not in out  # the French subject is fine


def test_the_limits_are_settings_checked_at_start_with_their_names() -> None:
    defaults = load(environ={}).engine
    assert (defaults.render_timeout_ms, defaults.max_message_bytes) == (500, 10_000_000)
    assert defaults.render_memory_mb == 512
    for name, value in (
        ("MAILER_ENGINE_RENDER_TIMEOUT_MS", "0"),
        ("MAILER_ENGINE_MAX_MESSAGE_BYTES", "1000"),
        ("MAILER_ENGINE_RENDER_MEMORY_MB", "16"),
    ):
        setting = "engine." + name.removeprefix("MAILER_ENGINE_").lower()
        with pytest.raises(ConfigError, match=setting):
            load(environ={name: value})


# ---------------------------------------------------------------- stopping


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (render processes, the fork server)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize(("processes", "timeout_ms"), [(1, 600_000), (0, 3_000)])
async def test_sigterm_stops_a_worker_whose_render_runs_away_within_its_grace_period(
    stores: Stores,
    conn: asyncpg.Connection,
    db_url: str,
    tmp_path: Path,
    processes: int,
    timeout_ms: int,
) -> None:
    emails = await add_contacts(conn, 4)
    await vips(conn, emails[:1])
    slug = await create(stores, tmp_path, for_vips(LOOP_FOREVER))
    await lifecycle.launch(stores.campaigns, slug, NOW)
    with smtp_server() as (port, _):
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "MAILER_SMTP_PORT": str(port),
            "MAILER_TOKEN_KEYS": KEYS,
            "MAILER_ENGINE_METRICS_PORT": "0",
            "MAILER_ENGINE_RENDER_PROCESSES": str(processes),
            # With render processes, a render that would run for ten minutes.
            "MAILER_ENGINE_RENDER_TIMEOUT_MS": str(timeout_ms),
        }
        env.pop("MAILER_CONFIG", None)
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailer",
            "worker",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE status = 'claimed'"
            ):
                assert time.monotonic() < deadline, "the worker never claimed"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # well into the runaway render
            below = descendants(worker.pid)
            worker.send_signal(signal.SIGTERM)
            # Grace: the stop waits for no render, on the loop for one render at most.
            assert (
                await asyncio.wait_for(worker.wait(), 10 + timeout_ms / 1000 * (1 - processes)) == 0
            )
        finally:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    statuses = {status for status, _, _ in (await outcomes(conn)).values()}
    assert not statuses & {"claimed", "sending"}  # handed back (queued) or finished
    # The render processes and the fork server go with the worker.
    await wait_until(lambda: not any(alive(pid) for pid in below), 10)


async def test_campaign_status_names_the_contacts_whose_message_could_not_be_built_and_why(
    stores: Stores,
    conn: asyncpg.Connection,
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emails, rows, _ = await send_with_vips(stores, conn, tmp_path, "{{ 1 // 0 }}")
    assert {rows[vip][:2] for vip in emails[:2]} == {("skipped", "render_error")}
    slug = await conn.fetchval("SELECT slug FROM campaigns")
    code, printed = await run_cli(monkeypatch, db_url, "campaign", "status", slug)
    assert code == 0, printed
    assert "messages that could not be built" in printed
    for vip in emails[:2]:
        assert vip in printed
    assert "render_error" in printed
    assert "division" in printed  # the template's own error, as the engine recorded it
    for other in emails[2:]:
        assert other not in printed
