from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.addresses import InvalidAddress, normalise

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-."
local_parts = st.text(alphabet=ATEXT + '"@ \\é', min_size=0, max_size=70)
domains = st.sampled_from(
    [
        "example.com",
        "EXAMPLE.org",
        "localhost",
        "a.b",
        "bücher.de",
        "x..y",
        "-a.com",
        "test",
        "mail.example.co.uk",
        "1.2.3.4",
        "[127.0.0.1]",
        "a" * 64 + ".com",
        "",
    ]
)


def reference(address: str) -> str | None:
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return None
    return f"{checked.local_part.lower()}@{checked.ascii_domain}"


@settings(max_examples=400, deadline=None)
@given(local_parts, domains)
def test_the_fast_path_agrees_with_email_validator_on_every_address(
    local: str, domain: str
) -> None:
    address = f"{local}@{domain}"
    expected = reference(address.strip())  # CSV cells arrive stripped
    try:
        got: str | None = normalise(address)
    except InvalidAddress:
        got = None
    assert got == expected


def test_addresses_are_lower_cased_so_case_variants_are_one_contact() -> None:
    assert normalise("  Marie.Cote@Example.COM ") == "marie.cote@example.com"


def test_an_invalid_address_says_why() -> None:
    with pytest.raises(InvalidAddress, match="after the @-sign"):
        normalise("someone@")
