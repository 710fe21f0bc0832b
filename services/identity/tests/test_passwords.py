"""Password hashing and policy, TOTP, one-time tokens."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from argon2 import PasswordHasher
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cdap_identity.passwords import (
    DUMMY_HASH,
    MAX_LENGTH,
    MIN_LENGTH,
    check_policy,
    common_passwords,
    hash_password,
    needs_rehash,
    new_token,
    new_totp_secret,
    otpauth_uri,
    token_digest,
    verify_password,
    verify_totp,
)

GOOD = "Chamois-Velours-Tartine7"
NOW = datetime(2025, 3, 10, 9, 0, 12, tzinfo=UTC)

# ----------------------------------------------------------------- hashing


def test_hash_is_argon2id_with_owasp_parameters() -> None:
    hashed = hash_password(GOOD)
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert GOOD not in hashed


def test_the_right_password_verifies_and_a_wrong_one_does_not() -> None:
    hashed = hash_password(GOOD)
    assert verify_password(hashed, GOOD) is True
    assert verify_password(hashed, GOOD + "x") is False
    assert verify_password(hashed, GOOD.lower()) is False
    assert verify_password(hashed, "") is False


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password(GOOD) != hash_password(GOOD)


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$broken", "$2b$12$abc"])
def test_a_malformed_stored_hash_never_raises(stored: str) -> None:
    assert verify_password(stored, GOOD) is False
    assert needs_rehash(stored) is True


def test_composed_and_decomposed_accents_are_the_same_password() -> None:
    composed = "Crème-brûlée-à-Noël"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert verify_password(hash_password(decomposed), composed)
    assert verify_password(hash_password(composed), decomposed)


def test_needs_rehash_only_for_other_parameters() -> None:
    assert needs_rehash(hash_password(GOOD)) is False
    weaker = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    assert needs_rehash(weaker) is True
    assert verify_password(weaker, GOOD)  # old hashes still verify until rehashed


def test_dummy_hash_costs_the_same_as_a_real_one_and_matches_nothing() -> None:
    assert DUMMY_HASH.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert needs_rehash(DUMMY_HASH) is False
    for guess in ["", "password", GOOD, "dummy"]:
        assert verify_password(DUMMY_HASH, guess) is False


# ----------------------------------------------------------------- policy


def policy(password: str, username: str = "marie.curie@caf.fr", previous: tuple[str, ...] = ()) -> list[str]:
    return check_policy(password, username=username, previous_hashes=previous)


def test_a_good_password_passes() -> None:
    assert policy(GOOD) == []


def test_eleven_characters_are_too_short_twelve_are_enough() -> None:
    [message] = policy("Tr0ub4dor&3")
    assert "at least 12 characters" in message
    assert policy("Tr0ub4dor&3x") == []


def test_128_characters_are_allowed_129_are_too_long() -> None:
    assert policy("Zq9!" * 32) == []
    [message] = policy("Zq9!" * 32 + "a")
    assert "at most 128 characters" in message
    assert (MIN_LENGTH, MAX_LENGTH) == (12, 128)


def test_length_counts_characters_not_bytes_or_combining_marks() -> None:
    # 12 accented letters: 24 bytes in UTF-8, 24 code points once decomposed, still 12 characters.
    accented = unicodedata.normalize("NFD", "éàèùçôîâêëïü")
    assert len(accented) == 24
    assert policy(accented) == []
    assert policy("ééééééééééé") != []  # 11 characters
    assert policy("🔒🔑🙂" * 4) == []  # 12 characters outside the BMP, 48 bytes
    assert policy("🔒🔑🙂" * 3 + "🙃🙃") != []  # 11 characters


@pytest.mark.parametrize(
    ("password", "username"),
    [
        ("xx-marie.curie@caf.fr-xx", "marie.curie@caf.fr"),  # the whole e-mail
        ("Bonjour-MARIE.CURIE-2025", "marie.curie@caf.fr"),  # the local part, any case
        ("Jdupont-est-la-2025!", "JDupont"),  # a plain username
    ],
)
def test_the_username_must_not_appear_in_the_password(password: str, username: str) -> None:
    [message] = policy(password, username=username)
    assert "username" in message


def test_very_short_usernames_are_not_searched_for() -> None:
    # "jo" appears in "bonjour": refusing it would be a false positive.
    assert policy("Un-bonjour-tardif-42", username="jo@x.fr") == []


def test_the_last_passwords_cannot_be_reused() -> None:
    previous = tuple(hash_password(f"Ancien-mot-{i}-de-passe") for i in range(5))
    [message] = policy("Ancien-mot-3-de-passe", previous=previous)
    assert "last 5 passwords" in message
    assert policy(GOOD, previous=previous) == []


def test_reuse_check_survives_a_corrupt_history_entry() -> None:
    assert policy(GOOD, previous=("garbage", hash_password("Autre-chose-123"))) == []


@pytest.mark.parametrize(
    "password", ["motdepasse123", "AzertyUiop123", "PASSWORD1234", "123456789012", "qwertyuiop12"]
)
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    [message] = policy(password)
    assert "too common" in message


def test_short_common_passwords_get_both_messages() -> None:
    assert len(policy("azerty")) == 2


def test_every_violation_is_reported_at_once_with_distinct_messages() -> None:
    previous = (hash_password("marie"),)
    messages = policy("marie", username="Marie@caf.fr", previous=previous)
    assert len(messages) == 3
    assert len(set(messages)) == 3
    assert all(isinstance(m, str) and m.endswith(".") for m in messages)


# ----------------------------------------------------------------- deny-list


def test_the_deny_list_is_bundled_with_the_package() -> None:
    text = resources.files("cdap_identity").joinpath("common_passwords.txt").read_text("utf-8")
    lines = text.splitlines()
    assert len(lines) >= 300
    assert all(line == line.strip().lower() and line for line in lines)
    assert len(set(lines)) == len(lines)


def test_the_deny_list_has_the_classics_and_long_patterns() -> None:
    deny = common_passwords()
    classics = {"password", "123456", "azerty", "motdepasse", "soleil", "doudou", "123456789", "qwerty"}
    long_ones = {"motdepasse123", "azertyuiop123", "password1234", "123456789012", "qwertyuiop12"}
    assert classics | long_ones <= deny
    assert sum(len(p) >= MIN_LENGTH for p in deny) >= 50


def test_the_deny_list_is_loaded_once() -> None:
    assert common_passwords() is common_passwords()


# ----------------------------------------------------------------- TOTP


def test_new_totp_secrets_are_random_base32() -> None:
    secrets = {new_totp_secret() for _ in range(20)}
    assert len(secrets) == 20
    assert all(re.fullmatch(r"[A-Z2-7]{32}", s) for s in secrets)


def test_otpauth_uri_names_the_issuer_and_the_account() -> None:
    secret = new_totp_secret()
    uri = otpauth_uri(secret, "marie.curie@caf.fr")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert unquote(parts.path) == "/CDAP:marie.curie@caf.fr"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["CDAP"]
    assert pyotp.parse_uri(uri).secret == secret
    assert "issuer=CDAP%20Recette" in otpauth_uri(secret, "a@b.fr", issuer="CDAP Recette")


def step_of(at: datetime) -> int:
    return int(at.timestamp()) // 30


def code_at(secret: str, at: datetime) -> str:
    return pyotp.TOTP(secret).at(at)


def test_the_current_code_is_accepted_and_returns_its_step() -> None:
    secret = new_totp_secret()
    assert verify_totp(secret, code_at(secret, NOW), NOW, None) == step_of(NOW)


def test_the_same_step_cannot_be_used_twice() -> None:
    secret = new_totp_secret()
    code = code_at(secret, NOW)
    step = verify_totp(secret, code, NOW, None)
    assert step is not None
    assert verify_totp(secret, code, NOW, step) is None
    assert verify_totp(secret, code, NOW + timedelta(seconds=5), step) is None


def test_an_older_step_is_refused_once_a_newer_one_was_used() -> None:
    secret = new_totp_secret()
    previous_code = code_at(secret, NOW - timedelta(seconds=30))
    assert verify_totp(secret, previous_code, NOW, step_of(NOW)) is None
    assert verify_totp(secret, previous_code, NOW, None) == step_of(NOW) - 1


def test_the_next_code_is_accepted_after_the_last_used_step() -> None:
    secret = new_totp_secret()
    later = NOW + timedelta(seconds=30)
    assert verify_totp(secret, code_at(secret, later), later, step_of(NOW)) == step_of(later)


def test_one_step_of_drift_is_tolerated_either_way() -> None:
    secret = new_totp_secret()
    assert verify_totp(secret, code_at(secret, NOW + timedelta(seconds=30)), NOW, None) == step_of(NOW) + 1
    assert verify_totp(secret, code_at(secret, NOW - timedelta(seconds=30)), NOW, None) == step_of(NOW) - 1


@pytest.mark.parametrize("steps", [-3, -2, 2, 3, 10])
def test_codes_further_than_one_step_away_are_refused(steps: int) -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # fixed: a random one could collide with a valid code
    code = code_at(secret, NOW + timedelta(seconds=30 * steps))
    assert code not in {code_at(secret, NOW + timedelta(seconds=30 * s)) for s in (-1, 0, 1)}
    assert verify_totp(secret, code, NOW, None) is None


def test_a_code_for_another_secret_is_refused() -> None:
    secret, other = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU"
    code = code_at(other, NOW)
    assert code not in {code_at(secret, NOW + timedelta(seconds=30 * s)) for s in (-1, 0, 1)}
    assert verify_totp(secret, code, NOW, None) is None


@pytest.mark.parametrize(
    "shape", ["", "12345", "1234567", "12345a", " {c}", "{c} ", "{c}\n", "123 456", "+12345"]
)
def test_codes_that_are_not_exactly_six_digits_are_refused(shape: str) -> None:
    secret = new_totp_secret()
    assert verify_totp(secret, shape.format(c=code_at(secret, NOW)), NOW, None) is None


def test_unicode_digits_are_refused() -> None:
    secret = new_totp_secret()
    code = code_at(secret, NOW).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    assert verify_totp(secret, code, NOW, None) is None


def test_a_naive_now_is_rejected() -> None:
    secret = new_totp_secret()
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_totp(secret, "123456", NOW.replace(tzinfo=None), None)


@settings(max_examples=50)
@given(st.integers(0, 999_999))
def test_random_codes_are_refused(number: int) -> None:
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    code = f"{number:06d}"
    assume(code not in {code_at(secret, NOW + timedelta(seconds=30 * s)) for s in (-1, 0, 1)})
    assert verify_totp(secret, code, NOW, None) is None


# ----------------------------------------------------------------- one-time tokens


def test_tokens_are_long_random_and_url_safe() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in tokens)


def test_token_digest_is_the_sha256_hex_of_the_token() -> None:
    token = new_token()
    digest = token_digest(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert token not in digest
    assert token_digest(token) == digest
    assert token_digest(new_token()) != digest
