"""Pure identity rules: SIRET and department checks, roles, who may read or change what, the lockout
state machine, grant periods; and the domain errors that say why a command is refused.

Nothing here reads a clock or touches I/O: callers pass `now` / `today`, so every rule is testable with
fixed instants and the same inputs always give the same answer. Datetimes are expected timezone-aware (UTC).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Literal

from stdnum.fr import siret as stdnum_siret

from cdap_shared import refusals
from cdap_shared.actor import Actor
from cdap_shared.refusals import Refused as Refused  # the domain's refusals, which callers catch

# ----------------------------------------------------------------- refusals


class NotPermitted(refusals.NotPermitted):
    """Not for this caller: its role, organisation, department, or the account's state."""


class Unknown(refusals.Unknown):
    """No such organisation, account, grant or client (or none the caller may learn of)."""


class Conflict(refusals.Conflict):
    """Not now: the account already exists or is activated, the grant ended, the client is disabled."""


class Invalid(refusals.Invalid):
    """Not as asked: a SIRET, a password, a convention's or a grant's dates break a rule."""


class BadProof(Refused):
    """A one-time link, an enrolment ticket or a code that is unknown, expired or wrong."""


class OAuthError(Exception):
    """An RFC 6749 error answer of the token endpoint: `error`, its description, and extension members
    (RFC 6749 §5.2 allows them: the enrolment ticket, the organisations to choose from)."""

    def __init__(self, error: str, description: str, extra: dict[str, object] | None = None) -> None:
        super().__init__(description)
        self.error, self.description = error, description
        self.extra = extra or {}

    def body(self) -> dict[str, object]:
        """The JSON answer: `error`, `error_description` and the extension members."""
        return {"error": self.error, "error_description": self.description, **self.extra}


# ----------------------------------------------------------------- SIRET

_SIRET = re.compile(r"[0-9]{14}")


def valid_siret(siret: str) -> bool:
    """True when `siret` is exactly 14 ASCII digits with a valid key (python-stdnum: Luhn, or La Poste's
    sum-of-digits rule for its establishments other than the head office)."""
    # fullmatch on [0-9] first: stdnum would also accept spaces or dots, which a SIRET field must not hold.
    return bool(_SIRET.fullmatch(siret)) and stdnum_siret.is_valid(siret)


# ----------------------------------------------------------------- departments

# Overseas: 971 Guadeloupe, 972 Martinique, 973 Guyane, 974 La Réunion, 976 Mayotte. 975 (Saint-Pierre-et-
# Miquelon) is a collectivity, not a department, and has its own social security fund rather than a CAF;
# we accept it anyway for simplicity, so a partner there is not blocked by a form check.
_METROPOLITAN = frozenset(f"{n:02d}" for n in range(1, 96) if n != 20) | {"2A", "2B"}
_OVERSEAS = frozenset({"971", "972", "973", "974", "975", "976"})
DEPARTMENTS: frozenset[str] = _METROPOLITAN | _OVERSEAS


def valid_department(code: str) -> bool:
    """True for a canonical department code: "01".."95" (no "20"), "2A", "2B", "971".."976".

    The check is exact (no trimming, "2a" or "1" are refused): callers normalise input before storing it.
    """
    return code in DEPARTMENTS


# ----------------------------------------------------------------- roles

PARTNER_USER = "partner_user"
PARTNER_ADMIN = "partner_admin"
CAF_INSTRUCTOR = "caf_instructor"
CAF_MANAGER = "caf_manager"
CAF_ADMIN = "caf_admin"
AUDITOR = "auditor"
PARTNER_SYSTEM = "partner_system"

ALL_ROLES: frozenset[str] = frozenset(
    {PARTNER_USER, PARTNER_ADMIN, CAF_INSTRUCTOR, CAF_MANAGER, CAF_ADMIN, AUDITOR, PARTNER_SYSTEM}
)
CAF_ROLES: frozenset[str] = frozenset({CAF_INSTRUCTOR, CAF_MANAGER, CAF_ADMIN})
# Auditors are CAF-side staff reading every consultation trail: they get the same second factor as CAF
# roles. Kept out of CAF_ROLES so authorisation checks based on CAF_ROLES do not widen to auditors.
TOTP_ROLES: frozenset[str] = CAF_ROLES | {AUDITOR}
TOTP_PROFILES: frozenset[str] = frozenset({"T1", "T5"})


def requires_totp(
    roles: Iterable[str], profiles: Iterable[str], totp_profiles: Set[str] = TOTP_PROFILES
) -> bool:
    """True when a second factor is mandatory: any CAF staff role, or a grant on a sensitive profile."""
    return not TOTP_ROLES.isdisjoint(roles) or not totp_profiles.isdisjoint(profiles)


# ----------------------------------------------------------------- who may read or change what


@dataclass(frozen=True)
class Reach:
    """The part of CDAP a caller reads: everything, one department's, or one organisation's."""

    by: Literal["everything", "department", "organisation"]
    value: str | None = None


EVERYTHING = Reach("everything")


def organisations_reach(actor: Actor) -> Reach:
    """Which organisations a caller may list: CAF admins and auditors all, instructors and managers
    their department's; nobody else."""
    if actor.has(CAF_ADMIN, AUDITOR):
        return EVERYTHING
    if actor.has(*CAF_ROLES):
        return Reach("department", actor.department)
    raise NotPermitted("role", "Your role cannot list organisations.")


def check_organisation_reader(actor: Actor, organisation_id: str, department: str | None = None) -> None:
    """May `actor` read this organisation? Its own members may, and CAF staff and auditors; instructors
    and managers work for one department's CAF, so another department's partners are not theirs to read.
    Without `department` (the organisation not read yet) only the role is judged."""
    if actor.org == organisation_id:
        return
    if not actor.has(*CAF_ROLES, AUDITOR):
        raise NotPermitted("other_organisation", "Not your organisation.")
    if department is not None and not actor.has(CAF_ADMIN, AUDITOR) and actor.department != department:
        raise NotPermitted("other_department", "Not your department's organisation.")


def accounts_reach(actor: Actor) -> Reach:
    """Which accounts a caller may read: CAF admins and auditors all, instructors and managers their
    department's, partner administrators their organisation's."""
    if actor.has(CAF_ADMIN, AUDITOR):
        return EVERYTHING
    if actor.has(CAF_INSTRUCTOR, CAF_MANAGER) and actor.department:
        return Reach("department", actor.department)
    if actor.has(PARTNER_ADMIN) and actor.org:
        return Reach("organisation", actor.org)
    raise NotPermitted("role", "Your role cannot list accounts.")


def activation_resender_reach(actor: Actor) -> Reach:
    """Whose activation links a caller may send again: a CAF admin anyone's, a partner administrator
    their organisation's accounts'."""
    if actor.has(CAF_ADMIN):
        return EVERYTHING
    if actor.has(PARTNER_ADMIN) and actor.org:
        return Reach("organisation", actor.org)
    raise NotPermitted("role", "Your role cannot resend activation links.")


def grants_reach(actor: Actor) -> Reach:
    """Which grants a caller may list: CAF admins and auditors all, instructors and managers their
    department's, partner administrators their organisation's."""
    if actor.has(CAF_ADMIN, AUDITOR):
        return EVERYTHING
    if actor.has(CAF_INSTRUCTOR, CAF_MANAGER):
        return Reach("department", actor.department)
    if actor.has(PARTNER_ADMIN):
        return Reach("organisation", actor.org)
    raise NotPermitted("not_allowed", "Your role cannot list grants.")


def check_revoker(actor: Actor, grant_department: str) -> None:
    """A grant is revoked by a CAF admin, or by a manager of its department."""
    if not (actor.has(CAF_ADMIN) or (actor.has(CAF_MANAGER) and actor.department == grant_department)):
        raise NotPermitted(
            "not_allowed", "Only a CAF admin or a manager of the grant's department may revoke it."
        )


def check_client_administrator(
    actor: Actor, organisation_id: str, *, hands_out: bool = False, delegated: bool = True
) -> None:
    """Partner-system clients are administered by the organisation's partner administrators and by CAF
    admins. Handing out access (a new client, a new secret) also needs the organisation's delegated
    administration (`delegated`): a credential is access."""
    own = actor.has(PARTNER_ADMIN) and actor.org == organisation_id
    if not (own or actor.has(CAF_ADMIN)):
        raise NotPermitted(
            "not_allowed", "Only the organisation's administrators may manage its partner systems."
        )
    if hands_out and not delegated and not actor.has(CAF_ADMIN):
        raise NotPermitted(
            "delegation_withdrawn", "The CAF withdrew this organisation's delegated administration."
        )


def check_convention(valid_until: date, today: date) -> None:
    """A convention, new or amended, ends after today."""
    if valid_until <= today:
        raise Invalid("convention_ended", "A convention must end after today.")


# ----------------------------------------------------------------- lockout


@dataclass(frozen=True)
class LockoutPolicy:
    """Thresholds of the lockout state machine (the defaults are the CDAP policy)."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    first_lock: timedelta = timedelta(minutes=15)
    permanent_at_lock: int = 3  # the 3rd lock is permanent: 15 min, 30 min, then an admin must unlock

    def lock_duration(self, lock_number: int) -> timedelta:
        """Duration of the `lock_number`-th temporary lock (1-based): doubles each time."""
        factor: int = 2 ** (lock_number - 1)
        return self.first_lock * factor


DEFAULT_POLICY = LockoutPolicy()


@dataclass(frozen=True)
class LoginGuard:
    """Per-account lockout state, stored with the account; immutable, every transition returns a new one.

    `failures` holds the failed attempts still inside the window (a tuple so the state cannot be mutated
    behind the caller's back); `temporary_locks` counts locks since the last success or reset.
    """

    failures: tuple[datetime, ...] = ()
    temporary_locks: int = 0
    locked_until: datetime | None = None
    permanently_locked: bool = False


class LockState(StrEnum):
    OK = "ok"
    LOCKED = "locked"
    PERMANENTLY_LOCKED = "permanently_locked"


@dataclass(frozen=True)
class LockStatus:
    """Answer of `check`: may the account try to log in now, and if not, until when."""

    state: LockState
    until: datetime | None = None

    @property
    def allowed(self) -> bool:
        return self.state is LockState.OK


@dataclass(frozen=True)
class Locked:
    """What `record_failure` reports when it locks the account (maps onto `identity.user.locked`)."""

    until: datetime | None
    permanent: bool

    @property
    def kind(self) -> LockState:
        return LockState.PERMANENTLY_LOCKED if self.permanent else LockState.LOCKED


def check(state: LoginGuard, now: datetime) -> LockStatus:
    """Whether a login attempt may proceed at `now`; a temporary lock ends by itself at `locked_until`."""
    if state.permanently_locked:
        return LockStatus(LockState.PERMANENTLY_LOCKED)
    if state.locked_until is not None and now < state.locked_until:
        return LockStatus(LockState.LOCKED, state.locked_until)
    return LockStatus(LockState.OK)


def _recent(failures: Iterable[datetime], now: datetime, window: timedelta) -> tuple[datetime, ...]:
    return tuple(f for f in failures if now - f < window)


def record_failure(
    state: LoginGuard, now: datetime, policy: LockoutPolicy = DEFAULT_POLICY
) -> tuple[LoginGuard, list[Locked]]:
    """Count a wrong password at `now`; return the new state and the lock it caused, if any.

    Attempts made while the account is locked are not counted: they are refused before the password is
    checked, and counting them would let anyone extend a lock (or reach the permanent one) without guessing.
    """
    if not check(state, now).allowed:
        return state, []
    failures = (*_recent(state.failures, now, policy.window), now)
    if len(failures) < policy.max_failures:
        return replace(state, failures=failures, locked_until=None), []
    locks = state.temporary_locks + 1
    if locks >= policy.permanent_at_lock:
        new = LoginGuard(temporary_locks=locks, permanently_locked=True)
        return new, [Locked(until=None, permanent=True)]
    until = now + policy.lock_duration(locks)
    # The window starts afresh after a lock: the next lock needs max_failures new failures.
    return LoginGuard(temporary_locks=locks, locked_until=until), [Locked(until=until, permanent=False)]


def record_success(state: LoginGuard, now: datetime) -> LoginGuard:
    """A correct login clears the failures and the lock escalation: the owner has proved who they are.

    It never lifts an active lock (callers `check` first); a permanent lock needs an admin's unlock or a
    password reset, which start afresh from `LoginGuard()`.
    """
    if not check(state, now).allowed:
        return state
    return LoginGuard()


# ----------------------------------------------------------------- grants


def one_year_after(day: date) -> date:
    """Same calendar date a year later (365 days, 366 when a 29 February falls in between); 29/02 → 28/02."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February with no counterpart next year
        return day.replace(year=day.year + 1, day=28)


def grant_period(valid_from: date, requested_until: date, today: date) -> tuple[date, date]:
    """Validated (start, end) of a grant, both inclusive.

    A grant never starts in the past: a request approved after its wished start date begins `today`.
    The end may be at most one year after the requested start, and not before the effective start.
    """
    if requested_until < valid_from:
        raise Invalid("end_before_start", "The end date is before the start date.")
    if requested_until > one_year_after(valid_from):
        raise Invalid("longer_than_a_year", "A grant cannot last more than one year.")
    start = max(valid_from, today)
    if requested_until < start:
        raise Invalid("end_already_past", "The end date is already past.")
    return start, requested_until
