"""Our DKIM signer (mailer.core.dkim) checked by an independent verifier: dkimpy."""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.dkim import DkimKey, DkimSigner, load_key, relaxed_body, relaxed_header
from tests.dkim_setup import dns_stub, ed25519_pem, rsa_pem, signatures, verify_each, write_key

DOMAIN = "garage-tremblay.example"
T = 1_727_787_605


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[DkimKey]:
    folder = tmp_path_factory.mktemp("keys")
    return [
        load_key(write_key(folder, "rsa.pem", rsa_pem()), "s2024", "rsa-sha256"),
        load_key(write_key(folder, "ed.pem", ed25519_pem()), "ed2024", "ed25519-sha256"),
    ]


@pytest.fixture(scope="module")
def signer(keys: list[DkimKey]) -> DkimSigner:
    return DkimSigner(keys, DOMAIN)


def signed(signer: DkimSigner, message: bytes) -> bytes:
    return signer.sign(message, T) + message


HEAD = (
    b"From: Garage Tremblay <service@garage-tremblay.example>\r\n"
    b"To: Marie Tremblay <marie@example.com>\r\n"
    b"Subject: Votre entretien\r\n"
    b"Date: Tue, 01 Oct 2024 13:00:05 +0000\r\n"
    b"Message-ID: <4242.0123456789abcdef@mail.garage-tremblay.example>\r\n"
    b"List-Unsubscribe: <https://t.example/u/abc>,\r\n"
    b" <mailto:u+abc@mail.example?subject=unsubscribe>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"Feedback-ID: service-2024:service:mail.garage-tremblay.example\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
)

MESSAGES = {
    "plain": HEAD + b"\r\nBonjour Marie,\r\nA bientot.\r\n",
    "folded headers, whitespace runs, odd case, no space after the colon": (
        b"FROM:   Garage  Tremblay\t<service@garage-tremblay.example>  \r\n"
        b"to:marie@example.com\r\n"
        b"Subject: =?utf-8?b?VsO0dHJlIGVudHJldGllbiBlc3QgcHLDqXZ1IGxlIDE3IG5vdmVtYnJl?=\r\n"
        b" =?utf-8?b?IDIwMjQ=?=\r\n"
        b"Date: Tue, 01 Oct 2024\r\n\t13:00:05 +0000\r\n"
        b"Message-ID:\r\n <1.a@example.com>\r\n"
        b"Received: from a by b\r\nReceived: from c by d\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative;\r\n boundary="=_abc"\r\n'
        b"\r\n--=_abc\r\nContent-Type: text/plain\r\n\r\nx\r\n--=_abc--\r\n"
    ),
    "non-ASCII: raw UTF-8 body and encoded display name": (
        b"From: =?utf-8?b?R2FyYWdlIEPDtHTDqQ==?= <service@garage-tremblay.example>\r\n"
        b"To: marie@example.com\r\nSubject: =?utf-8?b?w4l0w6k=?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + "Chloé, votre Kia Soul 2020 — 48 200 km ; à bientôt ✓\r\n".encode()
    ),
    "long base64 body (2 MB)": (HEAD + b"\r\n" + b"\r\n".join([b"QUJD" * 19] * 27_000) + b"\r\n"),
    "trailing blank and whitespace-only lines, trailing WSP, tabs": (
        HEAD + b"\r\nline one   \r\n\tindented\t\twith tabs \t\r\n  spaced   out  \r\n"
        b"\r\n   \r\n\t\r\n\r\n\r\n"
    ),
    "empty body": HEAD + b"\r\n",
    "no final CRLF": HEAD + b"\r\nlast line without a line break  ",
    "without the one-click and reply-to fields": (
        b"From: a@garage-tremblay.example\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    ),
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_both_signatures_verify_with_dkimpy_over_varied_messages(
    signer: DkimSigner, keys: list[DkimKey], name: str
) -> None:
    data = signed(signer, MESSAGES[name])
    assert verify_each(data, dns_stub(keys, DOMAIN)) == [True, True]
    rsa_tags, ed_tags = signatures(data)
    assert (rsa_tags["a"], rsa_tags["s"]) == ("rsa-sha256", "s2024")
    assert (ed_tags["a"], ed_tags["s"]) == ("ed25519-sha256", "ed2024")
    assert rsa_tags["c"] == "relaxed/relaxed"
    assert rsa_tags["d"] == DOMAIN
    assert rsa_tags["t"] == str(T)


def test_the_signature_covers_the_fields_that_matter_and_guards_against_added_ones(
    signer: DkimSigner,
) -> None:
    h = signatures(signed(signer, MESSAGES["plain"]))[0]["h"].split(":")
    present = [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
        "mime-version",
        "content-type",
    ]
    assert h[: len(present)] == present
    # RFC 6376 s.8.15: listed once more, so an added instance breaks the signature.
    assert {"from", "to", "cc", "subject", "reply-to", "list-unsubscribe-post"} <= set(
        h[len(present) :]
    )


@pytest.mark.parametrize(
    ("label", "old", "new"),
    [
        ("body", b"Bonjour Marie", b"Bonjour Mallory"),
        ("signed header", b"Subject: Votre entretien", b"Subject: Votre entretien!"),
        ("a second From on top", b"From: ", b"From: ceo@example.com\r\nFrom: "),
        ("an added Cc", b"MIME-Version", b"Cc: someone@example.com\r\nMIME-Version"),
        ("one-click removed", b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", b""),
    ],
)
def test_tampering_breaks_both_signatures(
    signer: DkimSigner, keys: list[DkimKey], label: str, old: bytes, new: bytes
) -> None:
    data = signed(signer, MESSAGES["plain"])
    body_at = data.index(b"\r\n\r\n")
    if label == "body":
        tampered = data[:body_at] + data[body_at:].replace(old, new)
    else:
        head = data[:body_at]
        last = head.rindex(b"DKIM-Signature")  # edit below the signatures
        end_of_signatures = head.index(b"\r\n", head.index(b"b=", last)) + 2
        while head[end_of_signatures : end_of_signatures + 1] == b" ":
            end_of_signatures = head.index(b"\r\n", end_of_signatures) + 2
        tampered = (
            data[:end_of_signatures] + data[end_of_signatures:body_at].replace(old, new, 1)
        ) + data[body_at:]
    assert tampered != data
    assert verify_each(tampered, dns_stub(keys, DOMAIN)) == [False, False]


def test_unchanged_whitespace_rewrapping_by_a_relay_still_verifies(
    signer: DkimSigner, keys: list[DkimKey]
) -> None:
    # relaxed/relaxed exists for this: a relay refolding a header or padding a line.
    data = signed(signer, MESSAGES["plain"])
    moved = data.replace(b"Subject: Votre entretien", b"Subject:  Votre\r\n\tentretien  ")
    moved = moved.replace(b"Bonjour Marie,\r\n", b"Bonjour   Marie,  \r\n")
    assert verify_each(moved, dns_stub(keys, DOMAIN)) == [True, True]


_TEXT = st.lists(st.sampled_from([b"a", b"Z", b" ", b"\t", b"\r\n", "é".encode(), b"=", b";"]))


@settings(max_examples=300, deadline=None)
@given(st.one_of(_TEXT.map(b"".join), st.binary(max_size=200)))
def test_relaxed_body_is_dkimpys_relaxed_body(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"Subject", b"SUBJECT", b"to", b"Content-Type"]),
    _TEXT.map(b"".join).filter(lambda v: not v.startswith(b"\r\n")),
)
def test_relaxed_header_is_dkimpys_relaxed_header(name: bytes, value: bytes) -> None:
    # A value never holds a CRLF not followed by WSP (that ends the field): fold them.
    value = value.replace(b"\r\n", b"\r\n ")
    ((dk_name, dk_value),) = Relaxed.canonicalize_headers([(name, value)])
    assert relaxed_header(name, value) == dk_name + b":" + dk_value


@settings(max_examples=40, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=80).filter(lambda s: "\r" not in s and "\n" not in s),
    fold_at=st.integers(min_value=1, max_value=20),
    lines=st.lists(_TEXT.map(b"".join), max_size=30),
    trailing=st.integers(min_value=0, max_value=4),
)
def test_any_message_of_crlf_lines_verifies(
    signer: DkimSigner,
    keys: list[DkimKey],
    subject: str,
    fold_at: int,
    lines: list[bytes],
    trailing: int,
) -> None:
    encoded = base64.b64encode(subject.encode()).decode("ascii")
    word = f"=?utf-8?b?{encoded}?="
    folded = (word[:fold_at] + "\r\n " + word[fold_at:]).encode("ascii")
    body = b"\r\n".join(line.replace(b"\r\n", b"") for line in lines) + b"\r\n" * trailing
    message = HEAD.replace(b"Subject: Votre entretien", b"Subject: " + folded) + b"\r\n" + body
    assert verify_each(signed(signer, message), dns_stub(keys, DOMAIN)) == [True, True]


def test_signing_is_the_same_as_dkimpy_up_to_the_signature_itself(
    keys: list[DkimKey], tmp_path: Path
) -> None:
    # Same canonical body hash as dkimpy's own signer for the same message.
    message = MESSAGES["trailing blank and whitespace-only lines, trailing WSP, tabs"]
    ours = signatures(signed(DkimSigner(keys[:1], DOMAIN), message))[0]
    pem = rsa_pem()
    theirs_header = dkim.sign(
        message, b"s2024", DOMAIN.encode(), pem, canonicalize=(b"relaxed", b"relaxed")
    )
    theirs = signatures(theirs_header + message)[0]
    assert ours["bh"] == theirs["bh"]
