"""End to end through a real Postfix as the relay: engine -> Postfix -> a next hop that
refuses some recipients after Postfix accepted them -> Postfix's DSNs -> inbound serve ->
bounced deliveries and suppressions, exactly for those recipients.

The test runs its own Postfix instance (its own config, queue and data directories in a
temporary folder, its own port), never the system's. Postfix's master must be started by
root (it drops to mail_owner for its daemons): the test skips, saying so, when Postfix is
not installed (`.ci/run` installs it) or when it does not run as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.engine_setup import add_contacts, engine_for, sample_campaign, settings_for
from tests.inbound_setup import inbound_serve, inbound_settings, processed
from tests.smtp_servers import Faults, free_port, smtp_server

POSTFIX = shutil.which("postfix") or (
    "/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None
)
pytestmark = [
    pytest.mark.skipif(
        POSTFIX is None,
        reason="Postfix is not installed (Debian: apt-get install postfix; .ci/run does)",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="a private Postfix instance needs its master started as root (it then runs "
        "its daemons as the postfix user); these tests do not run as root",
    ),
]
SENDER_DOMAIN = "garage-tremblay.example"  # the sample campaign's From domain: its return path


def _main_cf(folder: Path, smtpd_port: int, next_hop: int, inbound: int) -> str:
    return f"""
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.test.example
mydomain = test.example
myorigin = test.example
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# Everything to the next hop (the refusing sink), except the return-path domain, whose
# bounces+TOKEN@ mail goes to inbound serve: what an MX record would do.
relayhost = [127.0.0.1]:{next_hop}
transport_maps = inline:{{ {SENDER_DOMAIN}=smtp:[127.0.0.1]:{inbound} }}
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtputf8_enable = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
maillog_file = {folder}/maillog
maillog_file_prefixes = {folder}
syslog_name = postfix-mailer-test
"""


@contextlib.contextmanager
def postfix(next_hop: int, inbound: int) -> Iterator[tuple[int, Path]]:
    """A private Postfix instance listening on a free port; stopped and removed afterwards."""
    assert POSTFIX is not None
    # Not under pytest's tmp_path: that is 0700 root, and Postfix's daemons run as postfix.
    folder = Path(tempfile.mkdtemp(prefix="mailer-postfix-", dir="/tmp"))
    folder.chmod(0o755)
    port = free_port()
    try:
        for sub in ("etc", "queue", "data"):
            (folder / sub).mkdir()
        shutil.chown(folder / "data", "postfix", "postfix")
        (folder / "etc" / "main.cf").write_text(_main_cf(folder, port, next_hop, inbound))
        master = (
            Path("/etc/postfix/master.cf")
            .read_text()
            .replace("\nsmtp      inet", f"\n127.0.0.1:{port} inet", 1)
        )
        (folder / "etc" / "master.cf").write_text(master)
        started = subprocess.run(
            [POSTFIX, "-c", str(folder / "etc"), "start"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        log = folder / "maillog"
        assert started.returncode == 0, log.read_text() if log.exists() else started.stderr
        yield port, folder
    finally:
        subprocess.run(
            [POSTFIX, "-c", str(folder / "etc"), "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        _wait_gone(folder / "queue" / "pid" / "master.pid")
        shutil.rmtree(folder, ignore_errors=True)


def _wait_gone(pid_file: Path, within_s: float = 20.0) -> None:
    """Until the instance's master process has exited (`postfix stop` does not wait)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


async def _listening(port: int, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_postfix_dsns_for_recipients_refused_after_acceptance_bounce_exactly_them(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    emails = await add_contacts(conn, 12)
    refused = {emails[1], emails[4], emails[9]}
    faults = Faults(
        rcpt={e: f"550 5.1.1 <{e}>: Recipient address rejected: User unknown" for e in refused}
    )
    inbound = inbound_settings(settings)
    with (
        smtp_server(faults) as (next_hop, sink),
        postfix(next_hop, inbound.inbound.port) as (relay_port, folder),
    ):
        await _listening(relay_port)
        async with inbound_serve(inbound):
            campaign = await sample_campaign(stores)
            engine = engine_for(stores, settings_for(relay_port), only_campaigns={campaign})
            await engine.run(until_idle=True)
            # Postfix accepted every message (some may already be bounced by its DSN).
            replies = await conn.fetch("SELECT smtp_reply FROM deliveries")
            assert all(r["smtp_reply"].startswith("2.0.0 Ok: queued") for r in replies), replies
            try:
                await processed(conn, len(refused), within_s=60)
            except TimeoutError:
                pytest.fail((folder / "maillog").read_text())
    assert sorted(sink.recipients) == sorted(set(emails) - refused)
    rows = await conn.fetch(
        "SELECT c.email, d.status FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
    )
    assert {r["email"] for r in rows if r["status"] == "bounced"} == refused
    assert {r["email"] for r in rows if r["status"] == "sent"} == set(emails) - refused
    hashes = {
        bytes(r["email_hash"])
        for r in await conn.fetch(
            "SELECT email_hash FROM suppressions WHERE reason = 'hard_bounce'"
        )
    }
    assert hashes == {address_hash(e) for e in refused}
    messages = await conn.fetch("SELECT kind, attributed_by, mail_from FROM inbound_messages")
    assert [(m["kind"], m["attributed_by"], m["mail_from"]) for m in messages] == [
        ("dsn_hard", "token", "<>")  # RFC 5321 s.4.5.5: the null reverse-path
    ] * len(refused)
