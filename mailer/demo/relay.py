"""The demo's stand-in for the relay and the next hop behind it: a few recipients are refused
after the message was accepted, and the "relay" reports it as a real one does, with an
RFC 3464 delivery status notification to the message's return path (bounces+TOKEN@…),
delivered over SMTP to `inbound serve`. A reader also mails the List-Unsubscribe mailto.

Nothing here is used outside the demo: in production the relay (Postfix, SES…) writes the
DSNs and a person writes to the mailto.
"""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, make_msgid

import aiosmtplib

# (share of recipients, Status, Diagnostic-Code): the next hop's verdicts after the relay
# had accepted the message.
REFUSALS = (
    (0.02, "5.1.1", "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
    (0.01, "4.2.2", "smtp; 452 4.2.2 <{rcpt}>: Mailbox full, try again later"),
)
RELAY = "relay.demo.example"


def verdict(rcpt: str) -> tuple[str, str] | None:
    """The next hop's (status, diagnostic) for this address, or None (delivered). Stable."""
    share = (zlib.crc32(rcpt.encode()) % 10_000) / 10_000
    low = 0.0
    for part, status, diagnostic in REFUSALS:
        if low <= share < low + part:
            return status, diagnostic.format(rcpt=rcpt)
        low += part
    return None


def dsn(mail_from: str, rcpt: str, original: bytes, status: str, diagnostic: str) -> bytes:
    """A Postfix-shaped DSN (RFC 3464) of `original` for `rcpt`, to its return path."""
    failed = status.startswith("5")
    boundary = f"{uuid.uuid4().hex}/{RELAY}"
    domain = rcpt.rpartition("@")[2]
    headers = BytesHeaderParser(policy=compat32).parsebytes(original)
    returned = "".join(f"{k}: {v}\n" for k, v in headers.items() if k.lower() != "dkim-signature")
    subject = (
        "Undelivered Mail Returned to Sender" if failed else "Delayed Mail (still being retried)"
    )
    text = f"""From: MAILER-DAEMON@{RELAY} (Mail Delivery System)
To: {mail_from}
Subject: {subject}
Date: {format_datetime(datetime.now(UTC))}
Message-ID: {make_msgid(domain=RELAY)}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {RELAY}.

<{rcpt}>: host mx.{domain} said: {diagnostic.partition("; ")[2]}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; {RELAY}

Final-Recipient: rfc822; {rcpt}
Action: {"failed" if failed else "delayed"}
Status: {status}
Remote-MTA: dns; mx.{domain}
Diagnostic-Code: {diagnostic}

--{boundary}
Content-Type: text/rfc822-headers

{returned}
--{boundary}--
"""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


async def send(port: int, messages: list[tuple[str, bytes]], *, mail_from: str = "") -> int:
    """Deliver (rcpt, data) pairs to the inbound server as the relay would; how many went."""
    sent = 0
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30) as client:
        for rcpt, data in messages:
            await client.sendmail(mail_from, [rcpt], data)
            sent += 1
    return sent
