"""Which calendar day a consent date is printed as: one rule for every page, message and command.

The ledger stores every consent date as an instant (timestamptz), and remembers whether the
source gave a time at all (consents.obtained_date_only / ends_date_only, migration 0007). A date
given without a time ("2018-11-17") is a calendar date: it is stored as its midnight UTC and
printed as given, in every zone. A timestamp is an instant: it is printed as its day in the
sender's zone (the campaign's `timezone`), so a 22:00 sign-up in Québec is not "the next day".
The footer, the preference centre and `contacts show` all go through `consent_day`, so they
cannot disagree about the day a person consented.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["consent_day", "end_date_only", "zone"]

# Consent kinds whose end of validity counts from `ends_at` (the end of a contract, the end of
# a publication's relevance); the others count from the date the consent was obtained.
_ENDS_FROM_ENDS_AT = frozenset({"implied_contract", "implied_publication"})


def consent_day(moment: datetime, sender_zone: tzinfo, *, date_only: bool) -> date:
    """The day to print: a date-only value as given, a timestamp as its day in `sender_zone`."""
    if moment.tzinfo is None:
        raise ValueError(f"consent date {moment.isoformat()} must be timezone-aware")
    if date_only:
        # Stored as the date's midnight UTC (contacts_file); UTC gives the date back.
        return moment.astimezone(UTC).date()
    return moment.astimezone(sender_zone).date()


def end_date_only(kind: str | None, *, obtained_date_only: bool, ends_date_only: bool) -> bool:
    """Whether a grant's end of validity (consent.valid_until) is a calendar date.

    The end is a date when the date it counts from is one: `ends_at` for contracts and
    publications, the date obtained for the others (two years after a purchase given as a
    date is a date).
    """
    return ends_date_only if kind in _ENDS_FROM_ENDS_AT else obtained_date_only


@lru_cache(maxsize=64)
def zone(name: str | None) -> tzinfo:
    """The tzinfo for an IANA name; UTC when none is given (campaigns default to UTC).

    Raises ValueError naming the zone when it does not exist.
    """
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. America/Toronto)") from None
