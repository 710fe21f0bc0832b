"""Reading accounts: the user list CAF administrators work from, and the names other pages show.

Keyset pages in (family name, given name, id) order, each caller inside their own scope: CAF admins and
auditors see every account, instructors and managers their department's, partner administrators their
organisation's.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain
from cdap_identity.models import User
from cdap_identity.schemas import UserSummary
from cdap_shared.auth import Principal
from cdap_shared.problems import Problem

_ORDER = (func.lower(col(User.family_name)), func.lower(col(User.given_name)), col(User.id))


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


def scope(principal: Principal) -> list[ColumnElement[bool]]:
    """The accounts `principal` may read, as a filter (403 for a role that reads none)."""
    if principal.has_role(domain.CAF_ADMIN, domain.AUDITOR):
        return []
    if principal.has_role(domain.CAF_INSTRUCTOR, domain.CAF_MANAGER) and principal.department:
        return [col(User.department) == principal.department]
    if principal.has_role(domain.PARTNER_ADMIN) and principal.org:
        return [col(User.organisation_id) == principal.org]
    raise Problem(403, "Forbidden", "Your role cannot list accounts.", reason="role")


def _cursor(user: User) -> str:
    raw = json.dumps([user.family_name.lower(), user.given_name.lower(), user.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> ColumnElement[bool]:
    try:
        family, given, user_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = (str(family), str(given), str(user_id))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Problem(
            400, "Invalid cursor", "Use the next_cursor of a previous page.", reason="bad_cursor"
        ) from exc
    return tuple_(*_ORDER) > tuple_(*key)


def matching(words: str) -> ColumnElement[bool]:
    """Accounts whose e-mail, family name or given name contains `words`, any case."""
    pattern = "%" + words.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    fields = (User.email, User.family_name, User.given_name)
    return or_(*(func.lower(col(f)).like(pattern, escape="\\") for f in fields))


async def find_users(
    session: AsyncSession,
    principal: Principal,
    *,
    now: datetime,
    ids: list[str],
    search: str | None,
    staff: bool | None,
    organisation_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    """One page of the accounts `principal` may read that match every filter given, and `next_cursor`."""
    stmt: Select[User] = select(User).where(*scope(principal))
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
    if cursor:
        stmt = stmt.where(_after(cursor))
    rows = list((await session.execute(stmt.order_by(*_ORDER).limit(limit + 1))).scalars())
    page = rows[:limit]
    return {
        "items": [summary(u, now) for u in page],
        "next_cursor": _cursor(page[-1]) if len(rows) > limit else None,
    }
