"""Signed tracking tokens: round trips, tamper resistance, key rotation, expiry."""

from __future__ import annotations

import base64
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.tokens import Keyring, Purpose, Token, TokenError

OLD_SECRET = bytes(range(32))
NEW_SECRET = bytes(range(100, 140))
NOW = 1_750_000_000
DAY = 86_400
MAX_ID = 2**63 - 1
URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Replacement characters: the alphabet plus what a lax decoder would accept or skip.
REPLACEMENTS = URLSAFE_ALPHABET + "+/=. \n%é"

RING = Keyring([(1, NEW_SECRET), (0, OLD_SECRET)])

ids = st.integers(min_value=0, max_value=MAX_ID)
times = st.integers(min_value=0, max_value=MAX_ID)
fast = settings(max_examples=150, deadline=None)


@st.composite
def tokens(draw: st.DrawFn) -> Token:
    purpose = draw(st.sampled_from(Purpose))
    link_id = draw(ids) if purpose is Purpose.CLICK else None
    return Token(purpose, draw(ids), link_id, draw(times))


def make(purpose: Purpose = Purpose.OPEN, issued_at: int = NOW) -> Token:
    return Token(purpose, 123_456_789, 7 if purpose is Purpose.CLICK else None, issued_at)


def reason_of(
    text: str, ring: Keyring = RING, max_age: dict[Purpose, int | None] | None = None
) -> str:
    with pytest.raises(TokenError) as caught:
        ring.verify(text, now=NOW, max_age=max_age)
    return caught.value.reason


def forge(raw_body: bytes, key_id: int, secret: bytes) -> str:
    """Sign arbitrary body bytes the way the module would, to reach checks after the MAC."""
    raw = bytes((1, key_id)) + raw_body
    raw += hmac.digest(secret, raw, "sha256")[:16]
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@fast
@given(tokens())
def test_every_purpose_round_trips_through_sign_and_verify(token: Token) -> None:
    text = RING.sign(token)
    assert set(text) <= set(URLSAFE_ALPHABET)
    assert RING.verify(text, now=NOW) == token


@pytest.mark.parametrize("purpose", list(Purpose))
def test_each_purpose_survives_a_round_trip(purpose: Purpose) -> None:
    assert RING.verify(RING.sign(make(purpose)), now=NOW) == make(purpose)


@fast
@given(tokens(), st.data())
def test_changing_any_single_character_fails_verification(
    token: Token, data: st.DataObject
) -> None:
    text = RING.sign(token)
    position = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    replacement = data.draw(st.sampled_from(REPLACEMENTS).filter(lambda c: c != text[position]))
    tampered = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(TokenError):
        RING.verify(tampered, now=NOW)


@fast
@given(tokens(), st.data())
def test_flipping_any_bit_of_the_decoded_bytes_fails_verification(
    token: Token, data: st.DataObject
) -> None:
    raw = bytearray(base64.urlsafe_b64decode(RING.sign(token) + "=="))
    position = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with pytest.raises(TokenError):
        RING.verify(base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), now=NOW)


@fast
@given(tokens(), st.data())
def test_truncated_tokens_fail_verification(token: Token, data: st.DataObject) -> None:
    text = RING.sign(token)
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    with pytest.raises(TokenError):
        RING.verify(text[:cut], now=NOW)


@fast
@given(tokens(), st.text(alphabet=REPLACEMENTS, min_size=1, max_size=8))
def test_extended_tokens_fail_verification(token: Token, suffix: str) -> None:
    with pytest.raises(TokenError):
        RING.verify(RING.sign(token) + suffix, now=NOW)


def test_padding_is_not_accepted_on_a_token() -> None:
    text = RING.sign(make())
    assert len(text) % 4  # this token's length leaves room for padding
    assert reason_of(text + "=" * (-len(text) % 4)) == "malformed"


def test_a_last_character_with_nonzero_unused_bits_is_rejected() -> None:
    text = RING.sign(make())
    assert len(text) % 4 == 2  # last character carries 2 data bits and 4 unused ones
    sibling = URLSAFE_ALPHABET[URLSAFE_ALPHABET.index(text[-1]) | 1]
    # A lax decoder reads both spellings as the same bytes.
    assert base64.urlsafe_b64decode(text[:-1] + sibling + "==") == base64.urlsafe_b64decode(
        text + "=="
    )
    assert reason_of(text[:-1] + sibling) == "malformed"


def test_an_open_token_for_a_delivery_near_ten_to_the_eight_is_under_forty_characters() -> None:
    token = Token(Purpose.OPEN, 10**8 + 12_345, None, NOW)
    assert len(RING.sign(token)) < 40


def test_a_click_token_for_the_largest_ids_fits_the_length_bound() -> None:
    token = Token(Purpose.CLICK, MAX_ID, MAX_ID, MAX_ID)
    assert RING.verify(RING.sign(token), now=NOW) == token
    assert len(RING.sign(token)) <= 62


def test_a_token_signed_with_an_old_key_verifies_while_that_key_is_in_the_ring() -> None:
    old_ring = Keyring([(0, OLD_SECRET)])
    text = old_ring.sign(make())
    assert RING.verify(text, now=NOW) == make()


def test_a_token_signed_with_a_removed_key_fails() -> None:
    text = Keyring([(0, OLD_SECRET)]).sign(make())
    assert reason_of(text, Keyring([(1, NEW_SECRET)])) == "unknown_key"


def test_the_first_key_in_the_ring_signs() -> None:
    text = RING.sign(make())
    assert Keyring([(1, NEW_SECRET)]).verify(text, now=NOW) == make()
    assert reason_of(text, Keyring([(0, OLD_SECRET)])) == "unknown_key"


def test_a_token_under_a_known_key_id_but_another_secret_has_a_bad_signature() -> None:
    text = Keyring([(1, bytes(32))]).sign(make())
    assert reason_of(text) == "bad_signature"


def test_the_signature_is_checked_before_the_body_is_parsed() -> None:
    # Purpose code 99 does not exist; with a wrong MAC the answer must still be the MAC.
    bad_body = bytes((99, 1, 1))
    assert reason_of(forge(bad_body, 1, bytes(32))) == "bad_signature"
    assert reason_of(forge(bad_body, 1, NEW_SECRET)) == "wrong_shape"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(bytes((0, 0x80, 0x00, 1)), id="non-minimal varint"),
        pytest.param(bytes((0, 1, 1, 0)), id="trailing byte"),
        pytest.param(bytes((0, 0x81, 0x01)), id="missing issued_at"),
        pytest.param(bytes((0,)) + b"\xff" * 9 + b"\x01" + b"\x01", id="overlong varint"),
        pytest.param(bytes((1, 1, 1)), id="click without link id"),
    ],
)
def test_correctly_signed_bodies_of_the_wrong_shape_are_rejected(body: bytes) -> None:
    assert reason_of(forge(body, 1, NEW_SECRET)) == "wrong_shape"


def test_an_unknown_version_is_malformed() -> None:
    raw = bytearray(base64.urlsafe_b64decode(RING.sign(make()) + "=="))
    raw[0] = 2
    assert reason_of(base64.urlsafe_b64encode(raw).rstrip(b"=").decode()) == "malformed"


@pytest.mark.parametrize("text", ["", "x", "!" * 30, "é" * 30, "A" * 200])
def test_garbage_is_malformed(text: str) -> None:
    assert reason_of(text) == "malformed"


def test_tokens_never_expire_by_default() -> None:
    text = RING.sign(make(Purpose.UNSUBSCRIBE, issued_at=0))
    assert RING.verify(text, now=NOW).purpose is Purpose.UNSUBSCRIBE


def test_a_token_older_than_its_purposes_max_age_is_expired() -> None:
    text = RING.sign(make(Purpose.OPEN, issued_at=NOW - 31 * DAY))
    max_age: dict[Purpose, int | None] = {Purpose.OPEN: 30 * DAY}
    assert reason_of(text, max_age=max_age) == "expired"


def test_a_token_exactly_at_its_max_age_is_still_valid() -> None:
    text = RING.sign(make(Purpose.OPEN, issued_at=NOW - 30 * DAY))
    assert RING.verify(text, now=NOW, max_age={Purpose.OPEN: 30 * DAY}) == make(
        Purpose.OPEN, NOW - 30 * DAY
    )


def test_max_age_applies_only_to_the_purposes_it_names() -> None:
    text = RING.sign(make(Purpose.CLICK, issued_at=0))
    max_age: dict[Purpose, int | None] = {Purpose.OPEN: DAY, Purpose.CLICK: None}
    assert RING.verify(text, now=NOW, max_age=max_age).link_id == 7


@pytest.mark.parametrize("purpose", [Purpose.UNSUBSCRIBE, Purpose.PREFERENCES])
def test_an_opt_out_max_age_under_sixty_days_is_refused(purpose: Purpose) -> None:
    # CASL s.11(2): the unsubscribe mechanism must stay valid for 60 days.
    text = RING.sign(make(purpose))
    with pytest.raises(ValueError, match="60 days"):
        RING.verify(text, now=NOW, max_age={purpose: 59 * DAY})
    assert RING.verify(text, now=NOW, max_age={purpose: 60 * DAY}) == make(purpose)


def test_a_click_token_without_a_link_id_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="link_id"):
        Token(Purpose.CLICK, 1, None, NOW)


@pytest.mark.parametrize("purpose", [p for p in Purpose if p is not Purpose.CLICK])
def test_only_click_tokens_carry_a_link_id(purpose: Purpose) -> None:
    with pytest.raises(ValueError, match="link_id"):
        Token(purpose, 1, 2, NOW)


@pytest.mark.parametrize(
    ("delivery_id", "issued_at"), [(-1, NOW), (2**63, NOW), (1, -1), (1, 2**63)]
)
def test_ids_and_times_outside_the_wire_range_cannot_be_built(
    delivery_id: int, issued_at: int
) -> None:
    with pytest.raises(ValueError, match="2\\*\\*63"):
        Token(Purpose.OPEN, delivery_id, None, issued_at)


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def test_a_key_spec_lists_the_signing_key_first() -> None:
    ring = Keyring.from_spec(f"1:{b64(NEW_SECRET)}, 0:{b64(OLD_SECRET)}")
    assert ring.key_ids == (1, 0)
    assert ring.verify(RING.sign(make()), now=NOW) == make()


def test_a_key_spec_accepts_url_safe_unpadded_secrets() -> None:
    secret = b"\xfb\xff" * 17  # 34 bytes: base64 with "+", "/" and padding
    urlsafe = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    assert "-" in urlsafe
    assert "_" in urlsafe
    ring = Keyring.from_spec(f"5:{urlsafe}")
    assert ring.sign(make()) == Keyring([(5, secret)]).sign(make())


SECRET_TEXT = b64(b"s" * 40)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "MAILER_TOKEN_KEYS is empty"),
        ("  ", "MAILER_TOKEN_KEYS is empty"),
        (SECRET_TEXT, "entry 1: expected KEY_ID:BASE64_SECRET"),
        (f"1:{SECRET_TEXT},", "entry 2: expected KEY_ID:BASE64_SECRET"),
        (f"x:{SECRET_TEXT}", "entry 1: key id must be an integer from 0 to 255"),
        (f"256:{SECRET_TEXT}", "entry 1: key id must be an integer from 0 to 255"),
        (f"-1:{SECRET_TEXT}", "entry 1: key id must be an integer from 0 to 255"),
        (f"1:{SECRET_TEXT},2:{SECRET_TEXT}!", r"entry 2 \(key id 2\): secret is not valid base64"),
        (f"7:{SECRET_TEXT}é", r"entry 1 \(key id 7\): secret is not valid base64"),
        (f"1:{SECRET_TEXT},1:{SECRET_TEXT}", "key id 1 appears more than once"),
        (f"3:{b64(b's' * 31)}", "key id 3: secret is 31 bytes, at least 32 required"),
    ],
)
def test_key_spec_errors_name_the_problem_without_echoing_the_secret(
    spec: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Keyring.from_spec(spec)
    assert SECRET_TEXT not in str(caught.value)
    assert SECRET_TEXT[:8] not in str(caught.value)


def test_key_spec_errors_name_the_setting_they_came_from() -> None:
    with pytest.raises(ValueError, match="TRACKER_KEYS entry 1"):
        Keyring.from_spec("nonsense", source="TRACKER_KEYS")


def test_a_keyring_needs_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring([])


def test_a_key_id_must_fit_in_a_byte() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.255"):
        Keyring([(256, NEW_SECRET)])


def test_a_keyring_repr_shows_key_ids_but_no_secrets() -> None:
    text = repr(RING)
    assert text == "Keyring(key_ids=[1, 0])"
    assert NEW_SECRET.hex() not in text
