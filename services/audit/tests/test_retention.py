"""Retention and partitions: old entries go, proofs stay; a late partition takes its rows from the default."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cdap_audit import partitions

from . import rfc9162
from .conftest import Audit, serve
from .test_cli import cdap, grow_to, token

pytestmark = pytest.mark.stack

LONG_AGO = datetime(2020, 1, 10, tzinfo=UTC)


async def test_partitions_are_made_ahead_and_a_late_one_takes_its_rows(audit: Audit) -> None:
    engine = audit.app.state.runtime.engine
    now = datetime.now(UTC)
    names = set(await _names(audit))
    assert partitions.partition_name(partitions.month_start(now)) in names
    assert len(names) == 1 + 1 + audit.settings.partitions_ahead  # default + this month + ahead
    assert await partitions.ensure(engine, ahead=audit.settings.partitions_ahead) == []  # idempotent

    await grow_to(audit, 6)
    # Rows recorded in a month without a partition land in the default one ...
    await audit.sql("UPDATE entry SET recorded_at = $1 WHERE leaf_index < 4", LONG_AGO)
    assert len(await audit.sql("SELECT 1 FROM audit_partitions.entry_default")) == 4
    # ... and move into that month's partition when it is created.
    assert await partitions.ensure(engine, now=LONG_AGO, ahead=0) == ["entry_2020_01"]
    assert len(await audit.sql("SELECT 1 FROM audit_partitions.entry_default")) == 0
    assert len(await audit.sql("SELECT 1 FROM audit_partitions.entry_2020_01")) == 4
    assert [i["index"] for i in await audit.all_entries()] == list(range(6))


async def _names(audit: Audit) -> list[str]:
    rows = await audit.sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'entry'::regclass"
    )
    return [r["relname"] for r in rows]


async def test_purge_removes_old_entries_and_every_proof_still_verifies(audit: Audit, tmp_path: Path) -> None:
    engine = audit.app.state.runtime.engine
    await grow_to(audit, 10)
    leaves = [base64.b64decode(i["leaf"]) for i in await audit.all_entries()]
    root = rfc9162.mth(leaves)
    async with serve(audit.app) as url:
        saved = tmp_path / "saved.json"
        code, out = await cdap("audit", "checkpoint", "--save", str(saved), "--url", url, token=token(audit))
        assert code == 0, out

        await audit.sql("UPDATE entry SET recorded_at = $1 WHERE leaf_index < 3", LONG_AGO)
        await partitions.ensure(engine, now=LONG_AGO, ahead=0)
        await audit.sql(
            "UPDATE entry SET recorded_at = now() - interval '4 years' WHERE leaf_index IN (3, 4)"
        )
        cutoff = datetime.now(UTC) - timedelta(days=audit.settings.retention_days)
        result = await partitions.purge(engine, cutoff)
        assert result.dropped_partitions == ["entry_2020_01"] and result.deleted_rows == 2

        assert [i["index"] for i in await audit.all_entries()] == list(range(5, 10))
        assert (await audit.client.get("/v1/entries/1", headers=audit.headers())).status_code == 404
        # A purged entry's bytes, kept by someone, can still be proven to be in the log ...
        proof = await audit.get("/v1/proofs/inclusion", index=1, tree_size=10)
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        assert rfc9162.verify_inclusion(rfc9162.leaf(leaves[1]), 1, 10, hashes, root)
        # ... and the log is still consistent with the checkpoint saved before the purge.
        await grow_to(audit, 13, start=10)
        code, out = await cdap(
            "audit", "verify", "--checkpoint", str(saved), "--url", url, "--entry", "7", token=token(audit)
        )
        assert code == 0 and "verified" in out, out
        code, out = await cdap(
            "audit", "verify", "--checkpoint", str(saved), "--url", url, "--all-entries", token=token(audit)
        )
        assert code == 1 and "purged by retention" in out, out
