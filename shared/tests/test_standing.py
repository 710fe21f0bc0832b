"""The standing of a caller: what identity last said about its account, grants or partner system."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date
from types import SimpleNamespace

import asyncpg
import pytest
from sqlalchemy import MetaData

from cdap_shared import events as ev
from cdap_shared.auth import GrantClaim, Principal
from cdap_shared.db import asyncpg_dsn, create_engine, create_tables, session_factory
from cdap_shared.standing import Fact, NotInGoodStanding, ProjectedStanding, Standing, apply, judge

from .samples import SAMPLES

TODAY = date(2026, 6, 15)


def person(*grants: str) -> Principal:
    claims = tuple(GrantClaim(g, "T1", "76") for g in grants)
    return Principal("u1", "o1", frozenset({"partner_user"}), claims, "j", 0)


def system(grant: str = "g1") -> Principal:
    return Principal("cdap-1", "o1", frozenset({"partner_system"}), (GrantClaim(grant, "T3", "76"),), "j", 0)


def refusal(principal: Principal, *facts: Fact) -> str:
    with pytest.raises(NotInGoodStanding) as caught:
        judge(principal, facts, TODAY)
    return caught.value.reason


def test_what_identity_never_mentioned_is_taken_at_the_tokens_word() -> None:
    assert judge(person("g1", "g2"), [], TODAY) == person("g1", "g2")
    assert judge(system(), [], TODAY) == system()


@pytest.mark.parametrize("why", ["suspended", "password_reset_required"])
def test_a_person_whose_account_is_refused_is_refused(why: str) -> None:
    assert refusal(person("g1"), Fact("account", "u1", (why,))) == why


def test_a_suspension_is_named_before_a_pending_reset() -> None:
    both = Fact("account", "u1", ("password_reset_required", "suspended"))  # as the projection sorts them
    assert refusal(person("g1"), both) == "suspended"


def test_a_persons_ended_or_out_of_date_grants_are_dropped_the_others_kept() -> None:
    facts = [
        Fact("grant", "g1", ("revoked",), "u1"),
        Fact("grant", "g2", (), "u1", date(2026, 1, 1), date(2026, 6, 14)),  # ended yesterday
        Fact("grant", "g3", (), "u1", date(2026, 1, 1), date(2026, 6, 15)),  # its last day
        Fact("grant", "g4", (), "u1", date(2026, 6, 16), date(2026, 12, 31)),  # not yet
    ]
    kept = judge(person("g1", "g2", "g3", "g4", "g5"), facts, TODAY)
    assert [g.id for g in kept.grants] == ["g3", "g5"]


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        ([Fact("client", "cdap-1", ("client_disabled",), "g1")], "client_disabled"),
        ([Fact("client", "cdap-1", ("client_deleted",), "g1")], "client_deleted"),
        ([Fact("grant", "g1", ("revoked",), "u9")], "grant_ended"),
        ([Fact("grant", "g1", ("expired",), "u9")], "grant_ended"),
        (
            [Fact("grant", "g1", (), "u9", TODAY, TODAY), Fact("account", "u9", ("suspended",))],
            "holder_suspended",
        ),
        (
            [Fact("grant", "g1", (), "u9"), Fact("account", "u9", ("password_reset_required",))],
            "holder_password_reset_required",
        ),
    ],
)
def test_a_partner_system_is_refused_with_its_grant_its_holder_or_itself(facts: list[Fact], why: str) -> None:
    assert refusal(system(), *facts) == why


def test_a_partner_system_in_good_standing_passes() -> None:
    facts = [Fact("client", "cdap-1", (), "g1"), Fact("grant", "g1", (), "u9"), Fact("account", "u9", ())]
    assert judge(system(), facts, TODAY) == system()


@pytest.mark.stack
async def test_the_projection_follows_identity_and_is_read_in_one_query(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    metadata = MetaData()
    Standing.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    engine = create_engine(url, 2)
    await create_tables(engine, metadata)
    sessions = session_factory(engine)
    client = SAMPLES["identity.client.created"]  # c1, on grant g1 of u1 (2026)
    stream = [
        ("identity.grant.issued", SAMPLES["identity.grant.issued"]),
        ("identity.client.created", client),
        ("identity.user.suspended", ev.UserRef(user_id="u1", by="admin")),
        ("identity.user.reset_required", ev.UserRef(user_id="u1", by="admin")),
        ("identity.user.reinstated", ev.UserRef(user_id="u1", by="admin")),
        ("identity.user.suspended", ev.UserRef(user_id="x" * 65)),  # no id is that long: ignored
        ("identity.user.activated", ev.UserRef(user_id="u2")),  # not about standing: ignored
    ]
    for event_type, data in stream:
        async with sessions() as session, session.begin():
            await apply(session, ev.make_event(event_type, source="/t", subject="s", data=data))
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=2)
    try:
        source = ProjectedStanding(SimpleNamespace(pool=pool))  # type: ignore[arg-type]
        partner_system = replace(system(), sub="c1")
        assert sorted(await source.facts(partner_system), key=lambda f: f.kind) == [
            Fact("account", "u1", ("password_reset_required",)),  # the grant's holder
            Fact("client", "c1", (), "g1"),
            Fact("grant", "g1", (), "u1", date(2026, 1, 1), date(2026, 12, 31)),
        ]
        assert (
            refusal(partner_system, *await source.facts(partner_system)) == "holder_password_reset_required"
        )
        assert refusal(person("g1"), *await source.facts(person("g1"))) == "password_reset_required"
        for event_type, data in (
            ("identity.user.reset_completed", ev.UserRef(user_id="u1")),
            ("identity.client.disabled", client),
            ("identity.grant.revoked", ev.GrantEnded(grant_id="g1", user_id="u1")),
        ):
            async with sessions() as session, session.begin():
                await apply(session, ev.make_event(event_type, source="/t", subject="s", data=data))
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT kind, subject, refusals FROM standing ORDER BY kind")
        assert [(r["kind"], r["subject"], r["refusals"]) for r in rows] == [
            ("account", "u1", []),
            ("client", "c1", ["client_disabled"]),
            ("grant", "g1", ["revoked"]),
        ]
        assert [g.id for g in judge(person("g1"), await source.facts(person("g1")), TODAY).grants] == []
    finally:
        await pool.close()
        await engine.dispose()
