"""Operational endpoints: health, readiness, the AsyncAPI document, the profile catalogue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cdap_access.profiles import ProfilesError, load_profiles
from cdap_testing import eventually

from .conftest import Service, assert_problem

pytestmark = pytest.mark.stack


async def test_health_and_readiness(svc: Service) -> None:
    assert (await svc.client.get("/health")).json() == {"status": "ok"}

    async def ready() -> bool:
        return (await svc.client.get("/ready")).status_code == 200

    await eventually(ready)


async def test_the_asyncapi_document_lists_what_is_sent_and_received(svc: Service) -> None:
    doc = (await svc.client.get("/asyncapi.json")).json()
    assert doc["asyncapi"] == "3.0.0"
    assert {c["address"] for c in doc["channels"].values()} == {
        svc.settings.access_topic,
        svc.settings.identity_topic,
    }
    schemas = doc["components"]["schemas"]
    sent = {
        "AccessRequestApprovedEvent",
        "AccessRequestEscalatedEvent",
        "AccessGrantRevocationRequestedEvent",
    }
    assert sent | {"IdentityGrantIssuedEvent"} <= set(schemas)
    approved = schemas["RequestApproved"]
    assert {"request_id", "applicant", "profile", "department", "valid_until"} <= set(approved["properties"])
    assert "Applicant" in schemas


async def test_the_profile_catalogue(svc: Service) -> None:
    profiles = (await svc.client.get("/v1/profiles", headers=svc.partner())).json()["profiles"]
    assert sorted(profiles) == ["T1", "T2", "T3", "T4", "T5"]
    assert {name for name, p in profiles.items() if p["sensitive"]} == {"T1", "T5"}
    assert_problem(await svc.client.get("/v1/profiles"), 401)


async def test_profiles_are_data_a_new_one_needs_no_code(
    service_factory: Callable[..., Awaitable[Service]], tmp_path: Path
) -> None:
    catalogue = tmp_path / "profiles.toml"
    catalogue.write_text(
        '[profiles.T2]\nlabel = "Bailleurs"\nsensitive = true\n'
        '[profiles.T16]\nlabel = "Profil ajouté avec la CNIL"\nsensitive = false\n',
        encoding="utf-8",
    )
    svc = await service_factory(profiles_path=catalogue)
    await svc.organisation()
    request_id = await svc.submit(profile="T16")
    assert (await svc.decide(request_id, svc.instructor())).json()["state"] == "approved"
    sensitive_now = await svc.submit(profile="T2")
    assert (await svc.decide(sensitive_now, svc.instructor())).json()["state"] == "awaiting_second_approval"
    r = await svc.client.post("/v1/access-requests", json=svc.submission(profile="T1"), headers=svc.partner())
    assert_problem(r, 422, "unknown_profile")


def test_a_broken_profiles_file_stops_the_service_with_its_reason(tmp_path: Path) -> None:
    broken = tmp_path / "profiles.toml"
    broken.write_text('[profiles.T1]\nlabel = ""\n', encoding="utf-8")
    with pytest.raises(ProfilesError, match="label"):
        load_profiles(broken)
    with pytest.raises(ProfilesError, match="not found"):
        load_profiles(tmp_path / "missing.toml")
