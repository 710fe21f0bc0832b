"""Abuse of the running system (issue 8): forged and replayed tokens, brute force, enumeration by timing.

Every service that verifies tokens runs as a real uvicorn process. Forgeries start from real tokens issued
by the running identity service; those that must carry a valid signature (expired, foreign audience or
issuer, no `exp`) are signed with identity's own current key, read from its (throw-away) database, so the
only thing wrong with them is the thing under test. A control (the same claims re-signed unchanged) is
accepted, which shows the forging itself is sound. See docs/security-tests.md.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import os
import platform
import random
import re
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdap_identity.domain import DEFAULT_POLICY, valid_siret
from cdap_identity.keys import jwk_thumbprint
from cdap_shared.envelope import new_event_id
from cdap_shared.services import backends
from cdap_testing import plain_dsn, protected_operations
from cdap_testing.system import (
    PASSWORD,
    ROOT,
    System,
    activate_and_login,
    activation_link_token,
    bearer,
    bootstrap_admin,
    wait_ready,
)

pytestmark = pytest.mark.stack

SERVICES = backends()
# A test run must leave the working tree as it found it: the measurement goes under .stack/ unless
# CDAP_TIMING_RESULTS names the file (set it to bench/results/login-timing.json to record a run).
TIMING_RESULTS = Path(
    os.environ.get("CDAP_TIMING_RESULTS") or ROOT / ".stack" / "results" / "login-timing.json"
)
TIMING_ATTEMPTS = 40  # per kind (unknown user, known user + wrong password), interleaved
TIMING_BOUND = (0.67, 1.5)  # accepted ratio of the medians (known / unknown)


# ----------------------------------------------------------------- accounts


@dataclass
class Caller:
    """A person logged in to the running identity service; `headers()` keeps the access token fresh."""

    email: str
    access: str
    refresh: str | None = None
    totp: str | None = None
    at: float = field(default_factory=time.monotonic)

    async def headers(self, client: httpx.AsyncClient, identity: str) -> dict[str, str]:
        if time.monotonic() - self.at > 180:  # access tokens live 300 s
            if self.refresh:
                form = {"grant_type": "refresh_token", "refresh_token": self.refresh}
            else:  # the next TOTP step: the current one was spent by the first login
                form = {"grant_type": "password", "username": self.email, "password": PASSWORD}
                if self.totp:
                    form["totp"] = pyotp.TOTP(self.totp).at(time.time() + 30)
            r = await client.post(f"{identity}/v1/token", data=form)
            assert r.status_code == 200, r.text
            self.access, self.refresh, self.at = (
                r.json()["access_token"],
                r.json()["refresh_token"],
                time.monotonic(),
            )
        return bearer(self.access)


@dataclass
class World:
    system: System
    admin: Caller
    partner: Caller  # partner_admin of `organisation`, no TOTP
    auditor: Caller
    organisation: dict[str, Any]
    lockout_emails: list[str]
    timing_emails: list[str]
    kid: str
    key: Ed25519PrivateKey

    def url(self, name: str) -> str:
        return self.system.url(name)


def unique(prefix: str, domain: str) -> str:
    return f"{prefix}.{new_event_id()[-10:]}@{domain}"


def a_siret(rng: random.Random) -> str:
    """A SIRET with a valid Luhn key (never La Poste's SIREN, which has its own rule)."""
    while True:
        body = f"{rng.randrange(10**12, 10**13):013d}"
        for digit in "0123456789":
            if valid_siret(body + digit) and not body.startswith("356000000"):
                return body + digit


def organisation_body(siret: str, admins: list[str]) -> dict[str, Any]:
    return {
        "siret": siret,
        "name": "CCAS de Dieppe",
        "kind": "ccas",
        "department": "76",
        "convention": {"reference": f"CONV-{siret}", "valid_until": "2030-12-31"},
        "administrators": [{"email": e, "family_name": "Martin", "given_name": "Lea"} for e in admins],
    }


async def create_organisation(
    client: httpx.AsyncClient, identity: str, admin: Caller, admins: list[str]
) -> Any:
    r = await client.post(
        f"{identity}/v1/organisations",
        headers=await admin.headers(client, identity),
        json=organisation_body(a_siret(random.Random(new_event_id())), admins),
    )
    assert r.status_code == 201, r.text
    return r.json()


async def create_staff(
    client: httpx.AsyncClient, identity: str, admin: Caller, email: str, role: str
) -> None:
    r = await client.post(
        f"{identity}/v1/users",
        headers=await admin.headers(client, identity),
        json={
            "email": email,
            "family_name": "Petit",
            "given_name": "Jean",
            "roles": [role],
            "department": "76",
        },
    )
    assert r.status_code == 201, r.text


async def activate(client: httpx.AsyncClient, identity: str, email: str) -> None:
    """Open the mailed link and choose the password (no login: the first attempts are the test's)."""
    token = await activation_link_token(email)
    r = await client.post(f"{identity}/v1/activations", json={"token": token, "password": PASSWORD})
    assert r.status_code == 200, r.text


async def current_signing_key(system: System) -> tuple[str, Ed25519PrivateKey]:
    conn = await asyncpg.connect(plain_dsn(system.databases["identity"]))
    try:
        row = await conn.fetchrow(
            "SELECT kid, pem FROM jwt_signing_key WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
        )
    finally:
        await conn.close()
    key = serialization.load_pem_private_key(row["pem"].encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return row["kid"], key


@pytest.fixture(scope="module")
async def world(stack: dict[str, str]) -> AsyncIterator[World]:
    system = System(admin_url=stack["database"], kafka=stack["kafka"])
    try:
        await system.start(*SERVICES)
        async with httpx.AsyncClient(timeout=20) as client:
            await wait_ready(client, *(system.url(name) for name in SERVICES))
            identity = system.url("identity")
            boot = await bootstrap_admin(system, client, unique("admin", "caf76.fr"))
            admin = Caller("", boot["headers"]["Authorization"].split()[1], totp=boot["totp"])
            me = await client.get(f"{identity}/v1/me", headers=boot["headers"])
            admin.email = me.json()["email"]

            partner_email = unique("gestion", "ccas-dieppe.fr")
            organisation = await create_organisation(client, identity, admin, [partner_email])
            lockout_emails = [unique("lock-a", "ccas-fecamp.fr"), unique("lock-b", "ccas-fecamp.fr")]
            await create_organisation(client, identity, admin, lockout_emails)
            auditor_email = unique("audit", "caf76.fr")
            await create_staff(client, identity, admin, auditor_email, "auditor")
            timing_emails = [unique(f"instr{i}", "caf76.fr") for i in range(10)]
            await asyncio.gather(
                *(create_staff(client, identity, admin, email, "caf_instructor") for email in timing_emails)
            )

            logged = await activate_and_login(client, identity, partner_email)
            partner = Caller(partner_email, logged["headers"]["Authorization"].split()[1], logged["refresh"])
            logged = await activate_and_login(client, identity, auditor_email)
            auditor = Caller(
                auditor_email,
                logged["headers"]["Authorization"].split()[1],
                logged["refresh"],
                logged["totp"],
            )
            await asyncio.gather(*(activate(client, identity, e) for e in [*lockout_emails, *timing_emails]))
            kid, key = await current_signing_key(system)
        yield World(system, admin, partner, auditor, organisation, lockout_emails, timing_emails, kid, key)
    finally:
        system.stop()


# ----------------------------------------------------------------- forging


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    head, body, signature = token.split(".")
    return json.loads(unb64url(head)), json.loads(unb64url(body)), unb64url(signature)


def encode(part: dict[str, Any]) -> str:
    return b64url(json.dumps(part, separators=(",", ":")).encode())


def eddsa(claims: dict[str, Any], key: Ed25519PrivateKey, kid: str, **header: Any) -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, **header})


def hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    signing_input = f"{encode({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{encode(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def forgeries(real: str, kid: str, key: Ed25519PrivateKey) -> dict[str, str]:
    """Every way a token must be refused, each built from the real token `real`."""
    _, claims, signature = split(real)
    now = int(time.time())
    public = key.public_key()
    raw_public = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem_public = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw_public), "kid": kid, "alg": "EdDSA", "use": "sig"}
    stranger = Ed25519PrivateKey.generate()
    stranger_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(stranger.public_key()))

    def changed(**updates: Any) -> dict[str, Any]:
        out = copy.deepcopy(claims)
        out.update(updates)
        return out

    elevated = changed(roles=["caf_admin", "auditor", "caf_instructor", "partner_admin"])
    no_exp = changed()
    del no_exp["exp"]
    flipped = bytearray(signature)
    flipped[10] ^= 0x01
    head, _, _ = real.split(".")
    return {
        "expired": eddsa(changed(iat=now - 900, nbf=now - 900, exp=now - 600), key, kid),
        "tampered_payload": f"{head}.{encode(elevated)}.{b64url(signature)}",
        "tampered_signature": f"{head}.{encode(claims)}.{b64url(bytes(flipped))}",
        "truncated_signature": f"{head}.{encode(claims)}.{b64url(signature[:32])}",
        "unknown_key_real_kid": eddsa(elevated, stranger, kid),
        "unknown_key_plausible_kid": eddsa(elevated, stranger, jwk_thumbprint(stranger)),
        "embedded_jwk_header": eddsa(elevated, stranger, jwk_thumbprint(stranger), jwk=stranger_jwk),
        "no_kid": jwt.encode(elevated, key, algorithm="EdDSA"),
        "alg_none": f"{encode({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{encode(elevated)}.",
        "alg_none_with_signature": f"{encode({'alg': 'none'})}.{encode(claims)}.{b64url(signature)}",
        "hs256_raw_public_key": hs256(elevated, raw_public, kid),
        "hs256_pem_public_key": hs256(elevated, pem_public, kid),
        "hs256_jwk_x": hs256(elevated, jwk["x"].encode(), kid),
        "hs256_jwk_json": hs256(elevated, json.dumps(jwk).encode(), kid),
        "audience_of_another_service": eddsa(changed(aud="cdap-dossiers"), key, kid),
        "audience_list_without_cdap": eddsa(changed(aud=["cdap-audit", "portal"]), key, kid),
        "no_audience": eddsa({k: v for k, v in claims.items() if k != "aud"}, key, kid),
        "wrong_issuer": eddsa(changed(iss="https://idp.example.net"), key, kid),
        "missing_exp": eddsa(no_exp, key, kid),
        "not_yet_valid": eddsa(changed(nbf=now + 600, exp=now + 900), key, kid),
        "garbage": "not.a.jwt",
        "empty_segments": "..",
    }


# ----------------------------------------------------------------- the endpoints under attack


@dataclass(frozen=True)
class Target:
    service: str
    method: str
    path: str
    who: str  # whose real token the forgeries start from
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


def targets(w: World, numero: str, forged_siret: str) -> list[Target]:
    org = w.organisation["id"]
    request = {
        "organisation_id": org,
        "applicant": {
            "family_name": "Roux",
            "given_name": "Paul",
            "email": "p.roux@ccas.fr",
            "job_title": "AS",
        },
        "profile": "T1",
        "department": "76",
        "justification": "forged",
        "valid_until": (datetime.now(UTC).date() + timedelta(days=100)).isoformat(),
    }
    return [
        Target("identity", "GET", "/v1/me", "admin"),
        Target("identity", "GET", "/v1/grants", "admin", params={"department": "76"}),
        Target(
            "identity", "POST", "/v1/organisations", "admin", json=organisation_body(forged_siret, ["x@y.fr"])
        ),
        Target("identity", "GET", f"/v1/organisations/{org}", "partner"),
        Target("access-requests", "GET", "/v1/access-requests", "partner"),
        Target("access-requests", "POST", "/v1/access-requests", "partner", json=request),
        Target(
            "dossiers", "GET", f"/v1/dossiers/{numero}", "admin", params={"motif": "accompagnement_social"}
        ),
        Target(
            "dossiers",
            "POST",
            "/v1/dossiers/search",
            "admin",
            json={"motif": "accompagnement_social", "nir": "1"},
        ),
        Target("audit", "GET", "/v1/entries", "auditor"),
        Target("audit", "GET", f"/v1/dossiers/{numero}/consultations", "auditor"),
        Target("audit", "GET", "/v1/alerts", "auditor"),
    ]


def assert_unauthorized(r: httpx.Response, what: str) -> None:
    assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/problem+json"), what
    assert r.json()["status"] == 401, what
    assert "invalid_token" in r.headers.get("www-authenticate", ""), what


async def test_forged_tokens_are_refused_everywhere_and_change_nothing(world: World) -> None:
    w = world
    numero = f"{random.Random(new_event_id()).randrange(1_000_000, 9_999_999):07d}"
    forged_siret = a_siret(random.Random(new_event_id()))
    async with httpx.AsyncClient(timeout=20) as client:
        identity = w.url("identity")
        callers = {"admin": w.admin, "partner": w.partner, "auditor": w.auditor}
        real = {
            name: (await c.headers(client, identity))["Authorization"].split()[1]
            for name, c in callers.items()
        }
        assert split(real["admin"])[0]["kid"] == w.kid, "identity signs with the key read from its database"
        forged = {name: forgeries(token, w.kid, w.key) for name, token in real.items()}
        tried = 0
        controls: list[str] = []
        for target in targets(w, numero, forged_siret):
            url = f"{w.url(target.service)}{target.path}"
            # Control: the real token, and its claims re-signed unchanged with identity's key, both get past
            # authentication (so a 401 below is the forgery's doing, not a broken forging machinery).
            _, claims, _ = split(real[target.who])
            for control in (real[target.who], eddsa(claims, w.key, w.kid)):
                if target.method == "GET":
                    r = await client.get(url, params=target.params, headers=bearer(control))
                    assert r.status_code != 401, (
                        f"control refused by {target.service} {target.path}: {r.text}"
                    )
                    if target.service == "dossiers":  # a real lookup, recorded
                        controls.append(r.headers["X-Audit-Id"])
            for name, token in forged[target.who].items():
                r = await client.request(
                    target.method, url, params=target.params, json=target.json, headers=bearer(token)
                )
                assert_unauthorized(r, f"{name} on {target.service} {target.method} {target.path}")
                tried += 1
            # No token, and a non-Bearer scheme
            for headers in ({}, {"Authorization": f"Basic {real[target.who]}"}, {"Authorization": "Bearer"}):
                r = await client.request(
                    target.method, url, params=target.params, json=target.json, headers=headers
                )
                assert_unauthorized(r, f"{headers} on {target.service} {target.path}")
        assert tried == len(targets(w, numero, forged_siret)) * len(forged["admin"])

        # Nothing changed. Identity: the organisation the forgeries tried to create does not exist.
        r = await client.post(
            f"{identity}/v1/organisations",
            headers=await w.admin.headers(client, identity),
            json=organisation_body(forged_siret, [unique("real", "ccas.fr")]),
        )
        assert r.status_code == 201, f"a forged token created the organisation: {r.text}"
        # Access requests: the partner's organisation has no request.
        r = await client.get(
            f"{w.url('access-requests')}/v1/access-requests",
            headers=await w.partner.headers(client, identity),
        )
        assert r.status_code == 200 and r.json()["items"] == [], r.text
        # Dossiers: the forged lookups recorded nothing; the real ones (the controls, one more now) are
        # recorded once each. (A consultation's event is staged in the dossiers database's outbox in the
        # lookup's own transaction.)
        r = await client.get(
            f"{w.url('dossiers')}/v1/dossiers/{numero}",
            params={"motif": "accompagnement_social"},
            headers=await w.admin.headers(client, identity),
        )
        assert r.status_code in (403, 404) and r.headers["X-Audit-Id"], r.text
        recorded = await staged_events(w.system, "dossiers", numero)
        assert recorded == [("dossier.consulted", i) for i in [*controls, r.headers["X-Audit-Id"]]], recorded


async def staged_events(system: System, service: str, key: str) -> list[tuple[str, str]]:
    """The events a service staged in its outbox for `key` (rows are kept a day after publication)."""
    conn = await asyncpg.connect(plain_dsn(system.databases[service]))
    try:
        rows = await conn.fetch("SELECT event_type, event_id FROM outbox WHERE key = $1 ORDER BY id", key)
    finally:
        await conn.close()
    return [(row["event_type"], row["event_id"]) for row in rows]


BASE = {"identity": "admin", "access-requests": "partner", "dossiers": "admin", "audit": "auditor"}


async def test_every_protected_operation_of_every_openapi_refuses_forged_tokens(world: World) -> None:
    """The same forgeries against every /v1 operation each service documents (path parameters filled with
    placeholders, no body: authentication comes first), so a new endpoint without verification fails."""
    w = world
    operations = 0
    async with httpx.AsyncClient(timeout=20) as client:
        identity = w.url("identity")
        for service in SERVICES:
            caller = {"admin": w.admin, "partner": w.partner, "auditor": w.auditor}[BASE[service]]
            real = (await caller.headers(client, identity))["Authorization"].split()[1]
            forged = forgeries(real, w.kid, w.key)
            document = (await client.get(f"{w.url(service)}/openapi.json")).json()
            # Public operations (a token request, a witness's cosignature) carry their credential in
            # the body and are documented without a 401: they are not in the list.
            for method, path in protected_operations(document):
                concrete = re.sub(r"\{[^}]+\}", "0000001", path)
                operations += 1
                for name, token in forged.items():
                    r = await client.request(method, f"{w.url(service)}{concrete}", headers=bearer(token))
                    assert_unauthorized(r, f"{name} on {service} {method} {path}")
    assert operations >= 25, operations  # every service's API, not an empty document


# ----------------------------------------------------------------- refresh tokens and revocation


async def token(client: httpx.AsyncClient, identity: str, **form: str) -> httpx.Response:
    return await client.post(f"{identity}/v1/token", data=form)


async def login(
    client: httpx.AsyncClient, identity: str, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await token(client, identity, grant_type="password", username=email, password=password)


async def test_replayed_refresh_token_revokes_the_whole_family(world: World) -> None:
    identity = world.url("identity")
    async with httpx.AsyncClient(timeout=20) as client:
        first = await login(client, identity, world.partner.email)
        assert first.status_code == 200, first.text
        stolen = first.json()["refresh_token"]
        rotated = await token(client, identity, grant_type="refresh_token", refresh_token=stolen)
        assert rotated.status_code == 200, rotated.text
        legit = rotated.json()["refresh_token"]
        assert legit != stolen

        replay = await token(client, identity, grant_type="refresh_token", refresh_token=stolen)
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        assert replay.headers["cache-control"] == "no-store"
        # The family is gone: the refresh token of the legitimate rotation no longer works either.
        after = await token(client, identity, grant_type="refresh_token", refresh_token=legit)
        assert after.status_code == 400, after.text
        assert after.json()["error"] == "invalid_grant"
        # Another family of the same person (another browser) is untouched.
        other = await login(client, identity, world.partner.email)
        again = await token(
            client, identity, grant_type="refresh_token", refresh_token=other.json()["refresh_token"]
        )
        assert again.status_code == 200, again.text


async def test_revoked_refresh_token_is_refused_and_access_tokens_are_not_claimed_revoked(
    world: World,
) -> None:
    identity = world.url("identity")
    async with httpx.AsyncClient(timeout=20) as client:
        logged = await login(client, identity, world.partner.email)
        refresh, access = logged.json()["refresh_token"], logged.json()["access_token"]
        rotated = await token(client, identity, grant_type="refresh_token", refresh_token=refresh)
        current = rotated.json()["refresh_token"]

        # RFC 7009 logout with the current refresh token: it and its whole family stop working.
        r = await client.post(
            f"{identity}/v1/revoke", data={"token": current, "token_type_hint": "refresh_token"}
        )
        assert r.status_code == 200, r.text
        for presented in (current, refresh):
            r = await token(client, identity, grant_type="refresh_token", refresh_token=presented)
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

        # Access tokens are self-contained JWTs the other services verify offline: identity cannot revoke
        # one, so it must not answer as if it had (RFC 7009 §2.2.1 `unsupported_token_type`). What bounds
        # a stolen access token is its 5-minute lifetime (and, for lookups, suspension and grant
        # revocation, which take effect within 2 s: test_revocation.py).
        r = await client.post(
            f"{identity}/v1/revoke", data={"token": access, "token_type_hint": "access_token"}
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "unsupported_token_type"
        _, claims, _ = split(access)
        assert claims["exp"] - claims["iat"] <= 300
        # An unknown opaque token is still a 200 (RFC 7009 §2.2: nothing to reveal).
        r = await client.post(f"{identity}/v1/revoke", data={"token": "never-issued"})
        assert r.status_code == 200


# ----------------------------------------------------------------- brute force and enumeration

LOCKED = re.compile(r"account locked until (\S+)")


async def test_lockout_after_five_failures_refuses_even_the_right_password_per_account(world: World) -> None:
    identity = world.url("identity")
    victim, bystander = world.lockout_emails
    policy = DEFAULT_POLICY
    assert (policy.max_failures, policy.window, policy.first_lock) == (
        5,
        timedelta(minutes=15),
        timedelta(minutes=15),
    )
    async with httpx.AsyncClient(timeout=20) as client:
        # Below the threshold the right password still works (and clears the count).
        for _ in range(policy.max_failures - 1):
            r = await login(client, identity, victim, "Wrong-password-2026!")
            assert r.status_code == 400 and r.json()["error_description"] == "bad credentials"
        assert (await login(client, identity, victim)).status_code == 200

        started = datetime.now(UTC)
        for _ in range(policy.max_failures):
            r = await login(client, identity, victim, "Wrong-password-2026!")
            assert r.status_code == 400 and r.json()["error_description"] == "bad credentials"
        right = await login(client, identity, victim)
        wrong = await login(client, identity, victim, "Wrong-password-2026!")
        assert right.status_code == 400, "the right password was accepted on a locked account"
        assert (right.status_code, right.json()) == (wrong.status_code, wrong.json()), "the answer tells"
        assert right.json()["error"] == "invalid_grant"
        match = LOCKED.fullmatch(right.json()["error_description"])
        assert match, right.json()
        until = datetime.fromisoformat(match.group(1))
        assert timedelta(minutes=14) < until - started < timedelta(minutes=16)
        # Attempts made while locked do not extend the lock.
        again = await login(client, identity, victim)
        assert again.json() == right.json()

        # The lock is per account: another one signs in as usual.
        assert (await login(client, identity, bystander)).status_code == 200


async def test_login_answers_and_timing_do_not_reveal_which_accounts_exist(world: World) -> None:
    """Measure and report: unknown user vs known user with a wrong password, interleaved."""
    identity = world.url("identity")
    attempts_per_account = DEFAULT_POLICY.max_failures - 1  # stay below the lockout
    assert len(world.timing_emails) * attempts_per_account >= TIMING_ATTEMPTS
    unknown_ms: list[float] = []
    known_ms: list[float] = []
    answers: dict[str, set[str]] = {"unknown": set(), "known": set()}
    async with httpx.AsyncClient(timeout=20) as client:

        async def attempt(kind: str, email: str) -> float:
            started = time.perf_counter()
            r = await login(client, identity, email, "Not-the-password-2026!")
            elapsed = (time.perf_counter() - started) * 1000
            headers = {k: r.headers[k] for k in ("content-type", "cache-control", "pragma")}
            answers[kind].add(json.dumps([r.status_code, r.json(), headers], sort_keys=True))
            return elapsed

        for _ in range(4):  # warm-up (connections, caches), not measured; unknown users lock nothing
            await attempt("unknown", unique("warm", "caf76.fr"))
        for i in range(TIMING_ATTEMPTS):
            known = world.timing_emails[i // attempts_per_account]
            unknown = unique("nobody", "caf76.fr")
            pair: list[tuple[str, str, list[float]]] = [
                ("unknown", unknown, unknown_ms),
                ("known", known, known_ms),
            ]
            for kind, email, sink in pair if i % 2 == 0 else reversed(pair):
                sink.append(await attempt(kind, email))

    assert answers["unknown"] == answers["known"] and len(answers["known"]) == 1, answers
    ratio = statistics.median(known_ms) / statistics.median(unknown_ms)
    write_timing(unknown_ms, known_ms, ratio, answers["known"].pop())
    low, high = TIMING_BOUND
    assert low <= ratio <= high, f"median known/unknown = {ratio:.3f}"


def summary(samples: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(samples, n=4)
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p25_ms": round(quartiles[0], 2),
        "p75_ms": round(quartiles[2], 2),
        "mean_ms": round(statistics.fmean(samples), 2),
        "min_ms": round(min(samples), 2),
        "max_ms": round(max(samples), 2),
    }


def write_timing(unknown: list[float], known: list[float], ratio: float, answer: str) -> None:
    result = {
        "what": "POST /v1/token grant_type=password: unknown e-mail vs known e-mail with a wrong password",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "method": (
            f"{TIMING_ATTEMPTS} attempts of each kind, interleaved (order alternating), against the running "
            "identity process over loopback HTTP; known accounts are 10 activated CAF staff accounts, "
            "4 wrong passwords each (below the lockout); unknown e-mails are fresh each time; "
            "4 unmeasured warm-up attempts; wall time of the whole HTTP exchange"
        ),
        "n": TIMING_ATTEMPTS,
        "unknown_user": summary(unknown),
        "known_user_wrong_password": summary(known),
        "ratio_of_medians_known_over_unknown": round(ratio, 3),
        "accepted_ratio": list(TIMING_BOUND),
        "identical_answer": json.loads(answer),
        "samples_ms": {
            "unknown_user": [round(x, 2) for x in unknown],
            "known_user": [round(x, 2) for x in known],
        },
    }
    TIMING_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    TIMING_RESULTS.write_text(json.dumps(result, indent=2) + "\n")
