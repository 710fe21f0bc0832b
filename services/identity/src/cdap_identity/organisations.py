"""Partner organisations: register one with its administrators, amend it, withdraw or restore its
delegated administration. Every change is published whole (`identity.organisation.*`) in the caller's
transaction; the caller commits."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_identity import domain
from cdap_identity.accounts import SOURCE, NewAccount, create_account, mail_activation
from cdap_identity.config import Settings
from cdap_identity.domain import Conflict, Invalid, Unknown
from cdap_identity.models import Organisation, User
from cdap_shared import events as ev
from cdap_shared.db import locked
from cdap_shared.outbox import emit


async def register_organisation(
    session: AsyncSession, org: Organisation, admins: list[tuple[str, str, str]], activation_hours: int
) -> list[NewAccount]:
    """Create the organisation and its partner administrators (e-mail, family name, given name)."""
    if not domain.valid_siret(org.siret):
        raise Invalid("invalid_siret", "The SIRET's check digit is wrong.")
    if (await session.execute(select(Organisation).where(col(Organisation.siret) == org.siret))).first():
        raise Conflict("siret_exists", "An organisation with this SIRET exists.")
    session.add(org)
    await session.flush()
    accounts = [
        await create_account(
            session,
            email=email,
            family_name=family,
            given_name=given,
            roles=[domain.PARTNER_ADMIN],
            organisation_id=org.id,
            department=org.department,
            activation_hours=activation_hours,
        )
        for email, family, given in admins
    ]
    await publish(session, org, "identity.organisation.registered")
    return accounts


async def register(
    session: AsyncSession, settings: Settings, org: Organisation, admins: list[tuple[str, str, str]]
) -> list[NewAccount]:
    """Register the organisation and its administrators; each gets an activation mail."""
    created = await register_organisation(session, org, admins, settings.activation_hours)
    for account in created:
        await mail_activation(session, settings, account)
    return created


async def _locked(session: AsyncSession, organisation_id: str) -> Organisation:
    return await locked(
        session,
        Organisation,
        organisation_id,
        Unknown("unknown_organisation", "No organisation has this id."),
    )


async def set_delegation(session: AsyncSession, organisation_id: str, *, withdrawn: bool) -> Organisation:
    """Withdraw (its admins can no longer ask for access nor create clients) or restore the
    organisation's delegated administration."""
    org = await _locked(session, organisation_id)
    org.delegation_withdrawn = withdrawn
    await publish(session, org, "identity.organisation.updated")
    return org


async def amend(
    session: AsyncSession,
    organisation_id: str,
    today: date,
    *,
    name: str | None = None,
    kind: str | None = None,
    convention: tuple[str, date] | None = None,
) -> Organisation:
    """Rename, change the kind, or renew / amend the convention (reference, end date); what is None stays."""
    if convention is not None:
        domain.check_convention(convention[1], today)
    org = await _locked(session, organisation_id)
    if name is not None:
        org.name = name
    if kind is not None:
        org.kind = kind
    if convention is not None:
        org.convention_reference, org.convention_valid_until = convention
    await publish(session, org, "identity.organisation.updated")
    return org


async def publish(session: AsyncSession, org: Organisation, event_type: str) -> None:
    """Stage the organisation as it now is, with its administrators (`OrganisationRegistered`)."""
    admins = (
        (
            await session.execute(
                select(col(User.id)).where(
                    col(User.organisation_id) == org.id, col(User.roles).contains([domain.PARTNER_ADMIN])
                )
            )
        )
        .scalars()
        .all()
    )
    await emit(
        session,
        event_type,
        source=SOURCE,
        subject=org.id,
        data=ev.OrganisationRegistered.of(org, organisation_id=org.id, administrators=sorted(admins)),
    )
