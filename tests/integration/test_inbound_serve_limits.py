"""`inbound serve` at its edges: STARTTLS when a certificate is configured (and only then),
and the connection limit (the one connection too many is told 421 and hung up on)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from tests.inbound_setup import deliver, inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "inbound.pem", folder / "inbound.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_starttls_is_offered_with_a_certificate_and_a_bounce_is_stored_over_it(
    stores: Stores, conn: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    (first,) = await sent(stores, conn, 1)
    cert_file, key_file = self_signed(tmp_path)
    trusted = ssl.create_default_context(cafile=str(cert_file))
    configured = inbound_settings(
        settings, tls_cert_file=str(cert_file), tls_key_file=str(key_file)
    )
    async with inbound_serve(configured) as service:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=service.port, start_tls=False, tls_context=trusted
        )
        await client.connect()
        try:
            await client.ehlo()
            assert client.supports_extension("starttls")
            await client.starttls()
            assert client.get_transport_info("ssl_object") is not None  # encrypted from here
            await client.ehlo()
            assert not client.supports_extension("starttls")  # RFC 3207 s.4.2: once
            errors, reply = await client.sendmail("", [first.verp], first.fill("postfix_hard"))
            assert not errors
            assert reply.startswith("2.0.0 Stored as")
        finally:
            await client.quit()
        await processed(conn, 1)
    assert await conn.fetchval("SELECT kind FROM inbound_messages") == "dsn_hard"


async def test_without_a_certificate_starttls_is_not_offered_and_plain_mail_is_taken(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    async with inbound_serve(inbound_settings(settings)) as service:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=service.port, start_tls=False
        ) as client:
            await client.ehlo()
            assert not client.supports_extension("starttls")
            errors, _ = await client.sendmail("", [first.verp], first.fill("postfix_hard"))
            assert not errors
        await processed(conn, 1)


async def _greeting(port: int) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = await asyncio.wait_for(reader.readline(), 10)
    return line, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_the_connection_past_the_limit_is_told_421_and_a_freed_slot_is_taken_again(
    stores: Stores, conn: asyncpg.Connection, settings: Settings
) -> None:
    (first,) = await sent(stores, conn, 1)
    async with inbound_serve(inbound_settings(settings, max_connections=2)) as service:
        held = []
        try:
            for _ in range(2):
                line, writer = await _greeting(service.port)
                held.append(writer)
                assert line.startswith(b"220 "), line
            assert service.metrics.connections._value.get() == 2
            # RFC 5321 s.3.8: a server that cannot take the session answers 421 and closes.
            line, extra = await _greeting(service.port)
            await _close(extra)
            assert line.startswith(b"421 4.7.0 Too many connections"), line
            # A relay's client is refused the same way, and will retry later.
            with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
                await deliver(service.port, first.verp, first.fill("postfix_hard"))
            assert refused.value.code == 421
            assert service.metrics.rejected.labels("too_many_connections")._value.get() == 2
            # One of the two leaves: its slot is free again and the bounce goes through.
            await _close(held.pop())
            for _ in range(600):  # 30 s at most, for a loaded machine
                if service.metrics.connections._value.get() < 2:
                    break
                await asyncio.sleep(0.05)
            await deliver(service.port, first.verp, first.fill("postfix_hard"))
            await processed(conn, 1)
        finally:
            for writer in held:
                await _close(writer)
