"""Routes of accounts: CAF staff accounts, the account list, activation, `me`, and the CAF admin's
account actions (suspend, reinstate, unlock, force a password reset)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_identity import accounts, queries
from cdap_identity.models import User
from cdap_identity.schemas import (
    ActivationRequest,
    ActivationResult,
    Me,
    Reason,
    StaffCreate,
    UserPublic,
    UsersPage,
)
from cdap_identity.web import CafAdmin, Config, Id, write
from cdap_shared.auth import CurrentActor
from cdap_shared.db import SessionDep
from cdap_shared.http import Now
from cdap_shared.paging import decode_cursor, encode_cursor

router = APIRouter(tags=["accounts"])


@router.post("/v1/users", status_code=201, response_model=UserPublic, responses={409: {}, 422: {}})
async def create_staff(body: StaffCreate, config: Config, session: SessionDep, admin: CafAdmin) -> UserPublic:
    """A CAF staff account (instructor, manager, admin, auditor) of a department; activation mail sent."""
    created = accounts.create_staff(
        session,
        config,
        email=body.email,
        family_name=body.family_name,
        given_name=body.given_name,
        roles=body.roles,
        department=body.department,
    )
    return await _changed(session, created)


@router.get("/v1/users", response_model=UsersPage, responses={400: {}, 403: {}})
async def list_users(
    session: SessionDep,
    actor: CurrentActor,
    now: Now,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    staff: Annotated[bool | None, Query(description="true: CAF staff only; false: partners' only")] = None,
    organisation: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: Annotated[str | None, Query(pattern=r"^(pending|active|suspended)$")] = None,
    id: Annotated[list[str] | None, Query(max_length=100, description="these accounts only")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Accounts by name, with their state, in name order (keyset pages): the list CAF admins manage staff
    from (`staff=true`, `q` = part of the e-mail or a name), and the names pages show for account ids
    (`id=...&id=...`). CAF admins and auditors read every account, instructors and managers their
    department's, partner administrators their organisation's."""
    page = await queries.find_users(
        session,
        actor,
        now=now,
        ids=[i for i in id or [] if 0 < len(i) <= 64],
        search=q,
        staff=staff,
        organisation_id=organisation,
        status=status,
        after=decode_cursor(cursor, _user_key) if cursor else None,
        limit=limit,
    )
    return {"items": page.items, "next_cursor": encode_cursor(page.last) if page.last else None}


def _user_key(key: list[Any]) -> queries.UserKey:
    """The users' sort key (family name, given name, id) read back from a cursor."""
    family, given, user_id = key
    return (str(family), str(given), str(user_id))


@router.post(
    "/v1/users/{user_id}/resend-activation", response_model=UserPublic, responses={403: {}, 404: {}, 409: {}}
)
async def resend_activation(
    user_id: Id, config: Config, session: SessionDep, actor: CurrentActor
) -> UserPublic:
    """A new activation mail for an account not activated yet; the earlier links stop working. A CAF admin
    for any account, a partner administrator for their organisation's."""
    return await _changed(session, accounts.resend_activation(session, config, actor, user_id))


@router.post("/v1/activations", response_model=ActivationResult, responses={400: {}, 422: {}})
async def activate(body: ActivationRequest, config: Config, session: SessionDep) -> ActivationResult:
    """Choose a password from an activation (or reset) link; returns the TOTP secret to enrol if needed."""
    activation = accounts.activate(session, body.token, body.password, set(config.totp_profiles))
    return ActivationResult(**(await write(session, activation)).__dict__)


@router.get("/v1/me", response_model=Me)
async def me(session: SessionDep, actor: CurrentActor) -> Me:
    """The caller and its active grants (as the database has them now, not as the token says)."""
    return await queries.me(session, actor.sub)


@router.post("/v1/users/{user_id}/suspend", response_model=UserPublic, responses={404: {}})
async def suspend_user(
    user_id: Id, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Suspend the account (CAF admin): every service refuses it within seconds, its sessions end."""
    return await _changed(
        session, accounts.suspend(session, user_id, admin.sub, body.reason if body else None)
    )


@router.post("/v1/users/{user_id}/reinstate", response_model=UserPublic, responses={404: {}})
async def reinstate_user(
    user_id: Id, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Lift a suspension (CAF admin)."""
    return await _changed(
        session, accounts.reinstate(session, user_id, admin.sub, body.reason if body else None)
    )


@router.post("/v1/users/{user_id}/unlock", response_model=UserPublic, responses={404: {}})
async def unlock_user(
    user_id: Id, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Lift a lockout after too many failed sign-ins (CAF admin)."""
    return await _changed(session, accounts.unlock(session, user_id))


@router.post("/v1/users/{user_id}/force-password-reset", response_model=UserPublic, responses={404: {}})
async def force_password_reset(
    user_id: Id, config: Config, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Make the person choose a new password from a mailed link before signing in again (CAF admin)."""
    return await _changed(session, accounts.force_password_reset(session, config, user_id, admin.sub))


async def _changed(session: AsyncSession, change: Awaitable[User]) -> UserPublic:
    """Commit a change of one account and answer the account as it now is."""
    return UserPublic(**(await write(session, change)).model_dump())
