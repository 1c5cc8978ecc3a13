"""The console's words in English and French (the operator's choice, kept on the account).

The page furniture, and the rules' results (exclusion reasons, lint problems) worded from
their codes: English as the rules themselves say it, French here.
"""

from __future__ import annotations

from collections.abc import Callable

from mailer.campaigns.lint import LintProblem
from mailer.console.page_words import PAGE_WORDS
from mailer.core.consent import REASON_TEXT, Kind, Reason

LANGS = ("en", "fr")

_WORDS: dict[str, tuple[str, str]] = {
    # key: (English, French)
    "app": ("Mailer console", "Console d'envoi"),
    "skip": ("Skip to content", "Aller au contenu"),
    "nav": ("Main", "Principal"),
    "dashboard": ("Dashboard", "Tableau de bord"),
    "campaigns": ("Campaigns", "Campagnes"),
    "contacts": ("Contacts", "Contacts"),
    "operators": ("Operators", "Opérateurs"),
    "language": ("Language", "Langue"),
    "save": ("Save", "Enregistrer"),
    "logout": ("Log out", "Se déconnecter"),
    "logout_all": ("Log out everywhere", "Se déconnecter partout"),
    "signed_in_as": ("Signed in as", "Connecté en tant que"),
    "login": ("Log in", "Connexion"),
    "email": ("Email address", "Adresse courriel"),
    "password": ("Password", "Mot de passe"),
    "password_again": ("Password again", "Mot de passe (encore)"),
    "bad_login": ("Wrong address or password.", "Adresse ou mot de passe incorrect."),
    "locked": (
        "Too many failed attempts: try again in {seconds} seconds.",
        "Trop d'essais infructueux : réessayez dans {seconds} secondes.",
    ),
    "set_password": ("Choose your password", "Choisissez votre mot de passe"),
    "link_invalid": (
        "This link has expired or was already used; ask an administrator for a new one.",
        "Ce lien a expiré ou a déjà servi ; demandez-en un nouveau à un administrateur.",
    ),
    "too_short": (
        "At least 12 characters, please.",
        "Au moins 12 caractères, s'il vous plaît.",
    ),
    "mismatch": ("The two passwords differ.", "Les deux mots de passe diffèrent."),
    "password_set": ("Password set: log in.", "Mot de passe enregistré : connectez-vous."),
    "forbidden": (
        "Your role does not allow this.",
        "Votre rôle ne le permet pas.",
    ),
    "csrf": (
        "This form has expired; reload the page and try again.",
        "Ce formulaire a expiré ; rechargez la page et réessayez.",
    ),
    "not_found": ("Not found.", "Introuvable."),
    "campaign": ("Campaign", "Campagne"),
    "status": ("Status", "État"),
    "topic": ("Topic", "Sujet"),
    "deliveries": ("Deliveries", "Envois"),
    "created": ("Created", "Créée"),
    "finished": ("Finished", "Terminée"),
    "progress": ("Progress", "Avancement"),
    "live": ("Live progress", "Avancement en direct"),
    "per_second": ("sent/s", "envoyés/s"),
    "no_campaigns": ("No campaign yet.", "Aucune campagne pour l'instant."),
    "active": ("Running and scheduled", "En cours et planifiées"),
    "last_24h": ("Last 24 hours", "Dernières 24 heures"),
    "optouts": ("Opt-outs", "Désabonnements"),
    "bounces": ("Bounces", "Rebonds"),
    "complaints": ("Complaints", "Plaintes"),
    "alerts": ("Alerts", "Alertes"),
    "no_alerts": ("No alert.", "Aucune alerte."),
    "new_campaign": ("New campaign", "Nouvelle campagne"),
    "campaign_file": ("Campaign file (TOML)", "Fichier de campagne (TOML)"),
    "upload": ("Or upload a file", "Ou téléversez un fichier"),
    "check": ("Check", "Vérifier"),
    "create": ("Create", "Créer"),
    "lint_ok": (
        "Every sample carries sender, postal address, consent sentence, unsubscribe and "
        "preference links.",
        "Chaque exemple porte l'expéditeur, l'adresse postale, la phrase de consentement, "
        "les liens de désabonnement et de préférences.",
    ),
    "lint_failed": ("This campaign cannot start:", "Cette campagne ne peut pas partir :"),
    "setup_findings": ("Sending setup", "Configuration d'envoi"),
    "audience": ("Audience", "Audience"),
    "eligible": ("Eligible", "Admissibles"),
    "excluded": ("Excluded, by reason", "Exclus, par motif"),
    "reason": ("Reason", "Motif"),
    "why": ("Why", "Pourquoi"),
    "sample": ("Sample", "Exemples"),
    "total": ("Total", "Total"),
    "launch": ("Launch", "Lancer"),
    "launch_confirm": (
        "Send this campaign to {count} contacts now?",
        "Envoyer cette campagne à {count} contacts maintenant ?",
    ),
    "confirm_launch": ("Yes, send to {count} contacts", "Oui, envoyer à {count} contacts"),
    "cancel_back": ("Back", "Retour"),
    "pause": ("Pause", "Suspendre"),
    "resume": ("Resume", "Reprendre"),
    "cancel": ("Cancel the campaign", "Annuler la campagne"),
    "resend_uncertain": ("Resend uncertain", "Renvoyer les incertains"),
    "uncertain_risk": (
        "{count} deliveries were in flight when a worker died: they may or may not have "
        "arrived. Resending risks sending these people the message twice.",
        "{count} envois étaient en cours quand un processus s'est arrêté : ils sont peut-être "
        "arrivés. Les renvoyer risque d'envoyer le message deux fois à ces personnes.",
    ),
    "report": ("Report", "Rapport"),
    "preview": ("Preview", "Aperçu"),
    "preview_as": ("Preview as", "Aperçu pour"),
    "part": ("Part", "Partie"),
    "show": ("Show", "Afficher"),
    "search": ("Search", "Rechercher"),
    "search_hint": (
        "Address (or its beginning) or name",
        "Adresse (ou son début) ou nom",
    ),
    "no_match": ("No contact matches.", "Aucun contact ne correspond."),
    "name": ("Name", "Nom"),
    "locale": ("Language", "Langue"),
    "consent_story": ("Consent history", "Historique du consentement"),
    "preferences": ("Preferences", "Préférences"),
    "suppressions": ("Suppressions", "Suppressions"),
    "explain": ("Explain", "Expliquer"),
    "explain_for": (
        "May this contact receive {campaign}?",
        "Ce contact peut-il recevoir {campaign} ?",
    ),
    "is_eligible": ("Eligible", "Admissible"),
    "not_eligible": ("Not eligible", "Non admissible"),
    "when": ("When", "Quand"),
    "channel": ("Channel", "Canal"),
    "action": ("Action", "Action"),
    "kind": ("Kind / topic", "Type / sujet"),
    "source": ("Source", "Source"),
    "ends": ("Ends", "Fin"),
    "scope": ("Scope", "Portée"),
    "since": ("Since", "Depuis"),
    "state": ("State", "État"),
    "role": ("Role", "Rôle"),
    "last_seen": ("Last seen", "Dernière visite"),
    "add_operator": ("Add an operator", "Ajouter un opérateur"),
    "setup_link": (
        "Send this one-time link to {email} (valid {hours} h):",
        "Envoyez ce lien à usage unique à {email} (valable {hours} h) :",
    ),
    "exists": ("That address already has an account.", "Cette adresse a déjà un compte."),
    "next": ("Next page", "Page suivante"),
    "export": ("Export (JSON)", "Exporter (JSON)"),
    "erase": ("Erase this contact", "Effacer ce contact"),
    "erase_confirm": (
        "Type the address to confirm the erasure (it cannot be undone):",
        "Saisissez l'adresse pour confirmer l'effacement (irréversible) :",
    ),
    "erased": ("Erased.", "Effacé."),
    "csv": ("CSV export", "Export CSV"),
    "topics": ("Topics", "Sujets"),
    "audience_now": ("Computed now:", "Calculée maintenant :"),
    "audience_frozen": ("As frozen at launch,", "Telle que figée au lancement,"),
    "audience_live": (
        "Compute it now, with examples per reason",
        "La calculer maintenant, avec des exemples par motif",
    ),
    "default_subscribed": ("Subscribed by default", "Abonné par défaut"),
    "yes": ("yes", "oui"),
    "no": ("no", "non"),
    "keys": ("API keys", "Clés d'API"),
    "webhooks": ("Webhooks", "Webhooks"),
    "sla_checked": (
        "Unsubscribe SLA checked {age} s ago.",
        "Délai de désabonnement vérifié il y a {age} s.",
    ),
    "sla_pending": (
        "Unsubscribe SLA: being checked, reload in a moment.",
        "Délai de désabonnement : vérification en cours, rechargez dans un instant.",
    ),
    "sla_failed": (
        "Unsubscribe SLA check failed:",
        "La vérification du délai de désabonnement a échoué :",
    ),
    "reports": ("Reports", "Rapports"),
    "period_from": ("From", "Du"),
    "period_to": ("to", "au"),
    "sent": ("Sent", "Envoyés"),
    "opened_people_all": ("Opened (people / all)", "Ouverts (personnes / tous)"),
    "clicked_people_all": ("Clicked (people / all)", "Cliqués (personnes / tous)"),
    "across_caption": (
        "Campaigns started in the period, and their total",
        "Campagnes lancées dans la période, et leur total",
    ),
    "too_many_campaigns": (
        "More campaigns started in this period than the {limit} shown (the newest): "
        "choose a shorter period.",
        "Plus de campagnes lancées dans cette période que les {limit} affichées (les plus "
        "récentes) : choisissez une période plus courte.",
    ),
    "no_campaigns_period": (
        "No campaign started in this period.",
        "Aucune campagne lancée dans cette période.",
    ),
    "age_seconds": ("{age} s ago", "il y a {age} s"),
    "audience_computing": (
        "Being computed: it appears here when ready.",
        "Calcul en cours : le résultat s'affichera ici.",
    ),
    "audience_refreshing": (
        "A newer count is being computed.",
        "Un décompte plus récent est en cours de calcul.",
    ),
    "audience_failed": ("The computation failed:", "Le calcul a échoué :"),
    "none_yet": ("None yet.", "Aucun pour l'instant."),
    "events": ("Events", "Événements"),
    "event": ("Event", "Événement"),
    "detail": ("Detail", "Détail"),
    "machine": ("machine", "machine"),
    "ev_open": ("Open", "Ouverture"),
    "ev_click": ("Click", "Clic"),
    "ev_unsubscribe": ("Unsubscribe", "Désabonnement"),
    "ev_hard_bounce": ("Hard bounce", "Rebond permanent"),
    "ev_soft_bounce": ("Soft bounce", "Rebond temporaire"),
    "ev_complaint": ("Complaint", "Plainte"),
    "keys_cli": ("Created, revoked and replayed with", "Créés, révoqués et rejoués avec"),
}

# The intake and integration pages' words live beside (page_words.py); a key defined twice
# would silently take one wording, so the module is checked at import.
assert not _WORDS.keys() & PAGE_WORDS.keys(), _WORDS.keys() & PAGE_WORDS.keys()
_WORDS.update(PAGE_WORDS)


def translator(lang: str) -> Callable[..., str]:
    """t(key, **values) in `lang` (English for an unknown language)."""
    index = 1 if lang == "fr" else 0

    def t(key: str, **values: object) -> str:
        text = _WORDS[key][index]
        return text.format(**values) if values else text

    return t


def pick(accept_language: str | None) -> str:
    """The first of our languages the browser names (Accept-Language, RFC 9110 s.12.5.4)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGS:
            return tag
    return "en"


# ---------------------------------------------------------------- rule texts
# The rules word their results in English (consent.REASON_TEXT, LintProblem.__str__) for the
# CLI and the logs; the console words them in the operator's language from their codes.

_REASON_FR: dict[Reason, str] = {
    Reason.SEGMENT: "hors du segment de la campagne",
    Reason.ERASED: "données personnelles effacées à la demande de la personne",
    Reason.HARD_BOUNCED: "adresse en rebond permanent",
    Reason.COMPLAINED: "a signalé un message comme indésirable",
    Reason.REGISTRY: "inscrit sur une liste d'exclusion importée",
    Reason.SUPPRESSED_GLOBAL: "exclu de tous les envois",
    Reason.UNSUBSCRIBED_CHANNEL: "désabonné de ce canal",
    Reason.UNSUBSCRIBED_TOPIC: "désabonné de ce sujet",
    Reason.NOT_SUBSCRIBED_TOPIC: "jamais abonné à ce sujet sur inscription",
    Reason.CONSENT_WITHDRAWN: "consentement retiré",
    Reason.NO_CONSENT: "aucun consentement au dossier",
    Reason.CONSENT_EXPIRED: "consentement tacite expiré",
    Reason.INACTIVE: "aucune activité dans la période d'activité de la campagne",
}


def reason_text(code: str, lang: str) -> str:
    """Why a contact is excluded, in `lang`, from the reason's code ('' for an unknown code)."""
    try:
        reason = Reason(code)
    except ValueError:
        return ""
    return _REASON_FR[reason] if lang == "fr" else REASON_TEXT[reason]


_KIND_FR: dict[Kind | None, str] = {
    Kind.EXPRESS: "exprès",
    Kind.IMPLIED_PURCHASE: "tacite (achat)",
    Kind.IMPLIED_CONTRACT: "tacite (contrat)",
    Kind.IMPLIED_INQUIRY: "tacite (demande)",
    Kind.IMPLIED_PUBLICATION: "tacite (publication)",
    None: "sans consentement (CAN-SPAM)",
}
_PART_FR = {
    "html": "HTML",
    "text": "texte",
    "render": "rendu",
    "headers": "en-têtes",
    "message": "message",
}
# By LintProblem.element: what is missing, or what went wrong (its detail, a technical
# text from the template engine or the message assembly, is kept as written).
_LINT_FR = {
    "business_name": "nom de l'entreprise manquant",
    "postal_address": "adresse postale manquante",
    "contact_method": "ni téléphone, ni courriel, ni site web",
    "consent_sentence": "phrase sur l'origine du consentement manquante",
    "unsubscribe_url": "lien de désabonnement manquant",
    "preferences_url": "lien vers le centre de préférences manquant",
    "template": "le gabarit ne s'affiche pas",
    "limit": "dépasse une limite",
    "subject": "objet invalide : chaque message serait ignoré",
    "header": "en-tête invalide : chaque message serait ignoré",
    "sample": "destinataire d'exemple invalide",
    "size": "message trop volumineux",
}
# English prefixes of a detail that the French label already says.
_DETAIL_PREFIXES = ("does not render: ", "over a limit: ")


def lint_text(problem: LintProblem, lang: str) -> str:
    """One lint problem in `lang` (English: the CLI's own line)."""
    if lang != "fr" or problem.element not in _LINT_FR:
        return str(problem)
    what = _LINT_FR[problem.element]
    detail = problem.detail
    for prefix in _DETAIL_PREFIXES:
        detail = detail.removeprefix(prefix)
    if detail and problem.element != "contact_method":
        what = f"{what} ({detail})"
    part = _PART_FR.get(problem.part, problem.part)
    return f"{_KIND_FR.get(problem.kind, str(problem.kind))}, {problem.locale}, {part} : {what}"
