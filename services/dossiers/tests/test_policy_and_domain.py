"""The policy file and the pure decision: every profile x section x scope x opposition x motif."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdap_dossiers.domain import ActiveGrant, DossierFacts, decide, filtered_view, name_key
from cdap_dossiers.policy import DEFAULT_POLICY, SECTIONS, PolicyError, load_policy

POLICY = load_policy()
SIRET, OTHER = "73282932000074", "55204944776279"


def test_the_default_policy_ships_t1_to_t5() -> None:
    assert sorted(POLICY.profiles) == ["T1", "T2", "T3", "T4", "T5"]
    assert POLICY.profiles["T2"].sections == ("identite", "adresse", "logement")
    assert POLICY.profiles["T5"].scope == "rsa"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not = [toml", "not valid TOML"),
        (
            'version = "1"\n[profiles.T9]\nlabel="x"\nsections=["secret"]\nmotifs=["m"]\nscope="department"',
            "unknown sections",
        ),
        (
            'version = "1"\n[profiles.T9]\nlabel="x"\nsections=["identite"]\nmotifs=["m"]\nscope="galaxy"',
            "scope",
        ),
        (
            'version = "1"\n[profiles.T9]\nlabel="x"\nsections=["identite"]\nmotifs=[]\nscope="department"',
            "motifs",
        ),
        ('[profiles.T9]\nlabel="x"\nsections=["identite"]\nmotifs=["m"]\nscope="department"', "version"),
    ],
)
def test_a_bad_policy_file_stops_the_service_with_its_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_new_profile_needs_no_code(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        DEFAULT_POLICY.read_text()
        + '\n[profiles.T6]\nlabel = "PMI"\nsections = ["identite", "foyer"]\nmotifs = ["suivi_pmi"]\n'
        'scope = "department"\nopposition = false\n'
    )
    policy = load_policy(path)
    grant = ActiveGrant("g6", "T6", "76", "o", SIRET)
    dossier = DossierFacts("1234567", "76", opposition=True, family_name="Martin")
    verdict = decide(policy, [grant], dossier, "suivi_pmi")
    assert verdict.decision == "granted" and verdict.sections == ("identite", "foyer")


def expected_reason(
    profile: str, in_dept: bool, in_caseload: bool, opposition: bool, motif_ok: bool
) -> str | None:
    """What the policy file says should happen, derived from the file's data, not from decide()."""
    p = POLICY.profiles[profile]
    if not in_dept:
        return "no_grant_for_department"
    if not motif_ok:
        return "motif_not_allowed"
    if not in_caseload:
        return {"landlord": "outside_caseload", "rsa": "outside_caseload", "match": "identity_mismatch"}.get(
            p.scope
        )
    if p.opposition and opposition:
        return "opposition"
    return None


MATRIX = list(
    itertools.product(sorted(POLICY.profiles), [True, False], [True, False], [True, False], [True, False])
)


@pytest.mark.parametrize(("profile", "in_dept", "in_caseload", "opposition", "motif_ok"), MATRIX)
def test_decision_matrix(
    profile: str, in_dept: bool, in_caseload: bool, opposition: bool, motif_ok: bool
) -> None:
    p = POLICY.profiles[profile]
    grant = ActiveGrant("g", profile, "76", "o", SIRET)
    dossier = DossierFacts(
        "1234567",
        "76" if in_dept else "27",
        opposition,
        "Lefèvre",
        landlord_siret=SIRET if in_caseload else OTHER,
        rsa_referent_siret=SIRET if in_caseload else OTHER,
    )
    motif = p.motifs[0] if motif_ok else "curiosite"
    family = "LEFEVRE" if in_caseload else "Dupont"
    verdict = decide(POLICY, [grant], dossier, motif, family_name=family)
    reason = expected_reason(profile, in_dept, in_caseload or p.scope == "department", opposition, motif_ok)
    assert verdict.reason == reason
    assert verdict.decision == ("granted" if reason is None else "denied")
    for section in SECTIONS:
        assert (section in verdict.sections) == (reason is None and section in p.sections)


def test_names_match_as_a_person_would() -> None:
    assert name_key("Lefèvre-Dupont") == name_key("LEFEVRE DUPONT") == name_key("lefevre dupont")
    assert name_key("N'Diaye") == name_key("ndiaye")
    assert name_key("Martin") != name_key("Martine")


section_values = st.dictionaries(st.sampled_from(SECTIONS), st.integers(), min_size=0, max_size=len(SECTIONS))


@given(sections=section_values, profile=st.sampled_from(sorted(POLICY.profiles)))
def test_a_filtered_view_never_holds_a_section_outside_the_profile(
    sections: dict[str, int], profile: str
) -> None:
    visible = POLICY.profiles[profile].sections
    view = filtered_view(dict(sections), visible)
    assert set(view) <= set(visible)
    assert all(view[name] == sections[name] for name in view)


@given(
    profile=st.sampled_from(sorted(POLICY.profiles)),
    motif=st.text(min_size=1, max_size=30),
    dept=st.sampled_from(["76", "27", "2A"]),
    opposition=st.booleans(),
    family=st.one_of(st.none(), st.text(max_size=20)),
)
def test_granted_views_are_always_within_policy(
    profile: str, motif: str, dept: str, opposition: bool, family: str | None
) -> None:
    grant = ActiveGrant("g", profile, "76", "o", SIRET)
    verdict = decide(
        POLICY,
        [grant],
        DossierFacts("1", dept, opposition, "Martin", SIRET, SIRET),
        motif,
        family_name=family,
    )
    if verdict.decision == "granted":
        assert motif in POLICY.profiles[profile].motifs and dept == "76"
        assert set(verdict.sections) == set(POLICY.profiles[profile].sections)
    else:
        assert verdict.sections == ()
