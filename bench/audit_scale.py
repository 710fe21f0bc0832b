"""bench/audit_scale: the audit log at 10,000,000 entries against the same log at 100,000, same run.

Both logs are bulk-loaded with the service's own hashing (bench/audit_data.py): the large one is a
named database kept between runs (`cdap_bench_audit_10m`, reloaded with `--reseed` or when its count
is wrong), the small one is loaded fresh each run. On each, in this order:

1. checkpoint: 30 times, one entry appended through `ledger.append` in its own transaction (timed:
   `append_commit`), then `signing.sign_if_grown` with the stored key (timed: `checkpoint`: the
   frontier read, root, Ed25519 signature, checkpoint row and its outbox event), in this process;
2. the audit service started on that database (fresh topics); one HTTP client, one request at a time:
   entries by actor (page of 100; each actor has 2,000 entries at either size), a dossier's
   consultations (10 each), an inclusion proof of a random leaf and a consistency proof from a random
   size, each against the current tree; a sample of the proofs is verified against the checkpoint;
3. ingestion on top: M `dossier.consulted` events published to the service's topic, entries/s from
   the first new committed entry to the last;
4. `cdap audit verify` (the CLI an outside auditor runs) against a checkpoint saved before step 3, with
   the inclusion proof of a random old entry.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench import audit_data
from bench.audit import audit_service, publish, tree_size
from bench.common import drop_database, percentile
from cdap_audit import ledger, merkle, signing
from cdap_audit.domain import EntryFacts

Progress = Callable[[str, float], None]
LARGE_DB = "cdap_bench_audit_10m"
QUERIES = ("entries_by_actor", "dossier_consultations", "inclusion_proof", "consistency_proof")


async def checkpoints(name: str, base: int, rounds: int, topic: str) -> dict[str, float]:
    """Append one entry then sign, `rounds` times, with the service's code (no service running)."""
    engine = create_async_engine(audit_data.sqlalchemy_url(name), pool_size=2)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    appends, signs = [], []
    try:
        signer = await signing.stored_signer(sessions, "cdap.audit/local")
        for k in range(rounds):
            i = base + k
            facts = audit_data.facts(i, base, datetime.now(UTC))
            facts = EntryFacts(**{**facts.__dict__, "event_id": f"bench-checkpoint-{i}-{time.time_ns()}"})
            t0 = time.perf_counter()
            async with sessions() as session, session.begin():
                await ledger.append(session, [facts])
            t1 = time.perf_counter()
            record = await signing.sign_if_grown(sessions, signer, "cdap.audit/local", topic)
            t2 = time.perf_counter()
            assert record is not None and record.tree_size == i + 1
            appends.append(t1 - t0)
            signs.append(t2 - t1)
    finally:
        await engine.dispose()
    return {
        "append_commit_p50_ms": round(percentile(appends, 50) * 1000, 2),
        "checkpoint_p50_ms": round(percentile(signs, 50) * 1000, 2),
        "checkpoint_max_ms": round(max(signs) * 1000, 2),
    }


async def queries(
    client: httpx.AsyncClient, base: int, rounds: int, progress: Progress, phase: str
) -> dict[str, Any]:
    rng = random.Random(5)
    latest = (await client.get("/v1/checkpoints/latest")).json()
    size, root = int(latest["tree_size"]), base64.b64decode(latest["root_hash"])
    times: dict[str, list[float]] = {q: [] for q in QUERIES}
    verified = 0
    for r in range(rounds):
        requests: dict[str, tuple[str, dict[str, Any]]] = {
            "entries_by_actor": (
                "/v1/entries",
                {"actor": audit_data.actor_of(rng.randrange(base), base), "limit": 100},
            ),
            "dossier_consultations": (
                f"/v1/dossiers/{audit_data.numero_of(rng.randrange(base), base)}/consultations",
                {"limit": 100},
            ),
            "inclusion_proof": (
                "/v1/proofs/inclusion",
                {"index": (index := rng.randrange(size)), "tree_size": size},
            ),
            "consistency_proof": (
                "/v1/proofs/consistency",
                {"first": rng.randrange(1, size), "second": size},
            ),
        }
        bodies = {}
        for name, (path, params) in requests.items():
            t0 = time.perf_counter()
            response = await client.get(path, params=params)
            times[name].append(time.perf_counter() - t0)
            response.raise_for_status()
            bodies[name] = response.json()
        assert len(bodies["entries_by_actor"]["items"]) == 100, "every actor has 2,000 entries"
        if r < 20:  # check the proofs: the bulk-loaded log must be as valid as an ingested one
            entry = (await client.get(f"/v1/entries/{index}")).json()
            leaf = merkle.leaf_hash(base64.b64decode(entry["leaf"]))
            proof = [base64.b64decode(h) for h in bodies["inclusion_proof"]["hashes"]]
            assert merkle.verify_inclusion(leaf, index, size, proof, root), (
                f"inclusion proof of {index} fails"
            )
            verified += 1
        progress(phase, (r + 1) / rounds)
    out: dict[str, Any] = {}
    for name in QUERIES:
        out[f"{name}_p50_ms"] = round(percentile(times[name], 50) * 1000, 2)
        out[f"{name}_p99_ms"] = round(percentile(times[name], 99) * 1000, 2)
    out["proofs_verified"] = verified
    return out


async def consistency_check(client: httpx.AsyncClient, conn: asyncpg.Connection, base: int) -> bool:
    """The checkpoint signed at base + 1 (step 1) is a prefix of the latest one: consistency proof."""
    old = await conn.fetchrow("SELECT tree_size, root_hash FROM checkpoint WHERE tree_size = $1", base + 1)
    assert old is not None, f"no checkpoint at {base + 1}"
    latest = (await client.get("/v1/checkpoints/latest")).json()
    second, second_root = int(latest["tree_size"]), base64.b64decode(latest["root_hash"])
    proof = (await client.get("/v1/proofs/consistency", params={"first": base + 1, "second": second})).json()
    hashes = [base64.b64decode(h) for h in proof["hashes"]]
    return merkle.verify_consistency(base + 1, second, bytes(old["root_hash"]), second_root, hashes)


async def cli(url: str, token: str, *args: str) -> str:
    """`cdap audit <args>` as an auditor runs it; raises with its output unless it succeeds."""
    proc = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).with_name("cdap")), "audit", *args],
        env={**os.environ, "CDAP_AUDIT_URL": url, "CDAP_TOKEN": token, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cdap audit {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return proc.stdout


async def measure(name: str, base: int, events: int, rounds: int, progress: Progress) -> dict[str, Any]:
    label = f"{base:,}"
    progress(f"{label}: checkpoints (append + sign)", 0.0)
    out: dict[str, Any] = {"entries": base}
    service, topics, jwks, token = await audit_service(audit_data.sqlalchemy_url(name), f"scale-{base}")
    conn = await asyncpg.connect(audit_data.dsn(name))
    try:
        # The checkpoint events go to the service's own (existing) topic, which its relay then publishes.
        out |= await checkpoints(name, base, 30, topics["checkpoints"])
        progress(f"{label}: checkpoints (append + sign)", 1.0)
        await asyncio.to_thread(service.start, 120.0)
        async with httpx.AsyncClient(
            base_url=service.url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=60,
        ) as client:
            deadline = time.perf_counter() + 30
            while (await client.get("/v1/checkpoints/latest")).status_code != 200:
                if time.perf_counter() > deadline:
                    raise RuntimeError("no checkpoint served")
                await asyncio.sleep(0.2)
            out |= await queries(client, base, rounds, progress, f"{label}: queries")
            out["consistency_verified"] = await consistency_check(client, conn, base)
        saved = Path(tempfile.mkdtemp()) / "checkpoint.json"
        await cli(service.url, token, "checkpoint", "--save", str(saved))
        start_size = await tree_size(conn)
        await publish(topics["consultations"], events, progress, f"{label}: publishing {events:,} events")
        phase = f"{label}: ingestion on top"
        first_t, first_size = 0.0, start_size
        deadline = time.perf_counter() + 900
        while (size := await tree_size(conn)) < start_size + events:
            if size > start_size and not first_t:
                first_t, first_size = time.perf_counter(), size
            if time.perf_counter() > deadline:
                raise RuntimeError(f"audit stuck at tree size {size}")
            progress(phase, (size - start_size) / events)
            await asyncio.sleep(0.05)
        ended = time.perf_counter()
        first_t = first_t or ended - 0.05
        out["ingest_events"] = events
        out["ingest_entries_per_s"] = round((start_size + events - first_size) / (ended - first_t), 1)
        progress(phase, 1.0)
        # An outside auditor's check, by the CLI: the checkpoint saved before the ingestion is a prefix
        # of the current log, and a random old entry's bytes are in it.
        index = random.Random(base).randrange(base)
        t0 = time.perf_counter()
        await cli(service.url, token, "verify", "--checkpoint", str(saved), "--entry", str(index))
        out["cli_verify_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        out["cli_verified"] = True
    finally:
        service.stop()
        jwks.close()
        await conn.close()
    return out


async def run(progress: Progress, quick: bool = False, reseed: bool = False) -> dict[str, Any]:
    large, small = (200_000, 20_000) if quick else (10_000_000, 100_000)
    events, rounds = (2_000, 50) if quick else (20_000, 300)
    large_db = LARGE_DB if not quick else "cdap_bench_audit_quick"
    small_db = f"bench_audit_small_{time.time_ns() % 10**9}"
    load_s = await audit_data.load(large_db, large, progress, reseed=reseed)
    await audit_data.load(small_db, small, progress, reseed=True)
    try:
        baseline = await measure(small_db, small, events, rounds, progress)
        cdap = await measure(large_db, large, events, rounds, progress)
    finally:
        await drop_database(audit_data.dsn(small_db))
        conn = await asyncpg.connect(audit_data.dsn(large_db))
        await audit_data.restore(conn, large)
        await conn.close()
    ratios = {
        k: round(cdap[k] / baseline[k], 2)
        for k in cdap
        if k.endswith(("_ms", "_per_s")) and isinstance(cdap[k], float) and baseline.get(k)
    }
    return {
        "description": f"audit log at {large:,} entries (10 monthly partitions, bulk-loaded with the service's "
        f"hashing) vs the same log at {small:,}: checkpoint signing, queries and proofs (one client, "
        f"{rounds} of each), ingestion of {events:,} more events",
        "columns": [f"{large:,} entries", f"{small:,} entries"],
        "cdap": cdap,
        "baseline": baseline,
        "ratios": ratios,
        "targets": {
            "entries_by_actor_p99": "< 50 ms at 10,000,000 entries",
            "ingest_entries_per_s": "no slower than at 100,000",
        },
        "notes": f"CDAP column: {large:,} entries; baseline column: {small:,} entries, same machine, same run; "
        "the ratio is large / small (1.0 = no cost of scale). "
        + (
            f"The {large:,}-entry log was loaded in this run in {load_s:.0f} s. "
            if load_s
            else "The large log was reused from an earlier run (cut back to its size). "
        )
        + "proofs_verified counts inclusion proofs of random leaves checked against the signed root; "
        "consistency_verified, the proof from the first checkpoint of step 1 to the latest; cli_verified, "
        "`cdap audit verify --checkpoint <saved before the ingestion> --entry <random old entry>` (signatures, "
        "consistency proof, the entry's fields against its bytes, inclusion proof), timed in cli_verify_ms.",
    }
