"""Ingestion: every event once, in consecutive leaves, across duplicates and a restart; trace ids kept."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

import pytest

from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent
from cdap_shared.relay import make_producer
from cdap_testing import eventually

from . import rfc9162
from .conftest import Audit, consulted, suspended

pytestmark = pytest.mark.stack


def mixed_events(n: int, tag: str) -> list[CloudEvent]:
    """Consultations, identity and access events and an alert, on all four consumed topics."""
    out: list[CloudEvent] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(suspended(f"user-{tag}-{i}"))
        elif kind == 1:
            data = ev.RequestDecision(request_id=f"req-{tag}-{i}", by="manager-1", stage=1, comment="ok")
            out.append(
                ev.make_event(
                    "access.request.stage_approved", source="/t", subject=data.request_id, data=data
                )
            )
        elif kind == 2:
            alert = ev.AlertRaised(alert_id=f"a-{tag}-{i}", rule="r", severity="info", actor="x", detail="d")
            out.append(ev.make_event("audit.alert.raised", source="/t", subject="x", data=alert))
        else:
            out.append(consulted(f"actor-{i % 7}", f"{1000000 + i:07d}"))
    return out


async def stored_root_matches_leaves(audit: Audit, items: list[dict[str, object]]) -> None:
    """The tree the service built incrementally has the root RFC 9162 gives for the served leaves."""
    leaves = [base64.b64decode(str(i["leaf"])) for i in items]
    proof = await audit.get("/v1/proofs/consistency", first=len(leaves), second=len(leaves))
    assert proof["hashes"] == []
    checkpoint = await eventually(lambda: _checkpoint_at(audit, len(leaves)))
    assert base64.b64decode(checkpoint["root_hash"]) == rfc9162.mth(leaves)


async def _checkpoint_at(audit: Audit, size: int) -> dict[str, object] | None:
    response = await audit.client.get(
        "/v1/checkpoints/latest", headers=audit.headers() | {"Accept": "application/json"}
    )
    body = response.json() if response.status_code == 200 else None
    return body if body and body["tree_size"] == size else None


async def test_each_event_once_in_consecutive_leaves_despite_duplicates(audit: Audit) -> None:
    events = mixed_events(40, "a")
    await audit.publish(*events)
    await audit.publish(*events[::5])  # redelivered duplicates
    items = await audit.wait_for_entries(40)
    await asyncio.sleep(1.0)  # give a late duplicate the time to show up
    items = await audit.all_entries()
    assert [i["index"] for i in items] == list(range(40))
    assert sorted(i["event_id"] for i in items) == sorted(e.id for e in events)
    await stored_root_matches_leaves(audit, items)


async def test_stopped_mid_stream_and_restarted_loses_and_doubles_nothing(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    first = await audit_factory()
    events = mixed_events(600, "b")
    # Publish one by one with a producer of our own while the service consumes, and stop the
    # service while events are still flowing in.
    producer = make_producer(first.settings.kafka_bootstrap)
    await producer.start()

    stopped = asyncio.Event()

    async def trickle() -> None:
        for i, e in enumerate(events[:450]):
            if i == 400:
                await stopped.wait()  # the last 50 go out while the service is down, whatever the timing
            await producer.send_and_wait(first.topic_for(e), e.to_bytes(), key=e.subject.encode())

    try:
        publishing = asyncio.create_task(trickle())
        await eventually(lambda: _count_at_least(first, 50))
        await first.stop()
        stopped.set()
        await publishing
    finally:
        await producer.stop()
    applied_before = len(await _entries_in_db(first))
    assert 50 <= applied_before < 450
    restarted = await audit_factory(settings=first.settings)
    await restarted.publish(*events[400:], *events[:50])  # the rest, plus duplicates of early ones
    items = await restarted.wait_for_entries(600, within=60)
    await asyncio.sleep(1.0)
    items = await restarted.all_entries()
    assert [i["index"] for i in items] == list(range(600))
    assert sorted(i["event_id"] for i in items) == sorted(e.id for e in events)
    await stored_root_matches_leaves(restarted, items)


async def _count_at_least(audit: Audit, n: int) -> bool:
    return len(await _entries_in_db(audit)) >= n


async def _entries_in_db(audit: Audit) -> list[object]:
    return list(await audit.sql("SELECT leaf_index FROM entry"))


async def test_trace_id_from_the_event_or_else_from_the_traceparent_header(audit: Audit) -> None:
    in_data = consulted(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    from_header = suspended("user-t")
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    await audit.publish(in_data)
    await audit.publish(from_header, headers=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01".encode())])
    await audit.publish(suspended("user-u"))  # no header, no trace id in the data
    items = {i["event_id"]: i for i in await audit.wait_for_entries(3)}
    assert items[in_data.id]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert items[from_header.id]["trace_id"] == trace_id
    assert [i["trace_id"] for i in items.values() if i["subject"] == "user-u"] == [None]
    found = await audit.get("/v1/entries", trace_id=trace_id)
    assert [i["event_id"] for i in found["items"]] == [from_header.id]


async def test_dossier_content_never_reaches_the_log(audit: Audit) -> None:
    upserted = ev.make_event(
        "caf.dossier.upserted",
        source="/caf",
        subject="1234567",
        data=ev.DossierUpserted(
            numero="1234567", nir="185057800608436", department="76", version=1, sections={"x": 1}
        ),
    )
    await audit.producer.send_and_wait(
        audit.settings.consultations_topic, upserted.to_bytes(), key=b"1234567"
    )
    marker = suspended("after")
    await audit.publish(marker)
    items = await audit.wait_for_entries(1)
    await asyncio.sleep(0.5)
    assert [i["event_id"] for i in await audit.all_entries()] == [marker.id]
    assert not await audit.sql("SELECT 1 FROM entry WHERE leaf::text LIKE '%185057800608436%'")
    assert items[0]["index"] == 0


async def test_two_replicas_share_one_gapless_tree(audit_factory: Callable[..., Awaitable[Audit]]) -> None:
    """Two processes in one consumer group on one database: partitions split, indices never clash."""
    one = await audit_factory()
    two = await audit_factory(settings=one.settings)
    events = mixed_events(400, "r")
    await one.publish(*events)
    items = await one.wait_for_entries(400, within=60)
    assert [i["index"] for i in items] == list(range(400))
    assert sorted(i["event_id"] for i in items) == sorted(e.id for e in events)
    await stored_root_matches_leaves(two, items)
    sizes = [r["tree_size"] for r in await one.sql("SELECT tree_size FROM checkpoint ORDER BY id")]
    assert sizes == sorted(set(sizes))  # both sign, never the same size twice, never backwards


async def test_concurrent_appenders_serialise_on_the_tree_lock(audit: Audit) -> None:
    """Many transactions appending at once (as replicas would): the row lock keeps indices gapless."""
    from cdap_audit import ledger
    from cdap_audit.domain import facts_from_event

    async def writer(w: int) -> None:
        async with audit.app.state.sessions() as session, session.begin():
            for i in range(25):
                await ledger.append(session, [facts_from_event(suspended(f"w{w}-{i}"))])
                await asyncio.sleep(0)  # let the other writers interleave

    await asyncio.gather(*(writer(w) for w in range(8)))
    items = await audit.all_entries()
    assert [i["index"] for i in items] == list(range(200))
    await stored_root_matches_leaves(audit, items)


async def test_a_committed_batch_wakes_the_signer_and_a_rolled_back_one_does_not(audit: Audit) -> None:
    """Checkpoints are signed when a batch commits (`Frontier`'s `on_commit`): never for a batch that
    was rolled back, whose entries do not exist."""
    from cdap_audit import ledger
    from cdap_audit.domain import facts_from_event

    woken: list[int] = []
    frontier = ledger.Frontier(lambda: woken.append(1))
    with pytest.raises(RuntimeError):
        async with audit.app.state.sessions() as session, session.begin():
            await ledger.append(session, [facts_from_event(suspended("rolled-back"))], frontier)
            raise RuntimeError("the batch fails after its append")
    assert woken == []
    async with audit.app.state.sessions() as session, session.begin():
        await ledger.append(session, [facts_from_event(suspended("committed"))], frontier)
        assert woken == []  # not before the commit
    assert woken == [1]
    assert [i["subject"] for i in await audit.all_entries()] == ["committed"]
