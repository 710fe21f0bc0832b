"""TOTP by policy: a role or grant that requires it is never usable with a password alone.

A T2 user granted T1 later (the request approved onto their existing account) is walked through
enrolment at their next login: a ticket, a secret with its QR code, a first code; only then a token.
"""

from __future__ import annotations

from datetime import date, timedelta

import jwt
import pyotp
import pytest
from sqlalchemy import text

from cdap_identity.accounts import grant_claims
from cdap_identity.models import Grant
from cdap_testing import eventually

from .conftest import STRONG, Identity, auth, unique_email
from .test_grants import approved

pytestmark = pytest.mark.stack


async def t2_user_granted_t1(idp: Identity) -> tuple[str, dict[str, object]]:
    """An agent activated and signed in with T2 (no TOTP needed), then granted T1 on the same account.
    Returns the e-mail and the token answer of the T2-era login (its refresh token still alive)."""
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = unique_email("agent")
    await idp.publish(idp.settings.access_topic, approved(org["id"], email, "T2", request_id="req-t2"))
    await eventually(lambda: idp.outbox("identity.grant.issued"))
    assert (await idp.activate(email))["totp_secret"] is None  # T2: no second factor
    before = await idp.token(email, STRONG)
    assert before.status_code == 200, before.text

    await idp.publish(idp.settings.access_topic, approved(org["id"], email, "T1", request_id="req-t1"))

    async def two_grants() -> bool:
        return len(await idp.outbox("identity.grant.issued")) == 2

    await eventually(two_grants)
    return email, before.json()


async def test_a_t2_user_granted_t1_cannot_sign_in_without_totp_until_enrolled(idp: Identity) -> None:
    email, before = await t2_user_granted_t1(idp)

    # The password alone no longer gives a token; the answer carries an enrolment ticket.
    refused = await idp.token(email, STRONG)
    assert refused.status_code == 400
    body = refused.json()
    assert body["error"] == "invalid_grant" and body["error_description"] == "totp enrolment required"
    assert body["expires_in"] == 600 and len(body["enrolment_ticket"]) >= 43
    # Nor does the refresh token of the T2-era session (it would have carried T1).
    refresh = await idp.client.post(
        "/v1/token", data={"grant_type": "refresh_token", "refresh_token": str(before["refresh_token"])}
    )
    assert refresh.status_code == 400 and refresh.json()["error_description"] == "totp enrolment required"
    # A wrong password gets no ticket.
    wrong = await idp.token(email, "not the password at all")
    assert wrong.json() == {"error": "invalid_grant", "error_description": "bad credentials"}

    ticket = body["enrolment_ticket"]
    started = await idp.client.post("/v1/totp/enrolment", json={"ticket": ticket})
    assert started.status_code == 200, started.text
    enrolment = started.json()
    assert (
        enrolment["otpauth_uri"].startswith("otpauth://totp/CDAP:")
        and enrolment["secret"] in (enrolment["otpauth_uri"])
    )
    assert enrolment["qr_svg"].startswith("<svg") and enrolment["qr_svg"].endswith("</svg>")
    assert started.headers["cache-control"] == "no-store"
    again = await idp.client.post("/v1/totp/enrolment", json={"ticket": ticket})
    assert again.json()["secret"] == enrolment["secret"]  # a reload shows the same key

    # Until confirmed, nothing is enrolled: the password still gets "enrolment required".
    assert (await idp.token(email, STRONG)).json()["error_description"] == "totp enrolment required"
    # That login replaced the ticket: the old one is dead.
    stale = await idp.client.post(
        "/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": pyotp.TOTP(enrolment["secret"]).now()}
    )
    assert stale.status_code == 400 and stale.json()["reason"] == "invalid_ticket"

    ticket = (await idp.token(email, STRONG)).json()["enrolment_ticket"]
    secret = (await idp.client.post("/v1/totp/enrolment", json={"ticket": ticket})).json()["secret"]
    code = pyotp.TOTP(secret).now()
    bad = await idp.client.post(
        "/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": f"{(int(code) + 1) % 1000000:06d}"}
    )
    assert bad.status_code == 400 and bad.json()["reason"] == "bad_code"
    assert bad.headers["content-type"] == "application/problem+json"
    confirmed = await idp.client.post("/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": code})
    assert confirmed.status_code == 200, confirmed.text
    claims = jwt.decode(confirmed.json()["access_token"], options={"verify_signature": False})
    assert sorted(g["profile"] for g in claims["grants"]) == ["T1", "T2"]
    assert confirmed.json()["refresh_token"]
    [enrolled] = await idp.outbox("identity.user.totp_enrolled")
    assert enrolled.data["user_id"] == claims["sub"]

    # From now on: password and a code, like any TOTP account; the ticket was spent.
    assert (await idp.token(email, STRONG)).json()["error_description"] == "totp required"
    spent = await idp.client.post("/v1/totp/enrolment", json={"ticket": ticket})
    assert spent.status_code == 400 and spent.json()["reason"] == "invalid_ticket"
    await idp.forget_used_codes()
    later = await idp.token(email, STRONG, pyotp.TOTP(secret).now())
    assert later.status_code == 200, later.text


async def test_an_enrolment_must_be_started_and_its_ticket_must_be_live(idp: Identity) -> None:
    email, _ = await t2_user_granted_t1(idp)
    ticket = (await idp.token(email, STRONG)).json()["enrolment_ticket"]
    early = await idp.client.post("/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": "123456"})
    assert early.status_code == 409 and early.json()["reason"] == "not_started"
    unknown = await idp.client.post("/v1/totp/enrolment", json={"ticket": "A" * 43})
    assert unknown.status_code == 400 and unknown.json()["reason"] == "invalid_ticket"
    malformed = await idp.client.post("/v1/totp/enrolment", json={"ticket": "a b"})
    assert malformed.status_code == 422
    async with idp.app.state.sessions() as s, s.begin():
        await s.execute(text("UPDATE totp_enrolment SET expires_at = now() - interval '1 second'"))
    expired = await idp.client.post("/v1/totp/enrolment", json={"ticket": ticket})
    assert expired.status_code == 400 and expired.json()["reason"] == "invalid_ticket"


async def test_wrong_enrolment_codes_lock_the_account(idp: Identity) -> None:
    email, _ = await t2_user_granted_t1(idp)
    ticket = (await idp.token(email, STRONG)).json()["enrolment_ticket"]
    secret = (await idp.client.post("/v1/totp/enrolment", json={"ticket": ticket})).json()["secret"]
    code = pyotp.TOTP(secret).now()
    wrong = f"{(int(code) + 500000) % 1000000:06d}"
    for _ in range(5):
        r = await idp.client.post("/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": wrong})
        assert r.json()["reason"] == "bad_code"
    locked = await idp.client.post("/v1/totp/enrolment/confirm", json={"ticket": ticket, "code": code})
    assert locked.status_code == 403 and locked.json()["reason"] == "account_locked"
    assert len(await idp.outbox("identity.user.locked")) == 1


def test_grants_that_need_totp_stay_out_of_tokens_until_it_is_enrolled() -> None:
    today = date.today()
    grants = [
        Grant(id=f"g-{p}", user_id="u", organisation_id="o", profile=p, department="76", valid_from=today,
              valid_until=today + timedelta(days=1))
        for p in ("T1", "T2", "T5")
    ]  # fmt: skip
    without = grant_claims(grants, today, second_factor=False, totp_profiles={"T1", "T5"})
    assert [g["profile"] for g in without] == ["T2"]
    enrolled = grant_claims(grants, today, second_factor=True, totp_profiles={"T1", "T5"})
    assert [g["profile"] for g in enrolled] == ["T1", "T2", "T5"]


async def test_a_partner_system_cannot_use_a_t1_grant_before_its_holder_enrols_totp(idp: Identity) -> None:
    admin = await idp.caf_admin()
    org = await idp.create_organisation(admin)
    email = unique_email("agent")
    await idp.publish(idp.settings.access_topic, approved(org["id"], email, "T1", request_id="req-t1"))
    [issued] = await eventually(lambda: idp.outbox("identity.grant.issued"))
    created = await idp.client.post(
        "/v1/clients", headers=auth(admin), json={"grant_id": issued.data["grant_id"], "name": "SI"}
    )
    assert created.status_code == 201, created.text
    form = {
        "grant_type": "client_credentials",
        **{k: created.json()[k] for k in ("client_id", "client_secret")},
    }

    refused = await idp.client.post("/v1/token", data=form)
    assert refused.status_code == 400 and refused.json() == {
        "error": "invalid_grant",
        "error_description": "the habilitation's holder has not enrolled a second factor",
    }
    assert (await idp.activate(email))["totp_secret"]  # the holder activates: T1, so TOTP is enrolled
    assert (await idp.client.post("/v1/token", data=form)).status_code == 200
