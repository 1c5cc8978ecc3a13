"""Whole numbers that people type or clients send: ids in query strings and form fields,
page sizes, key ids. One parser, so that every door refuses the same texts.

`str.isdigit()` alone is true for '²' and '٣' (int() then raises on the first and reads the
second as 3), and int() alone takes ' 1', '+1', '1_000' and, past 4,300 digits, raises: each
was once a 500 or a number the operator did not write. ASCII digits only, and bounded before
int() is called.
"""

from __future__ import annotations

# Postgres bigint: the largest id a query parameter can carry (asyncpg refuses more).
BIGINT_MAX = 2**63 - 1


def parse_count(text: object, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    """`text` read as a whole number in ASCII digits from `minimum` to `maximum` (default: a
    Postgres bigint); None for anything else (not a str, empty, a sign, spaces, other digits)."""
    top = BIGINT_MAX if maximum is None else maximum
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        return None
    if len(text.lstrip("0")) > len(str(top)):
        return None  # too long to be in range: no int() of a huge text
    value = int(text)
    return value if minimum <= value <= top else None
