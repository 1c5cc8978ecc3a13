"""The audience filter evaluated in Python for one contact, with exactly the semantics of
``compile_sql`` (mailer.core.segment_sql): ``contacts explain`` and the property test that
holds the two back ends equal."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from mailer.core.consent import add_months
from mailer.core.segment import (
    TEXT_OPS,
    And,
    Compare,
    Exists,
    Field,
    InList,
    Node,
    Not,
    Op,
    Or,
    Segment,
    SegmentFacts,
    Topic,
    Value,
    Within,
    as_text,
)

__all__ = ["evaluate"]

_MISSING = object()
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def evaluate(ast: Segment, facts: SegmentFacts, now: datetime) -> bool:
    """Whether the contact matches, with exactly the semantics of ``compile_sql``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return _eval(ast.root, facts, now.astimezone(UTC))


def _eval(node: Node, facts: SegmentFacts, now: datetime) -> bool:
    match node:
        case Not(operand):
            return not _eval(operand, facts, now)
        case And(operands):
            return all(_eval(o, facts, now) for o in operands)
        case Or(operands):
            return any(_eval(o, facts, now) for o in operands)
        case Topic(slug, subscribed):
            return (slug in facts.topics) == subscribed
        case Within(amount, unit):
            if facts.last_activity_at is None:
                return False
            if unit == "months":
                return facts.last_activity_at >= add_months(now, -amount)
            return facts.last_activity_at >= now - timedelta(days=amount)
        case Exists(field):
            return _attribute(facts, field.path) is not _MISSING
        case InList(field, values):
            return any(_eval(Compare(field, "=", v), facts, now) for v in values)
        case Compare(field, op, value) if field.name != "attributes":
            actual = _text_field(facts, field)
            if actual is None:
                return False
            return _compare_text(actual, op, _fold(value, field))
        case Compare(field, op, value):
            return _compare_json(_attribute(facts, field.path), op, value)
    raise TypeError(f"not a segment node: {node!r}")


def _text_field(facts: SegmentFacts, field: Field) -> str | None:
    if field.name == "locale":
        return facts.locale
    if field.name == "name":
        return facts.name
    if facts.email is None:
        return None
    # split_part(email, '@', 2): between the first and second '@', '' when there is none.
    parts = facts.email.split("@")
    return (parts[1] if len(parts) > 1 else "").translate(_ASCII_LOWER)


def _fold(value: Value, field: Field) -> str:
    text = as_text(value)
    return text.translate(_ASCII_LOWER) if field.name == "email_domain" else text


def _compare_text(actual: str, op: Op, value: str) -> bool:
    if op == "contains":
        return value.translate(_ASCII_LOWER) in actual.translate(_ASCII_LOWER)
    if op == "startswith":
        return actual.translate(_ASCII_LOWER).startswith(value.translate(_ASCII_LOWER))
    return _order(actual, op, value)


_Ordered = TypeVar("_Ordered", str, Decimal)


def _order(a: _Ordered, op: Op, b: _Ordered) -> bool:
    # Python str order is code point order, the same as COLLATE "C" on UTF-8.
    match op:
        case "=":
            return a == b
        case "!=":
            return a != b
        case "<":
            return a < b
        case "<=":
            return a <= b
        case ">":
            return a > b
        case ">=":
            return a >= b
    raise ValueError(f"not an ordering operator: {op}")


def _attribute(facts: SegmentFacts, path: tuple[str, ...]) -> object:
    # jsonb #> descends objects only: keys here are identifiers, never array indexes.
    current: object = facts.attributes
    for key in path:
        if not isinstance(current, Mapping) or key not in current:
            return _MISSING
        current = current[key]
    return current


def _json_number(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        # repr is the shortest text that json.dumps writes and Postgres reads back exactly.
        return Decimal(repr(value))
    return None


def _json_equal(actual: object, value: Value) -> bool:
    if isinstance(value, bool):
        return isinstance(actual, bool) and actual is value
    if isinstance(value, Decimal):
        number = _json_number(actual)
        return number is not None and number == value
    return isinstance(actual, str) and actual == value


def _compare_json(actual: object, op: Op, value: Value) -> bool:
    if actual is _MISSING:
        return False  # SQL NULL: even != is false
    if op == "=":
        return _json_equal(actual, value)
    if op == "!=":
        return not _json_equal(actual, value)
    if op in TEXT_OPS or isinstance(value, str):
        return isinstance(actual, str) and _compare_text(actual, op, as_text(value))
    number = _json_number(actual)
    return isinstance(value, Decimal) and number is not None and _order(number, op, value)
