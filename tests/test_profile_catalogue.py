"""The profiles (T1, T2, ...) are named by three services, each in its own file: access-requests says
which may be requested and which need two approvals (`profiles.toml`), dossiers what each may see and
why (`policy.toml`), identity which need a second factor (`CDAP_TOTP_PROFILES`). The portal reads the
first two over HTTP. This checks that the shipped files and defaults agree."""

from __future__ import annotations

from cdap_access.profiles import Catalogue, load_profiles
from cdap_dossiers.policy import Policy, load_policy
from cdap_identity.config import Settings as IdentitySettings


def disagreements(catalogue: Catalogue, policy: Policy, totp_profiles: set[str]) -> list[str]:
    """What differs between the three services' views of the profiles, in words."""
    found = []
    requestable, consultable = set(catalogue.profiles), set(policy.profiles)
    if requestable - consultable:
        found.append(f"requestable but with no consultation policy: {sorted(requestable - consultable)}")
    if consultable - requestable:
        found.append(f"in the consultation policy but never requestable: {sorted(consultable - requestable)}")
    for name in sorted(requestable & consultable):
        if catalogue.profiles[name].label != policy.profiles[name].label:
            found.append(
                f"{name} is called {catalogue.profiles[name].label!r} and {policy.profiles[name].label!r}"
            )
    if totp_profiles - requestable:
        found.append(
            f"identity asks a second factor for unknown profiles {sorted(totp_profiles - requestable)}"
        )
    sensitive = {name for name, p in catalogue.profiles.items() if p.sensitive}
    if sensitive != totp_profiles:
        found.append(f"two approvals for {sorted(sensitive)} but a second factor for {sorted(totp_profiles)}")
    return found


def test_the_shipped_catalogue_policy_and_second_factor_profiles_agree() -> None:
    totp = set(IdentitySettings.model_fields["totp_profiles"].get_default(call_default_factory=True))
    assert disagreements(load_profiles(), load_policy(), totp) == []


def test_a_profile_missing_from_the_policy_is_reported() -> None:
    policy = load_policy()
    partial = policy.model_copy(update={"profiles": {k: v for k, v in policy.profiles.items() if k != "T4"}})
    renamed = {**partial.profiles, "T1": partial.profiles["T1"].model_copy(update={"label": "Autre"})}
    found = disagreements(load_profiles(), partial.model_copy(update={"profiles": renamed}), {"T1", "T9"})
    assert any("T4" in f for f in found) and any("'Autre'" in f for f in found)
    assert any("T9" in f for f in found) and any("second factor for ['T1', 'T9']" in f for f in found)
