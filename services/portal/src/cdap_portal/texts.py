"""Every French text the pages show for a machine value (reasons, states, sections, roles, motifs).

The services answer with stable codes (`reason`, `state`, section names); the wording lives here, in
one place, so that a new code shows a sensible fallback rather than an error.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")

# Why a consultation was refused (dossiers' `reason`), in words a partner understands.
DENIAL_REASONS = {
    "no_grant_for_department": "Vous n'avez pas d'habilitation pour le département dont relève ce dossier.",
    "outside_caseload": "Ce dossier ne fait pas partie des dossiers suivis par votre organisme.",
    "opposition": "L'allocataire s'est opposé au partage de ses informations : "
    "la consultation n'est pas possible.",
    "motif_not_allowed": "Ce motif de consultation n'est pas autorisé pour votre profil d'habilitation.",
    "identity_mismatch": "Le nom de famille saisi ne correspond pas à ce numéro allocataire.",
    "suspended": "Votre compte est suspendu. Contactez le gestionnaire d'habilitations "
    "de votre organisme ou votre CAF.",
    "unknown_numero": "Aucun dossier ne porte ce numéro allocataire.",
    "rate_limited": "Trop de consultations en peu de temps. Patientez quelques secondes puis réessayez.",
}
DEFAULT_DENIAL = "La consultation a été refusée."

# Refusals of the access-requests workflow (its `reason` codes).
REQUEST_REASONS = {
    "role_not_allowed": "Votre rôle ne permet pas cette action.",
    "not_your_organisation": "Cette demande concerne un autre organisme que le vôtre.",
    "unknown_organisation": "Votre organisme n'est pas encore connu du service des demandes. "
    "Réessayez dans quelques instants.",
    "not_an_administrator": "Vous n'êtes pas gestionnaire d'habilitations de cet organisme.",
    "delegation_withdrawn": "La CAF a retiré à votre organisme la gestion déléguée des habilitations.",
    "convention_expired": "La convention de votre organisme avec la CAF a expiré.",
    "unknown_department": "Ce département n'existe pas.",
    "department_mismatch": "La convention de votre organisme est signée avec la CAF d'un autre département.",
    "unknown_profile": "Ce profil n'existe pas.",
    "end_date_not_in_future": "La date de fin doit être postérieure à aujourd'hui.",
    "end_date_too_far": "Une habilitation dure au plus un an.",
    "beyond_convention": "L'habilitation ne peut pas dépasser la fin de la convention de l'organisme.",
    "duplicate_request": "Une demande est déjà en cours pour cette personne et ce profil.",
    "other_department": "Cette demande relève de la CAF d'un autre département.",
    "own_organisation": "Vous ne pouvez pas décider d'une demande de votre propre organisme.",
    "own_request": "Vous ne pouvez pas décider d'une demande qui vous désigne.",
    "already_decided": "Vous avez déjà validé cette demande : une autre personne doit prendre "
    "la décision suivante.",
    "request_closed": "Cette demande est close ; elle ne peut plus changer.",
    "awaiting_documents": "Les pièces demandées n'ont pas encore été transmises par le partenaire.",
    "wrong_stage_role": "Cette étape est décidée par une autre fonction (instructeur ou responsable).",
    "comment_required": "Un refus doit être motivé : indiquez la raison dans le commentaire.",
    "documents_required": "Indiquez quelles pièces sont demandées.",
    "not_at_this_stage": "Des pièces ne peuvent être demandées qu'en premier niveau.",
    "stale_version": "La demande a changé depuis son affichage. Rechargez la page puis décidez à nouveau.",
    "concurrent_modification": "La demande a été modifiée en même temps. Rechargez la page.",
    "not_a_pdf": "Le fichier transmis n'est pas un document PDF.",
    "unreadable_pdf": "Le fichier PDF est illisible (endommagé, chiffré ou sans page).",
    "active_pdf_content": "Le fichier PDF contient du JavaScript ou des actions automatiques : "
    "transmettez une version sans contenu actif.",
    "body_too_large": "L'envoi dépasse la taille autorisée (10 Mo en tout).",
    "document_too_large": "Le fichier dépasse la taille autorisée (10 Mo).",
    "too_many_files": "Transmettez au plus 10 fichiers à la fois.",
    "unknown_request": "Cette demande n'existe pas.",
    "unknown_document": "Ce document n'existe pas.",
    "idempotency_key_reused": "Ce formulaire a déjà été envoyé avec un contenu différent. Rechargez la page.",
}

STATES = {
    "submitted": "À instruire",
    "documents_requested": "Pièces demandées",
    "awaiting_second_approval": "En attente de seconde validation",
    "approved": "Accordée",
    "provisioned": "Habilitation créée",
    "rejected": "Refusée",
    "withdrawn": "Retirée",
    "expired": "Expirée",
    "revoked": "Révoquée",
}

ACTIONS = {
    "submitted": "Demande déposée",
    "documents_requested": "Pièces demandées",
    "documents_received": "Pièces transmises",
    "stage_approved": "Validée en premier niveau",
    "approved": "Accordée",
    "provisioned": "Habilitation créée",
    "rejected": "Refusée",
    "withdrawn": "Retirée",
    "expired": "Expirée",
    "revoked": "Habilitation révoquée",
    "grant_expired": "Habilitation arrivée à échéance",
    "escalated": "Relance (échéance dépassée)",
    "reminded": "Rappel envoyé",
    "commented": "Message",
}

SECTIONS = {
    "identite": "Identité",
    "adresse": "Adresse",
    "contact": "Contact",
    "foyer": "Composition du foyer",
    "ressources": "Ressources",
    "droits": "Droits ouverts",
    "paiements": "Paiements",
    "quotient_familial": "Quotient familial",
    "logement": "Logement",
    "rsa": "RSA",
}
# The order sections appear in; a section the policy adds later comes after these, by name.
SECTION_ORDER = tuple(SECTIONS)

# Field names inside the sections (the CAF feed's vocabulary).
FIELDS = {
    "family_name": "Nom",
    "given_name": "Prénom",
    "birth_date": "Date de naissance",
    "sex": "Sexe",
    "line": "Adresse",
    "postal_code": "Code postal",
    "city": "Commune",
    "telephone": "Téléphone",
    "email": "Courriel",
    "members": "Membres",
    "children": "Nombre d'enfants",
    "role": "Qualité",
    "monthly_income": "Revenus mensuels",
    "reference_year": "Année de référence",
    "prestation": "Prestation",
    "monthly_amount": "Montant mensuel",
    "from": "Depuis le",
    "to": "Jusqu'au",
    "date": "Date",
    "amount": "Montant",
    "payee": "Bénéficiaire du paiement",
    "month": "Mois",
    "value": "Valeur",
    "status": "Statut",
    "aid_paid_to": "Aide versée à",
    "landlord_siret": "SIRET du bailleur",
    "rent": "Loyer",
    "referent_siret": "SIRET du référent RSA",
    "numero": "Numéro allocataire",
}
# The fields that hold sums of money (euros), written as amounts (`texts.euros`).
MONEY_FIELDS = frozenset({"monthly_income", "monthly_amount", "amount", "rent"})

MOTIFS = {
    "accompagnement_social": "Accompagnement social",
    "instruction_aide": "Instruction d'une aide",
    "verification_droits": "Vérification des droits",
    "gestion_aide_logement": "Gestion de l'aide au logement",
    "tarification_vacances": "Tarification des aides aux vacances",
    "tarification_periscolaire": "Tarification périscolaire ou d'accueil",
    "instruction_rsa": "Instruction du RSA",
    "accompagnement_rsa": "Accompagnement RSA",
}

ROLES = {
    "partner_user": "Utilisateur partenaire",
    "partner_admin": "Gestionnaire d'habilitations",
    "caf_instructor": "Instructeur CAF",
    "caf_manager": "Responsable des habilitations CAF",
    "caf_admin": "Administrateur CAF",
    "auditor": "Auditeur",
}

# The kinds of partner organisation (identity's `kind`), as the administration's forms offer them.
ORGANISATION_KINDS = {
    "ccas": "Centre communal d'action sociale",
    "conseil_departemental": "Conseil départemental",
    "bailleur": "Bailleur social",
    "vacances": "Organisme de vacances et de loisirs",
    "periscolaire": "Service périscolaire",
    "rsa": "Partenaire RSA",
}

GRANT_STATES = {"active": "En cours", "revoked": "Révoquée", "expired": "Expirée", "ended": "Terminée"}
# Who a request's history names when no person acted: identity's events, the service's own scheduler.
SERVICE_ACTORS = (None, "", "identity", "cdap-access-requests")

ACCOUNT_STATES = {"pending": "En attente d'activation", "active": "Actif", "suspended": "Suspendu"}


def account_action_applies(action: str, account: dict[str, object]) -> bool:
    """Whether a list offers `action` for `account` as it now is (identity decides in the end)."""
    status = account.get("status")
    return {
        "suspend": status != "suspended",
        "reinstate": status == "suspended",
        "force-password-reset": status == "active",
        "unlock": bool(account.get("locked")),
        "resend-activation": status == "pending",
    }.get(action, False)


# Event types an auditor filters on.
EVENT_TYPES = {
    "dossier.consulted": "Consultation d'un dossier",
    "dossier.searched": "Recherche de dossiers",
    "identity.login.succeeded": "Connexion réussie",
    "identity.login.failed": "Connexion échouée",
    "identity.user.provisioned": "Compte créé",
    "identity.user.suspended": "Compte suspendu",
    "identity.grant.issued": "Habilitation créée",
    "identity.grant.revoked": "Habilitation révoquée",
    "identity.client.disabled": "Client désactivé",
    "access.request.submitted": "Demande d'habilitation déposée",
    "access.request.approved": "Demande d'habilitation accordée",
    "access.request.rejected": "Demande d'habilitation refusée",
    "audit.alert.raised": "Alerte",
}

DECISIONS = {
    "granted": "Accordée",
    "denied": "Refusée",
    "not_found": "Dossier inconnu",
    "rate_limited": "Limite de débit",
}

SEVERITIES = {"info": "Information", "warning": "Avertissement", "critical": "Critique"}

# Identity's login refusals (`error_description`).
LOGIN_ERRORS = {
    "bad credentials": "Adresse électronique, mot de passe ou code incorrect.",
    "totp required": "Saisissez le code à usage unique de votre application d'authentification.",
    "account suspended": "Votre compte est suspendu. "
    "Contactez votre gestionnaire d'habilitations ou votre CAF.",
    "password reset required": "Votre CAF vous demande de choisir un nouveau mot de passe : "
    "utilisez le lien reçu par courriel.",
}

# Identity's password policy messages, in French.
_PASSWORD_RULES = (
    (re.compile(r"at least (\d+) characters"), "Le mot de passe doit comporter au moins {0} caractères."),
    (re.compile(r"at most (\d+) characters"), "Le mot de passe doit comporter au plus {0} caractères."),
    (re.compile(r"username or e-mail"), "Le mot de passe ne doit pas contenir votre adresse électronique."),
    (
        re.compile(r"too common"),
        "Ce mot de passe est trop courant ; choisissez-en un plus difficile à deviner.",
    ),
    (re.compile(r"last (\d+) passwords"), "Le mot de passe doit différer de vos {0} derniers mots de passe."),
)


def denial(reason: str | None) -> str:
    return DENIAL_REASONS.get(reason or "", DEFAULT_DENIAL)


def request_refusal(reason: str | None, status: int) -> str:
    if reason in REQUEST_REASONS:
        return REQUEST_REASONS[reason]
    if status == 503:
        return "Le service des demandes d'habilitation est momentanément indisponible. Réessayez plus tard."
    if status == 404:
        return "Cette demande n'existe pas ou ne vous est pas accessible."
    if status == 403:
        return "Vous n'avez pas accès à cette demande."
    return "L'action n'a pas pu être enregistrée."


def login_error(description: str) -> str:
    if description.startswith("account locked"):
        return (
            "Votre compte est temporairement verrouillé après plusieurs échecs. "
            "Réessayez plus tard ou contactez votre CAF."
        )
    return LOGIN_ERRORS.get(description, "La connexion a échoué.")


def password_violation(message: str) -> str:
    for pattern, french in _PASSWORD_RULES:
        found = pattern.search(message)
        if found:
            return french.format(*found.groups())
    return message


_FIELD_RANK = {name: rank for rank, name in enumerate(FIELDS)}


def field_order(keys: object) -> list[str]:
    """Keys of a dossier record in reading order (name before birth date...), unknown ones last."""
    names = [str(k) for k in keys] if isinstance(keys, (dict, list, tuple)) else []
    return sorted(names, key=lambda k: (_FIELD_RANK.get(k, len(_FIELD_RANK)), k))


def label(table: dict[str, str], code: object) -> str:
    """The French label of `code`, else the code made readable (a new value never breaks a page)."""
    text = str(code) if code is not None else ""
    return table.get(text, text.replace("_", " "))


MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip


def _day_fr(day: date) -> str:
    return f"{'1er' if day.day == 1 else day.day} {MONTHS[day.month - 1]} {day.year}"


def date_fr(value: object) -> str:
    """How every page writes a date: `2026-11-30` as `30 novembre 2026`, a moment as `30 novembre 2026 à
    14:05` in Paris time (the services speak UTC); anything else as it is."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return _day_fr(value)
    else:
        text = str(value)
        try:
            if len(text) == 10:
                return _day_fr(date.fromisoformat(text))
            moment = datetime.fromisoformat(text)
        except ValueError:
            return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(PARIS)
    return f"{_day_fr(moment.date())} à {moment:%H:%M}"


def day_and_time(value: object) -> str:
    """A moment the short way, in Paris time: `30/11 14:05` ("journal à jour au 30/11 14:05"); anything
    that is not a moment as it is."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value or "")
    if moment.tzinfo is not None:
        moment = moment.astimezone(PARIS)
    return f"{moment:%d/%m %H:%M}"


def business_days_left(days: int) -> str:
    """A deadline in business days as the queue says it: left, due today, or late."""
    plural = "s" if abs(days) > 1 else ""
    if days > 0:
        return f"{days} jour{plural} ouvré{plural} restant{plural}"
    if days == 0:
        return "à traiter aujourd'hui"
    return f"en retard de {-days} jour{plural} ouvré{plural}"


def siret_fr(value: object) -> str:
    """A SIRET as people read it: `123 456 789 00012` (SIREN in threes, then the establishment's NIC)."""
    text = str(value or "")
    if not re.fullmatch(r"\d{14}", text):
        return text
    return f"{text[:3]} {text[3:6]} {text[6:9]} {text[9:]}"


# CLDR's French: groups of three joined by a narrow no-break space, a decimal comma, and a no-break space
# before the sign, so that an amount never breaks across lines (what `babel`'s fr_FR gives).
NARROW_NBSP = "\u202f"
NBSP = "\u00a0"


def euros(value: object) -> str:
    """A sum in euros as French pages write it: `1234.5` as `1 234,50 €` (cents always shown); anything
    that is not a number as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        return "" if value is None else str(value)
    try:
        amount = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return str(value)
    if not amount.is_finite():
        return str(value)
    whole, cents = f"{abs(amount):,.2f}".split(".")
    sign = "-" if amount < 0 else ""
    return f"{sign}{whole.replace(',', NARROW_NBSP)},{cents}{NBSP}€"
