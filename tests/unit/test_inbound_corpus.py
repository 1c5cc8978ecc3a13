"""The corpus of DSNs, ARF reports, auto-replies and unsubscribes (tests/fixtures/inbound/),
each in the shape its MTA or provider sends, classified and attributed as expected."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mailer.core.tokens import Keyring, Purpose, Token
from mailer.inbound.classify import Classification, Classifier, Envelope, Kind

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "inbound"
KEYRING = Keyring([(1, b"k" * 32)])
OTHER_KEYRING = Keyring([(1, b"x" * 32)])
DELIVERY = 4242
NOW = 1_728_500_000
DOMAIN = "garage-tremblay.example"
MSGID = f"<{DELIVERY}.0123456789abcdef@{DOMAIN}>"
CASES: dict[str, dict[str, Any]] = tomllib.loads((CORPUS / "corpus.toml").read_text("utf-8"))


def fill(text: str, keyring: Keyring = KEYRING) -> str:
    """The template with this test's tokens, Message-ID and domain."""
    return (
        text.replace("{BOUNCE}", keyring.sign(Token(Purpose.BOUNCE, DELIVERY, None, NOW)))
        .replace("{UNSUB}", keyring.sign(Token(Purpose.UNSUBSCRIBE, DELIVERY, None, NOW)))
        .replace("{MSGID}", MSGID)
        .replace("{DOMAIN}", DOMAIN)
    )


def classifier() -> Classifier:
    return Classifier(KEYRING, bounce_local_part="bounces", unsubscribe_mailbox="unsubscribe")


def classify(name: str, keyring: Keyring = KEYRING) -> Classification:
    case = CASES[name]
    raw = fill((CORPUS / f"{name}.eml").read_bytes().decode("latin-1"), keyring)
    data = raw.encode("latin-1").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    envelope = Envelope(case["mail_from"], [fill(case["rcpt"], keyring)])
    return classifier().classify(data, envelope, NOW)


def first_reference(found: Classification) -> str | None:
    refs = found.refs
    if refs.token_delivery_id is not None:
        return "token"
    if refs.message_id_delivery_id is not None:
        return "message_id"
    if refs.recipient is not None:
        return "recipient"
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_corpus_message_is_classified_and_attributed_as_its_standard_says(name: str) -> None:
    case = CASES[name]
    found = classify(name)
    assert found.kind == Kind(case["kind"]), found.detail
    assert first_reference(found) == case.get("attributed_by"), found.refs
    if case.get("attributed_by") == "token":
        assert found.refs.token_delivery_id == DELIVERY
    if case.get("attributed_by") == "message_id":
        assert found.refs.message_id == MSGID
        assert found.refs.message_id_delivery_id == DELIVERY
    if "status" in case:
        assert found.detail["status"] == case["status"]
    if "dead_address" in case:
        assert found.dead_address is case["dead_address"]
    if "feedback_type" in case:
        assert found.detail["feedback_type"] == case["feedback_type"]
    assert found.bad_tokens == 0


def test_a_dsn_keeps_the_diagnostic_code_and_the_reported_recipient() -> None:
    found = classify("postfix_hard")
    assert "User unknown in virtual mailbox table" in found.detail["diagnostic"]
    assert found.detail["diagnostic"].startswith("smtp; 550 5.1.1")
    assert found.refs.recipient == "dead@example.org"
    assert found.refs.message_id == MSGID  # the returned headers name it too


def test_a_dsn_without_our_token_falls_back_to_the_recipient_address() -> None:
    found = classify("postfix_headers_only_to_postmaster")
    assert found.refs.token_delivery_id is None
    assert found.refs.recipient == "gone@example.com"


def test_exims_text_bounce_is_read_by_flufl_bounce_with_the_status_from_its_text() -> None:
    found = classify("exim_text_bounce")
    assert found.detail["detector"] == "flufl.bounce"
    assert found.detail["recipients"] == ["gone@example.net"]
    assert "550 5.1.1" in found.detail["diagnostic"]


def test_a_complaint_names_its_delivery_by_the_token_in_its_original_headers() -> None:
    jmrp = classify("outlook_jmrp_complaint")
    assert jmrp.refs.token_where == "list-unsubscribe"
    yahoo = classify("yahoo_arf_complaint")
    assert yahoo.refs.token_where == "original-mail-from"
    assert yahoo.refs.recipient == "reader@yahoo.example"


def test_tokens_signed_with_another_key_name_nothing_and_are_counted() -> None:
    found = classify("postfix_hard", OTHER_KEYRING)
    assert found.refs.token_delivery_id is None
    assert found.bad_tokens >= 2  # the envelope's and the returned Return-Path's
    # Still a hard bounce, which the Message-ID may yet attribute (checked by the ledger).
    assert found.kind is Kind.DSN_HARD
    assert found.refs.message_id == MSGID


def test_a_forged_unsubscribe_address_is_no_unsubscribe() -> None:
    found = classify("mailto_unsubscribe", OTHER_KEYRING)
    assert found.kind is Kind.UNMATCHED
    assert found.refs.token_delivery_id is None
    assert found.bad_tokens == 1


def test_an_auto_reply_is_never_a_bounce_though_mtas_mark_bounces_auto_replied_too() -> None:
    assert classify("out_of_office").kind is Kind.AUTOREPLY
    assert classify("postfix_hard").kind is Kind.DSN_HARD  # also Auto-Submitted


def test_garbage_never_raises() -> None:
    junk = [b"", b"\x00\xff" * 100, b"Content-Type: multipart/report\r\n\r\n--", b"\r\n" * 5]
    for raw in junk:
        found = classifier().classify(raw, Envelope(None, ["postmaster@x.example"]), NOW)
        assert found.kind is Kind.UNMATCHED


def test_a_dsn_whose_fields_carry_raw_bytes_or_an_unknown_charset_is_read_not_raised() -> None:
    # Bytes outside ASCII make the email package return a Header, not a str, for a field.
    dsn = (
        b"From: MAILER-DAEMON@relay.example\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; gone@example.org\r\n"
        b"Action: failed \xe9\r\nStatus: 5.1.1 \xff\xfe\r\n\r\n--b--\r\n"
    )
    found = classifier().classify(dsn, Envelope("", []), NOW)
    assert (found.kind, found.detail["status"]) == (Kind.DSN_HARD, "5.1.1")
    text_bounce = (
        b"From: MAILER-DAEMON@relay.example\r\nContent-Type: text/plain; charset=x-no-such\r\n"
        b"\r\nThis message was created automatically by mail delivery software.\r\n"
    )
    assert classifier().classify(text_bounce, Envelope("", []), NOW).kind is Kind.UNMATCHED


def test_the_corpus_mutated_at_random_never_makes_the_classifier_raise() -> None:
    # A message that raises costs the processor its whole batch (rolled back, retried one
    # by one): malformed input must come out as a verdict, whatever the mutation.
    rng = random.Random(16)
    for path in sorted(CORPUS.glob("*.eml")):
        base = fill(path.read_bytes().decode("latin-1")).encode("latin-1")
        for _ in range(60):
            raw = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(raw))
                roll = rng.random()
                if roll < 0.4:
                    del raw[at : at + rng.randint(1, 40)]
                elif roll < 0.7:
                    raw[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
                else:
                    raw[at] = rng.randrange(256)
            classifier().classify(bytes(raw), Envelope("", [f"postmaster@{DOMAIN}"]), NOW)
