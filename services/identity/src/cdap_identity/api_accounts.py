"""Organisations, CAF staff accounts, activation, `me`, and the CAF admin's account actions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import func, or_, select
from sqlmodel import col

from cdap_identity import accounts, directory, domain
from cdap_identity.models import Grant, Organisation, User
from cdap_identity.notifications import activation_mail, reset_mail
from cdap_identity.schemas import (
    ActivationRequest,
    ActivationResult,
    GrantPublic,
    Me,
    OrganisationCreate,
    OrganisationPublic,
    OrganisationUpdate,
    Reason,
    StaffCreate,
    UserPublic,
    UsersPage,
)
from cdap_shared.auth import CurrentPrincipal, Principal, require_roles
from cdap_shared.clock import civil_today
from cdap_shared.db import SessionDep
from cdap_shared.mail import queue
from cdap_shared.problems import Problem

router = APIRouter(tags=["accounts"])
CafAdmin = Annotated[Principal, require_roles(domain.CAF_ADMIN)]
Id = Annotated[str, Path(min_length=1, max_length=64)]


def _public_org(org: Organisation, admins: list[str]) -> OrganisationPublic:
    return OrganisationPublic(**org.model_dump(exclude={"created_at"}), administrators=admins)


async def _administrators(session: SessionDep, organisation_ids: list[str]) -> dict[str, list[str]]:
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


async def _locked_org(session: SessionDep, organisation_id: str) -> Organisation:
    org = await session.get(Organisation, organisation_id, with_for_update=True)
    if org is None:
        raise Problem(404, "Unknown organisation")
    return org


async def _published(session: SessionDep, org: Organisation) -> OrganisationPublic:
    """Publish the organisation as it now is (`identity.organisation.updated`), commit, answer it."""
    await accounts.publish_organisation(session, org, "identity.organisation.updated")
    await session.commit()
    return _public_org(org, (await _administrators(session, [org.id]))[org.id])


@router.get("/v1/organisations", response_model=list[OrganisationPublic], responses={403: {}})
async def list_organisations(
    session: SessionDep,
    principal: CurrentPrincipal,
    department: Annotated[str | None, Query(pattern=r"^(\d{2,3}|2[AB])$")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
) -> list[OrganisationPublic]:
    """Organisations by name (any part, any case) or SIRET (its first digits), by name; at most 200.

    CAF admins and auditors see every department, instructors and managers their own."""
    if not principal.has_role(*domain.CAF_ROLES, domain.AUDITOR):
        raise Problem(403, "Forbidden", "Your role cannot list organisations.", reason="role")
    stmt = select(Organisation).order_by(col(Organisation.name), col(Organisation.id)).limit(200)
    if not principal.has_role(domain.CAF_ADMIN, domain.AUDITOR):
        stmt = stmt.where(col(Organisation.department) == principal.department)
    if department:
        stmt = stmt.where(col(Organisation.department) == department)
    if q:
        words = q.strip()
        pattern = "%" + words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        by_name = func.lower(col(Organisation.name)).like(pattern.lower(), escape="\\")
        stmt = stmt.where(
            or_(by_name, col(Organisation.siret).startswith(words)) if words.isdigit() else by_name
        )
    orgs = list((await session.execute(stmt)).scalars())
    admins = await _administrators(session, [o.id for o in orgs])
    return [_public_org(o, admins[o.id]) for o in orgs]


@router.post(
    "/v1/organisations", status_code=201, response_model=OrganisationPublic, responses={409: {}, 422: {}}
)
async def create_organisation(
    body: OrganisationCreate, request: Request, session: SessionDep, admin: CafAdmin
) -> OrganisationPublic:
    """Register a partner organisation and its administrators; each gets an activation mail."""
    settings = request.app.state.settings
    org = Organisation(
        siret=body.siret,
        name=body.name,
        kind=body.kind,
        department=body.department,
        convention_reference=body.convention.reference,
        convention_valid_until=body.convention.valid_until,
    )
    created = await accounts.register_organisation(
        session,
        org,
        [(p.email, p.family_name, p.given_name) for p in body.administrators],
        settings.activation_hours,
    )
    for account in created:
        queue(
            session,
            activation_mail(
                account.user, account.activation_token, settings.portal_url, settings.activation_hours
            ),
        )
    await session.commit()
    return _public_org(org, [a.user.id for a in created])


@router.get(
    "/v1/organisations/{organisation_id}", response_model=OrganisationPublic, responses={403: {}, 404: {}}
)
async def get_organisation(
    organisation_id: Id, session: SessionDep, principal: CurrentPrincipal
) -> OrganisationPublic:
    """An organisation, for its own members, CAF admins, auditors, and CAF staff of its department."""
    if principal.org != organisation_id and not principal.has_role(*domain.CAF_ROLES, domain.AUDITOR):
        raise Problem(403, "Forbidden", "Not your organisation.", reason="other_organisation")
    org = await session.get(Organisation, organisation_id)
    if org is None:
        raise Problem(404, "Unknown organisation")
    # Instructors and managers work for one department's CAF: as with grants and access requests, another
    # department's partners are not theirs to read. CAF admins and auditors oversee every department.
    if (
        principal.org != organisation_id
        and not principal.has_role(domain.CAF_ADMIN, domain.AUDITOR)
        and principal.department != org.department
    ):
        raise Problem(403, "Forbidden", "Not your department's organisation.", reason="other_department")
    return _public_org(org, (await _administrators(session, [org.id]))[org.id])


@router.post(
    "/v1/organisations/{organisation_id}/withdraw-delegation",
    response_model=OrganisationPublic,
    responses={404: {}},
)
async def withdraw_delegation(
    organisation_id: Id, session: SessionDep, admin: CafAdmin
) -> OrganisationPublic:
    """The CAF takes back the organisation's delegated administration: its admins can no longer ask for
    access nor create clients."""
    return await _set_delegation(session, organisation_id, withdrawn=True)


@router.post(
    "/v1/organisations/{organisation_id}/restore-delegation",
    response_model=OrganisationPublic,
    responses={404: {}},
)
async def restore_delegation(organisation_id: Id, session: SessionDep, admin: CafAdmin) -> OrganisationPublic:
    """The CAF gives the organisation its delegated administration back."""
    return await _set_delegation(session, organisation_id, withdrawn=False)


async def _set_delegation(
    session: SessionDep, organisation_id: str, *, withdrawn: bool
) -> OrganisationPublic:
    org = await _locked_org(session, organisation_id)
    org.delegation_withdrawn = withdrawn
    return await _published(session, org)


@router.patch(
    "/v1/organisations/{organisation_id}",
    response_model=OrganisationPublic,
    responses={404: {}, 422: {}},
)
async def amend_organisation(
    organisation_id: Id, body: OrganisationUpdate, session: SessionDep, admin: CafAdmin
) -> OrganisationPublic:
    """Rename, change the kind, or renew / amend the convention (a new reference and end date); every
    service hears it (`identity.organisation.updated`), so requests refused for an expired convention
    are accepted again."""
    if body.convention is not None and body.convention.valid_until <= civil_today():
        raise Problem(
            422, "Convention already ended", "A convention must end after today.", reason="convention_ended"
        )
    org = await _locked_org(session, organisation_id)
    if body.name is not None:
        org.name = body.name
    if body.kind is not None:
        org.kind = body.kind
    if body.convention is not None:
        org.convention_reference = body.convention.reference
        org.convention_valid_until = body.convention.valid_until
    return await _published(session, org)


@router.post("/v1/users", status_code=201, response_model=UserPublic, responses={409: {}, 422: {}})
async def create_staff(
    body: StaffCreate, request: Request, session: SessionDep, admin: CafAdmin
) -> UserPublic:
    """A CAF staff account (instructor, manager, admin, auditor) of a department; activation mail sent."""
    settings = request.app.state.settings
    created = await accounts.create_account(
        session,
        email=body.email,
        family_name=body.family_name,
        given_name=body.given_name,
        roles=body.roles,
        organisation_id=None,
        department=body.department,
        activation_hours=settings.activation_hours,
    )
    queue(
        session,
        activation_mail(
            created.user, created.activation_token, settings.portal_url, settings.activation_hours
        ),
    )
    await session.commit()
    return UserPublic(**created.user.model_dump())


@router.get("/v1/users", response_model=UsersPage, responses={400: {}, 403: {}})
async def list_users(
    session: SessionDep,
    principal: CurrentPrincipal,
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
    return await directory.find_users(
        session,
        principal,
        now=accounts.utcnow(),
        ids=[i for i in id or [] if 0 < len(i) <= 64],
        search=q,
        staff=staff,
        organisation_id=organisation,
        status=status,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "/v1/users/{user_id}/resend-activation", response_model=UserPublic, responses={403: {}, 404: {}, 409: {}}
)
async def resend_activation(
    user_id: Id, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> UserPublic:
    """A new activation mail for an account not activated yet; the earlier links stop working. A CAF admin
    for any account, a partner administrator for their organisation's."""
    if principal.has_role(domain.CAF_ADMIN):
        organisation_id = None
    elif principal.has_role(domain.PARTNER_ADMIN) and principal.org:
        organisation_id = principal.org
    else:
        raise Problem(403, "Forbidden", "Your role cannot resend activation links.", reason="role")
    settings = request.app.state.settings
    user, token = await accounts.resend_activation(
        session, user_id, principal.sub, organisation_id, settings.activation_hours
    )
    queue(session, activation_mail(user, token, settings.portal_url, settings.activation_hours))
    await session.commit()
    return UserPublic(**user.model_dump())


@router.post("/v1/activations", response_model=ActivationResult, responses={400: {}, 422: {}})
async def activate(body: ActivationRequest, request: Request, session: SessionDep) -> ActivationResult:
    """Choose a password from an activation (or reset) link; returns the TOTP secret to enrol if needed."""
    profiles = set(request.app.state.settings.totp_profiles)
    result = await accounts.activate(session, body.token, body.password, profiles)
    await session.commit()
    return ActivationResult(**result.__dict__)


@router.get("/v1/me", response_model=Me)
async def me(session: SessionDep, principal: CurrentPrincipal) -> Me:
    """The caller and its active grants (as the database has them now, not as the token says)."""
    user = await session.get(User, principal.sub)
    if user is None:
        raise Problem(404, "Unknown account", "Partner systems have no account.")
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


@router.post("/v1/users/{user_id}/suspend", response_model=UserPublic, responses={404: {}})
async def suspend_user(
    user_id: Id, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Suspend the account (CAF admin): every service refuses it within seconds, its sessions end."""
    return await _set_status(session, user_id, "suspend", admin, body)


@router.post("/v1/users/{user_id}/reinstate", response_model=UserPublic, responses={404: {}})
async def reinstate_user(
    user_id: Id, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Lift a suspension (CAF admin)."""
    return await _set_status(session, user_id, "reinstate", admin, body)


@router.post("/v1/users/{user_id}/unlock", response_model=UserPublic, responses={404: {}})
async def unlock_user(
    user_id: Id, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Lift a lockout after too many failed sign-ins (CAF admin)."""
    return await _set_status(session, user_id, "unlock", admin, body)


@router.post("/v1/users/{user_id}/force-password-reset", response_model=UserPublic, responses={404: {}})
async def force_password_reset(
    user_id: Id, request: Request, session: SessionDep, admin: CafAdmin, body: Reason | None = None
) -> UserPublic:
    """Make the person choose a new password from a mailed link before signing in again (CAF admin)."""
    settings = request.app.state.settings
    user, token = await accounts.force_password_reset(session, user_id, admin.sub, settings.activation_hours)
    queue(session, reset_mail(user, token, settings.portal_url, settings.activation_hours))
    await session.commit()
    return UserPublic(**user.model_dump())


async def _set_status(
    session: SessionDep, user_id: str, action: str, admin: Principal, body: Reason | None
) -> UserPublic:
    user = await accounts.set_status(
        session, user_id, action, by=admin.sub, reason=body.reason if body else None
    )
    await session.commit()
    return UserPublic(**user.model_dump())
