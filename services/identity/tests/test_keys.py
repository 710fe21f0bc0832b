"""Ed25519 signing keys, JWKS publication across rotations, access tokens verified by PyJWT."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cdap_identity.keys import KeyRing, SigningKey, issue_access_token, jwk_thumbprint
from cdap_shared.auth import TokenVerifier

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
GRANTS = [{"id": "g-1", "profile": "T2", "department": "75"}]


def real_now() -> datetime:
    # PyJWT checks exp/nbf against the real clock, so tokens meant to verify are issued "now".
    return datetime.now(UTC)


def ring_with_key(now: datetime, **kwargs: Any) -> KeyRing:
    ring = KeyRing(**kwargs)
    ring.rotate(now)
    return ring


def decode(token: str, jwks: dict[str, Any], audience: str = "cdap") -> dict[str, Any]:
    """Verify the way a consuming service does: key by kid from the published JWKS, EdDSA only."""
    keyset = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keyset.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key=key, algorithms=["EdDSA"], audience=audience, issuer="cdap-identity"
    )
    return claims


def kids(jwks: dict[str, Any]) -> list[str]:
    return [k["kid"] for k in jwks["keys"]]


# ----------------------------------------------------------------- SigningKey


def test_public_jwk_has_the_okp_ed25519_shape_and_no_private_part() -> None:
    key = SigningKey.generate(T0)
    jwk = key.public_jwk()
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"], jwk["kid"]) == (
        "OKP",
        "Ed25519",
        "EdDSA",
        "sig",
        key.kid,
    )
    raw = key.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == raw


def test_the_default_kid_is_the_rfc_7638_thumbprint() -> None:
    # RFC 8037, appendix A.1-A.3: this private key's public JWK has this thumbprint.
    d = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    private_key = Ed25519PrivateKey.from_private_bytes(d)
    assert jwk_thumbprint(private_key) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    key = SigningKey.from_pem(SigningKey("k", private_key, T0).to_pem(), created_at=T0)
    assert key.kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert key.public_jwk()["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def test_new_keys_are_distinct() -> None:
    assert len({SigningKey.generate(T0).kid for _ in range(10)}) == 10


def test_pem_is_unencrypted_pkcs8_and_round_trips() -> None:
    key = SigningKey.generate(T0, kid="2025-03")
    pem = key.to_pem()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, not "ENCRYPTED PRIVATE KEY"
    retired = T0 + timedelta(days=30)
    loaded = SigningKey.from_pem(pem, created_at=T0, kid="2025-03", retired_at=retired)
    assert (loaded.kid, loaded.created_at, loaded.retired_at) == ("2025-03", T0, retired)
    assert loaded.public_jwk() == key.public_jwk()
    assert SigningKey.from_pem(pem.encode(), created_at=T0, kid="2025-03").to_pem() == pem


def test_a_token_signed_by_a_reloaded_key_verifies_with_the_original_jwk() -> None:
    now = real_now()
    original = SigningKey.generate(now)
    reloaded = SigningKey.from_pem(original.to_pem(), created_at=now)
    token, _, _ = issue_access_token(KeyRing([reloaded]), sub="u", org=None, roles=[], grants=[], now=now)
    assert decode(token, {"keys": [original.public_jwk()]})["sub"] == "u"


def test_from_pem_refuses_other_key_types() -> None:
    pem = (
        generate_private_key(SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        SigningKey.from_pem(pem, created_at=T0)


def test_retire_returns_a_retired_copy() -> None:
    key = SigningKey.generate(T0)
    retired = key.retire(T0 + timedelta(hours=1))
    assert retired.retired_at == T0 + timedelta(hours=1)
    assert key.retired_at is None
    assert retired.kid == key.kid


# ----------------------------------------------------------------- KeyRing


def test_an_empty_ring_has_no_current_key() -> None:
    ring = KeyRing()
    with pytest.raises(LookupError):
        _ = ring.current
    assert ring.jwks(T0) == {"keys": []}


def test_rotate_makes_a_new_current_key_and_retires_the_old_one() -> None:
    ring = ring_with_key(T0)
    old = ring.current
    later = T0 + timedelta(days=90)
    new = ring.rotate(later)
    assert ring.current == new
    assert new.created_at == later
    assert new.kid != old.kid
    retired = ring.get(old.kid)
    assert retired is not None
    assert retired.retired_at == later


def test_current_is_the_newest_key_not_retired() -> None:
    oldest = SigningKey.generate(T0)
    newest_active = SigningKey.generate(T0 + timedelta(days=1))
    newest_retired = SigningKey.generate(T0 + timedelta(days=2), kid="r").retire(T0 + timedelta(days=3))
    ring = KeyRing([oldest, newest_retired, newest_active])
    assert ring.current == newest_active
    assert [k.kid for k in ring.keys] == ["r", newest_active.kid, oldest.kid]


def test_duplicate_kids_are_refused() -> None:
    key = SigningKey.generate(T0)
    with pytest.raises(ValueError, match="Duplicate"):
        KeyRing([key, key])


def test_jwks_keeps_a_retired_key_for_token_lifetime_plus_margin() -> None:
    ring = ring_with_key(T0, token_lifetime=timedelta(seconds=300), margin=timedelta(seconds=60))
    old = ring.current
    rotated_at = T0 + timedelta(days=1)
    new = ring.rotate(rotated_at)
    assert kids(ring.jwks(rotated_at)) == [new.kid, old.kid]
    assert kids(ring.jwks(rotated_at + timedelta(seconds=359))) == [new.kid, old.kid]
    assert kids(ring.jwks(rotated_at + timedelta(seconds=360))) == [new.kid]
    assert all("d" not in jwk for jwk in ring.jwks(rotated_at)["keys"])


def test_prune_drops_only_unpublished_keys() -> None:
    ring = ring_with_key(T0)
    first = ring.current
    second = ring.rotate(T0 + timedelta(days=1))
    third = ring.rotate(T0 + timedelta(days=1, minutes=3))
    gone = ring.prune(T0 + timedelta(days=1, minutes=7))
    assert [k.kid for k in gone] == [first.kid]
    assert [k.kid for k in ring.keys] == [third.kid, second.kid]


# ----------------------------------------------------------------- access tokens


def test_an_access_token_verifies_against_the_published_jwks() -> None:
    now = real_now()
    ring = ring_with_key(now)
    token, jti, exp = issue_access_token(
        ring, sub="user-1", org="org-1", roles=["partner_user"], grants=GRANTS, now=now
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == ring.current.kid
    claims = decode(token, ring.jwks(now))
    iat = int(now.timestamp())
    assert claims == {
        "sub": "user-1",
        "org": "org-1",
        "roles": ["partner_user"],
        "grants": GRANTS,
        "aud": "cdap",
        "iss": "cdap-identity",
        "iat": iat,
        "nbf": iat,
        "exp": iat + 300,
        "jti": jti,
    }
    assert re.fullmatch(r"[0-9a-f]{32}", jti)
    assert uuid.UUID(hex=jti).version == 4
    assert exp == datetime.fromtimestamp(iat + 300, UTC)


def test_a_key_signs_exactly_what_pyjwt_would() -> None:
    """Identity signs without PyJWT's per-call overhead; the token is the same bytes all the same
    (Ed25519 signatures are deterministic), so every JOSE library reads it alike."""
    key = SigningKey.generate(real_now())
    claims = {"sub": "cdap-1", "org": "org-é", "roles": ["partner_system"], "grants": GRANTS, "exp": 2}
    assert key.sign(claims) == jwt.encode(
        claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid}
    )


def test_each_token_gets_its_own_jti() -> None:
    now = real_now()
    ring = ring_with_key(now)
    jtis = {issue_access_token(ring, sub="u", org=None, roles=[], grants=[], now=now).jti for _ in range(20)}
    assert len(jtis) == 20


def test_lifetime_audience_issuer_and_extra_claims_are_honoured() -> None:
    now = real_now()
    ring = ring_with_key(now)
    token, _, exp = issue_access_token(
        ring,
        sub="caf-7",
        org=None,
        roles=["caf_instructor"],
        grants=[],
        now=now,
        lifetime=60,
        audience="cdap-dossiers",
        issuer="cdap-identity",
        extra={"department": "2A"},
    )
    claims = decode(token, ring.jwks(now), audience="cdap-dossiers")
    assert claims["exp"] - claims["iat"] == 60
    assert claims["department"] == "2A"
    assert claims["org"] is None
    assert exp == datetime.fromtimestamp(claims["exp"], UTC)
    with pytest.raises(jwt.InvalidAudienceError):
        decode(token, ring.jwks(now), audience="cdap")


async def test_the_shared_token_verifier_accepts_identity_tokens() -> None:
    now = real_now()
    ring = ring_with_key(now)
    token, jti, _ = issue_access_token(
        ring, sub="user-1", org="org-1", roles=["partner_admin"], grants=GRANTS, now=now
    )
    verifier = TokenVerifier(None, "cdap", "cdap-identity", keys=ring.jwks(now))
    principal = await verifier.verify(token)
    assert (principal.sub, principal.org, principal.jti) == ("user-1", "org-1", jti)
    assert principal.roles == {"partner_admin"}
    assert [(g.id, g.profile, g.department) for g in principal.grants] == [("g-1", "T2", "75")]


def test_a_token_signed_before_a_rotation_verifies_until_its_key_leaves_the_jwks() -> None:
    now = real_now()
    ring = ring_with_key(now - timedelta(days=30))
    old_kid = ring.current.kid
    token, _, _ = issue_access_token(ring, sub="u", org=None, roles=[], grants=[], now=now)
    new = ring.rotate(now)
    assert jwt.get_unverified_header(token)["kid"] == old_kid
    # Right after the rotation and until the token expires, the old key is still published.
    assert decode(token, ring.jwks(now))["sub"] == "u"
    assert decode(token, ring.jwks(now + timedelta(seconds=299)))["sub"] == "u"
    # Once lifetime + margin have passed the key is withdrawn: the (expired) token cannot verify anymore.
    later = ring.jwks(now + ring.token_lifetime + ring.margin)
    assert kids(later) == [new.kid]
    keyset = jwt.PyJWKSet.from_dict(later)
    assert old_kid not in {k.key_id for k in keyset.keys}
    # New tokens are signed with the new key.
    fresh, _, _ = issue_access_token(ring, sub="v", org=None, roles=[], grants=[], now=now)
    assert jwt.get_unverified_header(fresh)["kid"] == new.kid
    assert decode(fresh, later)["sub"] == "v"


def test_a_token_does_not_verify_with_another_key() -> None:
    now = real_now()
    ring, other = ring_with_key(now), SigningKey.generate(now)
    token, _, _ = issue_access_token(ring, sub="u", org=None, roles=[], grants=[], now=now)
    impostor = {"keys": [{**other.public_jwk(), "kid": ring.current.kid}]}
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, impostor)


def test_a_tampered_token_is_rejected() -> None:
    now = real_now()
    ring = ring_with_key(now)
    token, _, _ = issue_access_token(ring, sub="u", org=None, roles=["partner_user"], grants=[], now=now)
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["roles"] = ["caf_admin"]
    forged_payload = jwt.encode(claims, "k" * 32, algorithm="HS256").split(".")[1]
    with pytest.raises(jwt.InvalidSignatureError):
        decode(f"{header}.{forged_payload}.{signature}", ring.jwks(now))


def test_tokens_are_not_valid_before_their_issue_time_nor_after_expiry() -> None:
    now = real_now()
    ring = ring_with_key(now - timedelta(hours=2))
    future, _, _ = issue_access_token(
        ring, sub="u", org=None, roles=[], grants=[], now=now + timedelta(hours=1)
    )
    with pytest.raises(jwt.ImmatureSignatureError):
        decode(future, ring.jwks(now))
    past, _, _ = issue_access_token(
        ring, sub="u", org=None, roles=[], grants=[], now=now - timedelta(hours=1)
    )
    with pytest.raises(jwt.ExpiredSignatureError):
        decode(past, ring.jwks(now))


@pytest.mark.parametrize("lifetime", [0, -1, 301])
def test_lifetimes_beyond_the_rings_publication_window_are_refused(lifetime: int) -> None:
    ring = ring_with_key(T0)
    with pytest.raises(ValueError, match="lifetime"):
        issue_access_token(ring, sub="u", org=None, roles=[], grants=[], now=T0, lifetime=lifetime)


def test_a_longer_lifetime_needs_a_ring_configured_for_it() -> None:
    ring = ring_with_key(T0, token_lifetime=timedelta(minutes=15))
    _, _, exp = issue_access_token(ring, sub="u", org=None, roles=[], grants=[], now=T0, lifetime=900)
    assert exp == T0 + timedelta(minutes=15)


@pytest.mark.parametrize("claim", ["sub", "exp", "aud", "roles", "jti"])
def test_extra_claims_cannot_override_standard_ones(claim: str) -> None:
    ring = ring_with_key(T0)
    with pytest.raises(ValueError, match=claim):
        issue_access_token(ring, sub="u", org=None, roles=[], grants=[], now=T0, extra={claim: "x"})


def test_issuing_without_a_current_key_fails() -> None:
    with pytest.raises(LookupError):
        issue_access_token(KeyRing(), sub="u", org=None, roles=[], grants=[], now=T0)
