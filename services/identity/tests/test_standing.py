"""Identity honours a token only while the account behind it is: a suspended CAF admin cannot reinstate
itself or act at all, and a suspension ends every session for good (reinstatement revives none)."""

from __future__ import annotations

import time

import pyotp

from .conftest import STRONG, Identity, auth, unique_email


async def refresh(idp: Identity, token: str) -> dict[str, str]:
    r = await idp.client.post("/v1/token", data={"grant_type": "refresh_token", "refresh_token": token})
    return dict(r.json())


async def test_a_suspended_caf_admin_can_do_nothing_and_its_sessions_stay_dead(idp: Identity) -> None:
    rogue, other = await idp.caf_admin(), await idp.caf_admin()
    suspended = await idp.client.post(f"/v1/users/{rogue['id']}/suspend", headers=auth(other), json={})
    assert suspended.status_code == 200

    # Its access token is still unexpired: every call it makes is refused, and changes nothing.
    provisioned = len(await idp.outbox("identity.user.provisioned"))
    staff = {"email": unique_email("complice"), "family_name": "X", "given_name": "Y", "roles": ["caf_admin"]}
    for method, path, body in (
        ("POST", f"/v1/users/{rogue['id']}/reinstate", {}),
        ("POST", "/v1/users", staff | {"department": "76"}),
        ("GET", "/v1/me", None),
        ("GET", "/v1/grants", None),
    ):
        r = await idp.client.request(method, path, headers=auth(rogue), json=body)
        assert r.status_code == 403 and r.json()["reason"] == "suspended", (path, r.text)
    assert await idp.outbox("identity.user.reinstated") == []
    assert len(await idp.outbox("identity.user.provisioned")) == provisioned
    assert (await refresh(idp, rogue["refresh"]))["error"] == "invalid_grant"

    reinstated = await idp.client.post(f"/v1/users/{rogue['id']}/reinstate", headers=auth(other))
    assert reinstated.status_code == 200
    assert (await refresh(idp, rogue["refresh"]))["error"] == "invalid_grant"  # not revived
    me = await idp.client.get("/v1/me", headers=auth(rogue))
    assert me.status_code == 200  # the account is honoured again; a new login gives a new session
    next_code = pyotp.TOTP(rogue["totp"]).at(time.time() + 30)  # the current one was spent at login
    assert (await idp.token(rogue["email"], STRONG, next_code)).status_code == 200


async def test_a_forced_password_reset_refuses_the_current_token_and_sessions(idp: Identity) -> None:
    target, admin = await idp.caf_admin(), await idp.caf_admin()
    forced = await idp.client.post(f"/v1/users/{target['id']}/force-password-reset", headers=auth(admin))
    assert forced.status_code == 200
    r = await idp.client.get("/v1/me", headers=auth(target))
    assert r.status_code == 403 and r.json()["reason"] == "password_reset_required"
    assert (await refresh(idp, target["refresh"]))["error"] == "invalid_grant"
    [event] = await idp.outbox("identity.user.reset_required")
    assert event.subject == target["id"] and event.data["by"] == admin["id"]
