"""The caller's standing: whether identity still honours the account, grants or partner system a token names.

A token is good for 5 minutes; a suspension, a forced password reset, a revocation, an expiry or a disabled
client must deny within seconds. Every service but identity keeps a projection of `identity.events` in
one table (`standing`, written by `apply` in the consumer's transaction) and judges every authenticated
call against it (`judge`, pure); identity judges against its own tables. Only what identity said is
kept: an account, grant or client the projection has not heard of is taken at its token's word (the
token was issued from identity's own state moments before).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Column, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent

if TYPE_CHECKING:
    from cdap_shared.auth import Principal
    from cdap_shared.runtime import ServiceRuntime

ACCOUNT, GRANT, CLIENT = "account", "grant", "client"
ID_LENGTH = 64  # identity's ids (accounts, grants, clients) are at most this long
PARTNER_SYSTEM = "partner_system"

# Why a call is refused (the problem's `reason`), with the title a person reads.
TITLES = {
    "suspended": "Account suspended",
    "password_reset_required": "Password reset required",
    "client_disabled": "Partner system disabled",
    "client_deleted": "Partner system deleted",
    "holder_suspended": "The habilitation's holder is suspended",
    "holder_password_reset_required": "The habilitation's holder must reset their password",
    "grant_ended": "Habilitation ended",
}
REASONS = frozenset(TITLES)


class Standing(SQLModel, table=True):
    """What identity last said about one account, grant or partner-system client.

    `refusals` lists why it must be refused now (empty: in good standing); `holder` is a grant's account
    or a client's grant; a grant also keeps its validity, so its last day ends it at midnight without
    waiting for the expiry event."""

    __tablename__ = "standing"

    kind: str = Field(primary_key=True, max_length=10)  # account | grant | client
    subject: str = Field(primary_key=True, max_length=ID_LENGTH)
    refusals: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(String(40)), nullable=False, server_default="{}")
    )
    holder: str | None = Field(default=None, max_length=ID_LENGTH)
    valid_from: date | None = None
    valid_until: date | None = None


@dataclass(frozen=True)
class Fact:
    """One row of standing, from the projection or from identity's own tables."""

    kind: str
    subject: str
    refusals: tuple[str, ...] = ()
    holder: str | None = None
    valid_from: date | None = None
    valid_until: date | None = None

    @classmethod
    def of(cls, row: Iterable[Any]) -> Fact:
        """From a row (kind, subject, refusals, holder, valid_from, valid_until)."""
        kind, subject, refusals, holder, valid_from, valid_until = row
        return cls(kind, subject, tuple(refusals), holder, valid_from, valid_until)

    def live_on(self, day: date) -> bool:
        """A grant: not ended and valid on `day`."""
        within = (self.valid_from is None or self.valid_from <= day) and (
            self.valid_until is None or day <= self.valid_until
        )
        return not self.refusals and within


class NotInGoodStanding(Exception):
    """The caller's account, client or grant is no longer honoured; `reason` is one of `REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.title = TITLES[reason]


def judge(principal: Principal, facts: Sequence[Fact], today: date) -> Principal:
    """The principal as identity's current state allows it: its ended grants dropped; raises
    `NotInGoodStanding` for a suspended account or one that must reset its password, and for a partner
    system disabled, deleted, whose grant ended or whose grant's holder is refused."""
    known = {(f.kind, f.subject): f for f in facts}
    system = principal.has_role(PARTNER_SYSTEM)
    if system:
        client = known.get((CLIENT, principal.sub))
        if client is not None and client.refusals:
            raise NotInGoodStanding(client.refusals[0])  # disabled or deleted: one at a time
    grants = {g.id: known.get((GRANT, g.id)) for g in principal.grants}
    holders = {f.holder for f in grants.values() if f is not None and f.holder} if system else {principal.sub}
    for holder in sorted(holders):
        account = known.get((ACCOUNT, holder))
        if account is not None and account.refusals:
            # Suspended and forced to reset at once: the suspension is what the person must hear about.
            why = "suspended" if "suspended" in account.refusals else account.refusals[0]
            raise NotInGoodStanding(("holder_" if system else "") + why)
    live = tuple(g for g in principal.grants if (fact := grants[g.id]) is None or fact.live_on(today))
    if system and len(live) < len(principal.grants):
        raise NotInGoodStanding("grant_ended")
    return dataclasses.replace(principal, grants=live)


class StandingSource(Protocol):
    """Where a service reads the facts about a principal (the projection, or identity's own tables)."""

    async def facts(self, principal: Principal) -> list[Fact]: ...


# The principal's own account or client row, its token's grants, and (for a partner system) the account
# holding each of those grants, in one round trip: three primary-key lookups (an OR of them scanned
# the whole table). $1: the principal's `sub`, $2: its token's grant ids. Dossiers' lookup statement
# embeds it, so that hot path judges the standing without a round trip of its own.
FACTS = """
    SELECT kind, subject, refusals, holder, valid_from, valid_until
      FROM standing WHERE kind IN ('account', 'client') AND subject = $1
    UNION ALL
    SELECT kind, subject, refusals, holder, valid_from, valid_until
      FROM standing WHERE kind = 'grant' AND subject = ANY($2::text[])
    UNION ALL
    SELECT a.kind, a.subject, a.refusals, a.holder, a.valid_from, a.valid_until
      FROM standing g JOIN standing a ON a.kind = 'account' AND a.subject = g.holder
     WHERE g.kind = 'grant' AND g.subject = ANY($2::text[])
"""


class ProjectedStanding:
    """The facts from this service's `standing` projection (plain asyncpg: it runs on every call)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def facts(self, principal: Principal) -> list[Fact]:
        rows = await self.runtime.pool.fetch(FACTS, principal.sub, [g.id for g in principal.grants])
        return [Fact.of(row) for row in rows]


# What each event of `identity.events` does to the projection: (kind, reasons added, reasons removed).
_REFUSALS: dict[str, tuple[str, frozenset[str], frozenset[str]]] = {
    "identity.user.suspended": (ACCOUNT, frozenset({"suspended"}), frozenset()),
    "identity.user.reinstated": (ACCOUNT, frozenset(), frozenset({"suspended"})),
    "identity.user.reset_required": (ACCOUNT, frozenset({"password_reset_required"}), frozenset()),
    "identity.user.reset_completed": (ACCOUNT, frozenset(), frozenset({"password_reset_required"})),
    "identity.grant.revoked": (GRANT, frozenset({"revoked"}), frozenset()),
    "identity.grant.expired": (GRANT, frozenset({"expired"}), frozenset()),
    "identity.client.disabled": (CLIENT, frozenset({"client_disabled"}), frozenset()),
    "identity.client.deleted": (CLIENT, frozenset({"client_deleted"}), frozenset()),
}

# Every type `apply` acts on (each consuming service's AsyncAPI document lists them).
EVENT_TYPES = ("identity.grant.issued", "identity.client.created", *_REFUSALS)


async def apply(session: AsyncSession, event: CloudEvent) -> None:
    """Keep the projection up to date (inside the consumer's transaction); other types are ignored."""
    if event.type not in EVENT_TYPES:
        return
    data = ev.parse_data(event)
    if len(_subject(data)) > ID_LENGTH:
        return  # longer than any id identity gives: it names no caller (and must not stop the consumer)
    if isinstance(data, ev.GrantIssued):
        row = await _row(session, GRANT, data.grant_id)
        row.holder, row.valid_from, row.valid_until = (
            data.user_id[:ID_LENGTH],
            data.valid_from,
            data.valid_until,
        )
    elif isinstance(data, ev.ClientChanged) and event.type == "identity.client.created":
        (await _row(session, CLIENT, data.client_id)).holder = data.grant_id[:ID_LENGTH]
    elif event.type in _REFUSALS:
        kind, added, removed = _REFUSALS[event.type]
        row = await _row(session, kind, _subject(data))
        row.refusals = sorted((set(row.refusals) | added) - removed)


def _subject(data: ev.EventData) -> str:
    if isinstance(data, ev.UserRef):
        return data.user_id
    if isinstance(data, ev.GrantEnded | ev.GrantIssued):
        return data.grant_id
    assert isinstance(data, ev.ClientChanged)
    return data.client_id


async def _row(session: AsyncSession, kind: str, subject: str) -> Standing:
    row = await session.get(Standing, (kind, subject), with_for_update=True)
    if row is None:
        row = Standing(kind=kind, subject=subject, refusals=[])
        session.add(row)
    return row


def create_table() -> None:
    """The Alembic operation that creates `standing`, for the migration of each service that keeps it."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "standing",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("refusals", ARRAY(sa.String(length=40)), server_default="{}", nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("valid_from", sa.Date(), nullable=True),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("kind", "subject"),
    )
