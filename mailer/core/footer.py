"""The compliance footer's words: the consent-origin sentence and labels, per locale.

One place for every sentence the law makes us print, so the renderer, the lint and the
preference centre cannot drift apart. Dates are written out per locale ("19 September
2012", "19 septembre 2012", "1er mai 2024"); which day a consent date is printed as (the date
given, or a timestamp's day in the sender's zone) is mailer.core.consent_dates' one rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import MappingProxyType

from mailer.core.consent import Kind

__all__ = ["LABELS", "SUPPORTED_LOCALES", "consent_sentence", "format_date"]

SUPPORTED_LOCALES = ("en", "fr")

_MONTHS = {
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
}

# CASL s.6(2)(a) and the CRTC's guidance ask the message to identify why the person receives
# it; each kind of consent gets its own honest wording. `None` is the CAN-SPAM opt-out model,
# where a contact may have no consent row at all: we then say who sends, not a made-up origin.
_SENTENCES: Mapping[str, Mapping[Kind | None, str]] = {
    "en": {
        Kind.EXPRESS: "You receive this email because you subscribed on {date} at {source}.",
        Kind.IMPLIED_PURCHASE: (
            "You receive this email because you bought from us on {date} ({source})."
        ),
        Kind.IMPLIED_CONTRACT: (
            "You receive this email because you entered into a contract with us on {date}"
            " ({source})."
        ),
        Kind.IMPLIED_INQUIRY: (
            "You receive this email because you sent us an inquiry on {date} ({source})."
        ),
        Kind.IMPLIED_PUBLICATION: (
            "You receive this email because your address was published ({source}, noted on"
            " {date}) and this message relates to your role."
        ),
        None: "You receive this email from {business}; you can unsubscribe at any time.",
    },
    "fr": {
        Kind.EXPRESS: (
            "Vous recevez ce courriel parce que vous vous êtes abonné le {date} au {source}."
        ),
        Kind.IMPLIED_PURCHASE: (
            "Vous recevez ce courriel parce que vous avez effectué un achat chez nous le {date}"
            " ({source})."
        ),
        Kind.IMPLIED_CONTRACT: (
            "Vous recevez ce courriel parce que vous avez conclu un contrat avec nous le {date}"
            " ({source})."
        ),
        Kind.IMPLIED_INQUIRY: (
            "Vous recevez ce courriel parce que vous nous avez adressé une demande le {date}"
            " ({source})."
        ),
        Kind.IMPLIED_PUBLICATION: (
            "Vous recevez ce courriel parce que votre adresse a été publiée ({source}, relevée"
            " le {date}) et que ce message concerne vos fonctions."
        ),
        None: (
            "Vous recevez ce courriel de la part de {business}. Vous pouvez vous désabonner en"
            " tout temps."
        ),
    },
}

# Footer labels; French typography puts a space before the colon.
LABELS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "en": MappingProxyType(
            {
                "sent_by": "Sent by",
                "phone": "Phone:",
                "email": "Email:",
                "web": "Web:",
                "unsubscribe": "Unsubscribe",
                "preferences": "Manage your preferences",
                "colon": ":",
            }
        ),
        "fr": MappingProxyType(
            {
                "sent_by": "Envoyé par",
                "phone": "Téléphone :",
                "email": "Courriel :",
                "web": "Site web :",
                "unsubscribe": "Se désabonner",
                "preferences": "Gérer vos préférences",
                "colon": " :",
            }
        ),
    }
)


def format_date(value: date, locale: str) -> str:
    """Write a date out in words for `locale` (en or fr): "19 September 2012"."""
    months = _MONTHS[locale]
    day = str(value.day)
    if locale == "fr" and value.day == 1:
        day = "1er"  # French writes the first of the month as an ordinal
    return f"{day} {months[value.month - 1]} {value.year}"


def consent_sentence(
    kind: Kind | None,
    source: str,
    obtained_on: date | None,
    locale: str,
    *,
    business_name: str,
) -> str:
    """The consent-origin sentence for the footer, in `locale`; obtained_on from consent_day."""
    template = _SENTENCES[locale][kind]
    if kind is not None and obtained_on is None:
        raise ValueError(f"a {kind} consent needs the date it was obtained")
    day = "" if obtained_on is None else format_date(obtained_on, locale)
    return template.format(date=day, source=source, business=business_name)
