"""mailer.core.counts.parse_count: ASCII digits only, bounded, None for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.core.counts import BIGINT_MAX, parse_count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("7", 7),
        ("007", 7),
        ("1000", 1000),
        (str(BIGINT_MAX), BIGINT_MAX),
        ("0" * 40 + "5", 5),
    ],
)
def test_ascii_digits_in_range_are_read_as_their_number(text: str, expected: int) -> None:
    assert parse_count(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1_000",
        "1.0",
        "1e3",
        "0x10",
        "²",  # superscript two: isdigit() but int() raises
        "١٢",  # Arabic-Indic digits: int() would read them as 12
        "１",  # fullwidth one
        str(BIGINT_MAX + 1),
        "9" * 5000,  # past int()'s 4,300-digit limit: refused, not a ValueError
    ],
)
def test_anything_but_ascii_digits_in_range_is_refused(text: str) -> None:
    assert parse_count(text) is None


def test_a_value_that_is_not_text_is_refused() -> None:
    assert parse_count(None) is None
    assert parse_count(3) is None
    assert parse_count(b"3") is None
    assert parse_count(["3"]) is None


def test_the_bounds_are_inclusive() -> None:
    assert parse_count("1000", minimum=1, maximum=1000) == 1000
    assert parse_count("1", minimum=1, maximum=1000) == 1
    assert parse_count("0", minimum=1, maximum=1000) is None
    assert parse_count("1001", minimum=1, maximum=1000) is None
    assert parse_count("256", maximum=255) is None


@given(st.integers(min_value=0, max_value=BIGINT_MAX))
def test_every_number_in_range_reads_back(n: int) -> None:
    assert parse_count(str(n)) == n


@given(st.text())
def test_any_text_is_either_refused_or_its_ascii_digits_read_in_range(text: str) -> None:
    value = parse_count(text)
    if value is None:
        return
    assert text.isascii()
    assert text.isdigit()
    assert int(text) == value
    assert 0 <= value <= BIGINT_MAX


@given(st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1))
def test_digits_of_other_scripts_are_refused(text: str) -> None:
    if not text.isascii():
        assert parse_count(text) is None


@given(st.integers(min_value=0, max_value=10**30), st.integers(min_value=0, max_value=10**20))
def test_a_number_above_the_maximum_is_refused(n: int, maximum: int) -> None:
    assert (parse_count(str(n), maximum=maximum) is None) == (n > maximum)
