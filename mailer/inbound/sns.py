"""Amazon SNS message signatures: a webhook body is stored only once it verifies.

AWS's documented procedure: the signing certificate must come from an https URL on an SNS
host (never one the message names freely: that would let anyone sign), the string to sign
is the message's fields in a fixed order, and SignatureVersion 1 signs it with
RSA-SHA1, version 2 with RSA-SHA256. Unsigned, badly signed, unknown-topic or expired-
certificate messages are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# The fields signed, in order, per message type (absent optional ones are skipped).
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

CertificateFetcher = Callable[[str], Awaitable[bytes]]


class SnsError(ValueError):
    """The message is refused; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def parse(body: bytes) -> dict[str, Any]:
    """The SNS message as a dict, or SnsError."""
    try:
        message = json.loads(body)
    except ValueError:
        raise SnsError("malformed", "not JSON") from None
    if not isinstance(message, dict) or message.get("Type") not in _SIGNED:
        raise SnsError("malformed", "not an SNS message")
    return message


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical text SNS signs (AWS: "Verifying the signatures of Amazon SNS messages")."""
    lines: list[str] = []
    for name in _SIGNED[str(message["Type"])]:
        if name in message and message[name] is not None:
            lines += [name, str(message[name])]
    return ("\n".join(lines) + "\n").encode("utf-8")


def allowed_url(url: str, host_pattern: str) -> bool:
    """An https URL on a host matching the pattern (the certificate's, or SubscribeURL's)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme == "https" and re.fullmatch(host_pattern, host) is not None


class Verifier:
    """Verifies SNS messages, certificates fetched from allowed hosts and kept by URL."""

    def __init__(
        self,
        fetch: CertificateFetcher,
        *,
        host_pattern: str,
        topics: Collection[str] = (),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._fetch = fetch
        self._host = host_pattern
        self._topics = frozenset(topics)
        self._now = now
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    async def verify(self, body: bytes) -> dict[str, Any]:
        """The message if its signature verifies, else SnsError saying why."""
        message = parse(body)
        version = str(message.get("SignatureVersion") or "")
        signature_text = message.get("Signature")
        url = str(message.get("SigningCertURL") or message.get("SigningCertUrl") or "")
        if not signature_text or version not in _HASHES:
            raise SnsError("unsigned", "no signature, or an unknown SignatureVersion")
        if self._topics and message.get("TopicArn") not in self._topics:
            raise SnsError("unknown_topic", f"topic {message.get('TopicArn')!r} not accepted")
        if not allowed_url(url, self._host) or not urlsplit(url).path.endswith(".pem"):
            raise SnsError("bad_certificate_url", f"{url!r} is not an SNS certificate URL")
        try:
            signature = base64.b64decode(str(signature_text), validate=True)
        except (binascii.Error, ValueError):
            raise SnsError("bad_signature", "signature is not base64") from None
        key = await self._key(url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), _HASHES[version]())
        except InvalidSignature:
            raise SnsError("bad_signature", "signature does not verify") from None
        return message

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is not None:
            return key
        try:
            certificate = x509.load_pem_x509_certificate(await self._fetch(url))
        except (OSError, ValueError) as exc:
            raise SnsError("bad_certificate", f"cannot load {url}: {exc}") from None
        now = self._now()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsError("bad_certificate", f"{url}: certificate not valid now")
        public = certificate.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise SnsError("bad_certificate", f"{url}: not an RSA key")
        self._keys[url] = public
        return public


def client_ssl(ca_file: str) -> ssl.SSLContext:
    """TLS for fetching certificates: the system's CAs, or `ca_file` (tests' local CA)."""
    return ssl.create_default_context(cafile=ca_file or None)
