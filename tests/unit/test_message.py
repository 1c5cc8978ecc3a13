"""Wire bytes: headers, MIME, tokens, header injection, DKIM, archive.

(mailer.campaigns.headers, mailer.campaigns.mime and mailer.campaigns.message)
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import hashlib
import json
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.campaigns.campaign_file import load
from mailer.campaigns.definition import CampaignDefinition
from mailer.campaigns.headers import HeaderInjection, InvalidRecipient
from mailer.campaigns.message import Composed, Composer, Recipient, reproduce
from mailer.campaigns.mime import Envelope, Skeleton
from mailer.campaigns.render import Renderer
from mailer.campaigns.render_inputs import CampaignFields, RenderedParts, RenderInputs
from mailer.campaigns.template_set import TemplateSet
from mailer.core.consent import Kind
from mailer.core.dkim import DkimKey, DkimSigner
from mailer.core.links import find_links
from mailer.core.settings import SenderSettings, Settings, TrackerSettings
from mailer.core.tokens import Keyring, Purpose

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NOW = datetime(2024, 10, 1, 13, 0, 5, tzinfo=UTC)
BASE = "https://t.garage-tremblay.example"
DOMAIN = "mail.garage-tremblay.example"
KEYRING = Keyring([(1, b"s" * 32)])

# A throwaway 1024-bit test key (dkimpy's minimum); never used outside these tests.
DKIM_PRIVATE = b"""-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBANPvnV6CSUA/uezh
QJj52b/ORIR9rCNsdX6JjlV+O4Y0qjExmjy4rdPV9xeQEBRaSkApc7rF0dU2MTgD
XDwLTkvRr8Xaa9toQws9F8wqprMdW1A6w9JsepnIYouCH4tFriJIsw6TRqWHwVQT
+HZyBhoTea1mr1COUcfhXqDNpre3AgMBAAECgYAe5jmIdPBfGKtv2OuFIjBYIael
tXjqdT6wIzgISO4+w+DoaTX2kmptjy2GVu+xN/TJZAHGgl70egE1DHBfJLrWWRG/
wS2X/AgTySmaxeLgbV1Skgp5I1fzRCQqNt6IUUkd9GPsXJifUFT2P3HZB19b+1MP
fvCkeKrRHpn0d5vAAQJBAPL90nrwCQnYNoU+GliNGul3MFpVqIvLx8iVKcg31x4j
eV2b4NXbAdr3fqEf2f3cX5YdeoBgAbihm1goy1ouYAECQQDfSC34N4z8ppUiO2GC
252bt8Ie73wpXi+ivcCYvjlsi/42Fdh/9Z8zrhaYs3bilxychLap+E1u58YLXXUr
4Be3AkBSinITHLKVS4LJpBzi85uurrQYG3zTb/d/ZVv6DS3fqQEzER5AxtJMhUHY
ja9JErDNl1njfblX9F2GhuT8z0ABAkEAgSvmvESW4csVV9p2jRe0VFO4j+EIOX5t
nH6eHz9dRTiv9mYo+84DLgi2tdyNGIVHXh1A94/YbCLV5dlJYfqgfQJAWRXD+idj
RdkpMVCkKSDYtA6nyZUhrDo9+NW+Eizgh3xy6Z8hLBvhCbDgsyW+jdv78EFnthbj
UOT4cnXQzN+H/w==
-----END PRIVATE KEY-----
"""
DKIM_PUBLIC = (
    "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDT751egklAP7ns4UCY+dm/zkSEfawjbHV+iY5VfjuGNKoxMZo8uK3T"
    "1fcXkBAUWkpAKXO6xdHVNjE4A1w8C05L0a/F2mvbaEMLPRfMKqazHVtQOsPSbHqZyGKLgh+LRa4iSLMOk0alh8FUE/h2"
    "cgYaE3mtZq9QjlHH4V6gzaa3twIDAQAB"
)
DKIM_KEY = DkimKey(
    "s2024",
    "rsa-sha256",
    serialization.load_pem_private_key(DKIM_PRIVATE, password=None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ),
)
SIGNER = DkimSigner([DKIM_KEY], "garage-tremblay.example")
EXPECTED_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "MIME-Version",
    "Content-Type",
]


@pytest.fixture(scope="module")
def definition() -> CampaignDefinition:
    return load(TEMPLATES / "service_reminder.toml", TEMPLATES)


@pytest.fixture(scope="module")
def renderer(definition: CampaignDefinition) -> Renderer:
    return Renderer(TemplateSet.load(TEMPLATES, definition.template))


def make_composer(
    definition: CampaignDefinition, renderer: Renderer, *, dkim: DkimSigner | None = None
) -> Composer:
    return Composer(
        definition,
        renderer,
        KEYRING,
        tracker_base_url=BASE + "/",
        sender_domain=DOMAIN,
        link_ids={url: 100 + i for i, url in enumerate(renderer.links)},
        dkim=dkim,
    )


@pytest.fixture(scope="module")
def composer(definition: CampaignDefinition, renderer: Renderer) -> Composer:
    return make_composer(definition, renderer)


def recipient(definition: CampaignDefinition, **changes: Any) -> Recipient:
    base = Recipient(
        delivery_id=4242,
        email="marie@example.com",
        name="Marie Tremblay",
        locale="fr-CA",
        attributes=dict(definition.sample.attributes),
        consent_kind=Kind.EXPRESS,
        consent_source="Salon E-commerce Paris",
        consent_obtained_at=datetime(2012, 9, 19, 12, tzinfo=UTC),
    )
    return dataclasses.replace(base, **changes)


def parse(composed: Composed) -> EmailMessage:
    message = email.message_from_bytes(composed.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def verify_dkim(data: bytes) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2024._domainkey.garage-tremblay.example."
        return b"v=DKIM1; k=rsa; p=" + DKIM_PUBLIC.encode("ascii")

    return bool(dkim.verify(data, dnsfunc=dns))


# --- headers and MIME -----------------------------------------------------------------------


def test_the_headers_parse_back_with_the_standard_email_parser(
    definition: CampaignDefinition, composer: Composer
) -> None:
    message = parse(composer.compose(recipient(definition), NOW))
    assert message.defects == []
    assert list(message.keys()) == EXPECTED_HEADERS
    sender = message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (
        "Garage Tremblay Automobiles",
        "service@garage-tremblay.example",
    )
    to = message["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Marie Tremblay", "marie@example.com")
    assert message["Subject"] == ("Toyota RAV4 2019 : votre entretien est prévu le 15 octobre 2024")
    assert message["Date"].datetime == NOW
    assert message["Reply-To"].addresses[0].addr_spec == "rendez-vous@garage-tremblay.example"
    assert message["Feedback-ID"] == f"service-reminder-2024-10:service:{DOMAIN}"
    assert message.get_content_type() == "multipart/alternative"


def test_the_parts_decode_to_the_rendered_text_and_html(
    definition: CampaignDefinition, composer: Composer, renderer: Renderer
) -> None:
    composed = composer.compose(recipient(definition), NOW)
    parts = renderer.render(RenderInputs.from_json(composed.archive["render"]))
    message = parse(composed)
    assert body(message, "plain") == parts.text
    assert body(message, "html") == parts.html
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.defects == [] for p in message.iter_parts())


def test_the_message_is_pure_ascii_with_crlf_lines_of_at_most_998_octets(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    long_definition = dataclasses.replace(
        definition, subject={"fr": "é" * 700 + " {{ attributes.vehicle }}", "en": "x" * 1500}
    )
    composer = make_composer(long_definition, renderer)
    for locale in ("fr", "en"):
        attributes = {**definition.sample.attributes, "vehicle": "V" * 3000}
        data = composer.compose(
            recipient(definition, locale=locale, attributes=attributes), NOW
        ).data
        assert data.isascii()
        assert re.search(rb"[^\r]\n|\r[^\n]", data) is None
        assert data.endswith(b"\r\n")
        assert max(len(line) for line in data.split(b"\r\n")) <= 998
        assert parse_bytes(data)["Subject"].startswith(("é" * 700, "x" * 1500))


def parse_bytes(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize(
    ("text", "html", "encodings"),
    [
        ("Hello\n", "<p>Hi</p>", ["7bit", "7bit"]),
        ("Bonjour é\n", "<p>é</p>", ["base64", "base64"]),
        ("x" * 999, "<p>" + "y" * 999 + "</p>", ["base64", "base64"]),
        ("nul\x00", "<p>ok</p>", ["base64", "7bit"]),
        ("é" * 200_000, "<p>" + "é\n" * 100_000 + "</p>", ["base64", "base64"]),
    ],
)
def test_ascii_parts_go_as_7bit_and_others_are_encoded(
    definition: CampaignDefinition, text: str, html: str, encodings: list[str]
) -> None:
    envelope = Envelope(
        "<1.00ff@example.com>", "Tue, 01 Oct 2024 13:00:05 +0000", "<https://t/u/x>", "a:b:c", ""
    )
    skeleton = Skeleton(CampaignFields.from_definition(definition))
    data = skeleton.assemble(
        RenderedParts("Hi", html, text), name=None, email="a@example.com", envelope=envelope
    )
    message = parse_bytes(data)
    assert [p["Content-Transfer-Encoding"] for p in message.iter_parts()] == encodings
    assert body(message, "plain") == text
    assert body(message, "html") == html
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_a_non_ascii_subject_is_rfc_2047_encoded(
    definition: CampaignDefinition, composer: Composer
) -> None:
    data = composer.compose(recipient(definition), NOW).data
    subject_line = data.split(b"\r\nSubject: ", 1)[1].split(b"\r\n", 1)[0]
    assert subject_line.startswith(b"=?utf-8?b?")


def test_the_message_id_is_unique_and_on_the_sender_domain(
    definition: CampaignDefinition, composer: Composer
) -> None:
    ids = {parse(composer.compose(recipient(definition), NOW))["Message-ID"] for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(rf"<4242\.[0-9a-f]{{16}}@{re.escape(DOMAIN)}>", i) for i in ids)


# --- RFC 8058, tokens and VERP --------------------------------------------------------------


def test_list_unsubscribe_headers_satisfy_rfc_8058(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    composer = make_composer(
        definition,
        renderer,
        dkim=SIGNER,
    )
    composed = composer.compose(recipient(definition), NOW)
    message = parse(composed)
    uris = re.findall(r"<([^>]*)>", message["List-Unsubscribe"])
    assert len(uris) == 2
    https, mailto = uris
    assert https.startswith(BASE + "/u/")
    assert re.fullmatch(
        rf"mailto:unsubscribe\+[A-Za-z0-9_-]+@{re.escape(DOMAIN)}\?subject=unsubscribe", mailto
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # RFC 8058 s.4: both headers must be covered by a valid DKIM signature.
    signed = re.search(r"h=([^;]*);", " ".join(message["DKIM-Signature"].split()))
    assert signed is not None
    names = {name.strip() for name in signed[1].split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= names
    assert verify_dkim(composed.data)


def _composer_at(base_url: str, definition: CampaignDefinition, renderer: Renderer) -> Composer:
    return Composer(
        definition,
        renderer,
        KEYRING,
        tracker_base_url=base_url,
        sender_domain=DOMAIN,
        link_ids={url: i for i, url in enumerate(renderer.links)},
    )


def test_a_tracker_on_plain_http_across_a_network_gets_no_one_click_header(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    composer = _composer_at("http://t.example.com", definition, renderer)
    message = parse(composer.compose(recipient(definition), NOW))
    assert message["List-Unsubscribe"].startswith("<http://t.example.com/u/")
    assert "List-Unsubscribe-Post" not in message


def test_a_tracker_on_loopback_keeps_the_one_click_header_for_local_demos(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    composer = _composer_at("http://127.0.0.1:8080", definition, renderer)
    message = parse(composer.compose(recipient(definition), NOW))
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_every_token_verifies_and_names_the_delivery(
    definition: CampaignDefinition, composer: Composer, renderer: Renderer
) -> None:
    composed = composer.compose(recipient(definition, locale="en"), NOW)
    message = parse(composed)
    html = body(message, "html")
    inputs = composed.archive["render"]

    def verify(url: str, prefix: str, purpose: Purpose) -> int | None:
        assert url.startswith(f"{BASE}/{prefix}/")
        token = KEYRING.verify(url.rsplit("/", 1)[1], now=int(NOW.timestamp()))
        assert (token.purpose, token.delivery_id) == (purpose, 4242)
        return token.link_id

    verify(inputs["unsubscribe_url"], "u", Purpose.UNSUBSCRIBE)
    verify(inputs["preferences_url"], "p", Purpose.PREFERENCES)
    verify(inputs["pixel_url"], "o", Purpose.OPEN)
    assert f'src="{inputs["pixel_url"]}"' in html
    link_ids = {url: 100 + i for i, url in enumerate(renderer.links)}
    for original, tracked in inputs["click_urls"].items():
        assert verify(tracked, "c", Purpose.CLICK) == link_ids[original]
        assert tracked in {link.url for link in find_links(html)}
    mailbox, _, domain = composed.return_path.partition("@")
    assert domain == DOMAIN
    local, _, token = mailbox.partition("+")
    assert local == "bounces"
    bounce = KEYRING.verify(token, now=int(NOW.timestamp()))
    assert (bounce.purpose, bounce.delivery_id) == (Purpose.BOUNCE, 4242)


def test_the_archive_keeps_only_the_click_urls_the_message_used(
    definition: CampaignDefinition, composer: Composer
) -> None:
    archive = composer.compose(recipient(definition, locale="en"), NOW).archive
    assert sorted(archive["render"]["click_urls"]) == sorted(
        url for url in archive["render"]["click_urls"] if "/en/" in url
    )
    assert len(archive["render"]["click_urls"]) == 5


def test_a_contact_who_refused_tracking_gets_no_pixel_and_untouched_links(
    definition: CampaignDefinition, composer: Composer
) -> None:
    composed = composer.compose(recipient(definition, tracking=False), NOW)
    html = body(parse(composed), "html")
    assert "/o/" not in html
    assert "/c/" not in html
    assert "https://garage-tremblay.example/fr/nous-joindre" in html
    assert composed.archive["render"]["click_urls"] == {}


def test_a_campaign_with_tracking_off_tracks_nobody(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    composer = make_composer(dataclasses.replace(definition, tracking=False), renderer)
    html = body(parse(composer.compose(recipient(definition), NOW)), "html")
    assert "/o/" not in html
    assert "/c/" not in html


# --- header injection -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "email", "subject"])
@pytest.mark.parametrize("bad", ["\r\nBcc: victim@example.com", "\n", "\r", "\x00", "\u2028"])
def test_a_line_break_or_control_character_from_data_is_refused_as_header_injection(
    definition: CampaignDefinition, renderer: Renderer, field: str, bad: str
) -> None:
    composer = make_composer(
        dataclasses.replace(definition, subject={"fr": "{{ contact.name }}", "en": "x"}), renderer
    )
    changes: dict[str, Any] = {"name": "Marie" + bad + "Tremblay"}
    if field == "email":
        changes = {"email": "marie" + bad + "@example.com"}
    if field == "subject":
        changes["attributes"] = dict(definition.sample.attributes)
    with pytest.raises(HeaderInjection) as caught:
        composer.compose(recipient(definition, **changes), NOW)
    assert caught.value.reason == "header_injection"


def test_a_non_ascii_address_is_skipped_as_an_invalid_address(
    definition: CampaignDefinition, composer: Composer
) -> None:
    with pytest.raises(InvalidRecipient) as caught:
        composer.compose(recipient(definition, email="rené@example.com"), NOW)
    assert caught.value.reason == "invalid_address"


@settings(max_examples=60, deadline=None)
@given(name=st.text(max_size=40))
def test_no_name_can_add_a_header_and_every_safe_name_reads_back(
    definition: CampaignDefinition, renderer: Renderer, name: str
) -> None:
    composer = make_composer(definition, renderer)
    try:
        composed = composer.compose(recipient(definition, name=name, locale="en"), NOW)
    except HeaderInjection:
        assert re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", name)
        return
    message = parse(composed)
    assert list(message.keys()) == EXPECTED_HEADERS
    shown = message["To"].addresses[0].display_name
    if len(name.encode("utf-8")) <= 45:  # one encoded word (the stdlib splits words apart)
        assert shown == name.strip() or shown == name
    assert message["To"].addresses[0].addr_spec == "marie@example.com"


@settings(max_examples=60, deadline=None)
@given(subject=st.text(min_size=1, max_size=120).filter(lambda s: s.strip() == s and s))
def test_every_subject_without_control_characters_reads_back_unchanged(
    definition: CampaignDefinition, renderer: Renderer, subject: str
) -> None:
    composer = make_composer(
        dataclasses.replace(definition, subject={"fr": "x", "en": "{{ attributes.s }}"}), renderer
    )
    attributes = {**definition.sample.attributes, "s": subject}
    try:
        composed = composer.compose(recipient(definition, locale="en", attributes=attributes), NOW)
    except HeaderInjection:
        assert re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", subject)
        return
    assert parse(composed)["Subject"] == subject


# --- DKIM and the archive -------------------------------------------------------------------


def test_the_dkim_signature_verifies_with_dkimpy_and_breaks_on_tampering(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    composed = make_composer(definition, renderer, dkim=SIGNER).compose(recipient(definition), NOW)
    assert composed.data.startswith(b"DKIM-Signature: ")
    assert verify_dkim(composed.data)
    assert not verify_dkim(composed.data.replace(b"Marie Tremblay", b"Mallory Tremblay", 1))


@pytest.mark.parametrize("signed", [False, True])
def test_reproducing_from_the_archive_gives_identical_bytes_and_hash(
    definition: CampaignDefinition, renderer: Renderer, signed: bool
) -> None:
    composer = make_composer(definition, renderer, dkim=SIGNER if signed else None)
    composed = composer.compose(recipient(definition), NOW)
    stored_files = json.loads(renderer.templates.canonical_json())
    stored_archive = json.loads(json.dumps(composed.archive))  # what jsonb gives back
    again = reproduce(TemplateSet("service_reminder", stored_files), stored_archive)
    assert again == composed.data
    assert hashlib.sha256(again).hexdigest() == composed.sha256
    if signed:
        # The hash covers the signed bytes; the archived signature still verifies on them.
        assert composed.archive["dkim_signature"].startswith("DKIM-Signature: ")
        assert f"t={int(NOW.timestamp())};" in composed.archive["dkim_signature"]
        assert verify_dkim(again)


def test_composer_for_settings_uses_the_sender_and_tracker_settings(
    definition: CampaignDefinition, renderer: Renderer
) -> None:
    settings_ = Settings(
        sender=SenderSettings(
            domain=DOMAIN,
            bounce_local_part="rebonds",
            unsubscribe_mailbox="desabo",
        ),
        tracker=TrackerSettings(base_url=BASE),
        dkim_keys=(DKIM_KEY,),
    )
    composer = Composer.for_settings(
        definition,
        renderer,
        KEYRING,
        settings_,
        link_ids={url: i for i, url in enumerate(renderer.links)},
    )
    composed = composer.compose(recipient(definition), NOW)
    assert composed.return_path.startswith("rebonds+")
    assert "<mailto:desabo+" in parse(composed)["List-Unsubscribe"]
    assert verify_dkim(composed.data)  # d= is the From domain, for DMARC alignment


def test_archived_inputs_name_the_consent_behind_the_message(
    definition: CampaignDefinition, composer: Composer
) -> None:
    archive = composer.compose(recipient(definition), NOW).archive
    assert archive["render"]["consent_kind"] == "express"
    assert archive["render"]["consent_source"] == "Salon E-commerce Paris"
    assert archive["render"]["consent_obtained_at"] == "2012-09-19T12:00:00+00:00"
    assert archive["envelope"]["return_path"].startswith("bounces+")
    assert base64.urlsafe_b64decode(
        archive["envelope"]["return_path"].split("+")[1].split("@")[0] + "=="
    )[2] == list(Purpose).index(Purpose.BOUNCE)
