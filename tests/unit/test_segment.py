"""The audience filter language: parsing, errors, describe round trip, SQL shape, evaluation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.segment import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_IN_VALUES,
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
    SegmentFacts,
    Topic,
    Value,
    Within,
)
from mailer.core.segment_eval import evaluate
from mailer.core.segment_parser import parse
from mailer.core.segment_sql import compile_sql

NOW = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
LOCALE = Field("locale")
NAME = Field("name")
DOMAIN = Field("email_domain")


def attr(*path: str) -> Field:
    return Field("attributes", path)


def facts(
    *,
    email: str | None = "ann@example.com",
    name: str | None = "Ann",
    locale: str = "fr",
    attributes: Mapping[str, object] | None = None,
    last_activity_at: datetime | None = None,
    topics: frozenset[str] = frozenset(),
) -> SegmentFacts:
    return SegmentFacts(
        email=email,
        name=name,
        locale=locale,
        attributes=attributes if attributes is not None else {},
        last_activity_at=last_activity_at,
        topics=topics,
    )


def matches(text: str, contact: SegmentFacts, now: datetime = NOW) -> bool:
    return evaluate(parse(text), contact, now)


# --- Strategies, reusable by the SQL-vs-Python agreement test against Postgres --------------

KEYS = st.sampled_from(["vip", "vehicle", "mileage", "a", "B_2"])
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(tuple)
# Postgres text holds neither NUL nor lone surrogates; the parser refuses both.
TEXTS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=8)
NUMBERS = st.one_of(
    st.integers(-(10**12), 10**12).map(Decimal),
    st.decimals(min_value=-1000, max_value=1000, places=3),
)
JSON_LITERALS: st.SearchStrategy[Value] = st.one_of(TEXTS, NUMBERS, st.booleans())


OPS: list[Op] = ["=", "!=", "<", "<=", ">", ">=", "contains", "startswith"]


@st.composite
def compares(draw: st.DrawFn) -> Compare:
    field = draw(st.sampled_from([LOCALE, NAME, DOMAIN]) | PATHS.map(lambda p: attr(*p)))
    op = draw(st.sampled_from(OPS))
    if field.name != "attributes" or op in ("contains", "startswith"):
        return Compare(field, op, draw(TEXTS))
    if op in ("=", "!="):
        return Compare(field, op, draw(JSON_LITERALS))
    return Compare(field, op, draw(TEXTS | NUMBERS))


@st.composite
def in_lists(draw: st.DrawFn) -> InList:
    if draw(st.booleans()):
        field = draw(st.sampled_from([LOCALE, NAME, DOMAIN]))
        return InList(field, tuple(draw(st.lists(TEXTS, min_size=1, max_size=4))))
    field = attr(*draw(PATHS))
    return InList(field, tuple(draw(st.lists(JSON_LITERALS, min_size=1, max_size=4))))


CONDITIONS: st.SearchStrategy[Node] = st.one_of(
    compares(),
    in_lists(),
    PATHS.map(lambda p: Exists(attr(*p))),
    st.builds(Within, st.integers(0, 40), st.sampled_from(["months", "days"])),
    st.builds(Topic, st.sampled_from(["service", "news", "o'neil"]) | TEXTS, st.booleans()),
)


def _connect(kind: type[And] | type[Or], children: list[Node]) -> Node:
    # The parser's normal form: an And never holds an And, an Or never an Or.
    flat = tuple(x for c in children for x in (c.operands if isinstance(c, kind) else (c,)))
    return kind(flat)


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    many = st.lists(children, min_size=2, max_size=3)
    return st.one_of(
        children.map(Not),
        many.map(lambda cs: _connect(And, cs)),
        many.map(lambda cs: _connect(Or, cs)),
    )


SEGMENTS = st.recursive(CONDITIONS, _extend, max_leaves=8).map(Segment)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-100, 100) | st.floats(-100, 100) | TEXTS,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
CONTACTS = st.builds(
    SegmentFacts,
    email=st.none() | st.sampled_from(["ann@Example.COM", "bob@example.com", "x@y@z", "no-at"]),
    name=st.none() | TEXTS,
    locale=st.sampled_from(["fr", "en", "fr-CA"]),
    attributes=st.dictionaries(KEYS, JSON_VALUES, max_size=4),
    last_activity_at=st.none()
    | st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
    ),
    topics=st.frozensets(st.sampled_from(["service", "news"]), max_size=2),
)


# --- Parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "root"),
    [
        ("locale = fr", Compare(LOCALE, "=", "fr")),
        ('attributes.vehicle = "SUV"', Compare(attr("vehicle"), "=", "SUV")),
        ("last_activity within 12 months", Within(12, "months")),
        ('topic = "service"', Topic("service")),
        (
            "locale in (fr, en) and not attributes.vip = true",
            And((InList(LOCALE, ("fr", "en")), Not(Compare(attr("vip"), "=", True)))),
        ),
        ("attributes.mileage >= 50000", Compare(attr("mileage"), ">=", Decimal(50000))),
        ("attributes.car.make exists", Exists(attr("car", "make"))),
        ("topic != news", Topic("news", subscribed=False)),
        ("last_activity within 1 day", Within(1, "days")),
        ("email_domain startswith gmail", Compare(DOMAIN, "startswith", "gmail")),
        ("name contains 'o\\'neil'", Compare(NAME, "contains", "o'neil")),
    ],
)
def test_filters_parse_into_their_ast(text: str, root: Node) -> None:
    assert parse(text) == Segment(root)


def test_keywords_and_fields_are_case_insensitive_but_attribute_keys_are_not() -> None:
    assert parse("LOCALE = fr AND NOT Attributes.VIP = TRUE") == Segment(
        And((Compare(LOCALE, "=", "fr"), Not(Compare(attr("VIP"), "=", True))))
    )


def test_attribute_values_are_typed_by_how_they_are_written() -> None:
    values = parse('attributes.x in (01234, "12", 12, -1.50, true, FALSE, fr-CA, a@b.c, 1.2.3)')
    assert values.root == InList(
        attr("x"),
        ("01234", "12", Decimal(12), Decimal("-1.50"), True, False, "fr-CA", "a@b.c", "1.2.3"),
    )


def test_text_fields_and_text_operators_read_every_value_as_text() -> None:
    assert parse("name = 42").root == Compare(NAME, "=", "42")
    assert parse("locale in (true, 1.0)").root == InList(LOCALE, ("true", "1.0"))
    assert parse("attributes.code startswith 12").root == Compare(attr("code"), "startswith", "12")


def test_string_escapes_decode_quotes_and_backslashes() -> None:
    assert parse(r'name = "a\"b\'c\\d"').root == Compare(NAME, "=", "a\"b'c\\d")
    assert parse(r"name = 'say \"hi\"'").root == Compare(NAME, "=", 'say "hi"')


def test_and_binds_tighter_than_or_and_same_connective_groups_are_flattened() -> None:
    a, b, c = (Compare(LOCALE, "=", x) for x in "abc")
    assert parse("locale = a or locale = b and locale = c").root == Or((a, And((b, c))))
    assert parse("(locale = a and locale = b) and locale = c").root == And((a, b, c))
    assert parse("(locale = a or locale = b) and locale = c").root == And((Or((a, b)), c))


def test_nesting_and_conditions_up_to_the_limits_are_accepted() -> None:
    assert parse("(" * MAX_DEPTH + "locale = x" + ")" * MAX_DEPTH)
    assert parse("not " * MAX_DEPTH + "locale = x")
    assert parse(" or ".join(["locale = x"] * MAX_CONDITIONS))
    assert parse(f"attributes.{'k' * 63} exists")
    assert parse(f"locale in ({', '.join(['x'] * MAX_IN_VALUES)})")


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "the filter is empty", 0),
        ("   ", "the filter is empty", 3),
        ("locale = ", "expected a value after '='", 9),
        ("locale in (fr, )", "expected a value after ','", 15),
        ("city = paris", "unknown field 'city'", 0),
        ("attributes = 1", "expected attributes.<key>", 0),
        ("locale like fr", "unknown operator 'like' after locale", 7),
        ("locale == fr", "unknown operator '=='", 7),
        ("locale <> fr", "unknown operator '<>'", 7),
        ("locale", "expected an operator after locale, found the end of the filter", 6),
        ('name = "Ann', "unterminated string", 7),
        ("name = 'Ann\\'", "unterminated string", 7),
        ('name = "a\\n"', "unknown escape", 9),
        ("locale = fr fr", "expected 'and', 'or' or the end of the filter, found 'fr'", 12),
        ("locale = fr)", "expected 'and', 'or' or the end of the filter, found ')'", 11),
        ("(locale = fr", "expected ')', found the end of the filter", 12),
        ("locale = fr and", "expected a condition, found the end of the filter", 15),
        ("locale = fr; drop", "unexpected character ';'", 11),
        ("attributes.1x = 1", "attribute key '1x' must match", 11),
        ("attributes.a..b = 1", "attribute key '' must match", 13),
        (f"attributes.a.{'k' * 64} = 1", "attribute key 'kkk", 13),
        ("attributes.x < true", "'<' needs a number or a text value", 15),
        ("name exists", "only attributes.<key> can be tested with 'exists'", 5),
        ("topic contains x", "expected '=' or '!=' after 'topic', found 'contains'", 6),
        ("topic = ", "expected a topic after '='", 8),
        ("last_activity > 3", "expected 'within' after 'last_activity'", 14),
        ("last_activity within 1.5 months", "expected a whole number after 'within'", 21),
        ("last_activity within 3 weeks", "expected 'months' or 'days', found 'weeks'", 23),
        ("last_activity within 1201 months", "at most 1200 months", 21),
        ("locale in fr", "expected '(' after 'in', found 'fr'", 10),
        ("locale in (a b)", "expected ',' or ')', found 'b'", 13),
    ],
)
def test_bad_filters_are_rejected_at_the_position_of_the_fault(
    text: str, message: str, position: int
) -> None:
    with pytest.raises(SegmentError) as caught:
        parse(text)
    assert caught.value.message.startswith(message)
    assert caught.value.position == position


def test_nesting_deeper_than_the_limit_is_rejected_at_the_offending_parenthesis() -> None:
    with pytest.raises(SegmentError, match="nesting deeper than 32") as caught:
        parse("(" * (MAX_DEPTH + 1) + "locale = x" + ")" * (MAX_DEPTH + 1))
    assert caught.value.position == MAX_DEPTH
    with pytest.raises(SegmentError, match="nesting deeper than 32") as caught:
        parse("not " * (MAX_DEPTH + 1) + "locale = x")
    assert caught.value.position == 4 * MAX_DEPTH


def test_more_conditions_than_the_limit_are_rejected_at_the_first_one_too_many() -> None:
    with pytest.raises(SegmentError, match="more than 200 conditions") as caught:
        parse(" or ".join(["locale = x"] * (MAX_CONDITIONS + 1)))
    assert caught.value.position == len("locale = x or ") * MAX_CONDITIONS


def test_an_in_list_longer_than_the_limit_is_rejected() -> None:
    with pytest.raises(SegmentError, match="more than 200 values"):
        parse(f"locale in ({', '.join(['x'] * (MAX_IN_VALUES + 1))})")


def test_strings_postgres_cannot_store_are_rejected() -> None:
    with pytest.raises(SegmentError, match="not allowed") as caught:
        parse('name = "a\0b"')
    assert caught.value.position == 9


def test_the_error_shows_the_filter_with_a_caret_under_the_position() -> None:
    with pytest.raises(SegmentError) as caught:
        parse("locale =\tfr and city = x")
    assert str(caught.value) == (
        "unknown field 'city' (expected locale, email_domain, name, attributes.<key>, "
        "topic or last_activity) at position 16\n"
        "  locale = fr and city = x\n"
        "                  ^"
    )


# --- describe --------------------------------------------------------------------------------


def test_describe_normalises_case_spacing_quotes_and_units() -> None:
    text = "  LOCALE=fr AND(Topic!=news OR last_activity WITHIN 1 MONTHS)or NOT(name='O\\'Neil')"
    assert parse(text).describe() == (
        'locale = "fr" and (topic != "news" or last_activity within 1 month)'
        ' or not name = "O\'Neil"'
    )
    assert parse('attributes.x in (1.50, true, "a\\"b\\\\")').describe() == (
        'attributes.x in (1.50, true, "a\\"b\\\\")'
    )


def test_describe_keeps_the_parentheses_that_carry_meaning() -> None:
    text = 'not (locale = "a" or locale = "b") and (name = "c" or name = "d")'
    assert parse(text).describe() == text


def test_describe_never_writes_an_exponent() -> None:
    assert Segment(Compare(attr("x"), ">", Decimal("1E+3"))).describe() == "attributes.x > 1000"


@settings(max_examples=300, deadline=None)
@given(SEGMENTS)
def test_describe_round_trips_through_parse(segment: Segment) -> None:
    assert parse(segment.describe()) == segment


# --- SQL -------------------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE contacts; --",
    "$1",
    "\\",
    "\\'",
    'a"b',
    "%_",
    "x' OR '1'='1",
    "$$ $$",
    "); SELECT pg_sleep(10); --",
    "E'\\x41'",
]


def hostile_segments(value: str) -> list[Segment]:
    # One segment per place a value can reach the SQL.
    roots: list[Node] = [
        *(Compare(NAME, op, value) for op in ("=", "!=", "<", ">=", "contains", "startswith")),
        Compare(DOMAIN, "=", value),
        Compare(DOMAIN, "contains", value),
        InList(LOCALE, ("fr", value)),
        InList(DOMAIN, (value,)),
        *(Compare(attr("a", "b"), op, value) for op in ("=", "!=", "<", "contains", "startswith")),
        InList(attr("a"), (value, Decimal(1), True)),
        Topic(value),
        Topic(value, subscribed=False),
    ]
    return [Segment(Not(And((root, Compare(LOCALE, "=", value))))) for root in roots]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_travel_only_as_parameters(value: str) -> None:
    for segment in hostile_segments(value):
        sql, params = compile_sql(segment, first_param=2, now_param="$1")
        benign_sql, _ = compile_sql(
            Segment(_replace_values(segment.root, "benign")), first_param=2, now_param="$1"
        )
        assert sql == benign_sql
        assert value in params
        assert value not in re.sub(r"\$\d+", "", sql)


def test_a_hostile_filter_text_compiles_to_parameters_only() -> None:
    segment = parse(r"name = 'x\' OR 1=1; --' or attributes.a contains '%' or topic = '$1'")
    sql, params = compile_sql(segment, first_param=5, now_param="$4")
    assert params == ["x' OR 1=1; --", ["a"], "%", "$1"]
    assert "OR 1=1" not in sql
    assert "LIKE" not in sql.upper()
    assert set(re.findall(r"\$\d+", sql)) == {"$5", "$6", "$7", "$8"}


def _replace_values(node: Node, text: str) -> Node:
    def value(v: Value) -> Value:
        return text if isinstance(v, str) else Decimal(7) if isinstance(v, Decimal) else True

    match node:
        case Compare(field, op, v):
            return Compare(field, op, value(v))
        case InList(field, values):
            return InList(field, tuple(value(v) for v in values))
        case Topic(_, subscribed):
            return Topic(text, subscribed)
        case Within(_, unit):
            return Within(3, unit)
        case Not(operand):
            return Not(_replace_values(operand, text))
        case And(operands):
            return And(tuple(_replace_values(o, text) for o in operands))
        case Or(operands):
            return Or(tuple(_replace_values(o, text) for o in operands))
    return node


@settings(max_examples=200, deadline=None)
@given(SEGMENTS, st.integers(1, 50))
def test_sql_text_depends_on_the_filter_shape_never_on_its_values(
    segment: Segment, first_param: int
) -> None:
    sql, params = compile_sql(segment, first_param=first_param, now_param="$99")
    other_sql, other_params = compile_sql(
        Segment(_replace_values(segment.root, "other")), first_param=first_param, now_param="$99"
    )
    assert sql == other_sql
    assert len(params) == len(other_params)
    used = {int(n) for n in re.findall(r"\$(\d+)", sql)} - {99}
    assert used == set(range(first_param, first_param + len(params)))


def test_compile_sql_numbers_parameters_from_first_param_in_order() -> None:
    segment = parse("locale in (fr, en) and attributes.mileage >= 50000 and topic = service")
    sql, params = compile_sql(segment, first_param=3, now_param="$2")
    assert params == ["fr", "en", ["mileage"], Decimal(50000), "service"]
    assert re.findall(r"\$\d+", sql) == ["$3", "$4", "$5", "$5", "$6", "$7"]


def test_within_counts_back_from_the_send_time_parameter_in_utc() -> None:
    sql, params = compile_sql(parse("last_activity within 6 days"), first_param=4, now_param="$3")
    assert params == [6]
    assert sql == (
        "COALESCE(c.last_activity_at >= (($3::timestamptz AT TIME ZONE 'UTC')"
        " - make_interval(days => $4::int)) AT TIME ZONE 'UTC', false)"
    )


def test_topic_membership_is_an_exists_over_subscribed_topics() -> None:
    sql, params = compile_sql(parse("topic = service"), first_param=1, now_param="$9")
    assert sql == (
        "EXISTS (SELECT 1 FROM contact_topics ct JOIN topics tp ON tp.id = ct.topic_id"
        " WHERE ct.contact_id = c.id AND tp.slug = $1::text AND ct.subscribed)"
    )
    assert params == ["service"]


def test_not_only_ever_wraps_expressions_that_cannot_be_null() -> None:
    sql, _ = compile_sql(parse("not attributes.vip = true"), first_param=1, now_param="$9")
    assert sql == "(NOT COALESCE((c.attributes #> $1::text[]) = to_jsonb($2::boolean), false))"


@pytest.mark.parametrize("now_param", ["now()", "$0", "$1; --", "3", ""])
def test_compile_sql_refuses_a_now_param_that_is_not_a_placeholder(now_param: str) -> None:
    with pytest.raises(ValueError, match="now_param"):
        compile_sql(parse("locale = fr"), first_param=1, now_param=now_param)


def test_compile_sql_refuses_parameter_numbers_below_one() -> None:
    with pytest.raises(ValueError, match="first_param"):
        compile_sql(parse("locale = fr"), first_param=0, now_param="$1")


# --- Python evaluation -----------------------------------------------------------------------

VIP = {"vip": True, "mileage": 60000, "vehicle": "SUV", "note": None, "car": {"make": "Kia"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Present, same type.
        ("attributes.vip = true", True),
        ("attributes.vip != true", False),
        ("attributes.mileage >= 50000", True),
        ("attributes.mileage = 60000.0", True),
        ("attributes.mileage < 60000", False),
        ('attributes.vehicle = "SUV"', True),
        ("attributes.vehicle contains u", True),
        ("attributes.vehicle startswith su", True),
        ("attributes.vehicle > R", True),
        ("attributes.car.make = Kia", True),
        # Present, other type: equality is false, inequality true, order and text ops false.
        ('attributes.mileage = "60000"', False),
        ('attributes.mileage != "60000"', True),
        ("attributes.vip = 1", False),
        ("attributes.vip != 1", True),
        ("attributes.vehicle > 1", False),
        ("attributes.mileage contains 6", False),
        ('attributes.mileage > "1"', False),
        ("attributes.car = Kia", False),
        ("attributes.car != Kia", True),
        # JSON null is present: it exists and differs from every literal.
        ("attributes.note exists", True),
        ("attributes.note = x", False),
        ("attributes.note != x", True),
        ("attributes.note < 1", False),
        # Missing: every comparison is false, != included; not of it is true.
        ("attributes.boat exists", False),
        ("attributes.boat = x", False),
        ("attributes.boat != x", False),
        ("not attributes.boat = x", True),
        ("not attributes.boat != x", True),
        ("attributes.boat < 1", False),
        ("attributes.boat contains x", False),
        ("attributes.boat in (x, 1, true)", False),
        ("not attributes.boat in (x, 1)", True),
        ("attributes.vehicle.size = x", False),
        ("attributes.car.make.x exists", False),
        # in is equality with any value.
        ("attributes.mileage in (x, 60000)", True),
        ("attributes.vip in (false, 1)", False),
    ],
)
def test_attribute_comparisons_follow_the_json_typing_rule(text: str, expected: bool) -> None:
    assert matches(text, facts(attributes=VIP)) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("locale = fr", True),
        ("locale = FR", False),
        ("locale in (en, fr)", True),
        ("locale != fr", False),
        ("email_domain = example.com", True),
        ("email_domain = EXAMPLE.Com", True),
        ("email_domain startswith EXA", True),
        ("email_domain > example.co", True),
        ("name = Ann", True),
        ("name contains AN", True),
        ("name startswith nn", False),
        ('name contains ""', True),
        ("name contains '%'", False),
        ("name > B", False),
        ("name < a", True),  # code point order: "A" < "a"
    ],
)
def test_text_field_comparisons(text: str, expected: bool) -> None:
    contact = facts(email="ann@Example.COM", name="Ann", locale="fr")
    assert matches(text, contact) is expected


def test_a_missing_name_or_email_fails_every_comparison_and_satisfies_not() -> None:
    contact = facts(email=None, name=None)
    for text in ("name = Ann", "name != Ann", "email_domain != x", "name contains ''"):
        assert not matches(text, contact)
        assert matches(f"not {text}", contact)


def test_email_domain_is_what_follows_the_first_at_sign() -> None:
    assert matches('email_domain = ""', facts(email="no-at-sign"))
    assert matches("email_domain = b", facts(email="a@b@c"))


def test_case_folding_is_ascii_only_whatever_the_locale() -> None:
    contact = facts(name="Élodie", email="x@BÜCHER.de")
    assert matches("name startswith 'Él'", contact)
    assert not matches("name startswith 'él'", contact)
    assert matches("email_domain = 'bÜcher.de'", contact)
    assert not matches("email_domain = 'bücher.de'", contact)


def test_numbers_compare_by_value_whatever_their_python_type() -> None:
    contact = facts(attributes={"f": 0.1, "i": 10, "d": Decimal("2.50")})
    assert matches("attributes.f = 0.1", contact)
    assert matches("attributes.i = 10.00", contact)
    assert matches("attributes.d = 2.5 and attributes.d < 2.51", contact)
    assert not matches("attributes.f > 0.1", contact)


def test_non_finite_floats_never_match_a_number() -> None:
    contact = facts(attributes={"x": float("nan")})
    assert not matches("attributes.x = 1 or attributes.x < 1 or attributes.x >= 1", contact)


def test_topic_membership() -> None:
    contact = facts(topics=frozenset({"service"}))
    assert matches("topic = service", contact)
    assert not matches("topic != service", contact)
    assert matches("topic != news and not topic = news", contact)


@pytest.mark.parametrize(
    ("last_activity_at", "expected"),
    [
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), True),  # 31 March - 1 month clamps to 29 Feb
        (datetime(2024, 2, 29, 11, 59, 59, 999999, tzinfo=UTC), False),
        (datetime(2024, 2, 29, 13, 0, tzinfo=timezone(timedelta(hours=1))), True),
        (None, False),
    ],
)
def test_within_months_clamps_to_the_end_of_the_month_like_postgres(
    last_activity_at: datetime | None, expected: bool
) -> None:
    contact = facts(last_activity_at=last_activity_at)
    assert matches("last_activity within 1 month", contact) is expected


def test_within_days_counts_whole_days_in_utc() -> None:
    paris_now = datetime(2024, 3, 31, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    contact = facts(last_activity_at=datetime(2024, 3, 30, 12, 0, tzinfo=UTC))
    assert matches("last_activity within 1 day", contact, now=paris_now)
    assert not matches("last_activity within 1 day", contact, now=paris_now + timedelta(seconds=1))
    assert matches("last_activity within 0 days", facts(last_activity_at=NOW), now=NOW)


def test_within_twelve_months_reaches_back_a_calendar_year() -> None:
    contact = facts(last_activity_at=datetime(2023, 3, 31, 12, 0, tzinfo=UTC))
    assert matches("last_activity within 12 months", contact)
    assert not matches("last_activity within 11 months", contact)


def test_evaluate_refuses_a_naive_send_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(parse("locale = fr"), facts(), datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("locale = fr and name = Ann", True),
        ("locale = fr and name = Bob", False),
        ("locale = en or name = Ann", True),
        ("locale = en or name = Bob", False),
        ("not (locale = en or name = Bob)", True),
        ("not not locale = fr", True),
        ("locale = en or locale = fr and name = Bob", False),
        ("(locale = en or locale = fr) and name = Ann", True),
    ],
)
def test_connectives_combine_conditions(text: str, expected: bool) -> None:
    assert matches(text, facts()) is expected


@settings(max_examples=200, deadline=None)
@given(SEGMENTS, CONTACTS)
def test_not_is_the_exact_complement_of_every_filter(
    segment: Segment, contact: SegmentFacts
) -> None:
    result = evaluate(segment, contact, NOW)
    assert isinstance(result, bool)
    assert evaluate(Segment(Not(segment.root)), contact, NOW) is not result
