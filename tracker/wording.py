"""The words recipients read, in English and French: page text and consent history.

Pure functions; no I/O. Dates are spelt out in the reader's language without the process
locale (setlocale is global state a server must not touch), on the day the message footer
names (mailer.core.consent_dates: a date given without a time as given, a timestamp in the
campaign's zone). Everything returned here is plain text: the templates escape it.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Literal

from mailer.core.consent import valid_until
from mailer.core.consent_dates import consent_day, end_date_only
from mailer.core.footer import format_date
from mailer.forms.wording import subscribed_line
from tracker.preferences import LedgerRow

Lang = Literal["en", "fr"]

# A channel inside a sentence ("You unsubscribed from text messages").
_CHANNELS: dict[Lang, dict[str, str]] = {
    "en": {"email": "email", "sms": "text messages", "postal": "post", "phone": "phone calls"},
    "fr": {"email": "courriel", "sms": "SMS", "postal": "courrier", "phone": "téléphone"},
}

# A channel as a switch's label: written out, never derived by capitalising the sentence form
# (which turned "SMS" into "Sms").
_CHANNEL_LABELS: dict[Lang, dict[str, str]] = {
    "en": {"email": "Email", "sms": "Text messages (SMS)", "postal": "Post", "phone": "Phone"},
    "fr": {"email": "Courriel", "sms": "SMS", "postal": "Courrier postal", "phone": "Téléphone"},
}

_BLOCKS: dict[Lang, dict[str, str]] = {
    "en": {
        "hard_bounce": "messages to this address could not be delivered",
        "complaint": "a message was reported as spam from this address",
        "registry": "this address is on a do-not-contact registry",
        "manual": "blocked at your or our request",
        "erasure": "this address was erased",
        "unsubscribe": "you unsubscribed from everything",
    },
    "fr": {
        "hard_bounce": "les messages à cette adresse n'ont pas pu être remis",
        "complaint": "un message a été signalé comme indésirable depuis cette adresse",
        "registry": "cette adresse figure sur une liste d'opposition",
        "manual": "bloqué à votre demande ou à la nôtre",
        "erasure": "cette adresse a été effacée",
        "unsubscribe": "vous vous êtes désabonné de tout",
    },
}

TEXT: dict[Lang, dict[str, str]] = {
    "en": {
        "unsubscribe_title": "Unsubscribe",
        "sender_unknown": "this sender",
        "unsubscribe_intro": "{email} is unsubscribing from messages sent by {sender}.",
        "unsubscribe_about": "This message was about: {topic}.",
        "scope_question": "What would you like to stop receiving?",
        "scope_topic": "Only messages about {topic}",
        "scope_email": "All email from {sender}",
        "scope_digital": "All digital messages from {sender} (email and text messages)",
        "reason_label": "Would you tell us why? (optional)",
        "unsubscribe_button": "Unsubscribe",
        "done_title": "You are unsubscribed",
        "done_topic": "{email} will no longer receive messages about {topic} from {sender}.",
        "done_email": "{email} will no longer receive email from {sender}.",
        "done_digital": ("{email} will no longer receive email or text messages from {sender}."),
        "done_note": "It takes effect at once; a message already on its way may still arrive.",
        "preferences_link": "Manage your preferences",
        "preferences_title": "Your preferences",
        "preferences_intro": "Choose what {sender} may send to {email}.",
        "channels_heading": "How we may reach you",
        "topics_heading": "What we may write to you about",
        "blocked": "Unavailable: {why}.",
        "save_button": "Save my choices",
        "saved": "Your choices are saved.",
        "nothing_changed": "Nothing changed.",
        "history_heading": "Your consent history",
        "history_empty": "Nothing on record.",
        "resubscribe_note": (
            "Turning a switch on is your consent to receive those messages; "
            "you can turn it off here at any time."
        ),
        "not_found_title": "Link not recognised",
        "not_found": "This link is not valid. Please use the link in the message you received.",
        "erased_title": "Nothing to do",
        "erased": "This address is no longer on our lists; we will not write to it.",
        "unavailable_title": "Temporarily unavailable",
        "unavailable": "We could not complete this now. Please try again in a few minutes.",
        "forbidden_title": "Request refused",
        "forbidden": "This form was not sent from our page. Please open the link again.",
        "agree_title": "Keep hearing from us",
        "agree_intro": "{sender} asks {email} for permission to keep writing.",
        "agree_text_heading": "By clicking the button below, you agree to the following:",
        "agree_withdraw": (
            "You can withdraw this consent at any time with the link in every message."
        ),
        "agree_button": "I agree",
        "agreed_title": "Thank you",
        "agreed": "{email} has agreed to keep receiving messages from {sender}.",
    },
    "fr": {
        "unsubscribe_title": "Désabonnement",
        "sender_unknown": "cet expéditeur",
        "unsubscribe_intro": "{email} se désabonne des messages envoyés par {sender}.",
        "unsubscribe_about": "Ce message portait sur : {topic}.",
        "scope_question": "Que ne souhaitez-vous plus recevoir ?",
        "scope_topic": "Seulement les messages sur {topic}",
        "scope_email": "Tous les courriels de {sender}",
        "scope_digital": "Tous les messages électroniques de {sender} (courriels et SMS)",
        "reason_label": "Pouvez-vous nous dire pourquoi ? (facultatif)",
        "unsubscribe_button": "Me désabonner",
        "done_title": "Vous êtes désabonné",
        "done_topic": "{email} ne recevra plus de messages sur {topic} de la part de {sender}.",
        "done_email": "{email} ne recevra plus de courriels de {sender}.",
        "done_digital": "{email} ne recevra plus ni courriels ni SMS de {sender}.",
        "done_note": "C'est immédiat ; un message déjà en route peut encore arriver.",
        "preferences_link": "Gérer vos préférences",
        "preferences_title": "Vos préférences",
        "preferences_intro": "Choisissez ce que {sender} peut envoyer à {email}.",
        "channels_heading": "Comment nous pouvons vous joindre",
        "topics_heading": "Les sujets sur lesquels nous pouvons vous écrire",
        "blocked": "Indisponible : {why}.",
        "save_button": "Enregistrer mes choix",
        "saved": "Vos choix sont enregistrés.",
        "nothing_changed": "Aucun changement.",
        "history_heading": "L'historique de votre consentement",
        "history_empty": "Aucune inscription.",
        "resubscribe_note": (
            "Activer un choix vaut consentement à recevoir ces messages ; "
            "vous pouvez le désactiver ici à tout moment."
        ),
        "not_found_title": "Lien non reconnu",
        "not_found": (
            "Ce lien n'est pas valide. Veuillez utiliser le lien du message que vous avez reçu."
        ),
        "erased_title": "Rien à faire",
        "erased": "Cette adresse ne figure plus sur nos listes ; nous ne lui écrirons pas.",
        "unavailable_title": "Service momentanément indisponible",
        "unavailable": "Nous n'avons pas pu terminer. Veuillez réessayer dans quelques minutes.",
        "forbidden_title": "Demande refusée",
        "forbidden": "Ce formulaire n'a pas été envoyé depuis notre page. Rouvrez le lien.",
        "agree_title": "Continuer à vous écrire",
        "agree_intro": "{sender} demande à {email} la permission de continuer à lui écrire.",
        "agree_text_heading": "En cliquant sur le bouton ci-dessous, vous acceptez ce qui suit :",
        "agree_withdraw": (
            "Vous pouvez retirer ce consentement à tout moment par le lien de chaque message."
        ),
        "agree_button": "J'accepte",
        "agreed_title": "Merci",
        "agreed": "{email} accepte de continuer à recevoir les messages de {sender}.",
    },
}


# The tracker's own ledger sources, as a reader would say them; other sources are the
# operator's words ("Salon E-commerce Paris") and are shown as written.
_OWN_SOURCES: dict[Lang, dict[str, str]] = {
    "en": {
        "one-click": "with your mail app's unsubscribe button",
        "unsubscribe page": "on our unsubscribe page",
        "preference centre": "in your preference centre",
    },
    "fr": {
        "one-click": "avec le bouton de désabonnement de votre messagerie",
        "unsubscribe page": "sur notre page de désabonnement",
        "preference centre": "dans votre centre de préférences",
    },
}


def language(locale: str | None) -> Lang:
    """The page language for a contact's locale: French for fr, fr_CA, fr-FR…, else English."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def long_date(moment: datetime, lang: Lang, zone: tzinfo = UTC, *, date_only: bool = False) -> str:
    """A day spelt out: "19 September 2012", "1er septembre 2012", on the day footers name."""
    return format_date(consent_day(moment, zone, date_only=date_only), lang)


def channel_name(channel: str, lang: Lang) -> str:
    """A channel as a reader calls it in a sentence."""
    return _CHANNELS[lang].get(channel, channel)


def channel_label(channel: str, lang: Lang) -> str:
    """A channel as the label of its switch ("SMS", "Courriel")."""
    return _CHANNEL_LABELS[lang].get(channel, channel)


def block_reason(reason: str, lang: Lang) -> str:
    """Why a switch cannot be turned on from the preference centre."""
    return _BLOCKS[lang].get(reason, reason)


def history_line(row: LedgerRow, lang: Lang, zone: tzinfo = UTC) -> str:
    """One ledger row in plain words, e.g. "You subscribed on 19 September 2012 at …".

    `zone` is the sender's (the campaign's): timestamps are printed as days there.
    """
    on = long_date(row.obtained_at, lang, zone, date_only=row.obtained_date_only)
    channel = channel_name(row.channel, lang)
    how = _how(row.source, lang)
    if row.topic_id is not None:
        topic = row.topic_label(lang) or str(row.topic_id)
        if row.action == "grant":
            return _say(
                lang,
                f"You subscribed to “{topic}” on {on}{how}.",
                f"Vous vous êtes abonné à « {topic} » le {on}{how}.",
            )
        return _say(
            lang,
            f"You unsubscribed from “{topic}” on {on}{how}.",
            f"Vous vous êtes désabonné de « {topic} » le {on}{how}.",
        )
    if row.action == "withdraw":
        return _say(
            lang,
            f"You unsubscribed from {channel} on {on}{how}.",
            f"Vous vous êtes désabonné ({channel}) le {on}{how}.",
        )
    if row.action == "expire":
        return _say(
            lang,
            f"Your consent to receive {channel} ended on {on}.",
            f"Votre consentement ({channel}) a pris fin le {on}.",
        )
    return _grant_line(row, lang, on, channel, zone)


def _how(source: str, lang: Lang, *, at: bool = False) -> str:
    """Where a change came from: our own pages in words, an operator's source as written."""
    own = _OWN_SOURCES[lang].get(source)
    if own is not None:
        return f" {own}"
    if at:  # "You subscribed on 19 September 2012 at Salon E-commerce Paris."
        return _say(lang, f" at {source}", f" (source : {source})")
    return f" ({source})"


def _grant_line(row: LedgerRow, lang: Lang, on: str, channel: str, zone: tzinfo) -> str:
    entry = row.entry()
    end = valid_until(entry) if entry is not None else None
    # The end is a date when the date it counts from is one (two years after a purchase
    # given as a date), else a timestamp printed in the sender's zone.
    end_is_date = end_date_only(
        row.kind, obtained_date_only=row.obtained_date_only, ends_date_only=row.ends_date_only
    )
    until_en = until_fr = ""
    if end is not None:
        until_en = f" until {long_date(end, 'en', zone, date_only=end_is_date)}"
        until_fr = f" jusqu'au {long_date(end, 'fr', zone, date_only=end_is_date)}"
    to_en = "" if row.channel == "email" else f" to {channel}"
    to_fr = "" if row.channel == "email" else f" ({channel})"
    if row.kind == "express" and row.form_source and row.channel == "email":
        # "You subscribed on 7 December 2026 via the form '…' and confirmed by email the same
        # day": a form's grant says how, with both steps (mailer/forms).
        return subscribed_line(
            row.form_source, row.form_requested_at, row.form_confirmed_at, row.obtained_at,
            lang, zone,
        )  # fmt: skip
    match row.kind:
        case "express":
            return _say(
                lang,
                f"You subscribed{to_en} on {on}{_how(row.source, lang, at=True)}.",
                f"Vous vous êtes abonné{to_fr} le {on}{_how(row.source, lang, at=True)}.",
            )
        case "implied_purchase":
            return _say(
                lang,
                f"You bought from us on {on} ({row.source}): we may write to you by"
                f" {channel}{until_en}.",
                f"Vous nous avez acheté le {on} ({row.source}) : nous pouvons vous écrire"
                f" ({channel}){until_fr}.",
            )
        case "implied_contract":
            return _say(
                lang,
                f"You became a customer on {on} ({row.source}): we may write to you by"
                f" {channel}{until_en or ' while the contract lasts and two years after'}.",
                f"Vous êtes devenu client le {on} ({row.source}) : nous pouvons vous écrire"
                f" ({channel}){until_fr or ' pendant le contrat et deux ans après'}.",
            )
        case "implied_inquiry":
            return _say(
                lang,
                f"You contacted us on {on} ({row.source}): we may write to you by"
                f" {channel}{until_en}.",
                f"Vous nous avez contactés le {on} ({row.source}) : nous pouvons vous écrire"
                f" ({channel}){until_fr}.",
            )
        case _:
            return _say(
                lang,
                f"Your address was published on {on} ({row.source}): we may write to you by"
                f" {channel} about your role{until_en}.",
                f"Votre adresse a été publiée le {on} ({row.source}) : nous pouvons vous écrire"
                f" ({channel}) au sujet de vos fonctions{until_fr}.",
            )


def _say(lang: Lang, en: str, fr: str) -> str:
    return fr if lang == "fr" else en
