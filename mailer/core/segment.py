"""Audience filter language: its AST, limits, errors and normal form (describe).

Operators narrow a campaign's audience with filters such as
``locale in (fr, en) and not attributes.vip = true``. One AST feeds two back ends that must
agree on every contact: ``compile_sql`` (mailer.core.segment_sql, the audience query) and
``evaluate`` (mailer.core.segment_eval, ``contacts explain`` and the SQL-vs-Python property
test). ``parse`` (mailer.core.segment_parser) builds the AST from the operator's text.

Typing rule, identical in both back ends:

* ``locale``, ``name`` and ``email_domain`` are text. Every value compared with them is read
  as text (``name = 42`` compares with the text ``42``). ``email_domain`` is the part of the
  address after the first ``@`` (``split_part``), compared ASCII-case-insensitively on both
  sides because domain names are case-insensitive (RFC 4343).
* ``attributes.a.b`` is the JSON value at that path, descending JSON objects only. Literals
  are typed: a quoted string or bare word is a JSON string, a NUMBER a JSON number, ``true``
  / ``false`` a JSON boolean.
  - ``=``, ``!=`` and ``in`` are JSON equality: type and value (``1`` equals ``1.0``, never
    ``"1"`` nor ``true``); ``!=`` is true for a present value of another type (JSON null
    included).
  - ``<`` ``<=`` ``>`` ``>=`` hold only when the value has the literal's type (number with a
    NUMBER, string with a string); a boolean literal is rejected at parse time.
  - ``contains`` and ``startswith`` hold only for JSON strings; their value is read as text.
  - ``exists`` is true when the path resolves, JSON null included (like jsonb ``?``).
* A missing value (NULL column, missing attribute path) makes every comparison false, ``!=``
  included, as SQL NULL would; ``not`` of such a comparison is true. The SQL wraps every
  comparison in ``COALESCE(..., false)`` so three-valued logic never reaches ``not``.
* Text compares by code point (``COLLATE "C"``) and ``contains`` / ``startswith`` fold ASCII
  letters only (``lower()`` under ``"C"``), so the result never depends on the database's
  locale or on Python's Unicode case tables.
* ``within`` computes in UTC whatever the session ``TimeZone``; months clamp to the month end,
  as Postgres interval arithmetic does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "And",
    "Compare",
    "Exists",
    "Field",
    "InList",
    "Node",
    "Not",
    "Op",
    "Or",
    "Segment",
    "SegmentError",
    "SegmentFacts",
    "Topic",
    "Value",
    "Within",
    "as_text",
]

MAX_DEPTH = 32
MAX_CONDITIONS = 200
# Bounds the parameters one condition can bind (Postgres allows 65,535 per statement).
MAX_IN_VALUES = 200
MAX_MONTHS = 1200
MAX_DAYS = 36_600

TEXT_FIELDS = ("locale", "email_domain", "name")
Op = Literal["=", "!=", "<", "<=", ">", ">=", "contains", "startswith"]
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
TEXT_OPS = frozenset({"contains", "startswith"})
Value = str | Decimal | bool


class SegmentError(ValueError):
    """A filter the parser rejects, with the 0-based character position of the fault."""

    def __init__(self, message: str, position: int, text: str = "") -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        head = f"{self.message} at position {self.position}"
        if not self.text:
            return head
        # Tabs and newlines would push the caret off its column.
        shown = re.sub(r"\s", " ", self.text)
        return f"{head}\n  {shown}\n  {' ' * self.position}^"


# --- AST -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """``locale``, ``email_domain``, ``name`` (empty path) or ``attributes`` with a key path."""

    name: Literal["locale", "email_domain", "name", "attributes"]
    path: tuple[str, ...] = ()

    def describe(self) -> str:
        """The field as written in a filter."""
        return ".".join(("attributes", *self.path)) if self.name == "attributes" else self.name


@dataclass(frozen=True)
class Compare:
    """``field op value``."""

    field: Field
    op: Op
    value: Value


@dataclass(frozen=True)
class InList:
    """``field in (v1, v2, …)``: equality with any of the values."""

    field: Field
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Exists:
    """``attributes.x exists``."""

    field: Field


@dataclass(frozen=True)
class Within:
    """``last_activity within N months|days`` before the send time."""

    amount: int
    unit: Literal["months", "days"]


@dataclass(frozen=True)
class Topic:
    """``topic = slug`` (subscribed to the topic) or ``topic != slug`` (not subscribed)."""

    slug: str
    subscribed: bool = True


@dataclass(frozen=True)
class Not:
    """``not operand``."""

    operand: Node


@dataclass(frozen=True)
class And:
    """Conjunction; the parser flattens nested ``and`` so no operand is itself an ``And``."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Disjunction; the parser flattens nested ``or`` so no operand is itself an ``Or``."""

    operands: tuple[Node, ...]


Node = Compare | InList | Exists | Within | Topic | Not | And | Or


@dataclass(frozen=True)
class Segment:
    """A parsed filter: the root of its AST."""

    root: Node

    def describe(self) -> str:
        """Normalised filter text; ``parse(s.describe()) == s``."""
        return _describe(self.root)


@dataclass(frozen=True)
class SegmentFacts:
    """What a filter can see of one contact (mirrors the columns ``compile_sql`` reads)."""

    email: str | None
    name: str | None
    locale: str
    attributes: Mapping[str, object]
    last_activity_at: datetime | None
    topics: frozenset[str]


# --- describe --------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _literal(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")  # never "1E+3": the grammar has no exponent
    return _quote(value)


def as_text(value: Value) -> str:
    # How a text field or a text operator reads a typed literal: as it is written.
    return value if isinstance(value, str) else _literal(value)


def _describe(node: Node) -> str:
    match node:
        case Compare(field, op, value):
            return f"{field.describe()} {op} {_literal(value)}"
        case InList(field, values):
            return f"{field.describe()} in ({', '.join(_literal(v) for v in values)})"
        case Exists(field):
            return f"{field.describe()} exists"
        case Within(amount, unit):
            return f"last_activity within {amount} {unit[:-1] if amount == 1 else unit}"
        case Topic(slug, subscribed):
            return f"topic {'=' if subscribed else '!='} {_quote(slug)}"
        case Not(operand):
            inner = _describe(operand)
            return f"not ({inner})" if isinstance(operand, And | Or) else f"not {inner}"
        case And(operands):
            return " and ".join(
                f"({_describe(o)})" if isinstance(o, And | Or) else _describe(o) for o in operands
            )
        case Or(operands):
            # "and" binds tighter than "or": only a nested Or would need parentheses.
            return " or ".join(
                f"({_describe(o)})" if isinstance(o, Or) else _describe(o) for o in operands
            )
    raise TypeError(f"not a segment node: {node!r}")
