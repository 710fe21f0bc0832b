"""Pure identity rules: SIRET, departments, TOTP requirement, lockout state machine, grant periods."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cdap_identity.domain import (
    ALL_ROLES,
    AUDITOR,
    CAF_ADMIN,
    CAF_INSTRUCTOR,
    CAF_MANAGER,
    CAF_ROLES,
    PARTNER_ADMIN,
    PARTNER_SYSTEM,
    PARTNER_USER,
    Invalid,
    LockoutPolicy,
    LockState,
    LoginGuard,
    check,
    grant_period,
    one_year_after,
    record_failure,
    record_success,
    requires_totp,
    valid_department,
    valid_siret,
)

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


# ----------------------------------------------------------------- SIRET


def luhn_complete(digits: str) -> str:
    """Append the Luhn check digit that makes `digits` + it valid (a SIREN's 9th, a SIRET's 14th)."""
    for check_digit in "0123456789":
        total = 0
        for position, char in enumerate(reversed(digits + check_digit)):
            value = int(char) * (2 if position % 2 else 1)
            total += value - 9 if value > 9 else value
        if total % 10 == 0:
            return digits + check_digit
    raise AssertionError("unreachable")


# A SIRET is a SIREN (8 digits and its own Luhn key) then a 4-digit NIC; the 14th digit keys the whole.
not_la_poste_prefix = st.builds(
    lambda siren8, nic: luhn_complete(siren8) + nic,
    st.text("0123456789", min_size=8, max_size=8),
    st.text("0123456789", min_size=4, max_size=4),
).filter(lambda s: not s.startswith("356000000"))


@pytest.mark.parametrize(
    "siret",
    [
        "73282932000074",  # a real company, Luhn key ok
        "35600000000048",  # La Poste head office: Luhn
        "35600000012346",  # La Poste establishment: digit sum 30, a multiple of 5
        "35600000049837",  # La Poste establishment: digit sum 45
        "00000000000000",
    ],
)
def test_valid_sirets_are_accepted(siret: str) -> None:
    assert valid_siret(siret)


@pytest.mark.parametrize(
    "siret",
    [
        "73282932000075",  # wrong key
        "00000000100008",  # Luhn-keyed as a whole, but its SIREN 000000001 has a wrong key
        "7328293200007A",  # a letter
        "7328293200007",  # 13 digits
        "732829320000740",  # 15 digits
        "732 829 320 00074",  # spaces are not stripped here
        " 73282932000074",
        "73282932000074\n",
        "",
        "7328293200007٤",  # Arabic-Indic four: str.isdigit() would accept it
        "35600000012345",  # La Poste establishment: digit sum 29
        "35600000000049",  # La Poste with the head office's prefix but a wrong key
    ],
)
def test_invalid_sirets_are_refused(siret: str) -> None:
    assert not valid_siret(siret)


def test_la_poste_uses_the_digit_sum_rule_not_luhn() -> None:
    # 35600000000030 passes Luhn (like the head office) but its digit sum, 17, is not a multiple of 5.
    assert luhn_complete("3560000000003") == "35600000000030"
    assert not valid_siret("35600000000030")


@given(not_la_poste_prefix)
def test_any_luhn_keyed_siret_is_valid(first13: str) -> None:
    assert valid_siret(luhn_complete(first13))


@given(not_la_poste_prefix, st.integers(0, 13), st.integers(1, 9))
def test_changing_any_single_digit_makes_a_siret_invalid(first13: str, index: int, delta: int) -> None:
    siret = luhn_complete(first13)
    digit = (int(siret[index]) + delta) % 10
    mutated = siret[:index] + str(digit) + siret[index + 1 :]
    assume(not mutated.startswith("356000000"))  # that prefix switches to La Poste's rule
    assert not valid_siret(mutated)


@given(st.text("0123456789", min_size=5, max_size=5))
def test_la_poste_establishments_are_valid_iff_digit_sum_is_a_multiple_of_5(nic: str) -> None:
    siret = "356000000" + nic
    assume(siret != "35600000000048")
    assert valid_siret(siret) == (sum(map(int, siret)) % 5 == 0)


# ----------------------------------------------------------------- departments


@pytest.mark.parametrize(
    "code", ["01", "09", "10", "19", "21", "2A", "2B", "75", "95", "971", "972", "973", "974", "975", "976"]
)
def test_french_departments_are_valid(code: str) -> None:
    assert valid_department(code)


@pytest.mark.parametrize(
    "code", ["00", "1", "20", "96", "99", "2C", "2a", "970", "977", "978", "988", "01 ", "", "075", "١٢"]
)
def test_non_departments_are_refused(code: str) -> None:
    assert not valid_department(code)


def test_there_are_101_departments_plus_saint_pierre_et_miquelon() -> None:
    codes = [f"{n:02d}" for n in range(100)] + ["2A", "2B"] + [str(n) for n in range(970, 990)]
    assert sum(valid_department(c) for c in codes) == 102


# ----------------------------------------------------------------- roles / TOTP


def test_role_constants() -> None:
    assert {PARTNER_USER, PARTNER_ADMIN, CAF_INSTRUCTOR, CAF_MANAGER, CAF_ADMIN, AUDITOR, PARTNER_SYSTEM} == {
        "partner_user",
        "partner_admin",
        "caf_instructor",
        "caf_manager",
        "caf_admin",
        "auditor",
        "partner_system",
    }
    assert ALL_ROLES >= CAF_ROLES
    assert set(CAF_ROLES) == {"caf_instructor", "caf_manager", "caf_admin"}


@pytest.mark.parametrize("role", [CAF_INSTRUCTOR, CAF_MANAGER, CAF_ADMIN, AUDITOR])
def test_caf_staff_always_need_totp(role: str) -> None:
    assert requires_totp([role], [])
    assert requires_totp([PARTNER_USER, role], ["T2"])


@pytest.mark.parametrize("profile", ["T1", "T5"])
def test_partners_holding_a_sensitive_profile_need_totp(profile: str) -> None:
    assert requires_totp([PARTNER_USER], ["T2", profile])


@pytest.mark.parametrize(
    ("roles", "profiles"),
    [([PARTNER_USER], ["T2", "T3"]), ([PARTNER_ADMIN], []), ([PARTNER_SYSTEM], ["T4"]), ([], [])],
)
def test_other_partners_do_not_need_totp(roles: list[str], profiles: list[str]) -> None:
    assert not requires_totp(roles, profiles)


def test_the_set_of_totp_profiles_is_configurable() -> None:
    assert requires_totp([PARTNER_USER], ["T3"], totp_profiles={"T3"})
    assert not requires_totp([PARTNER_USER], ["T1"], totp_profiles={"T3"})
    assert requires_totp([CAF_MANAGER], [], totp_profiles=set())


def test_requires_totp_accepts_any_iterable() -> None:
    assert requires_totp(iter([PARTNER_USER]), (p for p in ["T5"]))
    assert requires_totp(frozenset({CAF_ADMIN}), ())


# ----------------------------------------------------------------- lockout


def fail(state: LoginGuard, *instants: datetime) -> LoginGuard:
    for instant in instants:
        state, _ = record_failure(state, instant)
    return state


def test_a_new_account_may_log_in() -> None:
    status = check(LoginGuard(), T0)
    assert status.state is LockState.OK
    assert status.allowed
    assert status.until is None


def test_four_failures_do_not_lock() -> None:
    state = fail(LoginGuard(), *(T0 + i * MIN for i in range(4)))
    assert check(state, T0 + 4 * MIN).allowed
    assert len(state.failures) == 4


def test_the_fifth_failure_within_15_minutes_locks_for_15_minutes() -> None:
    state = fail(LoginGuard(), *(T0 + i * MIN for i in range(4)))
    at = T0 + 14 * MIN
    state, events = record_failure(state, at)
    assert len(events) == 1
    assert events[0].kind is LockState.LOCKED
    assert events[0].until == at + timedelta(minutes=15)
    assert not events[0].permanent
    status = check(state, at + 14 * MIN)
    assert status.state is LockState.LOCKED
    assert status.until == at + timedelta(minutes=15)
    assert not status.allowed
    assert check(state, at + 15 * MIN).allowed  # the lock ends by itself


def test_failures_older_than_15_minutes_do_not_count() -> None:
    state = fail(LoginGuard(), *(T0 + i * MIN for i in range(4)))
    state, events = record_failure(state, T0 + 15 * MIN)  # the first failure has left the window
    assert events == []
    assert check(state, T0 + 15 * MIN).allowed
    assert state.failures == tuple(T0 + i * MIN for i in (1, 2, 3, 15))


def test_five_failures_spread_over_more_than_15_minutes_never_lock() -> None:
    state = fail(LoginGuard(), *(T0 + i * 4 * MIN for i in range(50)))
    assert check(state, T0 + 200 * MIN).allowed
    assert state.temporary_locks == 0


def test_lock_durations_grow_and_the_third_lock_is_permanent() -> None:
    state, at = LoginGuard(), T0
    expected = [timedelta(minutes=15), timedelta(minutes=30)]
    for duration in expected:
        state = fail(state, *(at + i * MIN for i in range(4)))
        state, events = record_failure(state, at + 4 * MIN)
        assert [(e.until, e.permanent) for e in events] == [(at + 4 * MIN + duration, False)]
        at = at + 4 * MIN + duration  # wait for the lock to end
        assert check(state, at).allowed
    state = fail(state, *(at + i * MIN for i in range(4)))
    state, events = record_failure(state, at + 4 * MIN)
    assert [(e.until, e.permanent, e.kind) for e in events] == [(None, True, LockState.PERMANENTLY_LOCKED)]
    status = check(state, at + timedelta(days=365))
    assert status.state is LockState.PERMANENTLY_LOCKED
    assert not status.allowed
    assert state.permanently_locked


def test_the_policy_can_allow_longer_escalation() -> None:
    policy = LockoutPolicy(permanent_at_lock=5)
    assert [policy.lock_duration(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=m) for m in (15, 30, 60, 120)
    ]
    state = LoginGuard(temporary_locks=2)
    for i in range(5):
        state, events = record_failure(state, T0 + i * MIN, policy)
    assert [e.until for e in events] == [T0 + 4 * MIN + timedelta(minutes=60)]


def test_attempts_during_a_lock_are_not_counted_and_do_not_extend_it() -> None:
    state = fail(LoginGuard(), *(T0 + i * MIN for i in range(5)))
    locked = state
    for i in range(20):
        state, events = record_failure(state, T0 + (5 + i // 2) * MIN)
        assert events == []
    assert state == locked
    assert check(state, locked.locked_until or T0).allowed


def test_a_permanent_lock_ignores_further_failures_and_successes() -> None:
    state = LoginGuard(permanently_locked=True, temporary_locks=3)
    assert record_failure(state, T0) == (state, [])
    assert record_success(state, T0) == state
    assert check(state, T0).state is LockState.PERMANENTLY_LOCKED


def test_a_success_resets_the_failure_count() -> None:
    state = fail(LoginGuard(), *(T0 + i * MIN for i in range(4)))
    state = record_success(state, T0 + 5 * MIN)
    assert state.failures == ()
    state = fail(state, *(T0 + (6 + i) * MIN for i in range(4)))
    assert check(state, T0 + 10 * MIN).allowed  # 8 failures in 10 minutes, but 4 since the success


def test_a_success_after_a_lock_restarts_the_escalation() -> None:
    state = LoginGuard(temporary_locks=2, locked_until=T0)
    state = record_success(state, T0)
    assert state == LoginGuard()
    state, events = record_failure(fail(state, *(T0 + i * MIN for i in range(4))), T0 + 4 * MIN)
    assert [e.until for e in events] == [T0 + 4 * MIN + timedelta(minutes=15)]


def test_a_success_does_not_lift_an_active_lock() -> None:
    state = LoginGuard(temporary_locks=1, locked_until=T0 + 10 * MIN)
    assert record_success(state, T0) == state


def test_transitions_do_not_mutate_the_given_state() -> None:
    state = LoginGuard(failures=(T0,))
    record_failure(state, T0 + MIN)
    record_success(state, T0 + MIN)
    assert state == LoginGuard(failures=(T0,))


# ----------------------------------------------------------------- grant periods

TODAY = date(2025, 3, 10)


def test_a_grant_within_a_year_is_accepted() -> None:
    assert grant_period(TODAY, date(2025, 9, 30), TODAY) == (TODAY, date(2025, 9, 30))


def test_a_one_day_grant_is_accepted() -> None:
    assert grant_period(TODAY, TODAY, TODAY) == (TODAY, TODAY)


def test_a_future_start_is_kept() -> None:
    assert grant_period(date(2025, 4, 1), date(2025, 12, 31), TODAY) == (date(2025, 4, 1), date(2025, 12, 31))


def test_a_start_already_past_becomes_today() -> None:
    assert grant_period(date(2025, 3, 1), date(2025, 12, 31), TODAY) == (TODAY, date(2025, 12, 31))


def test_an_end_before_the_start_is_refused() -> None:
    with pytest.raises(Invalid, match="before the start"):
        grant_period(TODAY, TODAY - timedelta(days=1), TODAY)


def test_an_end_already_past_is_refused() -> None:
    with pytest.raises(Invalid, match="already past"):
        grant_period(date(2025, 1, 1), date(2025, 3, 9), TODAY)


@pytest.mark.parametrize(
    ("start", "longest"),
    [
        (date(2025, 3, 10), date(2026, 3, 10)),  # 365 days
        (date(2023, 3, 1), date(2024, 3, 1)),  # 366 days: crosses 29 February 2024
        (date(2024, 2, 28), date(2025, 2, 28)),  # 366 days: crosses 29 February 2024
        (date(2024, 3, 1), date(2025, 3, 1)),  # 365 days
        (date(2024, 2, 29), date(2025, 2, 28)),  # 365 days from a 29 February
        (date(2023, 2, 28), date(2024, 2, 28)),  # 365 days: 29 February 2024 comes after
    ],
)
def test_a_grant_lasts_at_most_one_year(start: date, longest: date) -> None:
    assert one_year_after(start) == longest
    assert grant_period(start, longest, start) == (start, longest)
    with pytest.raises(Invalid, match="one year"):
        grant_period(start, longest + timedelta(days=1), start)


def test_one_year_is_365_or_366_days() -> None:
    assert (one_year_after(date(2025, 3, 10)) - date(2025, 3, 10)).days == 365
    assert (one_year_after(date(2023, 6, 1)) - date(2023, 6, 1)).days == 366


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
def test_one_year_after_is_365_days_or_366_across_a_29_february(start: date) -> None:
    end = one_year_after(start)
    crosses_leap_day = any(
        (d := start + timedelta(days=n)).month == 2 and d.day == 29 for n in range(1, (end - start).days + 1)
    )
    assert (end - start).days == (366 if crosses_leap_day else 365)


def test_the_one_year_limit_counts_from_the_requested_start() -> None:
    # Approved late: the grant starts today but still ends within a year of the requested start.
    with pytest.raises(Invalid, match="one year"):
        grant_period(date(2025, 3, 1), date(2026, 3, 5), TODAY)
