"""The search use case: minimal matches inside the caller's scope, recorded as `dossier.searched`.

A search is recorded whatever its outcome, in the transaction that reads it; if that commit fails,
`NotRecorded` is raised and no match leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg
from sqlalchemy import and_, false, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_dossiers import ratelimit
from cdap_dossiers.domain import ActiveGrant, NotRecorded, name_key, phone_key
from cdap_dossiers.lookups import OUTAGES, SOURCE, Caller, Decision, Outcome
from cdap_dossiers.models import Dossier, GrantRecord
from cdap_dossiers.policy import Policy
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.auth import Principal
from cdap_shared.clock import civil_today
from cdap_shared.envelope import CloudEvent
from cdap_shared.standing import ACCOUNT, Standing
from cdap_shared.telemetry import current_trace_id

MAX_SEARCH_RESULTS = 20


async def active_grants(session: AsyncSession, principal: Principal) -> tuple[list[ActiveGrant], bool]:
    """The caller's token grants that the projection still holds active today, and whether it is suspended."""
    today = civil_today()
    ids = [g.id for g in principal.grants]
    rows = (
        (
            await session.execute(
                select(GrantRecord).where(
                    col(GrantRecord.grant_id).in_(ids),
                    col(GrantRecord.status) == "active",
                    col(GrantRecord.valid_from) <= today,
                    col(GrantRecord.valid_until) >= today,
                )
            )
        )
        .scalars()
        .all()
        if ids
        else []
    )
    account = await session.get(Standing, (ACCOUNT, principal.sub))
    grants = [
        ActiveGrant(r.grant_id, r.profile, r.department, r.organisation_id, r.organisation_siret)
        for r in rows
    ]
    return grants, bool(account and "suspended" in account.refusals)


async def _record(session: AsyncSession, event: CloudEvent) -> str:
    await outbox.add(session, event)
    await session.commit()
    return event.id


async def record_refusal(pool: asyncpg.Pool, policy: Policy, caller: Caller, reason: str) -> str:
    """A caller identity no longer honours (suspended, client disabled...), refused before its search:
    recorded as a denied search all the same (its id returned)."""
    event = _searched(caller, policy, "denied", reason)
    async with pool.acquire() as conn:
        return await outbox.add_pg(conn, event)


def _searched(
    caller: Caller,
    policy: Policy,
    decision: Decision,
    reason: str | None,
    *,
    motif: str | None = None,
    criteria: list[str] | None = None,
    grant: ActiveGrant | None = None,
    numeros: list[str | None] | None = None,
) -> CloudEvent:
    """The `dossier.searched` event recording one search or its refusal, keyed by the caller."""
    data = ev.DossierSearched(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        profile=grant.profile if grant else None,
        grant_id=grant.id if grant else None,
        motif=motif,
        criteria=criteria or [],
        decision=decision,
        reason=reason,
        numeros=numeros or [],
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
    )
    return ev.make_event("dossier.searched", source=SOURCE, subject=caller.principal.sub, data=data)


@dataclass(frozen=True)
class SearchCriteria:
    motif: str
    nir: str | None = None
    family_name: str | None = None
    birth_date: date | None = None
    telephone: str | None = None
    postal_code: str | None = None

    def used(self) -> list[str]:
        """Which criteria were given (their names only: values such as a NIR are never recorded)."""
        names = ("nir", "family_name", "birth_date", "telephone", "postal_code")
        return [n for n in names if getattr(self, n) is not None]


def _scope_clause(policy: Policy, grant: ActiveGrant) -> Any:
    profile = policy.profiles[grant.profile]
    table = Dossier.__table__.c  # type: ignore[attr-defined]
    clauses = [table.department == grant.department]
    if profile.scope == "landlord":
        clauses.append(table.landlord_siret == grant.organisation_siret)
    elif profile.scope == "rsa":
        clauses.append(table.rsa_referent_siret == grant.organisation_siret)
    if profile.opposition:
        clauses.append(table.opposition.is_(False))
    return and_(*clauses)


async def search(session: AsyncSession, policy: Policy, caller: Caller, criteria: SearchCriteria) -> Outcome:
    """Minimal matches inside the caller's scope only (numero, names, and the birth date and commune that
    tell two namesakes apart); recorded as `dossier.searched`. Raises `NotRecorded` if it cannot be."""
    try:
        return await _search(session, policy, caller, criteria)
    except (SQLAlchemyError, *OUTAGES) as exc:
        raise NotRecorded from exc


async def _search(session: AsyncSession, policy: Policy, caller: Caller, criteria: SearchCriteria) -> Outcome:
    rate = ratelimit.RateDecision(
        "search", caller.search_limit, await ratelimit.hit(session, caller.principal.sub, "search")
    )
    grants, suspended = await active_grants(session, caller.principal)
    usable = [
        g
        for g in grants
        if g.profile in policy.profiles
        and policy.profiles[g.profile].searchable
        and criteria.motif in policy.profiles[g.profile].motifs
    ]
    if not rate.allowed:
        reason: str | None = "rate_limited"
    else:
        reason = "suspended" if suspended else None if usable else "motif_not_allowed"
    matches: list[dict[str, str | None]] = []
    if reason is None:
        table = Dossier.__table__.c  # type: ignore[attr-defined]
        where = [or_(*[_scope_clause(policy, g) for g in usable]) if usable else false()]
        if criteria.nir:
            where.append(table.nir == criteria.nir.replace(" ", "").upper())
        if criteria.family_name:
            where.append(table.family_name_key == name_key(criteria.family_name))
        if criteria.birth_date:
            where.append(table.birth_date == criteria.birth_date)
        if criteria.telephone:
            where.append(table.phone_key == phone_key(criteria.telephone))
        if criteria.postal_code:
            where.append(table.postal_code == criteria.postal_code)
        rows = await session.execute(
            select(
                table.numero,
                table.family_name,
                table.given_name,
                table.birth_date,
                table.sections["adresse"]["city"].astext,
            )
            .where(*where)
            .order_by(table.numero)
            .limit(MAX_SEARCH_RESULTS)
        )
        matches = [
            {
                "numero": n,
                "family_name": f,
                "given_name": g,
                "birth_date": born.isoformat() if born else None,
                "commune": city,
            }
            for n, f, g, born, city in rows.all()
        ]
    grant = usable[0] if usable else None
    decision: Decision = "rate_limited" if reason == "rate_limited" else "denied" if reason else "granted"
    event = _searched(
        caller,
        policy,
        decision,
        reason,
        motif=criteria.motif,
        criteria=criteria.used(),
        grant=grant,
        numeros=[m["numero"] for m in matches],
    )
    audit_id = await _record(session, event)
    if reason:
        return Outcome(decision, audit_id, rate, reason=reason)
    body = {"items": matches, "truncated": len(matches) == MAX_SEARCH_RESULTS}
    return Outcome(decision, audit_id, rate, body)
