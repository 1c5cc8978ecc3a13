"""The audience filter compiled to a SQL boolean over the contact row: values travel only as
``$n`` parameters, never inside the SQL text (the typing rules: mailer.core.segment)."""

from __future__ import annotations

import re
from decimal import Decimal

from mailer.core.segment import (
    ORDER_OPS,
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
    Topic,
    Value,
    Within,
    as_text,
)

__all__ = ["compile_sql"]

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
            rhs = ", ".join(_text_param(field, as_text(v), params) for v in values)
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
            return _text_match(_text_source(field), op, params.add(as_text(value)))
        return f"{_text_column(field)} {sql_op} {_text_param(field, as_text(value), params)}"
    path = params.add(list(field.path))
    json = f"(c.attributes #> {path}::text[])"
    is_string = f"jsonb_typeof({json}) = 'string'"
    text = f"(c.attributes #>> {path}::text[])"
    if op in TEXT_OPS:
        return f"{is_string} AND {_text_match(text, op, params.add(as_text(value)))}"
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
