"""The words of sign-up forms, their pages and the plain-words history line, in en and fr.

Pure: no I/O. Shared by the tracker's hosted pages, the embed snippet and `contacts show`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, tzinfo
from typing import Any, Literal

from mailer.core.consent_dates import consent_day
from mailer.core.footer import format_date

Lang = Literal["en", "fr"]

TEXT: dict[Lang, dict[str, str]] = {
    "en": {
        "form_title": "Subscribe",
        "form_intro": "Receive news from {business} by email.",
        "email_label": "Email address",
        "name_label": "Name (optional)",
        "topics_legend": "What would you like to receive?",
        "consent_legend": "Your consent",
        "required": "required",
        "submit": "Subscribe",
        "pow_note": "Your browser solves a small puzzle before sending (spam protection).",
        "withdraw_note": "You can unsubscribe at any time with the link in every message.",
        "identity": "{business}, {address} — {contact}",
        "sent_title": "Check your inbox",
        "sent": (
            "If {email} can receive our messages, a confirmation email is on its way. "
            "Your subscription starts when you press the button in that email."
        ),
        "single_title": "Thank you",
        # The same words whether the grant was recorded or a confirmation is needed (someone
        # who once unsubscribed must confirm by email): nothing tells the two apart.
        "single": (
            "If {email} can receive our messages, it is subscribed; if we need you to confirm, "
            "an email is on its way."
        ),
        "invalid_title": "Please check the form",
        "invalid": (
            "We need a valid email address and your consent (the box next to the sentence)."
        ),
        "expired_form_title": "This page has expired",
        "expired_form": "This form was open too long. Please reload the page and send it again.",
        "rate_title": "Too many requests",
        "rate": "Too many sign-ups came from your network. Please try again later.",
        "confirm_title": "Confirm your subscription",
        "confirm_intro": "{email} asked to receive email from {business} ({source}).",
        "confirm_text_heading": "By pressing the button, you agree to the following:",
        "confirm_button": "Confirm my subscription",
        "confirmed_title": "Subscription confirmed",
        "confirmed": "Thank you: {email} is subscribed to email from {business}.",
        "already_title": "Already confirmed",
        "already": "This subscription was already confirmed; nothing more to do.",
        "stale_title": "This link has expired",
        "stale": "This confirmation link is too old. Please subscribe again on our site.",
        "not_found_title": "Not found",
        "not_found": "This form or link does not exist.",
        "forbidden_title": "Request refused",
        "forbidden": "This form was not sent from a page allowed to send it.",
        "unavailable_title": "Temporarily unavailable",
        "unavailable": "We could not complete this now. Please try again in a few minutes.",
    },
    "fr": {
        "form_title": "Abonnement",
        "form_intro": "Recevez par courriel les nouvelles de {business}.",
        "email_label": "Adresse courriel",
        "name_label": "Nom (facultatif)",
        "topics_legend": "Que souhaitez-vous recevoir ?",
        "consent_legend": "Votre consentement",
        "required": "obligatoire",
        "submit": "M'abonner",
        "pow_note": (
            "Votre navigateur résout une petite énigme avant l'envoi (protection antipourriel)."
        ),
        "withdraw_note": "Vous pouvez vous désabonner en tout temps par le lien de chaque message.",
        "identity": "{business}, {address} — {contact}",
        "sent_title": "Consultez votre boîte de réception",
        "sent": (
            "Si {email} peut recevoir nos messages, un courriel de confirmation est en route. "
            "Votre abonnement commence lorsque vous appuyez sur le bouton de ce courriel."
        ),
        "single_title": "Merci",
        "single": (
            "Si {email} peut recevoir nos messages, l'adresse est abonnée ; s'il faut votre "
            "confirmation, un courriel est en route."
        ),
        "invalid_title": "Veuillez vérifier le formulaire",
        "invalid": (
            "Il nous faut une adresse courriel valide et votre consentement (la case à côté "
            "de la phrase)."
        ),
        "expired_form_title": "Cette page a expiré",
        "expired_form": (
            "Ce formulaire est resté ouvert trop longtemps. Rechargez la page et renvoyez-le."
        ),
        "rate_title": "Trop de demandes",
        "rate": "Trop d'abonnements sont venus de votre réseau. Veuillez réessayer plus tard.",
        "confirm_title": "Confirmez votre abonnement",
        "confirm_intro": "{email} a demandé à recevoir les courriels de {business} ({source}).",
        "confirm_text_heading": "En appuyant sur le bouton, vous acceptez ce qui suit :",
        "confirm_button": "Confirmer mon abonnement",
        "confirmed_title": "Abonnement confirmé",
        "confirmed": "Merci : {email} est abonné aux courriels de {business}.",
        "already_title": "Déjà confirmé",
        "already": "Cet abonnement était déjà confirmé ; il n'y a rien d'autre à faire.",
        "stale_title": "Ce lien a expiré",
        "stale": "Ce lien de confirmation est trop ancien. Abonnez-vous de nouveau sur notre site.",
        "not_found_title": "Introuvable",
        "not_found": "Ce formulaire ou ce lien n'existe pas.",
        "forbidden_title": "Demande refusée",
        "forbidden": "Ce formulaire n'a pas été envoyé depuis une page autorisée.",
        "unavailable_title": "Service momentanément indisponible",
        "unavailable": "Nous n'avons pas pu terminer. Veuillez réessayer dans quelques minutes.",
    },
}


def language(locale: str | None) -> Lang:
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def _day(value: Any, zone: tzinfo) -> date:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return consent_day(moment, zone, date_only=False)


def form_history_line(
    evidence: Mapping[str, Any], obtained_at: datetime, lang: Lang, zone: tzinfo
) -> str | None:
    """A form grant in plain words, or None when the evidence is not a form's.

    "You subscribed on 7 December 2026 via the form 'Site web — infolettre' and confirmed by
    email the same day."
    """
    form = evidence.get("form")
    if not isinstance(form, Mapping) or not isinstance(form.get("source"), str):
        return None
    request = evidence.get("request")
    confirmation = evidence.get("confirmation")
    return subscribed_line(
        form["source"],
        (request or {}).get("at") if isinstance(request, Mapping) else None,
        confirmation.get("at") if isinstance(confirmation, Mapping) else None,
        obtained_at,
        lang,
        zone,
    )


def subscribed_line(
    source: str,
    requested_at: str | datetime | None,
    confirmed_at: str | datetime | None,
    obtained_at: datetime,
    lang: Lang,
    zone: tzinfo,
) -> str:
    """The sentence for a grant a form recorded (confirmed by email, or single opt-in)."""
    asked = _day(requested_at or obtained_at, zone)
    on = format_date(asked, lang)
    if lang == "fr":
        head = f"Vous vous êtes abonné le {on} par le formulaire « {source} »"
    else:
        head = f"You subscribed on {on} via the form '{source}'"
    if not confirmed_at:
        return head + "."  # single opt-in: the evidence says "single opt-in"
    confirmed = _day(confirmed_at, zone)
    if confirmed == asked:
        when_fr, when_en = "le jour même", "the same day"
    else:
        when_fr = f"le {format_date(confirmed, 'fr')}"
        when_en = f"on {format_date(confirmed, 'en')}"
    if lang == "fr":
        return f"{head} et l'avez confirmé par courriel {when_fr}."
    return f"{head} and confirmed by email {when_en}."
