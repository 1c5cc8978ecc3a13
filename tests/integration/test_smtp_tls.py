"""A relay over STARTTLS or implicit TLS, with AUTH: the connection aiosmtplib opened and
secured carries the pipelined transactions (mailer/send/connection.py takes its transport
over), under the standard event loop and under uvloop, which `mailer worker` runs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailer.core.outcome import Status
from mailer.core.settings import RelaySettings
from mailer.send.smtp import Relay
from tests.integration.test_inbound_serve_limits import self_signed
from tests.smtp_servers import RecordingHandler, free_port

MESSAGE = b"From: shop@example.org\r\nTo: a@example.com\r\nSubject: tls\r\n\r\nhello\r\n"
USER, PASSWORD = "dealer", "s3cret-relay-password"
Runner = Callable[[Coroutine[Any, Any, list[Status]]], list[Status]]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@contextmanager
def tls_server(cert: Path, key: Path, *, implicit: bool) -> Iterator[tuple[int, RecordingHandler]]:
    """aiosmtpd requiring AUTH over TLS, offering PIPELINING; STARTTLS or TLS from the start."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = RecordingHandler()
    port = free_port()
    tls: dict[str, Any] = (
        # aiosmtpd's auth_require_tls looks at STARTTLS only: with TLS from the start it
        # would never offer AUTH, though the connection is encrypted.
        {"ssl_context": context, "server_hostname": "127.0.0.1", "auth_require_tls": False}
        if implicit
        else {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
    )
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticate,
        auth_required=True,  # no MAIL before a successful AUTH
        **tls,
    )
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


async def _send_two(port: int, tls: str) -> list[Status]:
    settings = RelaySettings(port=port, tls=tls, username=USER, connections=1, timeout_s=5)
    relay = Relay(settings, PASSWORD)
    try:
        results = [
            await relay.send("bounces@example.org", f"p{n}@example.com", MESSAGE) for n in range(2)
        ]
        assert relay.opened == 1
    finally:
        await relay.close()
    return [r.status for r in results]


# Implicit TLS: aiosmtpd warns that AUTH is required without STARTTLS being required, though
# the whole connection is encrypted (its check knows STARTTLS only).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_a_relay_over_tls_with_auth_carries_pipelined_messages_on_one_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: str, loop: str
) -> None:
    cert, key = self_signed(tmp_path)
    # The relay's certificate is trusted as a CA's would be: the client verifies it.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    with tls_server(cert, key, implicit=tls == "tls") as (port, handler):
        statuses = RUNNERS[loop](_send_two(port, tls))
    assert statuses == [Status.SENT, Status.SENT]
    assert handler.recipients == ["p0@example.com", "p1@example.com"]
