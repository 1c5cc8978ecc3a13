"""Amazon SES notifications through SNS: verified signatures only, mapped onto the same
effects as a DSN or an ARF report. The signing certificate is served by a local HTTPS stub
under a locally made CA (inbound.sns_cert_host and sns_ca_file point at it): no internet."""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailer.core.addresses import address_hash
from mailer.core.settings import Settings
from mailer.demo.stores import Stores
from mailer.inbound.sns import string_to_sign
from tests.inbound_setup import inbound_serve, inbound_settings, processed
from tests.inbound_setup import sent_deliveries as sent
from tests.smtp_servers import free_port

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-notifications"


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
    *,
    ca: bool = False,
    dns: str | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = (
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]) if issuer else name
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass
class Sns:
    """A stand-in for SNS: its signing key, and the URL its certificate is served at."""

    key: rsa.RSAPrivateKey
    cert_url: str
    ca_file: Path
    fetched: list[str]
    confirmed: list[str]  # the query strings of the SubscribeURLs called

    @property
    def subscribe_url(self) -> str:
        """Where SNS's own confirmation link would point (here: the stub)."""
        base = self.cert_url.rpartition("/")[0]
        return f"{base}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb687f"

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        # SNS SignatureVersion 1 is RSA-SHA1 by AWS's definition, still sent by default.
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303
        signed = {**message, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        signature = self.key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        return {**signed, "Signature": base64.b64encode(signature).decode()}


@pytest.fixture
async def sns(tmp_path: Path) -> AsyncIterator[Sns]:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _certificate("test CA", ca_key, ca=True)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = _certificate("localhost", server_key, ("test CA", ca_key), dns="localhost")
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing = _certificate("sns.amazonaws.com", signing_key, ("test CA", ca_key))
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "server.pem").write_bytes(_pem(server))
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    fetched: list[str] = []

    async def certificate(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=_pem(signing), content_type="application/x-pem-file")

    confirmed: list[str] = []

    async def confirm(request: web.Request) -> web.Response:
        confirmed.append(request.query_string)
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")

    app = web.Application()
    app.router.add_get("/SimpleNotificationService-test.pem", certificate)
    app.router.add_get("/", confirm)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield Sns(
            signing_key,
            f"https://localhost:{port}/SimpleNotificationService-test.pem",
            tmp_path / "ca.pem",
            fetched,
            confirmed,
        )
    finally:
        await runner.cleanup()


def notification(ses: dict[str, Any], message_id: str = "m-1") -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": json.dumps(ses),
        "Timestamp": "2024-10-08T18:50:31.000Z",
    }


def ses_bounce(source: str, recipient: str, *, permanent: bool = True) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General" if permanent else "MailboxFull",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "action": "failed",
                    "status": "5.1.1" if permanent else "4.2.2",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown"
                    if permanent
                    else "smtp; 452 4.2.2 mailbox full",
                }
            ],
            "timestamp": "2024-10-08T18:50:31.000Z",
            "feedbackId": "0100019270a1b2c3-feedback",
            "reportingMTA": "dsn; a27-30.smtp-out.us-west-2.amazonses.com",
        },
        "mail": {
            "timestamp": "2024-10-08T18:50:30.000Z",
            "source": source,
            "messageId": "0100019270a1b2c3-d4e5f607-000000",
            "destination": [recipient],
        },
    }


def ses_complaint(message_id: str, recipient: str) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": "2024-10-09T15:02:44.000Z",
            "feedbackId": "0100019270a1b2c3-complaint",
            "complaintFeedbackType": "abuse",
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
        },
        "mail": {
            "source": "service@garage-tremblay.example",
            "messageId": "0100019270a1b2c3-d4e5f607-000001",
            "headers": [{"name": "Message-ID", "value": message_id}],
            "commonHeaders": {"messageId": message_id},
        },
    }


async def test_verified_ses_notifications_bounce_and_complain_like_dsns_and_arf_reports(
    stores: Stores, conn: asyncpg.Connection, settings: Settings, sns: Sns
) -> None:
    bounced, complained, soft = await sent(stores, conn, 3)
    port = free_port()
    configured = inbound_settings(
        settings,
        webhook_port=port,
        sns_cert_host="localhost",
        sns_ca_file=str(sns.ca_file),
        ses_topic_arns=(TOPIC,),
    )
    url = f"http://127.0.0.1:{port}/webhooks/ses"
    async with inbound_serve(configured) as service, aiohttp.ClientSession() as http:
        for body in (
            sns.sign(notification(ses_bounce(bounced.verp, bounced.email), "m-1")),
            sns.sign(
                notification(ses_complaint(complained.message_id, complained.email), "m-2"),
                version="1",
            ),
            sns.sign(notification(ses_bounce(soft.verp, soft.email, permanent=False), "m-3")),
        ):
            async with http.post(url, data=json.dumps(body)) as response:
                assert response.status == 200, await response.text()
        await processed(conn, 3)
        assert service.metrics.webhooks.labels("ses", "stored")._value.get() == 3
    assert len(sns.fetched) == 1  # the certificate is fetched once and kept
    kinds = await conn.fetch(
        "SELECT kind, delivery_id, attributed_by FROM inbound_messages ORDER BY id"
    )
    assert [tuple(r) for r in kinds] == [
        ("dsn_hard", bounced.delivery_id, "token"),
        ("complaint", complained.delivery_id, "message_id"),
        ("dsn_soft", soft.delivery_id, "token"),
    ]
    reasons = await conn.fetch(
        "SELECT email_hash, reason, source FROM suppressions "
        "WHERE reason <> 'unsubscribe' ORDER BY reason"
    )
    assert [tuple(r) for r in reasons] == [
        (address_hash(complained.email), "complaint", "ses"),
        (address_hash(bounced.email), "hard_bounce", "ses"),
    ]
    assert (
        await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", bounced.delivery_id)
        == "bounced"
    )


async def test_unsigned_forged_or_foreign_certificate_notifications_are_refused(
    stores: Stores, conn: asyncpg.Connection, settings: Settings, sns: Sns
) -> None:
    (first,) = await sent(stores, conn, 1)
    port = free_port()
    configured = inbound_settings(
        settings, webhook_port=port, sns_cert_host="localhost", sns_ca_file=str(sns.ca_file)
    )
    url = f"http://127.0.0.1:{port}/webhooks/ses"
    genuine = sns.sign(notification(ses_bounce(first.verp, first.email)))
    unsigned = {k: v for k, v in genuine.items() if k != "Signature"}
    tampered = {**genuine, "Message": genuine["Message"].replace("Permanent", "Transient")}
    elsewhere = {**genuine, "SigningCertURL": "https://sns.evil.example/cert.pem"}
    plain_http = {**genuine, "SigningCertURL": sns.cert_url.replace("https:", "http:")}
    async with inbound_serve(configured) as service, aiohttp.ClientSession() as http:
        for body in (unsigned, tampered, elsewhere, plain_http, {"Type": "Nonsense"}):
            async with http.post(url, data=json.dumps(body)) as response:
                assert response.status == 403, body
        async with http.post(url, data=b"not json") as response:
            assert response.status == 403
        assert service.metrics.webhooks.labels("ses", "refused")._value.get() == 6
    assert sns.fetched == ["/SimpleNotificationService-test.pem"]  # only for `tampered`
    assert await conn.fetchval("SELECT count(*) FROM inbound_messages") == 0
    assert await conn.fetchval("SELECT count(*) FROM suppressions") == 0


def subscription(sns: Sns, subscribe_url: str | None = None) -> dict[str, Any]:
    """An SNS SubscriptionConfirmation, as SNS posts it when the topic is subscribed."""
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}. To confirm the "
        "subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url or sns.subscribe_url,
        "Timestamp": "2024-10-08T18:40:00.000Z",
    }


async def test_a_signed_subscription_confirmation_is_confirmed_through_the_real_route(
    stores: Stores, conn: asyncpg.Connection, settings: Settings, sns: Sns
) -> None:
    port = free_port()
    configured = inbound_settings(
        settings,
        webhook_port=port,
        sns_cert_host="localhost",
        sns_ca_file=str(sns.ca_file),
        ses_topic_arns=(TOPIC,),
    )
    url = f"http://127.0.0.1:{port}/webhooks/ses"
    genuine = sns.sign(subscription(sns), version="1")
    # Signed by SNS's key but pointing the confirmation elsewhere, or not signed at all, or
    # signed for a topic this installation does not take: none is confirmed.
    elsewhere = sns.sign(subscription(sns, "https://confirm.evil.example/?Token=x"))
    unsigned = {k: v for k, v in genuine.items() if k != "Signature"}
    foreign = sns.sign({**subscription(sns), "TopicArn": TOPIC + "-other"})
    tampered = {**genuine, "SubscribeURL": genuine["SubscribeURL"] + "&extra=1"}
    async with inbound_serve(configured) as service, aiohttp.ClientSession() as http:
        for body in (elsewhere, unsigned, foreign, tampered):
            async with http.post(url, data=json.dumps(body)) as response:
                assert response.status == 403, (body, await response.text())
        assert sns.confirmed == []
        async with http.post(url, data=json.dumps(genuine)) as response:
            assert response.status == 200
            assert await response.text() == "confirmed\n"
        assert service.metrics.webhooks.labels("ses", "refused")._value.get() == 4
    # SNS's SubscribeURL was called once, with its token; nothing was stored as mail.
    assert sns.confirmed == [f"Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb687f"]
    assert await conn.fetchval("SELECT count(*) FROM inbound_messages") == 0
