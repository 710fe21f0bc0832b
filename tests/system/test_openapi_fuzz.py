"""schemathesis against the running access-requests, audit and identity services (dossiers has its own):
no 500, answers as documented (every error is problem+json where the document says so), with a caller of
the right role. Identity is fuzzed with real tokens it issued itself (a CAF admin and a partner
administrator). The portal is fuzzed for server errors only: its OpenAPI is FastAPI's default and does not
describe its HTML pages or forms (see docs/security-tests.md)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pyotp
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from cdap_shared.envelope import new_event_id
from cdap_testing.openapi import CHECKS, fuzzing, lone_service
from cdap_testing.system import (
    PASSWORD,
    System,
    bootstrap_admin,
    caf_staff,
    partner_organisation,
    wait_ready,
)

TOPICS = {
    "access-requests": ("CDAP_ACCESS_TOPIC", "CDAP_IDENTITY_TOPIC"),
    "audit": (
        "CDAP_IDENTITY_TOPIC",
        "CDAP_ACCESS_TOPIC",
        "CDAP_CONSULTATIONS_TOPIC",
        "CDAP_ALERTS_TOPIC",
        "CDAP_CHECKPOINTS_TOPIC",
    ),
}
ROLES = {"access-requests": ["caf_instructor"], "audit": ["auditor"]}
FUZZ = fuzzing(max_examples=30)


def running(name: str, stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    with lone_service(
        name, stack, TOPICS[name], roles=ROLES[name], department="76", email="fuzz@caf76.fr"
    ) as api:
        yield api


@pytest.fixture(scope="module")
def access_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    yield from running("access-requests", stack)


@pytest.fixture(scope="module")
def audit_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    yield from running("audit", stack)


@pytest.fixture(scope="module")
def access_schema(access_api: dict[str, Any]) -> Any:
    return access_api["schema"]


@pytest.fixture(scope="module")
def audit_schema(audit_api: dict[str, Any]) -> Any:
    return audit_api["schema"]


access = schemathesis.pytest.from_fixture("access_schema")
# The live stream answers an auditor with an endless body: services/audit/tests/test_stream.py covers it
# (roles, bad filters, resumption).
audit = schemathesis.pytest.from_fixture("audit_schema").exclude(path="/v1/entries/stream")


@pytest.mark.stack
@access.parametrize()
@FUZZ
def test_access_requests_never_500_and_answer_as_documented(case: Any, access_api: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {access_api['token']}"}, checks=CHECKS)


@pytest.mark.stack
@audit.parametrize()
@FUZZ
def test_audit_never_500_and_answers_as_documented(case: Any, audit_api: dict[str, Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {audit_api['token']}"}, checks=CHECKS)


# ----------------------------------------------------------------- identity


async def _identity_callers(system: System, staff: tuple[str, ...] = ()) -> dict[str, Any]:
    """A CAF admin (bootstrap), a partner administrator (organisation created by that admin), and CAF staff
    with the roles in `staff` (e-mail and TOTP secret of each)."""
    run = new_event_id()[-10:]
    async with httpx.AsyncClient(timeout=20) as client:
        await wait_ready(client, system.url("identity"))
        admin = await bootstrap_admin(system, client, f"admin.{run}@caf76.fr")
        _, partner = await partner_organisation(system, client, admin)
        people = {role: await caf_staff(system, client, admin, role) for role in staff}
    return {
        "admin": admin["headers"]["Authorization"],
        "partner": partner["headers"]["Authorization"],
        "partner_email": partner["email"],
        "staff": people,
    }


@pytest.fixture(scope="module")
def identity_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Identity on a fresh database. Its tokens live an hour here, so a slow run never fuzzes with an expired
    one (which would turn every case into a 401). The fuzzer cannot lock a real account out: the e-mails it
    sends to /v1/token are generated and match none of the accounts created here."""
    system = System(admin_url=stack["database"], kafka=stack["kafka"])
    try:
        system.start_blocking(
            "identity",
            extra_env={"identity": {"CDAP_ACCESS_TOKEN_SECONDS": "3600", "CDAP_LOG_LEVEL": "WARNING"}},
        )
        callers = asyncio.run(_identity_callers(system))
        schema = schemathesis.openapi.from_url(f"{system.url('identity')}/openapi.json")
        yield {"schema": schema, **callers}
    finally:
        system.stop()


@pytest.fixture(scope="module")
def identity_schema(identity_api: dict[str, Any]) -> Any:
    return identity_api["schema"]


identity = schemathesis.pytest.from_fixture("identity_schema")


@pytest.mark.stack
@identity.parametrize()
@FUZZ
def test_identity_never_500_and_answers_as_documented_to_a_caf_admin(
    case: Any, identity_api: dict[str, Any]
) -> None:
    case.call_and_validate(headers={"Authorization": identity_api["admin"]}, checks=CHECKS)


@pytest.mark.stack
@identity.parametrize()
@FUZZ
def test_identity_never_500_and_answers_as_documented_to_a_partner(
    case: Any, identity_api: dict[str, Any]
) -> None:
    case.call_and_validate(headers={"Authorization": identity_api["partner"]}, checks=CHECKS)


# ----------------------------------------------------------------- portal


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf_token"\s+value="([^"]+)"', page)
    assert match, page[:2000]
    return match.group(1)


async def _portal_session(portal: str, email: str, totp: str | None = None) -> dict[str, str]:
    """Sign in through the portal's own login form (CSRF token, TOTP step): the session cookie."""
    async with httpx.AsyncClient(timeout=20) as client:
        page = await client.get(f"{portal}/login")
        form = {"csrf_token": _csrf(page.text), "email": email, "password": PASSWORD}
        r = await client.post(f"{portal}/login", data=form)
        if totp:  # the activation's login spent the current step; the next one is accepted already
            assert r.status_code == 200, r.text[:2000]
            code = pyotp.TOTP(totp).at(time.time() + 30)
            form = {"csrf_token": _csrf(r.text), "step": "totp", "totp": code}
            r = await client.post(f"{portal}/login", data=form)
        assert r.status_code == 303, r.text[:2000]
        cookies = {c.name: c.value for c in client.cookies.jar if c.path == "/"}
    async with httpx.AsyncClient(timeout=20, cookies=cookies) as client:
        home = await client.get(f"{portal}/")
        assert home.status_code == 200, "the session cookie does not sign in"  # anonymous: 303 to /login
    return cookies


@pytest.fixture(scope="module")
def portal_api(stack: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The portal in front of the four services; a partner administrator, a CAF instructor and an auditor
    signed in to it (tokens live an hour: a session cookie replayed after the portal refreshed its tokens
    would present a used refresh token, and identity would end the session)."""
    system = System(admin_url=stack["database"], kafka=stack["kafka"])
    try:
        system.start_blocking(
            "identity",
            "access-requests",
            "dossiers",
            "audit",
            "portal",
            extra_env={"identity": {"CDAP_ACCESS_TOKEN_SECONDS": "3600"}},
        )
        callers = asyncio.run(_identity_callers(system, ("caf_instructor", "auditor")))
        portal = system.processes["portal"]
        sessions = {"partner_admin": asyncio.run(_portal_session(portal.url, callers["partner_email"]))}
        for role, person in callers["staff"].items():
            sessions[role] = asyncio.run(_portal_session(portal.url, person["email"], person["totp"]))
        yield {
            "schema": schemathesis.openapi.from_url(f"{portal.url}/openapi.json"),
            "sessions": sessions,
            "url": portal.url,
        }
    finally:
        system.stop()


@pytest.fixture(scope="module")
def portal_schema(portal_api: dict[str, Any]) -> Any:
    return portal_api["schema"]


# The live audit feed relays the audit's endless stream: services/portal/tests/test_audit_pages.py covers
# it (roles, bad filters, resumption), as the audit's own stream is covered apart above.
portal = schemathesis.pytest.from_fixture("portal_schema").exclude(path="/audit/flux")


@pytest.mark.stack
@pytest.mark.timeout(
    900
)  # every page's cases, five times (anonymous and four people): minutes on a busy host
@portal.parametrize()
@FUZZ
def test_portal_never_500_anonymous_or_signed_in(case: Any, portal_api: dict[str, Any]) -> None:
    """Server errors only: the portal's pages are HTML (FastAPI's default OpenAPI calls them JSON) and its
    forms are read by hand (undocumented), so schema conformance says nothing about them. Path and query
    parameters reach the upstream services, which is where a 500 could come from."""
    for cookies in ({}, *portal_api["sessions"].values()):
        case.call_and_validate(checks=[not_a_server_error], cookies=cookies, allow_redirects=False)


@pytest.mark.stack
def test_portal_answers_400_when_a_service_refuses_what_the_address_passed_on(
    portal_api: dict[str, Any],
) -> None:
    """Found by the fuzzer: a made-up `page` cursor, refused by access-requests (400), was a portal 502."""
    r = httpx.get(
        f"{portal_api['url']}/demandes",
        params={"page": "©Ú"},
        cookies=portal_api["sessions"]["partner_admin"],
    )
    assert r.status_code == 400, r.text[:500]
    assert "Les paramètres de la page sont invalides." in r.text
