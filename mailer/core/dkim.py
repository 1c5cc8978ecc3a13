"""DKIM signing (RFC 6376, relaxed/relaxed) with OpenSSL through `cryptography`.

dkimpy signs with pure-Python RSA: ~6 ms a message on one core, a twelfth of the
compose rate (bench/README.md, "DKIM"). Canonicalisation and hashing are a few
regular expressions and one SHA-256 over bytes we wrote ourselves; the cost is the
private-key operation, which OpenSSL does 7-9 times faster (same file). The output is
checked against dkimpy's verifier in tests/test_dkim_signer.py.

Two algorithms, each its own selector: rsa-sha256 (what receivers verify) and,
optionally beside it, ed25519-sha256 (RFC 8463: an Ed25519 signature over the
SHA-256 of the header hash input; not verified by every receiver yet, hence never
alone). Keys are read and validated once, at settings load (`load_key`); a
campaign's `DkimSigner` turns them into key objects once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

__all__ = [
    "GUARDED_HEADERS",
    "SIGNED_HEADERS",
    "Algorithm",
    "DkimKey",
    "DkimKeyError",
    "DkimSigner",
    "dns_record",
    "load_key",
    "relaxed_body",
    "relaxed_header",
    "valid_selector",
]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# Signed when the message has them. RFC 8058 s.4: List-Unsubscribe and
# List-Unsubscribe-Post must be covered for one-click to be honoured.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
    b"mime-version",
    b"content-type",
)
# Listed once more in h= whether present or not (RFC 6376 s.5.4.2, s.8.15): an
# instance added on the way (a second From, a Cc, a one-click header on a message
# that had none) then breaks the signature. The fields a reader sees or a mailbox
# provider acts on, as rspamd oversigns by default.
GUARDED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)

# RFC 6376 s.3.1: a selector is a sub-domain (dot-separated labels).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_WANTED = frozenset(SIGNED_HEADERS + GUARDED_HEADERS)
_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
# A header field ends at a CRLF not followed by WSP (RFC 5322 s.2.2.3 folding).
_FIELD_END = re.compile(rb"\r\n(?![ \t])")
_LINE = 76  # b= is cut into lines this long (RFC 5322 s.2.1.1 recommends 78)
_RSA_BITS = (1024, 4096)  # RFC 8301 s.3.2: verifiers take 1024-4096; signers SHOULD use 2048


class DkimKeyError(ValueError):
    """A DKIM key file cannot be used; the caller adds the setting's name."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A validated DKIM private key and its selector; plain bytes, so it crosses processes."""

    selector: str
    algorithm: Algorithm
    # PKCS#8 DER as written by `cryptography` after validation.
    private_key: bytes


def valid_selector(selector: str) -> bool:
    """RFC 6376 s.3.1: a selector is a sub-domain (dot-separated labels)."""
    return _NAME.fullmatch(selector) is not None


def load_key(path: str, selector: str, algorithm: Algorithm) -> DkimKey:
    """Read and validate a PEM private key (Ed25519 also: dkimpy's base64 seed)."""
    if not valid_selector(selector):
        raise DkimKeyError(f"selector {selector!r} is not a DNS name (letters, digits, -, .)")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read {path}: {exc.strerror}") from None
    key = _parse(data, path, algorithm)
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"{path} holds {_kind(key)}, not an RSA private key")
        low, high = _RSA_BITS
        if not low <= key.key_size <= high:
            raise DkimKeyError(
                f"{path}: a {key.key_size}-bit RSA key; receivers verify {low} to {high} bits "
                "(RFC 8301), use 2048"
            )
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimKeyError(f"{path} holds {_kind(key)}, not an Ed25519 private key")
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DkimKey(selector, algorithm, der)


def _parse(data: bytes, path: str, algorithm: Algorithm) -> object:
    if b"-----BEGIN" not in data:
        text = data.strip()
        if algorithm == "ed25519-sha256":
            # dkimpy's dknewkey (and rspamd) write the 32-byte seed in base64.
            try:
                seed = base64.b64decode(text, validate=True)
            except binascii.Error:
                seed = b""
            if len(seed) == 32:
                return ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        raise DkimKeyError(f"{path} is not a PEM private key")
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise DkimKeyError(f"{path} holds a public key; this setting takes the private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DkimKeyError(
            f"{path} is encrypted; store it unencrypted, readable by the mailer only"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise DkimKeyError(f"{path} is not a PEM private key") from None


def _kind(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "an RSA key"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "an EC key (DKIM has no ECDSA)"
    return "another kind of key"


def dns_record(key: DkimKey) -> str:
    """The TXT record to publish at <selector>._domainkey.<domain>."""
    private = serialization.load_der_private_key(key.private_key, password=None)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode("ascii")
    assert isinstance(private, rsa.RSAPrivateKey)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


# --- canonicalisation (RFC 6376 s.3.4) ------------------------------------------------------


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """s.3.4.2: name lowercased; value unfolded, WSP runs to one SP, trimmed; CRLF-ended."""
    if b"\r\n" in value or b"\t" in value or b"  " in value:  # most values: only strip
        value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b""))
    return name.rstrip(b" \t").lower() + b":" + value.strip(b" \t") + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """s.3.4.4: WSP at line ends dropped, other runs to one SP, empty lines at the end dropped."""
    # Base64 lines and most text hold no run of WSP: skip the regexes (C-speed scans).
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        body = _WSP_RUN.sub(b" ", _TRAILING_WSP.sub(b"\r\n", body))
    end = len(body)
    while end >= 2 and body.startswith(b"\r\n", end - 2, end):
        end -= 2
    # A non-empty body ends with exactly one CRLF; an empty one stays empty (erratum 3871).
    return body[:end] + b"\r\n" if end else b""


# --- signing --------------------------------------------------------------------------------


class DkimSigner:
    """Signs one campaign's messages as `domain`, with each key (RSA first, on top)."""

    def __init__(self, keys: Sequence[DkimKey], domain: str) -> None:
        if not keys:
            raise ValueError("DkimSigner: no key")
        if not _NAME.fullmatch(domain):
            raise ValueError(f"DkimSigner: {domain!r} is not a domain")
        self.domain = domain.lower()
        self.keys = tuple(keys)
        # Validated when the settings were loaded (~100 ms for RSA-2048 in OpenSSL's
        # check); these bytes are cryptography's own output for that key.
        self._signers = [
            (
                f"DKIM-Signature: v=1; a={key.algorithm}; c=relaxed/relaxed; "
                f"d={self.domain}; s={key.selector};\r\n t=".encode("ascii"),
                serialization.load_der_private_key(
                    key.private_key, password=None, unsafe_skip_rsa_key_validation=True
                ),
            )
            for key in sorted(keys, key=lambda k: k.algorithm != "rsa-sha256")
        ]
        # h= and its (name, nth) list, by the signed fields present (one or two shapes).
        self._h_cache: dict[tuple[bytes, ...], tuple[bytes, list[tuple[bytes, int]]]] = {}

    def sign(self, message: bytes, timestamp: int) -> bytes:
        """DKIM-Signature field(s), CRLF-terminated, to put in front of `message` (CRLF lines)."""
        head, separator, body = message.partition(b"\r\n\r\n")
        if not separator:
            head, body = message.removesuffix(b"\r\n"), b""
        fields: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for field in _FIELD_END.split(head):
            name, _, value = field.partition(b":")
            lowered = name.rstrip(b" \t").lower()
            if lowered in _WANTED:
                fields.setdefault(lowered, []).append((name, value))
        present = tuple(name for name in SIGNED_HEADERS if name in fields)
        listed = self._h_cache.get(present)
        if listed is None:
            names = present + GUARDED_HEADERS
            listed = self._h_cache[present] = (_fold_list(names), _occurrences(names))
        h_tag, occurrences = listed
        # RFC 6376 s.5.4.2: each listed name takes the next instance from the bottom; a
        # name listed more often than present adds nothing.
        signed = b"".join(
            relaxed_header(*fields[name][-count])
            for name, count in occurrences
            if count <= len(fields.get(name, ()))
        )
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        tags = b"%d;\r\n h=%s;\r\n bh=%s;\r\n b=" % (timestamp, h_tag, body_hash)
        out: list[bytes] = []
        for prefix, key in self._signers:
            field = prefix + tags
            name, _, value = field.partition(b":")
            # s.3.7: the signature field itself is hashed last, b= empty, without its CRLF.
            data = signed + relaxed_header(name, value)[:-2]
            if isinstance(key, rsa.RSAPrivateKey):
                signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            else:
                assert isinstance(key, ed25519.Ed25519PrivateKey)
                # RFC 8463 s.3: Ed25519 signs the SHA-256 of the hash input.
                signature = key.sign(hashlib.sha256(data).digest())
            b64 = base64.b64encode(signature)
            lines = b"\r\n ".join(b64[i : i + _LINE] for i in range(0, len(b64), _LINE))
            out.append(field + lines + b"\r\n")
        return b"".join(out)


def _occurrences(names: Sequence[bytes]) -> list[tuple[bytes, int]]:
    """(name, how many times it was listed so far) for each name of h=, in order."""
    seen: dict[bytes, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append((name, seen[name]))
    return result


def _fold_list(names: Sequence[bytes]) -> bytes:
    """h= value, folded after a colon so no line passes ~76 characters."""
    lines: list[bytes] = []
    line = b""
    for name in names:
        piece = name if not line else b":" + name
        if line and len(line) + len(piece) > 70:
            lines.append(line + b":")
            line = name
        else:
            line += piece
    lines.append(line)
    return b"\r\n ".join(lines)
