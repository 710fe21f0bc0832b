"""The portal's own rules (`cdap_portal.domain`), without HTTP: what a form must hold before an API is
called, and what a viewer may do or see. The pages' tests show the same rules through the routes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cdap_portal import domain
from cdap_portal.auth import Viewer

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
