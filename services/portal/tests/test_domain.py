"""The portal's own rules (`cdap_portal.domain`), without HTTP: what a form must hold before an API is
called, and what a viewer may do or see. The pages' tests show the same rules through the routes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cdap_portal import domain
from cdap_portal.auth import Viewer
from cdap_portal.routes_instruction import DECISION_TITLES, DECISIONS

from .conftest import INSTRUCTOR, NEW_REQUEST, POLICY, T1_USER, T3_USER

TODAY = date(2026, 11, 30)
POLICY_VIEW = domain.PolicyView.from_document(POLICY)


def request_form(**changes: str) -> dict[str, str]:
    """A complete new-request form, with `changes`."""
    return {**NEW_REQUEST, "valid_until": (TODAY + timedelta(days=200)).isoformat()} | changes


PROFILES = {"T2": {"label": "Bailleurs"}}


def test_a_complete_request_form_has_no_errors() -> None:
    assert domain.check_request(request_form(), PROFILES, TODAY) == {}


def test_a_request_without_a_justification_is_refused_with_its_message() -> None:
    errors = domain.check_request(request_form(justification=""), PROFILES, TODAY)
    assert errors == {"justification": "Expliquez pourquoi cette personne a besoin de cet accès."}


@pytest.mark.parametrize(
    ("valid_until", "error"),
    [
        (TODAY.isoformat(), "La date de fin doit être postérieure à aujourd'hui."),
        ((TODAY + timedelta(days=1)).isoformat(), None),
        ((TODAY + timedelta(days=366)).isoformat(), None),
        ((TODAY + timedelta(days=367)).isoformat(), "Une habilitation dure au plus un an."),
        ("31/12/2026", "Date invalide."),
    ],
)
def test_a_grant_ends_after_today_and_within_a_year(valid_until: str, error: str | None) -> None:
    errors = domain.check_request(request_form(valid_until=valid_until), PROFILES, TODAY)
    assert errors.get("valid_until") == error


def test_the_profile_is_checked_only_against_a_catalogue_access_requests_gave() -> None:
    assert domain.check_request(request_form(profile="T9"), PROFILES, TODAY) == {
        "profile": "Ce profil n'existe pas."
    }
    # Catalogue not read (access-requests did not answer): access-requests will judge the profile.
    assert domain.check_request(request_form(profile="T9"), {}, TODAY) == {}


def test_the_lookup_offers_each_profile_of_the_person_once_and_only_those_the_policy_knows() -> None:
    grants = [
        {"id": "g-1", "profile": "T1", "department": "76"},
        {"id": "g-2", "profile": "T1", "department": "27"},
        {"id": "g-9", "profile": "T9", "department": "76"},
    ]
    viewer = Viewer.from_claims({**T1_USER, "grants": grants})
    [t1] = domain.motif_choices(POLICY_VIEW, viewer)
    assert t1["profile"] == "T1" and t1["searchable"] and not t1["needs_family_name"]
    assert [code for code, _ in t1["motifs"]] == [
        "accompagnement_social",
        "instruction_aide",
        "verification_droits",
    ]


def test_a_motif_not_in_the_profile_s_choices_is_refused() -> None:
    choices = domain.motif_choices(POLICY_VIEW, Viewer.from_claims(T1_USER))
    refused = "Ce motif n'est pas proposé pour votre profil."
    assert domain.check_motif(choices, False, "tarification_vacances") == refused  # T3's, not T1's
    assert domain.check_motif(choices, False, "accompagnement_social") is None
    assert domain.check_motif(choices, False, "") == "Choisissez le motif de la consultation."
    # Policy unknown (dossiers did not answer): any well-formed motif is sent, dossiers judges it.
    assert domain.check_motif([], True, "tarification_vacances") is None
    assert domain.check_motif([], True, "Tarification vacances") == refused


def test_the_family_name_is_needed_only_when_every_profile_offering_the_motif_matches_by_name() -> None:
    document: dict[str, Any] = {
        "profiles": {
            **POLICY["profiles"],
            "T1": {**POLICY["profiles"]["T1"], "motifs": ["accompagnement_social", "tarification_vacances"]},
        }
    }
    t1, t3 = (
        {"id": "g-1", "profile": "T1", "department": "76"},
        {"id": "g-3", "profile": "T3", "department": "76"},
    )
    both = Viewer.from_claims({**T1_USER, "grants": [t1, t3]})
    only_t3 = Viewer.from_claims(T3_USER)
    policy = domain.PolicyView.from_document(document)
    assert domain.motif_needs_name(domain.motif_choices(policy, only_t3), "tarification_vacances")
    # T1 offers it too, from the numero alone: the name is not required.
    assert not domain.motif_needs_name(domain.motif_choices(policy, both), "tarification_vacances")


def test_a_lookup_needs_a_numero_of_7_digits_and_the_family_name_where_the_motif_requires_it() -> None:
    t1 = domain.motif_choices(POLICY_VIEW, Viewer.from_claims(T1_USER))
    t3 = domain.motif_choices(POLICY_VIEW, Viewer.from_claims(T3_USER))
    lookup = {"numero": "1234567", "motif": "accompagnement_social", "family_name": ""}
    assert domain.check_lookup(lookup, t1, False) == {}
    assert domain.check_lookup({**lookup, "numero": "123456"}, t1, False) == {
        "numero": "Le numéro allocataire comporte 7 chiffres."
    }
    by_name = {**lookup, "motif": "tarification_vacances"}
    assert domain.check_lookup(by_name, t3, False) == {
        "family_name": "Pour ce motif, saisissez le nom de famille de l'allocataire."
    }
    assert domain.check_lookup({**by_name, "family_name": "Martin"}, t3, False) == {}


SEARCH = {"motif": "accompagnement_social", "nir": "", "family_name": "", "birth_date": ""}
SEARCH |= {"telephone": "", "postal_code": ""}


def test_a_search_needs_something_to_search_by() -> None:
    t1 = domain.motif_choices(POLICY_VIEW, Viewer.from_claims(T1_USER))
    assert domain.check_search(SEARCH, t1, False) == {
        "search_family_name": "Donnez un NIR, un nom de famille ou un numéro de téléphone."
    }
    by_phone = {**SEARCH, "birth_date": "1985-05-12", "telephone": "0601020304"}
    assert domain.check_search(by_phone, t1, False) == {
        "search_family_name": "La date de naissance s'utilise avec le nom de famille."
    }
    by_name = {**SEARCH, "family_name": "Martin", "birth_date": "1985-05-12"}
    assert domain.check_search(by_name, t1, False) == {}
    assert domain.check_search({**SEARCH, "nir": "1 85 05 78 006 084 91"}, t1, False) == {}


def test_a_search_s_malformed_fields_are_named_with_the_search_prefix() -> None:
    t1 = domain.motif_choices(POLICY_VIEW, Viewer.from_claims(T1_USER))
    malformed = {"nir": "1 85 05 78 006 084 36", "telephone": "06", "postal_code": "7600"}
    errors = domain.check_search({**SEARCH, **malformed, "birth_date": "12/05/1985"}, t1, False)
    assert errors == {
        "search_nir": "NIR invalide : 15 caractères (13 chiffres et la clé), vérifiez la clé.",
        "search_telephone": "Numéro de téléphone invalide.",
        "search_postal_code": "Le code postal comporte 5 chiffres.",
        "search_birth_date": "Date invalide.",
        "search_family_name": "La date de naissance s'utilise avec le nom de famille.",
    }
    # T3 does not search: its motif is not offered to a search.
    t3 = domain.motif_choices(POLICY_VIEW, Viewer.from_claims(T3_USER))
    by_name = {**SEARCH, "motif": "tarification_vacances", "family_name": "Martin"}
    assert domain.check_search(by_name, t3, False) == {
        "search_motif": "Ce motif n'est pas proposé pour votre profil."
    }


APPROVED_BY_INSTR = [{"actor": "instr", "action": "stage_approved", "stage": 1}]


@pytest.mark.parametrize(
    ("roles", "state", "history", "decides"),
    [
        (["caf_instructor"], "submitted", [], True),
        (["caf_instructor"], "awaiting_second_approval", [], False),  # a manager's stage
        (["caf_manager"], "submitted", [], False),  # an instructor's stage
        (["caf_manager"], "awaiting_second_approval", APPROVED_BY_INSTR, False),  # approved it at stage 1
        (["caf_instructor", "caf_manager"], "awaiting_second_approval", APPROVED_BY_INSTR, False),
        (["caf_instructor"], "documents_requested", [], False),  # waits for the partner
    ],
)
def test_a_request_s_decision_is_for_its_stage_s_role_and_never_twice_the_same_person(
    roles: list[str], state: str, history: list[dict[str, Any]], decides: bool
) -> None:
    viewer = Viewer.from_claims({**INSTRUCTOR, "roles": roles})
    assert domain.may_decide({"state": state, "history": history}, viewer) is decides


def test_another_manager_may_take_the_second_decision() -> None:
    manager = Viewer.from_claims({**INSTRUCTOR, "sub": "mgr", "roles": ["caf_manager"]})
    detail = {"state": "awaiting_second_approval", "history": APPROVED_BY_INSTR}
    assert domain.may_decide(detail, manager)


@pytest.mark.parametrize(
    ("decision", "comment", "documents", "errors"),
    [
        ("", "", [], {"decision": "Choisissez une décision."}),
        ("approve", "", [], {}),
        (
            "reject",
            "",
            [],
            {"comment-reject": "Un refus doit être motivé : indiquez la raison dans le commentaire."},
        ),
        ("reject", "Pas de convention", [], {}),
        ("request_documents", "", [], {"documents": "Indiquez quelles pièces sont demandées."}),
        ("request_documents", "", ["Kbis"], {}),
    ],
)
def test_a_refusal_gives_its_reason_and_a_request_for_documents_names_them(
    decision: str, comment: str, documents: list[str], errors: dict[str, str]
) -> None:
    assert domain.check_decision(decision, comment, documents) == errors


def test_the_second_approval_says_the_grant_is_issued_until_its_end() -> None:
    detail = {
        "state": "awaiting_second_approval",
        "profile": "T2",
        "valid_until": "2027-06-30",
        "applicant": {"given_name": "Jules", "family_name": "Petit"},
        "organisation_name": "Bailleur de Rouen",
    }
    effect = domain.decision_effect(detail, "approve", "", [])
    assert effect.startswith(
        "L'habilitation T2 est accordée à Jules Petit (Bailleur de Rouen) jusqu'au 30 juin 2027"
    )
    rejected = domain.decision_effect(detail, "reject", "Pas de convention", [])
    assert "c'est définitif" in rejected and "« Pas de convention »" in rejected


@pytest.mark.parametrize("suite", ["/\\evil.example", "audit", "", None])
def test_sign_in_goes_back_to_a_path_of_this_site_only(suite: str | None) -> None:
    assert domain.safe_next(suite) == "/"
    assert domain.safe_next("/audit?acteur=a%40b.fr") == "/audit?acteur=a%40b.fr"


@pytest.mark.parametrize(
    ("check", "filled", "errors"),
    [
        (
            domain.check_sign_in,
            {"email": "claire@example.fr", "password": "x"},
            {"email": "Saisissez votre adresse électronique.", "password": "Saisissez votre mot de passe."},
        ),
        (
            domain.check_client,
            {"name": "Logiciel locatif", "grant_id": "g-2"},
            {
                "name": "Nommez le système (par exemple : logiciel de gestion locative).",
                "grant_id": "Choisissez l'habilitation que ce système utilisera.",
            },
        ),
    ],
    ids=["sign-in", "partner-system client"],
)
def test_a_form_left_empty_names_each_field_to_fill(
    check: Callable[[Mapping[str, str]], dict[str, str]], filled: dict[str, str], errors: dict[str, str]
) -> None:
    assert check(dict.fromkeys(filled, "")) == errors
    assert check(filled) == {}


@pytest.mark.parametrize(
    ("password", "confirmation", "errors"),
    [
        ("correct horse battery", "correct horse battery", {}),
        ("court", "court", {"password": "Le mot de passe doit comporter au moins 12 caractères."}),
        ("123456789012", "123456789012", {}),  # 12 characters: enough here, identity judges the rest
        (
            "correct horse battery",
            "correct horse batterie",
            {"confirmation": "Les deux mots de passe ne sont pas identiques."},
        ),
        ("correct horse battery", None, {"confirmation": "Les deux mots de passe ne sont pas identiques."}),
    ],
)
def test_an_activation_s_password_has_12_characters_and_is_typed_twice_alike(
    password: str, confirmation: str | None, errors: dict[str, str]
) -> None:
    assert domain.check_activation(password, confirmation) == errors


def test_a_convention_must_end_after_today() -> None:
    convention = {"reference": "CONV-76-1", "valid_until": TODAY.isoformat()}
    assert domain.check_convention(convention, TODAY) == {
        "valid_until": "La convention doit se terminer après aujourd'hui."
    }
    assert domain.check_convention(convention, TODAY - timedelta(days=1)) == {}
    change = domain.convention_change(convention, TODAY - timedelta(days=1))
    assert isinstance(change, domain.Amendment)
    assert change.body == {"convention": {"reference": "CONV-76-1", "valid_until": TODAY.isoformat()}}


def test_renaming_names_the_kind_and_sends_only_the_name_and_kind() -> None:
    values = {"name": "CCAS du Havre", "kind": "ccas"}
    change = domain.renaming(values, TODAY)
    assert isinstance(change, domain.Amendment) and change.info == "modifie"
    assert "« CCAS du Havre » (Centre communal d'action sociale)" in change.effect
    assert change.body == {"name": "CCAS du Havre", "kind": "ccas"}
    assert domain.renaming({**values, "name": "", "kind": "?"}, TODAY) == {
        "name": "Saisissez le nom de l'organisme.",
        "kind": "Choisissez le type d'organisme.",
    }


def test_the_organisations_search_s_department_is_a_code_when_given() -> None:
    assert domain.check_organisation_search({"departement": "7"}) == {
        "departement": "Code de département invalide (exemples : 76, 2A, 974)."
    }
    for department in ("", "76", "2A", "974"):
        assert domain.check_organisation_search({"departement": department}) == {}


STAFF = {"email": "agent@caf.fr", "family_name": "Durand", "given_name": "Léa", "department": "76"}


def test_a_staff_account_s_empty_form_names_every_field_in_the_form_s_order() -> None:
    assert domain.check_staff_account(STAFF, ["caf_instructor"]) == {}
    empty = dict.fromkeys(STAFF, "")
    errors = domain.check_staff_account(empty, [])
    assert list(errors.items()) == [
        ("email", "Adresse électronique invalide (exemple : prenom.nom@caf.fr)."),
        ("family_name", "Saisissez le nom."),
        ("given_name", "Saisissez le prénom."),
        ("department", "Code de département invalide (exemples : 76, 2A, 974)."),
        ("roles", "Choisissez au moins un rôle."),
    ]
    assert domain.check_staff_account({**STAFF, "email": "agent@caf"}, ["auditor"]) == {
        "email": "Adresse électronique invalide (exemple : prenom.nom@caf.fr)."
    }


@pytest.mark.parametrize(
    ("typed", "utc"),
    [
        ("2026-01-15T10:00", datetime(2026, 1, 15, 9, 0, tzinfo=UTC)),  # winter: UTC+1
        ("2026-07-15", datetime(2026, 7, 14, 22, 0, tzinfo=UTC)),  # summer midnight: UTC+2
        ("2026-07-15T10:00+00:00", datetime(2026, 7, 15, 10, 0, tzinfo=UTC)),  # an explicit offset stays
    ],
)
def test_an_auditor_s_dates_are_paris_time(typed: str, utc: datetime) -> None:
    assert domain.paris_moment(typed) == utc


def test_an_auditor_s_date_that_is_not_one_is_none() -> None:
    assert domain.paris_moment("15/01/2026") is None


ENTRY_SEARCH = {"acteur": "", "dossier": "", "type": "", "du": "", "au": "", "trace": ""}


def test_an_entry_search_filters_only_by_the_fields_given_with_dates_in_paris_time() -> None:
    assert domain.entry_filters(ENTRY_SEARCH) == domain.EntryFilters({}, {})
    search = {**ENTRY_SEARCH, "acteur": "a@caf.fr", "dossier": "1234567", "du": "2026-01-15T10:00"}
    assert domain.entry_filters(search).params == {
        "actor": "a@caf.fr",
        "dossier": "1234567",
        "from": "2026-01-15T10:00:00+01:00",
    }


def test_an_entry_search_s_malformed_fields_are_refused_with_their_message() -> None:
    search = {**ENTRY_SEARCH, "dossier": "12", "type": "Consultation", "trace": "abc", "au": "15/01/2026"}
    found = domain.entry_filters(search)
    assert found.errors == {
        "dossier": "Le numéro allocataire comporte 7 chiffres.",
        "type": "Type d'événement invalide.",
        "trace": "L'identifiant de trace comporte 32 caractères hexadécimaux.",
        "au": "Date invalide.",
    }
    assert found.params == {}


def test_every_decision_the_domain_accepts_has_its_title_and_notice_on_the_page() -> None:
    assert set(domain.DECISIONS) == set(DECISION_TITLES) == set(DECISIONS)
