"""The audience filter language's parser: text to a Segment, or a SegmentError that names the
character where the filter goes wrong."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, cast

from mailer.core.counts import parse_count
from mailer.core.segment import (
    MAX_CONDITIONS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_MONTHS,
    ORDER_OPS,
    TEXT_FIELDS,
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
    SegmentError,
    Topic,
    Value,
    Within,
)

__all__ = ["parse"]

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
        n = parse_count(amount.text) if amount.kind == "word" else None
        if n is None:
            raise self.error("expected a whole number after 'within'", amount)
        unit = self.take()
        plural = {"month": "months", "months": "months", "day": "days", "days": "days"}
        if unit.keyword not in plural:
            raise self.error(f"expected 'months' or 'days', found {unit.shown()}", unit)
        kind = plural[unit.keyword]
        # Keeps now - interval inside both datetime's and Postgres's range.
        limit = MAX_MONTHS if kind == "months" else MAX_DAYS
        if n > limit:
            raise self.error(f"at most {limit} {kind}", amount)
        return Within(n, cast(Literal["months", "days"], kind))


def parse(text: str) -> Segment:
    """Parse a filter into its AST; raise SegmentError naming the position of the fault."""
    return _Parser(text).parse()
