"""`Idempotency-Key`: a retried call gets the first call's answer and has no second effect.

This is where an HTTP command commits: the use case writes, its answer (the edge's status and body) is
remembered in the same transaction, then `run_once` commits, so "done" and "remembered" cannot
disagree. The key is scoped to the caller (two people may pick the same key). Only successes are
remembered: a refusal changed nothing, so a retry may as well be judged afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cdap_access.domain import Conflict
from cdap_access.models import IdempotencyRecord
from cdap_access.store import StaleRequest
from cdap_shared.problems import Problem

Outcome = tuple[int, dict[str, Any]]


def fingerprint(method: str, path: str, canonical_body: str) -> str:
    """What makes two calls "the same call": method, path and the body as parsed (not its whitespace)."""
    return hashlib.sha256(f"{method} {path}\n{canonical_body}".encode()).hexdigest()


def _replay(record: IdempotencyRecord, print_: str) -> Outcome:
    if record.fingerprint != print_:
        raise Problem(
            422,
            "Idempotency key reused",
            "This Idempotency-Key was already used for a different call.",
            reason="idempotency_key_reused",
        )
    return record.status_code, record.response


async def _lookup(session: AsyncSession, actor: str, key: str) -> IdempotencyRecord | None:
    return await session.get(IdempotencyRecord, (actor, key), populate_existing=True)


async def run_once(
    session: AsyncSession,
    *,
    actor: str,
    key: str | None,
    print_: str,
    action: Callable[[], Awaitable[Outcome]],
) -> Outcome:
    """Run `action` (which writes without committing) and commit, unless `key` already answered.

    A lost race — another decision changed the request, or the same key arrived twice at once — rolls
    back; the caller then gets the stored answer if its key won, else 409.
    """
    if key is not None and (prior := await _lookup(session, actor, key)) is not None:
        return _replay(prior, print_)
    try:
        status, body = await action()
        if key is not None:
            session.add(
                IdempotencyRecord(actor=actor, key=key, fingerprint=print_, status_code=status, response=body)
            )
        await session.commit()
        return status, body
    except (StaleRequest, IntegrityError) as exc:
        await session.rollback()
        if key is not None and (prior := await _lookup(session, actor, key)) is not None:
            return _replay(prior, print_)
        raise Conflict(
            "concurrent_modification",
            "The request changed while you were deciding; reload it and decide again.",
        ) from exc
