"""bench/identity: client_credentials tokens/s and password logins/s (argon2id) through the running
identity service, side by side with a bare FastAPI endpoint (form in, JSON out, no database) measured
in the same run, with wrk at 20 connections."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg

from bench.common import ADMIN_DSN, KAFKA, RESULTS, database_url, run_wrk, start_floor
from cdap_identity import accounts, habilitations, organisations
from cdap_identity.models import Organisation
from cdap_identity.passwords import HASHER
from cdap_shared import events as ev
from cdap_shared import services as registry
from cdap_shared.db import create_engine, session_factory
from cdap_testing import ServiceProcess, drop_database, migrate

DB = "cdap_bench_identity"
ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Bench-Identity-2026!"
SIRETS = [
    "73282932000074",
    "55204944776279",
    "44306184100047",
    "32929709700035",
    "21760540100017",
    "22760540900019",
    "78285238800019",
    "33012345600015",
    "44012345300019",
    "35600000000048",
]


async def prepare() -> tuple[str, str, list[str]]:
    """A fresh identity database with 10 organisations, their activated admins, and one client."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await drop_database(admin, DB)
        await admin.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await admin.close()
    await asyncio.to_thread(migrate, str(ROOT / "services" / "identity"), database_url(DB))
    engine = create_engine(database_url(DB), 2)
    sessions = session_factory(engine)
    emails = []
    try:
        for i, siret in enumerate(SIRETS):
            async with sessions() as session, session.begin():
                org = Organisation(
                    siret=siret,
                    name=f"Bench {i}",
                    kind="bailleur",
                    department="76",
                    convention_reference=f"B-{i}",
                    convention_valid_until=date(2030, 1, 1),
                )
                [account] = await organisations.register_organisation(
                    session, org, [(f"bench{i}@example.fr", "Bench", "Admin")], 72
                )
                await accounts.activate(session, account.activation_token, PASSWORD, {"T1", "T5"})
                emails.append(f"bench{i}@example.fr")
                if i == 0:
                    approved = ev.RequestApproved(
                        request_id="bench-req",
                        organisation_id=org.id,
                        profile="T2",
                        department="76",
                        valid_until=date.today() + timedelta(days=200),
                        by="bench",
                        applicant=ev.Applicant(
                            family_name="Sys", given_name="Tem", email="si@example.fr", job_title="SI"
                        ),
                    )
                    grant, _ = await habilitations.provision(session, approved, 72, date.today())
                    client, secret = await habilitations.create_client(session, grant, "bench", "bench")
                    client_id = client.id
    finally:
        await engine.dispose()
    return client_id, secret, emails


def wrk(url: str, bodies: list[str], seconds: int, connections: int = 20) -> dict[str, float]:
    lua = (
        "local bodies = {" + ",".join(f'"{b}"' for b in bodies) + "}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        "  return wrk.format('POST', '/v1/token', {['Content-Type'] = 'application/x-www-form-urlencoded'},"
        " bodies[(i % #bodies) + 1])\n"
        "end\n"
    )
    return run_wrk(url, lua, seconds, connections)


async def run(progress: Any, quick: bool = False) -> dict[str, Any]:
    seconds = 5 if quick else 15
    progress("preparing identity database", 0.0)
    client_id, secret, emails = await prepare()
    progress("preparing identity database", 1.0)
    identity = ServiceProcess(
        registry.service("identity").package,
        {
            "CDAP_DATABASE_URL": database_url(DB),
            "CDAP_KAFKA_BOOTSTRAP": KAFKA,
            "CDAP_LOG_LEVEL": "WARNING",
            "CDAP_CONSUMER_GROUP": "bench-identity",
            "CDAP_DB_POOL_SIZE": "20",
        },
        RESULTS / "logs" / "identity.log",
    )
    floor = start_floor(18998, database_url(DB, "postgresql"))
    cc_body = [
        urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    ]
    pw_bodies = [urlencode({"grant_type": "password", "username": e, "password": PASSWORD}) for e in emails]
    try:
        await asyncio.to_thread(identity.start)
        await asyncio.sleep(2)
        progress("wrk: bare endpoint", 0.0)
        bare = wrk("http://127.0.0.1:18998", cc_body, seconds)
        progress("wrk: bare endpoint", 1.0)
        progress("wrk: client_credentials", 0.0)
        cc = wrk(identity.url, cc_body, seconds)
        progress("wrk: client_credentials", 1.0)
        progress("wrk: password logins", 0.0)
        pw = wrk(identity.url, pw_bodies, seconds)
        progress("wrk: password logins", 1.0)
    finally:
        identity.stop()
        floor.terminate()
        floor.wait()
    params = HASHER
    return {
        "description": "POST /v1/token, wrk 20 connections, vs a bare FastAPI form->JSON endpoint; argon2id "
        f"m={params.memory_cost} KiB, t={params.time_cost}, p={params.parallelism}",
        "notes": "client_credentials: one partner system asking over and over, as a partner's batch does; its "
        "client row is read from the database at most once a second (the client cache's lifetime), each "
        "token is one Ed25519 signature, and the sign-in is recorded once per client, address and token "
        "lifetime. The bare endpoint has none of CDAP's middleware (OpenTelemetry, metrics, body limit).",
        "cdap": {
            "client_credentials_per_s": cc["requests_per_s"],
            "client_credentials_p99_ms": cc["p99_ms"],
            "password_logins_per_s": pw["requests_per_s"],
            "password_logins_p99_ms": pw["p99_ms"],
            "non_2xx": cc["non_2xx"] + pw["non_2xx"],
        },
        "baseline": {
            "client_credentials_per_s": bare["requests_per_s"],
            "client_credentials_p99_ms": bare["p99_ms"],
            "password_logins_per_s": bare["requests_per_s"],
        },
        "ratios": {
            "client_credentials": round(cc["requests_per_s"] / bare["requests_per_s"], 3),
            "password_logins": round(pw["requests_per_s"] / bare["requests_per_s"], 4),
        },
        "targets": {
            "client_credentials_per_s": ">= 1000 (Keycloak documents ~120/s per vCPU)",
            "password_logins_per_s": "Keycloak documents ~15/s per vCPU",
        },
    }
