"""Audience filter language: parse, describe, compile to parameterised SQL, evaluate in Python.

Operators narrow a campaign's audience with filters such as
``locale in (fr, en) and not attributes.vip = true``. One AST feeds two back ends that must
agree on every contact: ``compile_sql`` (the audience query) and ``evaluate`` (``contacts
explain`` and the SQL-vs-Python property test).

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

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, TypeVar, cast

from mailer.core.consent import add_months

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
    "compile_sql",
    "evaluate",
    "parse",
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


def _as_text(value: Value) -> str:
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


# --- tokens ----------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9_.@-]+")
_OP_RUN = re.compile(r"[!=<>]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")  # JSON numbers without exponent
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\"}
_COMPARE_OPS = frozenset({"=", "!=", "<", "<=", ">", ">="})


@dataclass(frozen=True)
class _Token:
    kind: Literal["word", "string", "op", "punct", "end"]
    text: str  # the word, the decoded string, the operator or the punctuation
    pos: int

    @property
    def keyword(self) -> str:
        return self.text.lower() if self.kind == "word" else ""

    def shown(self) -> str:
        return "the end of the filter" if self.kind == "end" else repr(self.text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "(),":
            tokens.append(_Token("punct", ch, i))
            i += 1
        elif ch in "\"'":
            value, i_next = _read_string(text, i)
            tokens.append(_Token("string", value, i))
            i = i_next
        elif m := _OP_RUN.match(text, i):
            if m.group() not in _COMPARE_OPS:
                raise SegmentError(f"unknown operator {m.group()!r}", i, text)
            tokens.append(_Token("op", m.group(), i))
            i = m.end()
        elif m := _WORD.match(text, i):
            tokens.append(_Token("word", m.group(), i))
            i = m.end()
        else:
            raise SegmentError(f"unexpected character {ch!r}", i, text)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped not in _ESCAPES:
                raise SegmentError("unknown escape (use \\\" \\' or \\\\)", i, text)
            out.append(_ESCAPES[escaped])
            i += 2
            continue
        # Postgres text holds neither NUL nor lone surrogates: refuse here, not mid-send.
        if ch == "\0" or "\ud800" <= ch <= "\udfff":
            raise SegmentError(f"character {ch!r} is not allowed in a string", i, text)
        out.append(ch)
        i += 1
    raise SegmentError("unterminated string", start, text)


# --- parser ----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.conditions = 0

    def error(self, message: str, token: _Token) -> SegmentError:
        return SegmentError(message, token.pos, self.text)

    @property
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def at_keyword(self, word: str) -> bool:
        return self.peek.keyword == word

    def at_punct(self, punct: str) -> bool:
        return self.peek.kind == "punct" and self.peek.text == punct

    def parse(self) -> Segment:
        if self.peek.kind == "end":
            raise self.error("the filter is empty", self.peek)
        root = self.or_(0)
        if self.i != len(self.tokens) - 1:
            raise self.error(
                f"expected 'and', 'or' or the end of the filter, found {self.peek.shown()}",
                self.peek,
            )
        return Segment(root)

    def or_(self, depth: int) -> Node:
        operands = [self.and_(depth)]
        while self.at_keyword("or"):
            self.take()
            operands.append(self.and_(depth))
        if len(operands) == 1:
            return operands[0]
        # Flatten "(a or b) or c": one normal form per meaning keeps describe() canonical.
        return Or(tuple(x for o in operands for x in (o.operands if isinstance(o, Or) else (o,))))

    def and_(self, depth: int) -> Node:
        operands = [self.unary(depth)]
        while self.at_keyword("and"):
            self.take()
            operands.append(self.unary(depth))
        if len(operands) == 1:
            return operands[0]
        return And(tuple(x for o in operands for x in (o.operands if isinstance(o, And) else (o,))))

    def unary(self, depth: int) -> Node:
        token = self.peek
        if token.keyword == "not" or (token.kind == "punct" and token.text == "("):
            # Bounds recursion and the SQL's nesting whatever the input.
            if depth >= MAX_DEPTH:
                raise self.error(f"nesting deeper than {MAX_DEPTH}", token)
            self.take()
            if token.kind == "word":
                return Not(self.unary(depth + 1))
            inner = self.or_(depth + 1)
            if not self.at_punct(")"):
                raise self.error(f"expected ')', found {self.peek.shown()}", self.peek)
            self.take()
            return inner
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise self.error(f"more than {MAX_CONDITIONS} conditions", token)
        return self.condition()

    def condition(self) -> Node:
        token = self.take()
        name = token.keyword
        if token.kind != "word":
            raise self.error(f"expected a condition, found {token.shown()}", token)
        if name == "topic":
            return self.topic(token)
        if name == "last_activity":
            return self.within()
        field = self.field(token)
        op = self.take()
        if op.kind == "op":
            return Compare(field, cast(Op, op.text), self.value(field, op, after=op.text))
        if op.keyword in TEXT_OPS:
            value = self.value(field, op, after=op.keyword)
            return Compare(field, cast(Op, op.keyword), value)
        if op.keyword == "in":
            return InList(field, self.in_values(field))
        if op.keyword == "exists":
            if field.name != "attributes":
                raise self.error("only attributes.<key> can be tested with 'exists'", op)
            return Exists(field)
        if op.kind == "word":
            raise self.error(f"unknown operator {op.text!r} after {field.describe()}", op)
        raise self.error(f"expected an operator after {field.describe()}, found {op.shown()}", op)

    def field(self, token: _Token) -> Field:
        head, _, rest = token.text.partition(".")
        if head.lower() in TEXT_FIELDS and not rest:
            return Field(cast(Literal["locale", "email_domain", "name"], head.lower()))
        if head.lower() != "attributes":
            raise self.error(
                f"unknown field {token.text!r} (expected locale, email_domain, name, "
                "attributes.<key>, topic or last_activity)",
                token,
            )
        keys = rest.split(".") if rest else []
        offset = token.pos + len(head) + 1
        if not keys:
            raise self.error("expected attributes.<key>", token)
        for key in keys:
            if not _IDENT.fullmatch(key):
                raise SegmentError(
                    f"attribute key {key!r} must match [A-Za-z_][A-Za-z0-9_]{{0,62}}",
                    offset,
                    self.text,
                )
            offset += len(key) + 1
        return Field("attributes", tuple(keys))

    def value(self, field: Field, op: _Token, *, after: str) -> Value:
        token = self.take()
        if token.kind == "string":
            return token.text
        if token.kind != "word":
            raise self.error(f"expected a value after {after!r}", token)
        # Text fields and text operators read every value as text: `name = 42` means "42".
        if field.name != "attributes" or op.keyword in TEXT_OPS:
            return token.text
        if _NUMBER.fullmatch(token.text):
            return Decimal(token.text)
        if token.keyword in ("true", "false"):
            if op.text in ORDER_OPS:
                raise self.error(f"{op.text!r} needs a number or a text value", token)
            return token.keyword == "true"
        return token.text

    def in_values(self, field: Field) -> tuple[Value, ...]:
        if not self.at_punct("("):
            raise self.error(f"expected '(' after 'in', found {self.peek.shown()}", self.peek)
        eq = _Token("op", "=", self.take().pos)
        values = [self.value(field, eq, after="(")]
        while self.at_punct(","):
            self.take()
            if len(values) == MAX_IN_VALUES:
                raise self.error(f"more than {MAX_IN_VALUES} values in a list", self.peek)
            values.append(self.value(field, eq, after=","))
        if not self.at_punct(")"):
            raise self.error(f"expected ',' or ')', found {self.peek.shown()}", self.peek)
        self.take()
        return tuple(values)

    def topic(self, token: _Token) -> Topic:
        op = self.take()
        if op.kind != "op" or op.text not in ("=", "!="):
            raise self.error(f"expected '=' or '!=' after 'topic', found {op.shown()}", op)
        slug = self.take()
        if slug.kind not in ("string", "word"):
            raise self.error(f"expected a topic after {op.text!r}", slug)
        return Topic(slug.text, subscribed=op.text == "=")

    def within(self) -> Within:
        if not self.at_keyword("within"):
            raise self.error(
                f"expected 'within' after 'last_activity', found {self.peek.shown()}", self.peek
            )
        self.take()
        amount = self.take()
        if amount.kind != "word" or not amount.text.isdigit():
            raise self.error("expected a whole number after 'within'", amount)
        unit = self.take()
        plural = {"month": "months", "months": "months", "day": "days", "days": "days"}
        if unit.keyword not in plural:
            raise self.error(f"expected 'months' or 'days', found {unit.shown()}", unit)
        n, kind = int(amount.text), plural[unit.keyword]
        # Keeps now - interval inside both datetime's and Postgres's range.
        limit = MAX_MONTHS if kind == "months" else MAX_DAYS
        if n > limit:
            raise self.error(f"at most {limit} {kind}", amount)
        return Within(n, cast(Literal["months", "days"], kind))


def parse(text: str) -> Segment:
    """Parse a filter into its AST; raise SegmentError naming the position of the fault."""
    return _Parser(text).parse()


# --- SQL -------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$[1-9][0-9]*")
_TOPIC_SQL = (
    "EXISTS (SELECT 1 FROM contact_topics ct JOIN topics tp ON tp.id = ct.topic_id"
    " WHERE ct.contact_id = c.id AND tp.slug = {slug} AND ct.subscribed)"
)


class _Params:
    def __init__(self, first: int) -> None:
        self.next = first
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        self.next += 1
        return f"${self.next - 1}"


def compile_sql(ast: Segment, *, first_param: int, now_param: str) -> tuple[str, list[object]]:
    """Compile to a SQL boolean over contact alias ``c``; values only ever travel as params."""
    if first_param < 1:
        raise ValueError("first_param must be 1 or more")
    if not _PLACEHOLDER.fullmatch(now_param):
        raise ValueError(f"now_param must be a placeholder such as $3, not {now_param!r}")
    params = _Params(first_param)
    return _sql(ast.root, params, now_param), params.values


def _sql(node: Node, params: _Params, now: str) -> str:
    match node:
        case Not(operand):
            return f"(NOT {_sql(operand, params, now)})"
        case And(operands) | Or(operands):
            joiner = " AND " if isinstance(node, And) else " OR "
            return "(" + joiner.join(_sql(o, params, now) for o in operands) + ")"
        case Topic(slug, subscribed):
            exists = _TOPIC_SQL.format(slug=f"{params.add(slug)}::text")
            return exists if subscribed else f"(NOT {exists})"
        case Within(amount, unit):
            # Computed on UTC wall time so the session TimeZone cannot move month/day edges.
            n = params.add(amount)
            cutoff = (
                f"(({now}::timestamptz AT TIME ZONE 'UTC') - make_interval({unit} => {n}::int))"
                " AT TIME ZONE 'UTC'"
            )
            return f"COALESCE(c.last_activity_at >= {cutoff}, false)"
        case Exists(field):
            return f"((c.attributes #> {params.add(list(field.path))}::text[]) IS NOT NULL)"
        case InList(field, values) if field.name != "attributes":
            lhs = _text_column(field)
            rhs = ", ".join(_text_param(field, _as_text(v), params) for v in values)
            return f"COALESCE({lhs} IN ({rhs}), false)"
        case InList(field, values):
            path = params.add(list(field.path))
            rhs = ", ".join(_jsonb_param(v, params) for v in values)
            return f"COALESCE((c.attributes #> {path}::text[]) IN ({rhs}), false)"
        case Compare(field, op, value):
            return f"COALESCE({_compare_sql(field, op, value, params)}, false)"
    raise TypeError(f"not a segment node: {node!r}")


def _compare_sql(field: Field, op: Op, value: Value, params: _Params) -> str:
    sql_op = "<>" if op == "!=" else op
    if field.name != "attributes":
        if op in TEXT_OPS:
            return _text_match(_text_source(field), op, params.add(_as_text(value)))
        return f"{_text_column(field)} {sql_op} {_text_param(field, _as_text(value), params)}"
    path = params.add(list(field.path))
    json = f"(c.attributes #> {path}::text[])"
    is_string = f"jsonb_typeof({json}) = 'string'"
    text = f"(c.attributes #>> {path}::text[])"
    if op in TEXT_OPS:
        return f"{is_string} AND {_text_match(text, op, params.add(_as_text(value)))}"
    if op in ORDER_OPS and isinstance(value, str):
        return f'{is_string} AND ({text} COLLATE "C") {sql_op} {params.add(value)}::text'
    if op in ORDER_OPS:
        # jsonb orders across types (string < number); the type test keeps that out.
        return f"jsonb_typeof({json}) = 'number' AND {json} {sql_op} {_jsonb_param(value, params)}"
    return f"{json} {sql_op} {_jsonb_param(value, params)}"


def _fold_sql(text: str) -> str:
    # lower() under "C" folds ASCII letters only, like _ASCII_LOWER, whatever the locale.
    return f'lower({text} COLLATE "C")'


def _text_source(field: Field) -> str:
    return "split_part(c.email, '@', 2)" if field.name == "email_domain" else f"c.{field.name}"


def _text_column(field: Field) -> str:
    if field.name == "email_domain":
        return _fold_sql(_text_source(field))  # RFC 4343: domains are case-insensitive
    return f'({_text_source(field)} COLLATE "C")'


def _text_param(field: Field, value: str, params: _Params) -> str:
    placeholder = f"{params.add(value)}::text"
    return _fold_sql(placeholder) if field.name == "email_domain" else placeholder


def _text_match(haystack: str, op: Op, needle_param: str) -> str:
    # strpos/starts_with, never LIKE: a user's % or _ stays a literal character.
    h, n = _fold_sql(haystack), _fold_sql(f"{needle_param}::text")
    return f"strpos({h}, {n}) > 0" if op == "contains" else f"starts_with({h}, {n})"


def _jsonb_param(value: Value, params: _Params) -> str:
    if isinstance(value, bool):
        return f"to_jsonb({params.add(value)}::boolean)"
    if isinstance(value, Decimal):
        return f"to_jsonb({params.add(value)}::numeric)"
    return f"to_jsonb({params.add(value)}::text)"


# --- Python evaluation -----------------------------------------------------------------------

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
    text = _as_text(value)
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
        return isinstance(actual, str) and _compare_text(actual, op, _as_text(value))
    number = _json_number(actual)
    return isinstance(value, Decimal) and number is not None and _order(number, op, value)
