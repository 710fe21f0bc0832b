"""Who the ids of the log are: the read side of a projection of `identity.events` (accounts and
organisations), kept by the directory's handlers (`handlers.py`).

Names are joined to entries and alerts when they are read, never written into an entry: the leaf
keeps ids only, so a name corrected later shows everywhere and the hashed bytes never change. The
projection also says which auditors an alert is mailed to (role `auditor`, the alert's department).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_audit.models import KnownOrganisation, Person
from cdap_shared.standing import ACCOUNT, Standing

PERSON = Person.__table__  # type: ignore[attr-defined]
ORGANISATION = KnownOrganisation.__table__  # type: ignore[attr-defined]
STANDING = Standing.__table__  # type: ignore[attr-defined]
AUDITOR = "auditor"


@dataclass(frozen=True)
class Names:
    """Display names by id, for the ids of a page of entries or alerts (an unknown id has none)."""

    people: dict[str, str]
    organisations: dict[str, str]

    def add_to(self, item: dict[str, Any]) -> dict[str, Any]:
        """`item` with `actor_name` and `organisation_name` beside its ids."""
        actor, organisation = item.get("actor"), item.get("organisation_id")
        item["actor_name"] = self.people.get(actor) if isinstance(actor, str) else None
        item["organisation_name"] = (
            self.organisations.get(organisation) if isinstance(organisation, str) else None
        )
        return item


async def names(session: AsyncSession, items: Iterable[dict[str, Any]]) -> Names:
    """The names of the actors and organisations `items` refer to (two primary-key reads)."""
    listed = list(items)
    actors = sorted({a for i in listed if isinstance(a := i.get("actor"), str)})
    orgs = sorted({o for i in listed if isinstance(o := i.get("organisation_id"), str)})
    people: dict[str, str] = {}
    organisations: dict[str, str] = {}
    if actors:
        query = select(PERSON.c.user_id, PERSON.c.display_name).where(
            PERSON.c.user_id.in_(actors), PERSON.c.display_name.is_not(None)
        )
        people = {k: v for k, v in (await session.execute(query)).all()}
    if orgs:
        query = select(ORGANISATION.c.organisation_id, ORGANISATION.c.name).where(
            ORGANISATION.c.organisation_id.in_(orgs)
        )
        organisations = {k: v for k, v in (await session.execute(query)).all()}
    return Names(people, organisations)


async def with_names(session: AsyncSession, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`items` (entries or alerts as served) with the names of their actor and organisation added."""
    found = await names(session, items)
    return [found.add_to(item) for item in items]


def accounts_of(email: str) -> Select[Any]:
    """The ids of the accounts of an e-mail address (case aside): one person may hold accounts in
    several organisations. The directory is one row per account: no index is needed for it."""
    return select(PERSON.c.user_id).where(func.lower(PERSON.c.email) == email.lower())


async def department_of(session: AsyncSession, actor: str | None, organisation_id: str | None) -> str | None:
    """An alert's department: its organisation's, else its actor's (CAF staff have no organisation)."""
    if organisation_id is not None:
        query = select(ORGANISATION.c.department).where(ORGANISATION.c.organisation_id == organisation_id)
        if (department := (await session.execute(query)).scalar_one_or_none()) is not None:
            return str(department)
    if actor is not None:
        query = select(PERSON.c.department).where(PERSON.c.user_id == actor)
        department = (await session.execute(query)).scalar_one_or_none()
        return str(department) if department is not None else None
    return None


async def auditor_emails(session: AsyncSession, department: str | None) -> list[str]:
    """E-mails of the auditors an alert of `department` goes to: that department's, and those without one
    (national); every auditor when the department is unknown. A suspended auditor gets nothing."""
    suspended = (
        select(literal(1))
        .select_from(STANDING)
        .where(
            STANDING.c.kind == ACCOUNT,
            STANDING.c.subject == PERSON.c.user_id,
            STANDING.c.refusals.contains(["suspended"]),
        )
        .exists()
    )
    query = select(PERSON.c.email).where(
        PERSON.c.roles.contains([AUDITOR]), PERSON.c.email.is_not(None), ~suspended
    )
    if department is not None:
        query = query.where(or_(PERSON.c.department == department, PERSON.c.department.is_(None)))
    return sorted({str(e) for e in (await session.execute(query)).scalars()})
