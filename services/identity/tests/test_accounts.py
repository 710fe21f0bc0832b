"""Organisations, activation, login, TOTP, lockout and account actions, as their users meet them."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import text

from cdap_identity import tokens
from cdap_shared.auth import TokenVerifier

from .conftest import SIRETS, STRONG, Identity, auth, unique_email

pytestmark = pytest.mark.stack


async def test_a_registered_organisation_admin_activates_by_mail_and_logs_in(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    activation = await idp.activate(email)
    assert activation["totp_secret"] is None  # a partner admin holds no T1/T5 profile
    r = await idp.token(email, STRONG)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["refresh_token"]

    # The token verifies against the published JWKS, as every other service checks it.
    jwks = (await idp.client.get("/.well-known/jwks.json")).json()
    assert all(k["kty"] == "OKP" and k["crv"] == "Ed25519" and k["alg"] == "EdDSA" for k in jwks["keys"])
    principal = await TokenVerifier(None, "cdap", "cdap-identity", keys=jwks).verify(body["access_token"])
    assert principal.org == org["id"] and principal.roles == {"partner_admin"}
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "EdDSA"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300 and claims["aud"] == "cdap" and claims["jti"]

    me = await idp.client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200 and me.json()["organisation_id"] == org["id"] and me.json()["grants"] == []
    types = [e.type for e in await idp.outbox()]
    assert "identity.organisation.registered" in types and "identity.user.activated" in types
    assert "identity.login.succeeded" in types


async def create_staff(
    idp: Identity, admin: dict[str, str], email: str, names: tuple[str, str], role: str
) -> httpx.Response:
    """`POST /v1/users`: a CAF staff account of department 76 (`names` = given, family)."""
    given, family = names
    body = {"email": email, "family_name": family, "given_name": given, "roles": [role], "department": "76"}
    return await idp.client.post("/v1/users", headers=auth(admin), json=body)


async def test_caf_staff_must_enrol_totp_and_codes_cannot_be_replayed(idp: Identity) -> None:
    admin = await idp.caf_admin()
    email = unique_email("instructrice")
    r = await create_staff(idp, admin, email, ("Inès", "Martin"), "caf_instructor")
    assert r.status_code == 201, r.text
    activation = await idp.activate(email)
    secret = activation["totp_secret"]
    assert secret and activation["otpauth_uri"].startswith("otpauth://totp/")
    missing = await idp.token(email, STRONG)
    assert missing.status_code == 400 and missing.json() == {
        "error": "invalid_grant",
        "error_description": "totp required",
    }
    code = pyotp.TOTP(secret).now()
    ok = await idp.token(email, STRONG, code)
    assert ok.status_code == 200
    claims = jwt.decode(ok.json()["access_token"], options={"verify_signature": False})
    assert claims["department"] == "76" and claims["roles"] == ["caf_instructor"]
    replay = await idp.token(email, STRONG, code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


async def test_a_provisioned_account_s_event_says_who_it_is(idp: Identity) -> None:
    """The audit's directory shows names beside ids and mails alerts to auditors: the event carries them."""
    admin = await idp.caf_admin()
    email = unique_email("auditrice")
    r = await create_staff(idp, admin, email, ("Anaïs", "Lefèvre"), "auditor")
    assert r.status_code == 201, r.text
    [event] = [e for e in await idp.outbox("identity.user.provisioned") if e.data["email"] == email]
    assert event.data["user_id"] == r.json()["id"] and event.data["roles"] == ["auditor"]
    assert (event.data["family_name"], event.data["given_name"], event.data["department"]) == (
        "Lefèvre",
        "Anaïs",
        "76",
    )


async def test_unknown_user_and_wrong_password_look_the_same(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin, siret="73282932000074")
    email = org["admin_emails"][0]
    await idp.activate(email)
    wrong = await idp.token(email, "not the password at all")
    unknown = await idp.token(unique_email("nobody"), "not the password at all")
    assert wrong.status_code == unknown.status_code == 400
    assert (
        wrong.json() == unknown.json() == {"error": "invalid_grant", "error_description": "bad credentials"}
    )

    # Similar time: both pay one argon2id verification (medians of a few tries, compared as a ratio).
    async def timed(username: str) -> float:
        started = time.perf_counter()
        await idp.token(username, "still not the password")
        return time.perf_counter() - started

    other = await idp.create_organisation(admin, siret="55204944776279")
    known = [await timed(other["admin_emails"][0]) for _ in range(4)]  # not activated yet: no lockout effect
    nobody = [await timed(unique_email("ghost")) for _ in range(4)]
    ratio = statistics.median(known) / statistics.median(nobody)
    assert 0.5 < ratio < 2.0, (known, nobody)


async def test_five_failures_lock_the_account_until_an_admin_unlocks_it(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    await idp.activate(email)
    for _ in range(5):
        assert (await idp.token(email, "wrong password!!")).json()["error_description"] == "bad credentials"
    locked = await idp.token(email, STRONG)
    assert locked.status_code == 400 and locked.json()["error_description"].startswith("account locked until")
    [lock] = await idp.outbox("identity.user.locked")
    assert lock.data["permanent"] is False and lock.data["until"]
    assert len(await idp.outbox("identity.login.failed")) == 6

    user_id = org["administrators"][0]
    r = await idp.client.post(f"/v1/users/{user_id}/unlock", headers=auth(admin))
    assert r.status_code == 200
    assert (await idp.token(email, STRONG)).status_code == 200


async def test_an_unknown_e_mail_locks_like_an_account_so_the_lock_reveals_nothing(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    await idp.activate(email)
    ghost = unique_email("ghost")
    for _ in range(5):
        known, unknown = (
            await idp.token(email, "wrong password!!"),
            await idp.token(ghost, "wrong password!!"),
        )
        assert (
            known.json()
            == unknown.json()
            == {"error": "invalid_grant", "error_description": "bad credentials"}
        )
    known, unknown = await idp.token(email, "wrong password!!"), await idp.token(ghost, "wrong password!!")
    assert known.status_code == unknown.status_code == 400
    for answer in (known, unknown):
        assert answer.json()["error_description"].startswith("account locked until"), answer.text
    # Case and spaces do not make a new address (nor a way around the lock).
    again = await idp.token(f"  {ghost.upper()} ", "wrong password!!")
    assert again.json()["error_description"].startswith("account locked until")
    async with idp.app.state.sessions() as s:
        stored = (await s.execute(text("SELECT digest FROM unknown_login"))).scalars().all()
    assert len(stored) == 1 and ghost not in stored[0]  # only a digest of the typed address is kept
    async with idp.app.state.sessions() as s, s.begin():
        assert await tokens.forget_unknown_logins(s, datetime.now(UTC)) == 0  # still recent
        assert await tokens.forget_unknown_logins(s, datetime.now(UTC) + timedelta(days=8)) == 1


async def test_password_policy_and_one_time_links(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    token = await idp.activation_token_from_mail(email)
    for bad in ("short1!", "azertyuiop123", email.split("@")[0] + "-Secret-2026"):
        r = await idp.client.post("/v1/activations", json={"token": token, "password": bad})
        assert r.status_code == 422 and r.json()["reason"] == "password_policy", r.text
    assert (
        await idp.client.post("/v1/activations", json={"token": token, "password": STRONG})
    ).status_code == 200
    again = await idp.client.post("/v1/activations", json={"token": token, "password": STRONG + "x"})
    assert again.status_code == 400 and again.json()["reason"] == "invalid_token"
    forged = await idp.client.post("/v1/activations", json={"token": "A" * 43, "password": STRONG})
    assert forged.status_code == 400


async def test_expired_activation_link_is_refused(identity_factory: object) -> None:
    idp = await identity_factory(activation_hours=1)  # type: ignore[operator]
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    token = await idp.activation_token_from_mail(org["admin_emails"][0])
    from sqlalchemy import text

    async with idp.app.state.sessions() as s, s.begin():
        await s.execute(text("UPDATE one_time_token SET expires_at = now() - interval '1 minute'"))
    r = await idp.client.post("/v1/activations", json={"token": token, "password": STRONG})
    assert r.status_code == 400 and r.json()["reason"] == "invalid_token"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("siret", "73282932000075"),  # bad check digit
        ("siret", "7328293200007A"),
        ("department", "20"),
        ("department", "99"),
        ("name", "x" * 201),
        ("kind", "Bailleur Social; DROP TABLE organisation"),
        ("administrators", []),
    ],
)
async def test_bad_organisations_are_refused_and_change_nothing(
    idp: Identity, field: str, value: object
) -> None:
    admin = await idp.caf_admin()
    before = len(await idp.outbox())
    body = {
        "siret": "73282932000074",
        "name": "Logeo",
        "kind": "bailleur",
        "department": "76",
        "convention": {"reference": "C-1", "valid_until": "2030-01-01"},
        "administrators": [{"email": unique_email(), "family_name": "A", "given_name": "B"}],
        field: value,
    }
    r = await idp.client.post("/v1/organisations", json=body, headers=auth(admin))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert len(await idp.outbox()) == before


async def test_sql_ish_names_are_just_names(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin, name="Robert'); DROP TABLE organisation;--")
    r = await idp.client.get(f"/v1/organisations/{org['id']}", headers=auth(admin))
    assert r.status_code == 200 and r.json()["name"] == "Robert'); DROP TABLE organisation;--"


async def test_duplicate_siret_is_409(idp: Identity) -> None:
    admin = await idp.caf_admin()
    await idp.create_organisation(admin, siret="44306184100047")
    body = {
        "siret": "44306184100047",
        "name": "X",
        "kind": "bailleur",
        "department": "76",
        "convention": {"reference": "C", "valid_until": "2030-01-01"},
        "administrators": [{"email": unique_email(), "family_name": "A", "given_name": "B"}],
    }
    r = await idp.client.post("/v1/organisations", json=body, headers=auth(admin))
    assert r.status_code == 409 and r.json()["reason"] == "siret_exists"


async def test_only_caf_admins_manage_accounts(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    await idp.activate(email)
    partner = {"Authorization": f"Bearer {(await idp.token(email, STRONG)).json()['access_token']}"}
    user_id = org["administrators"][0]
    for path in (
        f"/v1/users/{user_id}/suspend",
        f"/v1/users/{user_id}/reinstate",
        "/v1/users",
        "/v1/organisations",
    ):
        r = await idp.client.post(path, headers=partner, json={})
        assert r.status_code == 403, (path, r.text)
    assert (await idp.client.post("/v1/users/x/suspend")).status_code == 401


async def test_suspension_refuses_login_and_reinstatement_restores_it(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email, user_id = org["admin_emails"][0], org["administrators"][0]
    await idp.activate(email)
    r = await idp.client.post(f"/v1/users/{user_id}/suspend", headers=auth(admin), json={"reason": "audit"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    refused = await idp.token(email, STRONG)
    assert refused.json()["error_description"] == "account suspended"
    await idp.client.post(f"/v1/users/{user_id}/reinstate", headers=auth(admin))
    assert (await idp.token(email, STRONG)).status_code == 200
    assert [
        e.type
        for e in await idp.outbox()
        if (e.subject == user_id and "user.s" in e.type) or "reinstated" in e.type
    ] == ["identity.user.suspended", "identity.user.reinstated"]


async def test_forced_password_reset_blocks_login_until_a_new_password(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email, user_id = org["admin_emails"][0], org["administrators"][0]
    await idp.activate(email)
    r = await idp.client.post(f"/v1/users/{user_id}/force-password-reset", headers=auth(admin))
    assert r.status_code == 200
    assert (await idp.token(email, STRONG)).json()["error_description"] == "password reset required"

    async def two_mails() -> bool:
        from cdap_testing import MAIL_DIR, mails_to

        return len(mails_to(MAIL_DIR, email)) >= 2

    from cdap_testing import eventually

    await eventually(two_mails, within=15)
    from cdap_testing import MAIL_DIR, mails_to

    # Both the activation and the reset mail say whom the account acts for, by name.
    for mail in mails_to(MAIL_DIR, email):
        assert "Ce compte est au nom de Claire Durand, pour Logeo Seine." in mail and org["id"] not in mail
    token = await idp.activation_token_from_mail(email)
    reused = await idp.client.post("/v1/activations", json={"token": token, "password": STRONG})
    assert reused.status_code == 422 and "last" in reused.json()["detail"]  # not one of the last 5
    # The portal shows each broken rule: they come as `violations`, beside the reason.
    assert reused.json()["reason"] == "password_policy" and reused.json()["violations"]
    assert (
        await idp.client.post("/v1/activations", json={"token": token, "password": STRONG + "-new"})
    ).status_code == 200
    assert (await idp.token(email, STRONG + "-new")).status_code == 200


async def test_refresh_tokens_rotate_and_reuse_revokes_the_family(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    await idp.activate(email)
    first = (await idp.token(email, STRONG)).json()["refresh_token"]
    second = await idp.client.post("/v1/token", data={"grant_type": "refresh_token", "refresh_token": first})
    assert second.status_code == 200 and second.json()["refresh_token"] != first
    reuse = await idp.client.post("/v1/token", data={"grant_type": "refresh_token", "refresh_token": first})
    assert reuse.status_code == 400 and "reused" in reuse.json()["error_description"]
    newest = await idp.client.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": second.json()["refresh_token"]}
    )
    assert newest.status_code == 400  # the whole family was revoked


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "magic"},
        {"grant_type": "password"},
        {"grant_type": "password", "username": "a@b.fr"},
        {"grant_type": "password", "username": "x" * 600, "password": "y"},
        {"grant_type": "password", **{f"extra{i}": "x" for i in range(20)}},  # more fields than allowed
        {},
    ],
)
async def test_malformed_token_requests_are_rfc6749_errors(idp: Identity, form: dict[str, str]) -> None:
    r = await idp.client.post("/v1/token", data=form)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] in {"invalid_request", "unsupported_grant_type"}
    assert r.headers["cache-control"] == "no-store"


async def test_a_revocation_form_with_too_many_fields_is_an_rfc6749_error(idp: Identity) -> None:
    r = await idp.client.post("/v1/revoke", data={f"f{i}": "x" for i in range(10)})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def rotated_refresh_tokens(idp: Identity) -> tuple[str, str]:
    """A new partner administrator's first refresh token, and the one rotating it gave."""
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = org["admin_emails"][0]
    await idp.activate(email)
    refresh = (await idp.token(email, STRONG)).json()["refresh_token"]
    rotated = await idp.client.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    newest = rotated.json()["refresh_token"]
    return refresh, newest


async def test_logout_revokes_the_refresh_token_family(idp: Identity) -> None:
    refresh, newest = await rotated_refresh_tokens(idp)
    assert (await idp.client.post("/v1/revoke", data={"token": refresh})).status_code == 200
    after = await idp.client.post("/v1/token", data={"grant_type": "refresh_token", "refresh_token": newest})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    assert (await idp.client.post("/v1/revoke", data={"token": "never-issued"})).status_code == 200
    assert (await idp.client.post("/v1/revoke", data={})).status_code == 400


async def test_a_caf_admin_finds_renews_and_restores_an_organisation(idp: Identity) -> None:
    """Search by name or SIRET, renew the convention (every service hears it), withdraw then restore the
    delegation; a convention ending today or before is refused and changes nothing."""
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin, siret=SIRETS[0], name="Logeo Seine")
    other = await idp.create_organisation(admin, siret=SIRETS[1], name="CCAS du Havre", department="27")

    async def found(**params: str) -> list[str]:
        r = await idp.client.get("/v1/organisations", params=params, headers=auth(admin))
        assert r.status_code == 200, r.text
        return [o["id"] for o in r.json()]

    assert await found(q="logeo") == [org["id"]]
    assert await found(q=SIRETS[1][:9]) == [other["id"]]
    assert await found(department="27") == [other["id"]]
    assert await found(q="50%_") == []  # LIKE wildcards are searched for literally
    [listed] = [
        o
        for o in (await idp.client.get("/v1/organisations", headers=auth(admin))).json()
        if o["id"] == org["id"]
    ]
    assert listed["administrators"] == org["administrators"]

    refused = await idp.client.patch(
        f"/v1/organisations/{org['id']}",
        json={"convention": {"reference": "CONV-76-OLD", "valid_until": "2020-01-01"}},
        headers=auth(admin),
    )
    assert refused.status_code == 422 and refused.json()["reason"] == "convention_ended"
    renewed = await idp.client.patch(
        f"/v1/organisations/{org['id']}",
        json={
            "name": "Logeo Seine Habitat",
            "convention": {"reference": "CONV-76-002", "valid_until": "2031-12-31"},
        },
        headers=auth(admin),
    )
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert (body["name"], body["convention_reference"], body["convention_valid_until"]) == (
        "Logeo Seine Habitat",
        "CONV-76-002",
        "2031-12-31",
    )
    assert body["kind"] == "bailleur" and body["siret"] == SIRETS[0]  # omitted fields are unchanged
    updates = [e for e in await idp.outbox("identity.organisation.updated") if e.subject == org["id"]]
    assert [u.data["convention_valid_until"] for u in updates] == ["2031-12-31"]
    assert (
        await idp.client.patch(f"/v1/organisations/{org['id']}", json={"siret": "1"}, headers=auth(admin))
    ).status_code == 422

    await idp.client.post(f"/v1/organisations/{org['id']}/withdraw-delegation", headers=auth(admin))
    restored = await idp.client.post(f"/v1/organisations/{org['id']}/restore-delegation", headers=auth(admin))
    assert restored.status_code == 200 and restored.json()["delegation_withdrawn"] is False
    updates = [e for e in await idp.outbox("identity.organisation.updated") if e.subject == org["id"]]
    assert [u.data["delegation_withdrawn"] for u in updates] == [False, True, False]


async def test_introspection_tells_whether_a_sign_in_session_is_alive(idp: Identity) -> None:
    refresh, newest = await rotated_refresh_tokens(idp)

    async def active(token: str) -> bool:
        r = await idp.client.post("/v1/introspect", data={"token": token})
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        return bool(r.json()["active"])

    assert await active(refresh) and await active(newest)  # a rotated token still names its session
    assert not await active("never-issued")
    await idp.client.post("/v1/revoke", data={"token": newest})
    assert not await active(refresh) and not await active(newest)
    assert (await idp.client.post("/v1/introspect", data={})).status_code == 400
