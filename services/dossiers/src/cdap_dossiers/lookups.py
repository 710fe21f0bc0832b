"""Service functions behind the HTTP routes: decide, record the consultation, and only then answer.

Every consultation — granted, denied, unknown or rate-limited — is staged in the outbox and committed
before the response is built; if that commit fails, the caller gets a 503 and no data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import and_, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from cdap_dossiers.domain import ActiveGrant, DossierFacts, Verdict, decide, filtered_view, name_key
from cdap_dossiers.models import Dossier, GrantRecord, UserStatus
from cdap_dossiers.policy import Policy
from cdap_dossiers.projections import phone_key
from cdap_shared import events as ev
from cdap_shared import outbox
from cdap_shared.auth import Principal
from cdap_shared.envelope import CloudEvent
from cdap_shared.telemetry import current_trace_id

SOURCE = "/cdap/dossiers"
MAX_SEARCH_RESULTS = 20


@dataclass(frozen=True)
class Caller:
    principal: Principal
    client_ip: str | None


@dataclass
class Outcome:
    """What the route answers: an HTTP status, a body, and the id of the recorded consultation."""

    status: int
    audit_id: str
    body: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


async def active_grants(session: AsyncSession, principal: Principal) -> tuple[list[ActiveGrant], bool]:
    """The caller's token grants that the projection still holds active today, and whether it is suspended."""
    today = date.today()
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
    status = await session.get(UserStatus, principal.sub)
    grants = [
        ActiveGrant(r.grant_id, r.profile, r.department, r.organisation_id, r.organisation_siret)
        for r in rows
    ]
    return grants, bool(status and status.suspended)


async def _record(session: AsyncSession, event: CloudEvent) -> str:
    await outbox.add(session, event)
    await session.commit()
    return event.id


def _consulted(
    caller: Caller, numero: str, motif: str, verdict: Verdict | None, policy: Policy, **kw: Any
) -> CloudEvent:
    grant = verdict.grant if verdict else None
    data = ev.DossierConsulted(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        profile=grant.profile if grant else None,
        grant_id=grant.id if grant else None,
        numero=numero,
        motif=motif,
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
        **kw,
    )
    return ev.make_event("dossier.consulted", source=SOURCE, subject=numero, data=data)


async def lookup(
    session: AsyncSession, policy: Policy, caller: Caller, numero: str, motif: str, family_name: str | None
) -> Outcome:
    """One consultation of one dossier, recorded whatever its outcome."""
    grants, suspended = await active_grants(session, caller.principal)
    dossier = await session.get(Dossier, numero)
    if dossier is None:
        event = _consulted(caller, numero, motif, None, policy, decision="not_found", reason="unknown_numero")
        return Outcome(404, await _record(session, event), reason="unknown_numero")
    facts = DossierFacts(
        numero=dossier.numero,
        department=dossier.department,
        opposition=dossier.opposition,
        family_name=dossier.family_name,
        landlord_siret=dossier.landlord_siret,
        rsa_referent_siret=dossier.rsa_referent_siret,
    )
    verdict = decide(policy, grants, facts, motif, family_name=family_name, suspended=suspended)
    if verdict.decision == "denied":
        event = _consulted(caller, numero, motif, verdict, policy, decision="denied", reason=verdict.reason)
        return Outcome(403, await _record(session, event), reason=verdict.reason)
    view = filtered_view(dossier.sections, verdict.sections)
    event = _consulted(caller, numero, motif, verdict, policy, decision="granted", sections=sorted(view))
    audit_id = await _record(session, event)
    body = {
        "numero": numero,
        "department": dossier.department,
        "policy_version": policy.version,
        "sections": view,
    }
    return Outcome(200, audit_id, body)


async def record_rate_limited(
    session: AsyncSession, policy: Policy, caller: Caller, numero: str, motif: str
) -> str:
    event = _consulted(caller, numero, motif, None, policy, decision="rate_limited", reason="rate_limited")
    return await _record(session, event)


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
    """Minimal matches (numero, names) inside the caller's scope only; recorded as `dossier.searched`."""
    grants, suspended = await active_grants(session, caller.principal)
    usable = [
        g
        for g in grants
        if g.profile in policy.profiles
        and policy.profiles[g.profile].searchable
        and criteria.motif in policy.profiles[g.profile].motifs
    ]
    reason = "suspended" if suspended else None if usable else "motif_not_allowed"
    matches: list[dict[str, str]] = []
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
            select(table.numero, table.family_name, table.given_name)
            .where(*where)
            .order_by(table.numero)
            .limit(MAX_SEARCH_RESULTS)
        )
        matches = [{"numero": n, "family_name": f, "given_name": g} for n, f, g in rows.all()]
    grant = usable[0] if usable else None
    data = ev.DossierSearched(
        actor=caller.principal.sub,
        organisation_id=caller.principal.org,
        profile=grant.profile if grant else None,
        grant_id=grant.id if grant else None,
        motif=criteria.motif,
        criteria=criteria.used(),
        decision="denied" if reason else "granted",
        reason=reason,
        numeros=[m["numero"] for m in matches],
        policy_version=policy.version,
        client_ip=caller.client_ip,
        trace_id=current_trace_id(),
    )
    event = ev.make_event("dossier.searched", source=SOURCE, subject=caller.principal.sub, data=data)
    audit_id = await _record(session, event)
    if reason:
        return Outcome(403, audit_id, reason=reason)
    return Outcome(200, audit_id, {"items": matches, "truncated": len(matches) == MAX_SEARCH_RESULTS})
