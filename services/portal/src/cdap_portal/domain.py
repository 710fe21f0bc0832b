"""The portal's own rules, pure: what a form must hold before an API is called, and what a viewer may do
or see (the motifs their profiles offer, whether a request's decision is theirs to take).

No I/O here: no HTTP, no templates, no clock (callers pass `today`), no API client. The routes parse a
form into plain values, ask a function below, and call an API or show the page again with the errors it
gives (a dict field -> French message, empty when the form is complete). None of this decides anything
in the services' place: each API checks again; these rules only spare a call that would be refused, and
say why in the words of the form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from cdap_portal import texts
from cdap_shared.identifiers import is_nir
from cdap_shared.names import check_name

EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
DEPARTMENT = re.compile(r"^(\d{2}|2[AB]|97[1-6])$")
SIRET = re.compile(r"^\d{14}$")
KIND = re.compile(r"^[a-z_]{2,40}$")
MOTIF = re.compile(r"^[a-z_]{1,50}$")
NUMERO = re.compile(r"^\d{7}$")
PHONE = re.compile(r"^\+?[0-9 .\-]{9,20}$")
POSTAL_CODE = re.compile(r"^\d{5}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
EVENT_TYPE = re.compile(r"^[a-z]+(\.[a-z_]+)+$")

# The messages of checks that more than one form makes.
DEPARTMENT_INVALID = "Code de département invalide (exemples : 76, 2A, 974)."
NUMERO_INVALID = "Le numéro allocataire comporte 7 chiffres."
DATE_INVALID = "Date invalide."


class Person(Protocol):
    """The signed-in person as these rules need them (`auth.Viewer` is one)."""

    @property
    def sub(self) -> str: ...

    @property
    def grants(self) -> Iterable[Mapping[str, str]]: ...

    def has(self, *roles: str) -> bool: ...


def _required(values: Mapping[str, str], messages: Mapping[str, str]) -> dict[str, str]:
    """The message of each field of `messages` that `values` leaves empty, in the order of `messages`."""
    return {name: message for name, message in messages.items() if not values.get(name)}


# ------------------------------------------------------------------------------------------ sign-in


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this site only (never `//host` or `https://...`)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def check_sign_in(values: Mapping[str, str]) -> dict[str, str]:
    """The errors of the sign-in form: an e-mail and a password, both given (identity judges them)."""
    messages = {"email": "Saisissez votre adresse électronique.", "password": "Saisissez votre mot de passe."}
    return _required(values, messages)


PASSWORD_MIN_LENGTH = 12  # identity's own minimum; it then applies the rest of its password policy


def check_activation(password: str, confirmation: str | None) -> dict[str, str]:
    """The errors of the activation form: a password of at least 12 characters, and the same password
    again as its confirmation (None when the form sent none)."""
    errors: dict[str, str] = {}
    if len(password) < PASSWORD_MIN_LENGTH:
        errors["password"] = "Le mot de passe doit comporter au moins 12 caractères."
    if password != confirmation:
        errors["confirmation"] = "Les deux mots de passe ne sont pas identiques."
    return errors


# ------------------------------------------------------------------------------------------ lookups


@dataclass(frozen=True)
class ProfileRules:
    """One profile of the consultation policy, as the lookup form needs it."""

    name: str
    label: str
    motifs: tuple[str, ...]
    sections: tuple[str, ...]
    needs_family_name: bool
    searchable: bool


@dataclass(frozen=True)
class PolicyView:
    """The consultation policy dossiers serves: motifs per profile, and whether a profile must give the
    family name (scope `match`) or may search. Empty while dossiers has not answered."""

    profiles: dict[str, ProfileRules] = field(default_factory=dict)

    def known(self) -> bool:
        return bool(self.profiles)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> PolicyView:
        """The view of the policy document dossiers serves; `ValueError` when it is not one."""
        try:
            return cls(
                {
                    name: ProfileRules(
                        name=name,
                        label=str(body.get("label", name)),
                        motifs=tuple(str(m) for m in body.get("motifs", ())),
                        sections=tuple(str(s) for s in body.get("sections", ())),
                        needs_family_name=body.get("scope") == "match",
                        searchable=bool(body.get("searchable", False)),
                    )
                    for name, body in document["profiles"].items()
                }
            )
        except (KeyError, AttributeError, TypeError) as exc:
            raise ValueError(f"not a policy document: {type(exc).__name__}") from exc


def motif_choices(policy: PolicyView, viewer: Person) -> list[dict[str, Any]]:
    """The motifs the person's profiles allow, grouped by profile (what the lookup form offers)."""
    groups: dict[str, dict[str, Any]] = {}
    for grant in viewer.grants:
        rules = policy.profiles.get(grant["profile"])
        if rules is None or grant["profile"] in groups:
            continue
        groups[grant["profile"]] = {
            "profile": rules.name,
            "label": rules.label,
            "motifs": [(m, texts.label(texts.MOTIFS, m)) for m in rules.motifs],
            "needs_family_name": rules.needs_family_name,
            "searchable": rules.searchable,
        }
    return list(groups.values())


def motif_needs_name(choices: list[dict[str, Any]], motif: str) -> bool:
    """True when every profile offering `motif` works from numero + family name (T3, T4): the lookup
    must then give the family name."""
    offering = [c for c in choices if any(m == motif for m, _ in c["motifs"])]
    return bool(offering) and all(c["needs_family_name"] for c in offering)


def check_motif(choices: list[dict[str, Any]], free: bool, motif: str) -> str | None:
    """Why `motif` may not be asked for, or None: it must be one the choices offer (any well-formed one
    when the policy is unknown, `free`), so a lookup dossiers would refuse is not recorded for nothing."""
    allowed = {m for c in choices for m, _ in c["motifs"]}
    if not motif:
        return "Choisissez le motif de la consultation."
    if not MOTIF.fullmatch(motif) or (not free and motif not in allowed):
        return "Ce motif n'est pas proposé pour votre profil."
    return None


def check_numero(numero: str) -> dict[str, str]:
    """The error of a numero allocataire (field `numero`): it has 7 digits."""
    return {} if NUMERO.fullmatch(numero) else {"numero": NUMERO_INVALID}


def check_lookup(values: Mapping[str, str], choices: list[dict[str, Any]], free: bool) -> dict[str, str]:
    """The errors of a lookup's form: a numero of 7 digits, a motif the choices offer (`check_motif`), and
    the family name when that motif needs it (`motif_needs_name`)."""
    errors = check_numero(values["numero"])
    motif_error = check_motif(choices, free, values["motif"])
    if motif_error:
        errors["motif"] = motif_error
    elif motif_needs_name(choices, values["motif"]) and not values["family_name"]:
        errors["family_name"] = "Pour ce motif, saisissez le nom de famille de l'allocataire."
    return errors


# A search's fields checked when given: (field, well-formed, message).
SEARCH_FIELDS: tuple[tuple[str, Callable[[str], object], str], ...] = (
    ("nir", is_nir, "NIR invalide : 15 caractères (13 chiffres et la clé), vérifiez la clé."),
    ("telephone", PHONE.fullmatch, "Numéro de téléphone invalide."),
    ("postal_code", POSTAL_CODE.fullmatch, "Le code postal comporte 5 chiffres."),
    ("birth_date", ISO_DATE.fullmatch, DATE_INVALID),
)


def check_search(values: Mapping[str, str], choices: list[dict[str, Any]], free: bool) -> dict[str, str]:
    """The errors of a search's form, keyed `search_<field>` (the lookup's form is on the same page): a
    motif a searchable profile offers, each field given well-formed, and a NIR, a family name or a
    telephone to search by (a birth date only with the family name)."""
    errors: dict[str, str] = {}
    motif_error = check_motif([c for c in choices if c["searchable"]], free, values["motif"])
    if motif_error:
        errors["search_motif"] = motif_error
    for name, valid, message in SEARCH_FIELDS:
        if values[name] and not valid(values[name]):
            errors[f"search_{name}"] = message
    if not (values["nir"] or values["family_name"] or values["telephone"]):
        errors.setdefault("search_family_name", "Donnez un NIR, un nom de famille ou un numéro de téléphone.")
    if values["birth_date"] and not values["family_name"]:
        errors.setdefault("search_family_name", "La date de naissance s'utilise avec le nom de famille.")
    return errors


def ordered_sections(sections: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The sections the API returned — only those — in the usual reading order."""
    known = [(name, sections[name]) for name in texts.SECTION_ORDER if name in sections]
    extra = [(name, sections[name]) for name in sorted(sections) if name not in texts.SECTION_ORDER]
    return known + extra


# ------------------------------------------------------------------------------------------ access requests


def check_request(values: Mapping[str, str], profiles: Mapping[str, Any], today: date) -> dict[str, str]:
    """The errors of a new access request's form (every field, a known profile when the catalogue is
    known, an end date within a year of `today`), before access-requests is asked."""
    errors = _required(
        values,
        {
            "family_name": "Saisissez le nom de la personne.",
            "given_name": "Saisissez le prénom de la personne.",
            "email": "Saisissez l'adresse électronique professionnelle de la personne.",
            "job_title": "Indiquez la fonction de la personne.",
            "profile": "Choisissez le profil demandé.",
            "department": "Indiquez le département.",
            "justification": "Expliquez pourquoi cette personne a besoin de cet accès.",
            "valid_until": "Indiquez la date de fin de l'habilitation.",
        },
    )
    for name in ("family_name", "given_name"):
        try:
            check_name(values.get(name, ""))
        except ValueError:
            # The same rule access-requests applies: a name ends up in mails with links.
            errors[name] = "Un nom ne peut contenir ni adresse web ou électronique, ni caractère de contrôle."
    if values.get("email") and not EMAIL.fullmatch(values["email"]):
        errors["email"] = "Adresse électronique invalide (exemple : prenom.nom@organisme.fr)."
    if values.get("profile") and profiles and values["profile"] not in profiles:
        errors["profile"] = "Ce profil n'existe pas."
    if values.get("department") and not DEPARTMENT.fullmatch(values["department"]):
        errors["department"] = DEPARTMENT_INVALID
    if values.get("valid_until"):
        end = _end_after(values["valid_until"], today, "La date de fin doit être postérieure à aujourd'hui.")
        if isinstance(end, str):
            errors["valid_until"] = end
        elif end > today + timedelta(days=366):
            errors["valid_until"] = "Une habilitation dure au plus un an."
    return errors


# The decisions an instructor or manager may take on a request.
DECISIONS = ("approve", "reject", "request_documents")
# The role that decides a request in each state that waits for a CAF decision.
DECIDER_ROLE = {"submitted": "caf_instructor", "awaiting_second_approval": "caf_manager"}
APPROVALS = ("stage_approved", "approved")


def may_decide(detail: Mapping[str, Any], viewer: Person) -> bool:
    """Whether the decision forms are for this person: the request waits for their stage's role and they
    have not approved it already (four eyes). Access-requests checks again; this only hides useless forms."""
    role = DECIDER_ROLE.get(str(detail.get("state")))
    if role is None or not viewer.has(role):
        return False
    approvers = {h.get("actor") for h in detail.get("history") or [] if h.get("action") in APPROVALS}
    return viewer.sub not in approvers


def check_decision(decision: str, comment: str, documents: list[str]) -> dict[str, str]:
    """The errors of a decision's form: a decision chosen; for a refusal, its reason (the partner reads
    it); for a request for documents, the documents asked for (one a line)."""
    if decision not in DECISIONS:
        return {"decision": "Choisissez une décision."}
    if decision == "reject" and not comment:
        return {"comment-reject": texts.REQUEST_REASONS["comment_required"]}
    if decision == "request_documents" and not documents:
        return {"documents": texts.REQUEST_REASONS["documents_required"]}
    return {}


def decision_effect(detail: Mapping[str, Any], decision: str, comment: str, documents: list[str]) -> str:
    """What a decision will do, in the words of the confirmation page."""
    applicant = detail.get("applicant") or {}
    who = f"{applicant.get('given_name', '')} {applicant.get('family_name', '')}".strip()
    organisation = detail.get("organisation_name") or "son organisme"
    if decision == "reject":
        return (
            f"La demande de {who} ({organisation}) est refusée : c'est définitif. Le gestionnaire "
            f"d'habilitations de l'organisme reçoit un courriel avec ce motif : « {comment} »."
        )
    if decision == "request_documents":
        return (
            f"Le gestionnaire d'habilitations de {organisation} reçoit un courriel lui demandant : "
            f"{' ; '.join(documents)}. La demande attend ces pièces, puis revient dans la file d'instruction."
        )
    if detail.get("state") == "awaiting_second_approval":
        return (
            f"L'habilitation {detail.get('profile')} est accordée à {who} ({organisation}) jusqu'au "
            f"{texts.date_fr(detail.get('valid_until'))} : son compte est créé ou complété, et la personne "
            "reçoit un courriel."
        )
    return (
        f"La demande de {who} ({organisation}) est validée au premier niveau. Si le profil "
        f"{detail.get('profile')} exige un second niveau, elle part à la validation d'un responsable ; sinon "
        "l'habilitation est accordée et la personne reçoit un courriel."
    )


# ------------------------------------------------------------------------------------------ organisations


def check_organisation_search(values: Mapping[str, str]) -> dict[str, str]:
    """The errors of the organisations' search: its department (`departement`), when given, is a code."""
    department = values["departement"]
    return {"departement": DEPARTMENT_INVALID} if department and not DEPARTMENT.fullmatch(department) else {}


def check_organisation(values: Mapping[str, str], today: date, creating: bool) -> dict[str, str]:
    """The errors of an organisation's form: its name and kind; when `creating`, also its SIRET,
    department, convention and first administrator."""
    errors: dict[str, str] = {}
    if creating and not SIRET.fullmatch(values["siret"]):
        errors["siret"] = "Le SIRET comporte 14 chiffres."
    if creating and not DEPARTMENT.fullmatch(values["department"]):
        errors["department"] = DEPARTMENT_INVALID
    if not values["name"]:
        errors["name"] = "Saisissez le nom de l'organisme."
    if not KIND.fullmatch(values["kind"]):
        errors["kind"] = "Choisissez le type d'organisme."
    if creating:
        errors |= check_convention(values, today)
        if not EMAIL.fullmatch(values["email"]):
            errors["email"] = "Adresse électronique invalide (exemple : prenom.nom@organisme.fr)."
        for name in ("family_name", "given_name"):
            if not values[name]:
                errors[name] = "Saisissez le nom et le prénom du gestionnaire."
    return errors


def check_convention(values: Mapping[str, str], today: date) -> dict[str, str]:
    """The errors of a convention's form: a reference, and an end after `today` (identity refuses an
    ended convention)."""
    errors = {}
    if not values["reference"]:
        errors["reference"] = "Saisissez la référence de la convention."
    ends = _end_after(values["valid_until"], today, "La convention doit se terminer après aujourd'hui.")
    if isinstance(ends, str):
        errors["valid_until"] = ends
    return errors


def _end_after(value: str, today: date, not_after: str) -> date | str:
    """The end date a form gives, when it is one and after `today`; else why not (`not_after` when it
    is not after today)."""
    try:
        end = date.fromisoformat(value)
    except ValueError:
        return DATE_INVALID
    return end if end > today else not_after


@dataclass(frozen=True)
class Amendment:
    """A change to an organisation, as the confirmation page states it and as identity receives it."""

    title: str
    effect: str
    body: dict[str, Any]
    info: str  # the notice on the organisation's page once done


def renaming(values: Mapping[str, str], today: date) -> Amendment | dict[str, str]:
    """A new name or kind; or the form's errors."""
    errors = check_organisation(values, today, creating=False)
    kind = texts.ORGANISATION_KINDS.get(values["kind"], values["kind"])
    return errors or Amendment(
        "Modifier l'organisme",
        f"L'organisme s'appellera « {values['name']} » ({kind}). Les autres services en sont informés.",
        {"name": values["name"], "kind": values["kind"]},
        "modifie",
    )


def convention_change(values: Mapping[str, str], today: date) -> Amendment | dict[str, str]:
    """A renewed or amended convention; or the form's errors."""
    errors = check_convention(values, today)
    return errors or Amendment(
        "Renouveler ou modifier la convention",
        f"La convention {values['reference']} court jusqu'au {texts.date_fr(values['valid_until'])}. Les "
        "demandes d'habilitation de l'organisme sont acceptées jusqu'à cette date.",
        {"convention": {"reference": values["reference"], "valid_until": values["valid_until"]}},
        "convention",
    )


# --------------------------------------------------------------------------------------- accounts and clients


def check_staff_account(values: Mapping[str, str], roles: list[str]) -> dict[str, str]:
    """The errors of a CAF staff account's form: an e-mail, the names, a department code, and at least
    one of the staff roles (`roles`: those the form ticked among the ones it offers)."""
    errors: dict[str, str] = {}
    if not EMAIL.fullmatch(values["email"]):
        errors["email"] = "Adresse électronique invalide (exemple : prenom.nom@caf.fr)."
    errors |= _required(values, {"family_name": "Saisissez le nom.", "given_name": "Saisissez le prénom."})
    if not DEPARTMENT.fullmatch(values["department"]):
        errors["department"] = DEPARTMENT_INVALID
    if not roles:
        errors["roles"] = "Choisissez au moins un rôle."
    return errors


def check_client(values: Mapping[str, str]) -> dict[str, str]:
    """The errors of a partner-system client's form: the system's name, and the habilitation it will use."""
    return _required(
        values,
        {
            "name": "Nommez le système (par exemple : logiciel de gestion locative).",
            "grant_id": "Choisissez l'habilitation que ce système utilisera.",
        },
    )


# ------------------------------------------------------------------------------------------ audit


def paris_moment(value: str) -> datetime | None:
    """A `datetime-local` (or date) field, read as Paris time; None when it is not one."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=texts.PARIS)


@dataclass(frozen=True)
class EntryFilters:
    """What an audit entry search's form asks: the audit API's filters (`params`) of its well-formed
    fields, and the errors of the others."""

    params: dict[str, str]
    errors: dict[str, str]


# The entry search's fields checked when given: (field, pattern, the audit API's filter, message).
ENTRY_FIELDS = (
    ("dossier", NUMERO, "dossier", NUMERO_INVALID),
    ("type", EVENT_TYPE, "type", "Type d'événement invalide."),
    ("trace", TRACE_ID, "trace_id", "L'identifiant de trace comporte 32 caractères hexadécimaux."),
)


def entry_filters(values: Mapping[str, str]) -> EntryFilters:
    """The filters of an entry search's form (`acteur`, `dossier`, `type`, `trace`, and the dates `du`
    and `au`, read as Paris time), each only when given, and the errors of the malformed ones."""
    params: dict[str, str] = {}
    errors: dict[str, str] = {}
    if values["acteur"]:
        params["actor"] = values["acteur"][:254]  # an id, or an e-mail the audit resolves to its accounts
    for name, pattern, param, message in ENTRY_FIELDS:
        if values[name]:
            if pattern.fullmatch(values[name]):
                params[param] = values[name]
            else:
                errors[name] = message
    for name, param in (("du", "from"), ("au", "to")):
        if values[name]:
            moment = paris_moment(values[name])
            if moment is None:
                errors[name] = DATE_INVALID
            else:
                params[param] = moment.isoformat()
    return EntryFilters(params, errors)
