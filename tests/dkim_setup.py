"""DKIM test keys, and dkimpy verifying against a DNS stub that publishes them."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.core.dkim import DkimKey, dns_record

DnsFunc = Callable[..., bytes | None]


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.cache
def rsa_pem(bits: int = 2048, which: int = 0) -> bytes:
    """A throwaway RSA key (PKCS#8 PEM), the same for a test session."""
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


@functools.cache
def ed25519_pem(which: int = 0) -> bytes:
    """A throwaway Ed25519 key (PKCS#8 PEM), the same for a test session."""
    return _pem(ed25519.Ed25519PrivateKey.generate())


def write_key(folder: Path, name: str, pem: bytes) -> str:
    path = folder / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return str(path)


def dns_stub(keys: Sequence[DkimKey], domain: str) -> DnsFunc:
    """dkimpy's dnsfunc: the TXT record of each key at <selector>._domainkey.<domain>."""
    records = {
        f"{key.selector}._domainkey.{domain}.".encode("ascii"): dns_record(key).encode("ascii")
        for key in keys
    }

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def signatures(data: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature field, top to bottom, whitespace removed."""
    d = dkim.DKIM(data)
    found = []
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            unfolded = re.sub(rb"\s+", b"", value).decode("ascii")
            tags = (tag.partition("=") for tag in unfolded.strip(";").split(";"))
            found.append({key: value for key, _, value in tags})
    return found


def verify_each(data: bytes, dnsfunc: DnsFunc) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of the message, top to bottom."""
    return [_verify(data, i, dnsfunc) for i in range(len(signatures(data)))]


def _verify(data: bytes, idx: int, dnsfunc: DnsFunc) -> bool:
    # As dkim.verify() does for the first signature: a broken one raises.
    try:
        return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False
