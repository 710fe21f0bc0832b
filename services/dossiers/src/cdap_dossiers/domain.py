"""Who may see what of a dossier: pure decisions, no I/O. The policy file supplies the rules."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from cdap_dossiers.policy import Policy, Profile

Decision = Literal["granted", "denied"]


@dataclass(frozen=True)
class ActiveGrant:
    """A habilitation still active in this service's projection of identity's grants."""

    id: str
    profile: str
    department: str
    organisation_id: str
    organisation_siret: str


@dataclass(frozen=True)
class DossierFacts:
    """What the decision needs to know about a dossier (its data stays out of the decision)."""

    numero: str
    department: str
    opposition: bool
    family_name: str
    landlord_siret: str | None = None
    rsa_referent_siret: str | None = None


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str | None
    grant: ActiveGrant | None
    sections: tuple[str, ...] = field(default=())


def name_key(name: str) -> str:
    """Family names compared as a person would: case, accents, spaces, hyphens and apostrophes ignored."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = (c for c in decomposed if not unicodedata.combining(c) and c.isalnum())
    return "".join(letters).casefold()


def phone_key(phone: str | None) -> str | None:
    """A French phone number reduced to its 10 national digits, for exact search."""
    if not phone:
        return None
    digits = re.sub(r"\D", "", phone)
    if digits.startswith("33") and len(digits) == 11:
        digits = "0" + digits[2:]
    return digits or None


class NotRecorded(Exception):
    """The consultation could not be recorded (the database did not answer): no data may leave."""

    def __init__(self) -> None:
        super().__init__("The consultation could not be recorded; no data was returned.")


def scope_failure(
    profile: Profile, grant: ActiveGrant, dossier: DossierFacts, family_name: str | None
) -> str | None:
    """Why `grant` does not reach `dossier` under `profile`'s scope, or None when it does."""
    if profile.scope == "landlord" and dossier.landlord_siret != grant.organisation_siret:
        return "outside_caseload"
    if profile.scope == "rsa" and dossier.rsa_referent_siret != grant.organisation_siret:
        return "outside_caseload"
    # A name with nothing comparable in it ("-") matches nothing, not a dossier the feed sent without one.
    if profile.scope == "match" and (
        not family_name or not name_key(family_name) or name_key(family_name) != name_key(dossier.family_name)
    ):
        return "identity_mismatch"
    return None


def decide(
    policy: Policy,
    grants: list[ActiveGrant],
    dossier: DossierFacts,
    motif: str,
    *,
    family_name: str | None = None,
) -> Verdict:
    """The first grant that lets the caller consult `dossier` for `motif`, or the reason none does.

    Checks run from the broadest to the narrowest: department, motif, scope, opposition (the account's
    standing is judged before, by `cdap_shared.standing.judge`).
    """
    in_department = [g for g in grants if g.department == dossier.department and g.profile in policy.profiles]
    if not in_department:
        return Verdict("denied", "no_grant_for_department", None)
    with_motif = [g for g in in_department if motif in policy.profiles[g.profile].motifs]
    if not with_motif:
        return Verdict("denied", "motif_not_allowed", in_department[0])
    reason = "outside_caseload"
    for grant in with_motif:
        profile = policy.profiles[grant.profile]
        failure = scope_failure(profile, grant, dossier, family_name)
        if failure is None and profile.opposition and dossier.opposition:
            failure = "opposition"
        if failure is None:
            return Verdict("granted", None, grant, profile.sections)
        reason = failure
    return Verdict("denied", reason, with_motif[0])


def filtered_view(sections: dict[str, Any], visible: tuple[str, ...]) -> dict[str, Any]:
    """The dossier's sections restricted to `visible`; same names, fewer sections."""
    return {name: sections[name] for name in visible if name in sections}
