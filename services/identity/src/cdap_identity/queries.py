"""The read side: organisations, accounts (the list CAF administrators work from, and the names other
pages show), grants, partner-system clients and the caller's own account, each caller inside its reach
(`domain.*_reach`).

Accounts come in keyset pages in (family name, given name, id) order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain
from cdap_identity.domain import Reach, Unknown
from cdap_identity.models import Client, Grant, Organisation, User
from cdap_identity.schemas import ClientPublic, GrantPublic, Me, OrganisationPublic, UserSummary
from cdap_shared.actor import Actor

UserKey = tuple[str, str, str]  # (family name, given name, id), lower-cased: where a page of accounts ends
_ORDER = (func.lower(col(User.family_name)), func.lower(col(User.given_name)), col(User.id))


def within(
    reach: Reach, department: Any, organisation: Any, asked_department: str | None = None
) -> list[ColumnElement[bool]]:
    """The filter that keeps rows inside `reach`, and in `asked_department` when the caller names one,
    given the columns of their department and organisation."""
    kept: list[ColumnElement[bool]] = []
    if reach.by == "department":
        kept.append(department == reach.value)
    elif reach.by == "organisation":
        kept.append(organisation == reach.value)
    if asked_department:
        kept.append(department == asked_department)
    return kept


def _like(words: str) -> str:
    """A LIKE pattern matching `words` anywhere, any case, its wildcards taken literally."""
    return "%" + words.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# ------------------------------------------------------------------------------------------ organisations


async def administrators(session: AsyncSession, organisation_ids: list[str]) -> dict[str, list[str]]:
    """The partner administrators of each organisation, by organisation id (ids sorted)."""
    rows = await session.execute(
        select(col(User.organisation_id), col(User.id))
        .where(
            col(User.organisation_id).in_(organisation_ids), col(User.roles).contains([domain.PARTNER_ADMIN])
        )
        .order_by(col(User.id))
    )
    found: dict[str, list[str]] = {org_id: [] for org_id in organisation_ids}
    for org_id, user_id in rows.all():
        found[str(org_id)].append(user_id)
    return found


def organisation_view(org: Organisation, admins: list[str]) -> OrganisationPublic:
    return OrganisationPublic(**org.model_dump(exclude={"created_at"}), administrators=admins)


async def described(session: AsyncSession, org: Organisation) -> OrganisationPublic:
    """The organisation with its administrators, as its pages show it."""
    return organisation_view(org, (await administrators(session, [org.id]))[org.id])


async def organisations(
    session: AsyncSession, actor: Actor, department: str | None, q: str | None
) -> list[OrganisationPublic]:
    """Organisations by name (any part, any case) or SIRET (its first digits), by name; at most 200."""
    reach = domain.organisations_reach(actor)
    stmt = (
        select(Organisation)
        .where(*within(reach, col(Organisation.department), col(Organisation.id), department))
        .order_by(col(Organisation.name), col(Organisation.id))
        .limit(200)
    )
    if q:
        words = q.strip()
        by_name = func.lower(col(Organisation.name)).like(_like(words), escape="\\")
        stmt = stmt.where(
            or_(by_name, col(Organisation.siret).startswith(words)) if words.isdigit() else by_name
        )
    orgs = list((await session.execute(stmt)).scalars())
    admins = await administrators(session, [o.id for o in orgs])
    return [organisation_view(o, admins[o.id]) for o in orgs]


async def organisation(session: AsyncSession, actor: Actor, organisation_id: str) -> OrganisationPublic:
    """One organisation, for its own members, CAF admins, auditors, and CAF staff of its department."""
    domain.check_organisation_reader(actor, organisation_id)
    org = await session.get(Organisation, organisation_id)
    if org is None:
        raise Unknown("unknown_organisation", "No organisation has this id.")
    domain.check_organisation_reader(actor, organisation_id, org.department)
    return await described(session, org)


# ------------------------------------------------------------------------------------------ accounts


def summary(user: User, now: datetime) -> UserSummary:
    return UserSummary(
        id=user.id,
        email=user.email,
        family_name=user.family_name,
        given_name=user.given_name,
        display_name=f"{user.given_name} {user.family_name}".strip(),
        organisation_id=user.organisation_id,
        department=user.department,
        roles=user.roles,
        status=user.status,
        locked=user.permanently_locked or bool(user.locked_until and user.locked_until > now),
        must_reset_password=user.must_reset_password,
    )


def user_key(user: User) -> UserKey:
    return (user.family_name.lower(), user.given_name.lower(), user.id)


def matching(words: str) -> ColumnElement[bool]:
    """Accounts whose e-mail, family name or given name contains `words`, any case."""
    fields = (User.email, User.family_name, User.given_name)
    return or_(*(func.lower(col(f)).like(_like(words), escape="\\") for f in fields))


@dataclass(frozen=True)
class UsersPage:
    """One page of accounts, and the key of its last one when more follow."""

    items: list[UserSummary]
    last: UserKey | None


async def find_users(
    session: AsyncSession,
    actor: Actor,
    *,
    now: datetime,
    ids: list[str],
    search: str | None,
    staff: bool | None,
    organisation_id: str | None,
    status: str | None,
    after: UserKey | None,
    limit: int,
) -> UsersPage:
    """One page of the accounts `actor` may read that match every filter given."""
    reach = domain.accounts_reach(actor)
    stmt: Select[User] = select(User).where(*within(reach, col(User.department), col(User.organisation_id)))
    if ids:
        stmt = stmt.where(col(User.id).in_(ids))
    if search and search.strip():
        stmt = stmt.where(matching(search.strip()))
    if staff is not None:
        on_staff = col(User.organisation_id).is_(None)
        stmt = stmt.where(on_staff if staff else col(User.organisation_id).is_not(None))
    if organisation_id:
        stmt = stmt.where(col(User.organisation_id) == organisation_id)
    if status:
        stmt = stmt.where(col(User.status) == status)
    if after is not None:
        stmt = stmt.where(tuple_(*_ORDER) > tuple_(*after))
    rows = list((await session.execute(stmt.order_by(*_ORDER).limit(limit + 1))).scalars())
    page = rows[:limit]
    return UsersPage([summary(u, now) for u in page], user_key(page[-1]) if len(rows) > limit else None)


async def me(session: AsyncSession, user_id: str) -> Me:
    """The caller and its active grants (as the database has them now, not as the token says)."""
    user = await session.get(User, user_id)
    if user is None:
        raise Unknown("unknown_account", "Partner systems have no account.")
    grants = (
        await session.execute(
            select(Grant).where(col(Grant.user_id) == user.id, col(Grant.status) == "active")
        )
    ).scalars()
    return Me(
        id=user.id,
        email=user.email,
        organisation_id=user.organisation_id,
        roles=user.roles,
        grants=[GrantPublic(**g.model_dump()) for g in grants],
    )


# ------------------------------------------------------------------------------------------ grants, clients


async def grants(
    session: AsyncSession, actor: Actor, user_id: str | None, department: str | None
) -> list[GrantPublic]:
    """Grants the caller may see, ending first; at most 500."""
    kept = within(domain.grants_reach(actor), col(Grant.department), col(Grant.organisation_id), department)
    if user_id:
        kept.append(col(Grant.user_id) == user_id)
    rows = await session.execute(
        select(Grant).where(*kept).order_by(col(Grant.valid_until), col(Grant.id)).limit(500)
    )
    return [GrantPublic(**g.model_dump()) for g in rows.scalars()]


def client_view(client: Client) -> ClientPublic:
    return ClientPublic(client_id=client.id, **client.model_dump(exclude={"id"}))


async def clients(session: AsyncSession, actor: Actor, organisation_id: str) -> list[ClientPublic]:
    """An organisation's partner systems (never their secrets), for its administrators."""
    domain.check_client_administrator(actor, organisation_id)
    rows = await session.execute(
        select(Client).where(col(Client.organisation_id) == organisation_id).order_by(col(Client.created_at))
    )
    return [client_view(c) for c in rows.scalars()]
