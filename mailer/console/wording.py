"""The console's words in English and French (the operator's choice, kept on the account).

Rule texts (exclusion reasons, lint problems, explanations) come from the roles that
enforce them; this module only words the page furniture.
"""

from __future__ import annotations

from collections.abc import Callable

from mailer.console.page_words import PAGE_WORDS

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
