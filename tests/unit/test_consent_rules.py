"""The consent rules, boundary by boundary, plus properties the audience SQL must also hold."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.core.consent import (
    DIGITAL_CHANNELS,
    REASON_TEXT,
    Action,
    Channel,
    Kind,
    LedgerEntry,
    Policy,
    Reason,
    Suppression,
    SuppressionReason,
    SuppressionScope,
    add_months,
    add_years,
    evaluate_consent,
    expiring,
    is_valid_at,
    valid_until,
)
from mailer.core.eligibility import AudienceSpec, ContactFacts, evaluate

EMAIL = Channel.EMAIL
TOPIC = 7
US = timedelta(microseconds=1)


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=UTC)


def grant(
    id: int,
    kind: Kind,
    on: datetime,
    *,
    ends_at: datetime | None = None,
    channel: Channel = EMAIL,
    source: str = "checkout form",
    topic_id: int | None = None,
) -> LedgerEntry:
    return LedgerEntry(id, channel, Action.GRANT, kind, source, on, ends_at, topic_id)


def withdraw(
    id: int, on: datetime, *, channel: Channel = EMAIL, topic_id: int | None = None
) -> LedgerEntry:
    return LedgerEntry(id, channel, Action.WITHDRAW, None, "unsubscribe link", on, None, topic_id)


def facts(
    *,
    erased: bool = False,
    last_activity_at: datetime | None = None,
    channel_prefs: dict[Channel, bool] | None = None,
    topic_prefs: dict[int, bool] | None = None,
    in_segment: bool = True,
) -> ContactFacts:
    return ContactFacts(
        erased, last_activity_at, channel_prefs or {}, topic_prefs or {}, in_segment
    )


SEND_AT = utc(2025, 6, 15)


def spec(
    at: datetime = SEND_AT,
    *,
    policy: Policy = Policy.CASL,
    default_subscribed: bool = True,
    active_within_months: int | None = None,
) -> AudienceSpec:
    return AudienceSpec(EMAIL, TOPIC, default_subscribed, policy, at, active_within_months)


EXPRESS_2012 = grant(1, Kind.EXPRESS, utc(2012, 9, 19), source="Salon E-commerce Paris")


# --- calendar arithmetic ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (utc(2024, 2, 29), 12, utc(2025, 2, 28)),
        (utc(2023, 8, 31), 6, utc(2024, 2, 29)),
        (utc(2024, 1, 31), 1, utc(2024, 2, 29)),
        (utc(2023, 1, 31), 1, utc(2023, 2, 28)),
        (utc(2024, 11, 30), 3, utc(2025, 2, 28)),
        (utc(2024, 3, 31), -1, utc(2024, 2, 29)),
        (utc(2025, 1, 15), -13, utc(2023, 12, 15)),
        (utc(2024, 5, 17), 0, utc(2024, 5, 17)),
    ],
)
def test_add_months_clamps_the_day_to_the_end_of_the_target_month(
    start: datetime, months: int, expected: datetime
) -> None:
    assert add_months(start, months) == expected


def test_add_months_keeps_the_time_of_day_and_the_timezone() -> None:
    result = add_months(datetime(2024, 1, 31, 13, 45, 10, 123, tzinfo=UTC), 1)
    assert result == datetime(2024, 2, 29, 13, 45, 10, 123, tzinfo=UTC)
    assert result.tzinfo is UTC


def test_add_months_on_an_offset_datetime_counts_months_in_utc_like_postgres() -> None:
    paris_winter = timezone(timedelta(hours=1))
    # 00:30 on Jan 31 in +01:00 is still Jan 30 in UTC, so one month later is Feb 29 UTC.
    start = datetime(2024, 1, 31, 0, 30, tzinfo=paris_winter)
    result = add_months(start, 1)
    assert result == utc(2024, 2, 29, 23, 30)
    assert result.tzinfo is paris_winter


def test_add_years_of_a_leap_day_lands_on_february_28() -> None:
    assert add_years(utc(2024, 2, 29), 1) == utc(2025, 2, 28)
    assert add_years(utc(2024, 2, 29), 4) == utc(2028, 2, 29)


aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=200, deadline=None)
@given(start=aware_datetimes, months=st.integers(min_value=-1200, max_value=1200))
def test_add_months_lands_on_a_valid_day_of_exactly_the_target_month(
    start: datetime, months: int
) -> None:
    result = add_months(start, months)
    target_year, target_month0 = divmod(start.year * 12 + start.month - 1 + months, 12)
    assert (result.year, result.month) == (target_year, target_month0 + 1)
    last_day = calendar.monthrange(result.year, result.month)[1]
    assert result.day == min(start.day, last_day)
    assert result.time() == start.time()
    assert result.tzinfo is UTC


@settings(max_examples=200, deadline=None)
@given(start=aware_datetimes, months=st.integers(min_value=0, max_value=1200))
def test_add_months_forward_never_goes_backwards_and_round_trips_when_not_clamped(
    start: datetime, months: int
) -> None:
    result = add_months(start, months)
    assert result >= start
    if result.day == start.day:
        assert add_months(result, -months) == start


# --- validity of one grant ---------------------------------------------------------------


def test_express_consent_has_no_end() -> None:
    assert valid_until(EXPRESS_2012) is None
    assert is_valid_at(EXPRESS_2012, utc(2099, 1, 1))


def test_a_grant_is_not_valid_before_it_was_obtained() -> None:
    assert not is_valid_at(EXPRESS_2012, utc(2012, 9, 18))
    assert is_valid_at(EXPRESS_2012, utc(2012, 9, 19))


@pytest.mark.parametrize(
    ("t", "valid"),
    [
        (utc(2025, 3, 1, 10), True),  # the day before expiry
        (utc(2025, 3, 2, 10) - US, True),  # the last instant
        (utc(2025, 3, 2, 10), False),  # the expiry instant itself
        (utc(2025, 3, 3, 10), False),  # the day after
    ],
)
def test_implied_purchase_consent_expires_two_years_after_the_purchase(
    t: datetime, valid: bool
) -> None:
    purchase = grant(2, Kind.IMPLIED_PURCHASE, utc(2023, 3, 2, 10))
    assert valid_until(purchase) == utc(2025, 3, 2, 10)
    assert is_valid_at(purchase, t) is valid


@pytest.mark.parametrize(
    ("t", "valid"),
    [
        (utc(2024, 2, 28), True),
        (utc(2024, 2, 29) - US, True),
        (utc(2024, 2, 29), False),
        (utc(2024, 3, 1), False),
    ],
)
def test_implied_inquiry_consent_expires_six_months_after_the_inquiry_clamped_to_month_end(
    t: datetime, valid: bool
) -> None:
    inquiry = grant(3, Kind.IMPLIED_INQUIRY, utc(2023, 8, 31))
    assert valid_until(inquiry) == utc(2024, 2, 29)
    assert is_valid_at(inquiry, t) is valid


def test_implied_purchase_on_a_leap_day_expires_on_february_28_two_years_later() -> None:
    purchase = grant(2, Kind.IMPLIED_PURCHASE, utc(2024, 2, 29, 9))
    assert valid_until(purchase) == utc(2026, 2, 28, 9)


def test_an_ongoing_contract_has_no_end_and_an_ended_one_lasts_two_more_years() -> None:
    ongoing = grant(4, Kind.IMPLIED_CONTRACT, utc(2020, 1, 10))
    ended = grant(5, Kind.IMPLIED_CONTRACT, utc(2024, 8, 31), ends_at=utc(2024, 8, 31))
    assert valid_until(ongoing) is None
    assert valid_until(ended) == utc(2026, 8, 31)


def test_publication_consent_lasts_while_declared_relevant() -> None:
    relevant = grant(6, Kind.IMPLIED_PUBLICATION, utc(2022, 5, 1))
    no_longer = grant(7, Kind.IMPLIED_PUBLICATION, utc(2022, 5, 1), ends_at=utc(2024, 1, 1))
    assert valid_until(relevant) is None
    assert valid_until(no_longer) == utc(2024, 1, 1)
    assert is_valid_at(no_longer, utc(2024, 1, 1) - US)
    assert not is_valid_at(no_longer, utc(2024, 1, 1))


def test_a_ledger_row_must_be_a_grant_with_a_kind_and_timezone_aware() -> None:
    with pytest.raises(ValueError, match="row 9: a consent grant needs a kind"):
        LedgerEntry(9, EMAIL, Action.GRANT, None, "import", utc(2024, 1, 1))
    with pytest.raises(ValueError, match="row 9: obtained_at must be timezone-aware"):
        LedgerEntry(9, EMAIL, Action.GRANT, Kind.EXPRESS, "import", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="row 9: ends_at must be timezone-aware"):
        LedgerEntry(
            9,
            EMAIL,
            Action.GRANT,
            Kind.IMPLIED_CONTRACT,
            "crm",
            utc(2024, 1, 1),
            datetime(2025, 1, 1),
        )


# --- evaluating consent ------------------------------------------------------------------


def test_express_consent_is_eligible_and_names_its_date_and_source() -> None:
    verdict = evaluate_consent([EXPRESS_2012], EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.eligible
    assert verdict.consent == EXPRESS_2012
    assert verdict.detail == "express consent on 2012-09-19 (Salon E-commerce Paris)"


def test_implied_purchase_verdict_names_the_purchase_and_its_expiry() -> None:
    purchase = grant(2, Kind.IMPLIED_PURCHASE, utc(2025, 3, 2))
    verdict = evaluate_consent([purchase], EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == purchase
    assert verdict.detail == "implied consent from purchase on 2025-03-02, valid until 2027-03-02"


@pytest.mark.parametrize(
    ("t", "reason"),
    [
        (utc(2025, 3, 1), None),
        (utc(2025, 3, 2), Reason.CONSENT_EXPIRED),
        (utc(2025, 3, 3), Reason.CONSENT_EXPIRED),
    ],
)
def test_implied_purchase_consent_is_expired_from_the_expiry_day(
    t: datetime, reason: Reason | None
) -> None:
    purchase = grant(2, Kind.IMPLIED_PURCHASE, utc(2023, 3, 2))
    verdict = evaluate_consent([purchase], EMAIL, Policy.CASL, t)
    assert verdict.reason is reason
    if reason is not None:
        assert verdict.consent is None
        assert verdict.detail == "implied consent from purchase on 2023-03-02 expired on 2025-03-02"


def test_no_ledger_rows_means_no_consent() -> None:
    verdict = evaluate_consent([], EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.NO_CONSENT
    assert verdict.consent is None


def test_grant_then_withdrawal_is_consent_withdrawn_with_the_withdrawal_date() -> None:
    ledger = [EXPRESS_2012, withdraw(2, utc(2024, 5, 1, 14))]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.CONSENT_WITHDRAWN
    assert verdict.detail == "consent withdrawn on 2024-05-01"


def test_withdrawal_cancels_grants_of_every_kind_before_it() -> None:
    ledger = [
        EXPRESS_2012,
        grant(2, Kind.IMPLIED_CONTRACT, utc(2020, 1, 1)),
        withdraw(3, utc(2024, 5, 1)),
    ]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.CONSENT_WITHDRAWN


def test_withdrawal_then_re_grant_is_eligible_on_the_new_grant() -> None:
    regrant = grant(3, Kind.EXPRESS, utc(2025, 1, 10), source="preference centre")
    ledger = [EXPRESS_2012, withdraw(2, utc(2024, 5, 1)), regrant]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.eligible
    assert verdict.consent == regrant


def test_a_withdrawal_before_the_re_grant_still_applies_when_evaluated_between_them() -> None:
    ledger = [EXPRESS_2012, withdraw(2, utc(2024, 5, 1)), grant(3, Kind.EXPRESS, utc(2025, 1, 10))]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2024, 12, 31))
    assert verdict.reason is Reason.CONSENT_WITHDRAWN


def test_a_re_grant_after_withdrawal_that_has_since_lapsed_is_consent_expired() -> None:
    ledger = [
        EXPRESS_2012,
        withdraw(2, utc(2023, 1, 1)),
        grant(3, Kind.IMPLIED_INQUIRY, utc(2024, 1, 10)),
    ]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.CONSENT_EXPIRED
    assert verdict.detail == "implied consent from inquiry on 2024-01-10 expired on 2024-07-10"


def test_grant_and_withdrawal_at_the_same_instant_are_ordered_by_id() -> None:
    same = utc(2024, 5, 1, 12)
    withdraw_last = [grant(1, Kind.EXPRESS, same), withdraw(2, same)]
    grant_last = [withdraw(1, same), grant(2, Kind.EXPRESS, same)]
    at = utc(2025, 1, 1)
    assert evaluate_consent(withdraw_last, EMAIL, Policy.CASL, at).reason is (
        Reason.CONSENT_WITHDRAWN
    )
    assert evaluate_consent(grant_last, EMAIL, Policy.CASL, at).eligible


def test_ledger_order_in_the_input_does_not_matter() -> None:
    ledger = [grant(3, Kind.EXPRESS, utc(2025, 1, 10)), withdraw(2, utc(2024, 5, 1)), EXPRESS_2012]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == ledger[0]


def test_rows_obtained_after_the_evaluation_instant_are_ignored() -> None:
    ledger = [EXPRESS_2012, withdraw(2, utc(2026, 1, 1))]
    assert evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15)).eligible
    future_grant = [grant(1, Kind.EXPRESS, utc(2026, 1, 1))]
    verdict = evaluate_consent(future_grant, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.NO_CONSENT


def test_topic_preference_rows_and_expire_rows_do_not_affect_consent() -> None:
    ledger = [
        EXPRESS_2012,
        withdraw(2, utc(2024, 5, 1), topic_id=TOPIC),
        LedgerEntry(3, EMAIL, Action.EXPIRE, Kind.EXPRESS, "expiry sweep", utc(2024, 6, 1)),
    ]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == EXPRESS_2012


def test_a_topic_scoped_grant_is_not_channel_consent() -> None:
    ledger = [grant(1, Kind.EXPRESS, utc(2024, 1, 1), topic_id=TOPIC)]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.NO_CONSENT


def test_consent_on_another_channel_does_not_count() -> None:
    ledger = [grant(1, Kind.EXPRESS, utc(2024, 1, 1), channel=Channel.SMS)]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.NO_CONSENT


def test_an_ongoing_contract_stays_valid_until_its_end_is_recorded_plus_two_years() -> None:
    started = grant(1, Kind.IMPLIED_CONTRACT, utc(2015, 4, 1))
    assert evaluate_consent([started], EMAIL, Policy.CASL, utc(2030, 1, 1)).consent == started
    ended = grant(2, Kind.IMPLIED_CONTRACT, utc(2024, 9, 30), ends_at=utc(2024, 9, 30))
    ledger = [started, ended]
    # The later row about the same kind supersedes the ongoing one.
    assert evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2026, 9, 29)).consent == ended
    expired = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2026, 9, 30))
    assert expired.reason is Reason.CONSENT_EXPIRED
    assert expired.detail == "implied consent from contract on 2024-09-30 expired on 2026-09-30"
    # Before the end row was written, the contract was still ongoing.
    assert evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2024, 9, 29)).consent == started


def test_a_later_purchase_renews_the_two_years() -> None:
    ledger = [
        grant(1, Kind.IMPLIED_PURCHASE, utc(2021, 1, 5)),
        grant(2, Kind.IMPLIED_PURCHASE, utc(2024, 6, 1)),
    ]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == ledger[1]


def test_a_later_row_supersedes_an_earlier_one_of_the_same_kind_even_if_shorter() -> None:
    ledger = [
        grant(1, Kind.IMPLIED_PUBLICATION, utc(2022, 1, 1)),
        grant(2, Kind.IMPLIED_PUBLICATION, utc(2024, 1, 1), ends_at=utc(2024, 6, 1)),
    ]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.reason is Reason.CONSENT_EXPIRED


def test_an_expired_kind_does_not_hide_a_still_valid_grant_of_another_kind() -> None:
    purchase = grant(1, Kind.IMPLIED_PURCHASE, utc(2024, 6, 1))
    inquiry = grant(2, Kind.IMPLIED_INQUIRY, utc(2024, 7, 1))
    verdict = evaluate_consent([purchase, inquiry], EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == purchase


def test_express_consent_is_preferred_over_an_implied_one_without_end() -> None:
    express = grant(1, Kind.EXPRESS, utc(2020, 1, 1))
    contract = grant(2, Kind.IMPLIED_CONTRACT, utc(2021, 1, 1))
    verdict = evaluate_consent([express, contract], EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == express


def test_among_implied_grants_the_one_lasting_longest_is_chosen() -> None:
    purchase = grant(1, Kind.IMPLIED_PURCHASE, utc(2025, 1, 1))  # until 2027-01-01
    inquiry = grant(2, Kind.IMPLIED_INQUIRY, utc(2025, 5, 1))  # until 2025-11-01
    publication = grant(3, Kind.IMPLIED_PUBLICATION, utc(2020, 1, 1))  # no end
    at = utc(2025, 6, 15)
    assert evaluate_consent([purchase, inquiry], EMAIL, Policy.CASL, at).consent == purchase
    three = [purchase, inquiry, publication]
    assert evaluate_consent(three, EMAIL, Policy.CASL, at).consent == publication


def test_implied_grants_ending_at_the_same_instant_tie_to_the_higher_id() -> None:
    contract = grant(5, Kind.IMPLIED_CONTRACT, utc(2024, 1, 1), ends_at=utc(2024, 1, 1))
    purchase = grant(4, Kind.IMPLIED_PURCHASE, utc(2024, 1, 1))
    verdict = evaluate_consent([purchase, contract], EMAIL, Policy.CASL, utc(2025, 6, 15))
    assert verdict.consent == contract


def test_publication_consent_without_end_is_valid_while_relevant() -> None:
    card = grant(1, Kind.IMPLIED_PUBLICATION, utc(2019, 3, 4), source="business card")
    verdict = evaluate_consent([card], EMAIL, Policy.CASL, utc(2035, 1, 1))
    assert verdict.consent == card
    assert verdict.detail == (
        "implied consent from publication on 2019-03-04, while relevant to the person's role"
    )


def test_publication_consent_with_an_end_expires_at_that_end() -> None:
    card = grant(1, Kind.IMPLIED_PUBLICATION, utc(2019, 3, 4), ends_at=utc(2024, 2, 29))
    assert evaluate_consent([card], EMAIL, Policy.CASL, utc(2024, 2, 28)).eligible
    expired = evaluate_consent([card], EMAIL, Policy.CASL, utc(2024, 2, 29))
    assert expired.reason is Reason.CONSENT_EXPIRED


def test_gdpr_ignores_implied_consent_entirely() -> None:
    at = utc(2025, 6, 15)
    implied = [grant(1, Kind.IMPLIED_PURCHASE, utc(2025, 1, 1))]
    assert evaluate_consent(implied, EMAIL, Policy.CASL, at).eligible
    assert evaluate_consent(implied, EMAIL, Policy.GDPR, at).reason is Reason.NO_CONSENT
    expired_implied = [grant(1, Kind.IMPLIED_INQUIRY, utc(2020, 1, 1))]
    assert evaluate_consent(expired_implied, EMAIL, Policy.GDPR, at).reason is Reason.NO_CONSENT


def test_gdpr_accepts_express_consent_over_a_newer_implied_one() -> None:
    express = grant(1, Kind.EXPRESS, utc(2020, 1, 1))
    ledger = [express, grant(2, Kind.IMPLIED_CONTRACT, utc(2024, 1, 1))]
    assert evaluate_consent(ledger, EMAIL, Policy.GDPR, utc(2025, 6, 15)).consent == express


def test_gdpr_after_withdrawal_with_only_an_implied_re_grant_is_withdrawn() -> None:
    ledger = [
        EXPRESS_2012,
        withdraw(2, utc(2024, 5, 1)),
        grant(3, Kind.IMPLIED_PURCHASE, utc(2025, 1, 1)),
    ]
    verdict = evaluate_consent(ledger, EMAIL, Policy.GDPR, utc(2025, 6, 15))
    assert verdict.reason is Reason.CONSENT_WITHDRAWN


def test_can_spam_is_eligible_without_any_consent() -> None:
    verdict = evaluate_consent([], EMAIL, Policy.CAN_SPAM, utc(2025, 6, 15))
    assert verdict.eligible
    assert verdict.consent is None


def test_can_spam_is_not_eligible_after_a_withdrawal() -> None:
    ledger = [EXPRESS_2012, withdraw(2, utc(2024, 5, 1))]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CAN_SPAM, utc(2025, 6, 15))
    assert verdict.reason is Reason.CONSENT_WITHDRAWN


def test_can_spam_is_eligible_with_an_expired_grant_but_carries_no_consent_row() -> None:
    ledger = [withdraw(1, utc(2020, 1, 1)), grant(2, Kind.IMPLIED_INQUIRY, utc(2021, 1, 1))]
    verdict = evaluate_consent(ledger, EMAIL, Policy.CAN_SPAM, utc(2025, 6, 15))
    assert verdict.eligible
    assert verdict.consent is None


def test_can_spam_carries_the_best_valid_grant_when_there_is_one() -> None:
    purchase = grant(1, Kind.IMPLIED_PURCHASE, utc(2025, 1, 1))
    verdict = evaluate_consent([purchase], EMAIL, Policy.CAN_SPAM, utc(2025, 6, 15))
    assert verdict.consent == purchase


# --- eligibility -------------------------------------------------------------------------


def test_an_eligible_contact_gets_the_consent_verdict() -> None:
    verdict = evaluate(facts(), [EXPRESS_2012], [], spec())
    assert verdict.eligible
    assert verdict.consent == EXPRESS_2012
    assert verdict.detail == "express consent on 2012-09-19 (Salon E-commerce Paris)"


def test_a_contact_outside_the_segment_is_excluded_first() -> None:
    verdict = evaluate(facts(in_segment=False, erased=True), [], [], spec())
    assert verdict.reason is Reason.SEGMENT
    assert verdict.detail == REASON_TEXT[Reason.SEGMENT]


def test_erased_beats_no_consent() -> None:
    assert evaluate(facts(erased=True), [], [], spec()).reason is Reason.ERASED


DELIVERABILITY = [
    (SuppressionReason.HARD_BOUNCE, Reason.HARD_BOUNCED),
    (SuppressionReason.COMPLAINT, Reason.COMPLAINED),
    (SuppressionReason.REGISTRY, Reason.REGISTRY),
]
COVERING_SCOPES = [
    (SuppressionScope.GLOBAL, None, None),
    (SuppressionScope.CHANNEL, EMAIL, None),
    (SuppressionScope.TOPIC, None, TOPIC),
]


@pytest.mark.parametrize(("suppression_reason", "reason"), DELIVERABILITY)
@pytest.mark.parametrize(("scope", "channel", "topic_id"), COVERING_SCOPES)
def test_deliverability_suppressions_exclude_for_their_own_reason_in_any_covering_scope(
    suppression_reason: SuppressionReason,
    reason: Reason,
    scope: SuppressionScope,
    channel: Channel | None,
    topic_id: int | None,
) -> None:
    suppressions = [Suppression(scope, suppression_reason, channel, topic_id)]
    assert evaluate(facts(), [EXPRESS_2012], suppressions, spec()).reason is reason


OPT_OUTS = [SuppressionReason.UNSUBSCRIBE, SuppressionReason.MANUAL, SuppressionReason.ERASURE]


@pytest.mark.parametrize("suppression_reason", OPT_OUTS)
@pytest.mark.parametrize(
    ("scope", "channel", "topic_id", "reason"),
    [
        (SuppressionScope.GLOBAL, None, None, Reason.SUPPRESSED_GLOBAL),
        (SuppressionScope.CHANNEL, EMAIL, None, Reason.UNSUBSCRIBED_CHANNEL),
        (SuppressionScope.TOPIC, None, TOPIC, Reason.UNSUBSCRIBED_TOPIC),
    ],
)
def test_opt_out_suppressions_exclude_by_scope(
    suppression_reason: SuppressionReason,
    scope: SuppressionScope,
    channel: Channel | None,
    topic_id: int | None,
    reason: Reason,
) -> None:
    suppressions = [Suppression(scope, suppression_reason, channel, topic_id)]
    assert evaluate(facts(), [EXPRESS_2012], suppressions, spec()).reason is reason


@pytest.mark.parametrize("suppression_reason", list(SuppressionReason))
@pytest.mark.parametrize(
    ("scope", "channel", "topic_id"),
    [
        (SuppressionScope.CHANNEL, Channel.SMS, None),
        (SuppressionScope.TOPIC, None, TOPIC + 1),
    ],
)
def test_suppressions_for_another_channel_or_topic_do_not_exclude(
    suppression_reason: SuppressionReason,
    scope: SuppressionScope,
    channel: Channel | None,
    topic_id: int | None,
) -> None:
    suppressions = [Suppression(scope, suppression_reason, channel, topic_id)]
    assert evaluate(facts(), [EXPRESS_2012], suppressions, spec()).eligible


def test_deliverability_reasons_are_reported_before_opt_outs_in_reason_order() -> None:
    suppressions = [
        Suppression(SuppressionScope.GLOBAL, SuppressionReason.UNSUBSCRIBE),
        Suppression(SuppressionScope.TOPIC, SuppressionReason.REGISTRY, topic_id=TOPIC),
        Suppression(SuppressionScope.CHANNEL, SuppressionReason.COMPLAINT, channel=EMAIL),
    ]
    assert evaluate(facts(), [], suppressions, spec()).reason is Reason.COMPLAINED
    with_bounce = [
        *suppressions,
        Suppression(SuppressionScope.GLOBAL, SuppressionReason.HARD_BOUNCE),
    ]
    assert evaluate(facts(), [], with_bounce, spec()).reason is Reason.HARD_BOUNCED
    assert evaluate(facts(erased=True), [], with_bounce, spec()).reason is Reason.ERASED


def test_a_channel_preference_off_is_unsubscribed_channel() -> None:
    off = facts(channel_prefs={EMAIL: False})
    assert evaluate(off, [EXPRESS_2012], [], spec()).reason is Reason.UNSUBSCRIBED_CHANNEL


def test_a_channel_preference_on_another_channel_does_not_exclude() -> None:
    sms_off = facts(channel_prefs={Channel.SMS: False, EMAIL: True})
    assert evaluate(sms_off, [EXPRESS_2012], [], spec()).eligible


def test_a_topic_preference_off_is_unsubscribed_topic_even_on_a_default_topic() -> None:
    off = facts(topic_prefs={TOPIC: False})
    assert evaluate(off, [EXPRESS_2012], [], spec()).reason is Reason.UNSUBSCRIBED_TOPIC


def test_channel_opt_out_is_reported_before_topic_opt_out() -> None:
    both = facts(channel_prefs={EMAIL: False}, topic_prefs={TOPIC: False})
    assert evaluate(both, [EXPRESS_2012], [], spec()).reason is Reason.UNSUBSCRIBED_CHANNEL
    topic_suppressed = [
        Suppression(SuppressionScope.TOPIC, SuppressionReason.MANUAL, topic_id=TOPIC)
    ]
    channel_off = facts(channel_prefs={EMAIL: False})
    verdict = evaluate(channel_off, [EXPRESS_2012], topic_suppressed, spec())
    assert verdict.reason is Reason.UNSUBSCRIBED_CHANNEL


def test_a_topic_subscribed_by_default_needs_no_explicit_choice() -> None:
    assert evaluate(facts(), [EXPRESS_2012], [], spec(default_subscribed=True)).eligible


def test_an_opt_in_topic_without_a_choice_is_not_subscribed() -> None:
    verdict = evaluate(facts(), [EXPRESS_2012], [], spec(default_subscribed=False))
    assert verdict.reason is Reason.NOT_SUBSCRIBED_TOPIC


def test_an_opt_in_topic_with_an_explicit_yes_is_subscribed() -> None:
    chose = facts(topic_prefs={TOPIC: True})
    assert evaluate(chose, [EXPRESS_2012], [], spec(default_subscribed=False)).eligible


def test_topic_choices_are_checked_before_consent() -> None:
    verdict = evaluate(facts(), [], [], spec(default_subscribed=False))
    assert verdict.reason is Reason.NOT_SUBSCRIBED_TOPIC


@pytest.mark.parametrize(
    ("last_activity_at", "reason"),
    [
        (utc(2024, 12, 15, 8), None),  # exactly N months before the send: still active
        (utc(2024, 12, 15, 8) - US, Reason.INACTIVE),
        (utc(2025, 6, 1), None),
        (None, Reason.INACTIVE),
    ],
)
def test_inactive_when_last_activity_is_older_than_n_months(
    last_activity_at: datetime | None, reason: Reason | None
) -> None:
    verdict = evaluate(
        facts(last_activity_at=last_activity_at),
        [EXPRESS_2012],
        [],
        spec(utc(2025, 6, 15, 8), active_within_months=6),
    )
    assert verdict.reason is reason


def test_activity_window_uses_month_end_clamping() -> None:
    at = utc(2025, 8, 31)  # six months back is 2025-02-28
    just_active = facts(last_activity_at=utc(2025, 2, 28))
    assert evaluate(just_active, [EXPRESS_2012], [], spec(at, active_within_months=6)).eligible


def test_no_activity_window_means_activity_is_not_checked() -> None:
    assert evaluate(facts(last_activity_at=None), [EXPRESS_2012], [], spec()).eligible


def test_consent_reasons_beat_inactive() -> None:
    verdict = evaluate(facts(), [], [], spec(active_within_months=6))
    assert verdict.reason is Reason.NO_CONSENT


def test_every_reason_has_a_plain_english_text_in_evaluation_order() -> None:
    assert set(REASON_TEXT) == set(Reason)
    assert all(text and "\n" not in text for text in REASON_TEXT.values())
    assert [r.value for r in Reason] == [
        "segment",
        "erased",
        "hard_bounced",
        "complained",
        "registry",
        "suppressed_global",
        "unsubscribed_channel",
        "unsubscribed_topic",
        "not_subscribed_topic",
        "consent_withdrawn",
        "no_consent",
        "consent_expired",
        "inactive",
    ]


def test_digital_channels_are_email_and_sms() -> None:
    assert frozenset({Channel.EMAIL, Channel.SMS}) == DIGITAL_CHANNELS


# --- re-permission list ------------------------------------------------------------------


def test_expiring_lists_implied_grants_ending_within_the_window_soonest_first() -> None:
    at = utc(2025, 6, 15)
    inquiry = grant(1, Kind.IMPLIED_INQUIRY, utc(2025, 1, 1))  # ends 2025-07-01
    purchase = grant(2, Kind.IMPLIED_PURCHASE, utc(2023, 6, 20))  # ends 2025-06-20
    card = grant(3, Kind.IMPLIED_PUBLICATION, utc(2020, 1, 1), ends_at=utc(2025, 7, 15))
    express = grant(4, Kind.EXPRESS, utc(2020, 1, 1))
    result = expiring([inquiry, purchase, card, express], EMAIL, at, timedelta(days=30))
    assert result == [(purchase, utc(2025, 6, 20)), (inquiry, utc(2025, 7, 1))]


def test_expiring_window_is_half_open_and_skips_lapsed_withdrawn_and_ongoing_grants() -> None:
    at = utc(2025, 6, 15)
    ends_at_window_end = grant(1, Kind.IMPLIED_INQUIRY, utc(2025, 1, 14))  # ends 2025-07-14
    lapsed = grant(2, Kind.IMPLIED_PURCHASE, utc(2023, 6, 1))
    ongoing = grant(3, Kind.IMPLIED_CONTRACT, utc(2020, 1, 1))
    ledger = [ends_at_window_end, lapsed, ongoing]
    assert expiring(ledger, EMAIL, at, timedelta(days=29)) == []
    assert expiring(ledger, EMAIL, at, timedelta(days=29) + US) == [
        (ends_at_window_end, utc(2025, 7, 14))
    ]
    withdrawn = [*ledger, withdraw(4, utc(2025, 6, 1))]
    assert expiring(withdrawn, EMAIL, at, timedelta(days=365)) == []


# --- properties --------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2018, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
# Weighted toward email channel rows, so that most generated ledgers have a say at t.
ledgers = st.lists(
    st.tuples(
        st.sampled_from([Action.GRANT, Action.GRANT, Action.WITHDRAW, Action.EXPIRE]),
        st.sampled_from(Kind),
        st.sampled_from([EMAIL, EMAIL, EMAIL, Channel.SMS]),
        instants,
        st.none() | instants,
        st.sampled_from([None, None, None, TOPIC]),
    ),
    max_size=8,
).map(
    lambda rows: [
        LedgerEntry(
            i,
            channel,
            action,
            None if action is Action.WITHDRAW else kind,
            "generated",
            on,
            ends,
            topic,
        )
        for i, (action, kind, channel, on, ends, topic) in enumerate(rows, start=1)
    ]
)


@settings(max_examples=250, deadline=None)
@given(ledger=ledgers, policy=st.sampled_from([Policy.CASL, Policy.GDPR]), t=instants)
def test_an_eligible_verdict_always_carries_a_grant_valid_at_t(
    ledger: list[LedgerEntry], policy: Policy, t: datetime
) -> None:
    verdict = evaluate_consent(ledger, EMAIL, policy, t)
    if not verdict.eligible:
        assert verdict.consent is None
        return
    consent = verdict.consent
    assert consent is not None
    assert consent in ledger
    assert consent.action is Action.GRANT
    assert consent.channel is EMAIL
    assert consent.topic_id is None
    assert is_valid_at(consent, t)
    if policy is Policy.GDPR:
        assert consent.kind is Kind.EXPRESS
    # No withdrawal on the channel sits between the grant and t.
    assert not any(
        e.action is Action.WITHDRAW
        and e.channel is EMAIL
        and e.topic_id is None
        and (consent.obtained_at, consent.id) < (e.obtained_at, e.id)
        and e.obtained_at <= t
        for e in ledger
    )


@settings(max_examples=200, deadline=None)
@given(ledger=ledgers, t=instants)
def test_can_spam_excludes_only_for_withdrawal_and_casl_is_never_looser(
    ledger: list[LedgerEntry], t: datetime
) -> None:
    can_spam = evaluate_consent(ledger, EMAIL, Policy.CAN_SPAM, t)
    assert can_spam.reason in (None, Reason.CONSENT_WITHDRAWN)
    casl = evaluate_consent(ledger, EMAIL, Policy.CASL, t)
    gdpr = evaluate_consent(ledger, EMAIL, Policy.GDPR, t)
    assert not (gdpr.eligible and not casl.eligible)
    assert not (casl.eligible and not can_spam.eligible)
