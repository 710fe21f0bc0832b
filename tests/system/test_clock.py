"""Clock (issue 8): approval deadlines and grant expiry across simulated day changes.

The services run under Debian's libfaketime (`make tools` installs it) and share one fake clock: a file
holding an offset from the real time ("+0", then "+<seconds>"), re-read on every clock call, so the test
moves the whole system's date while it runs. Monotonic clocks are left alone, so asyncio timers, Kafka
heartbeats and the services' periodic jobs keep their real pace. The test itself keeps the real clock and
asks for TOTP codes at the fake time, as a person whose phone shows the same time as the servers would.

PostgreSQL keeps the real clock (dossiers compares grant dates with `current_date`, which stays today):
that is why the grant expires through identity's sweep and its event, which is the path under test.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import httpx
import pyotp
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.topics import all_topics
from cdap_testing import eventually
from cdap_testing.system import (
    CLIENT_LIMITS,
    MAILBOX,
    PASSWORD,
    System,
    access_request,
    activate_and_login,
    bearer,
    bootstrap_admin,
    caf_staff,
    partner_organisation,
    submit_when_known,
    wait_ready,
)

from .test_faults import seed_dossiers, until_granted

pytestmark = pytest.mark.stack
PARIS = ZoneInfo("Europe/Paris")
# How far ahead the fake clock goes: the documents' 30-day delay, and a margin.
AHEAD = timedelta(days=60)


class FakeClock:
    """The offset file every service's libfaketime reads on each clock call (FAKETIME_NO_CACHE)."""

    def __init__(self, path: Path) -> None:
        found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
        assert found, "libfaketime is missing: run `make tools` (Debian package faketime)"
        self.library, self.path, self.offset = found[0], path, 0.0
        self._write(0)

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            # Faking monotonic time would stall asyncio's timers (and Kafka's heartbeats) after a jump.
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "DONT_FAKE_MONOTONIC": "1",  # the variable's name before libfaketime 0.9.8
            # File times stay real, so Python's bytecode cache is not judged stale by a jump.
            "NO_FAKE_STAT": "1",
        }

    def _write(self, seconds: int) -> None:
        # Written aside then renamed: a service never reads a half-written offset.
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{seconds:+d}\n")
        os.replace(tmp, self.path)
        self.offset = seconds

    def set(self, moment: datetime) -> datetime:
        """Make the services' clock read `moment` now (and run on from there)."""
        self._write(round(moment.timestamp() - time.time()))
        return self.now()

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, UTC)


def noon(day: date) -> datetime:
    return datetime.combine(day, clock_time(12), PARIS)


def business_days_after(start: date, count: int) -> date:
    """The oracle of docs/access-requests.md: the `count`-th weekday after `start` that is not a French
    public holiday (department 76 has no local ones)."""
    public = holidays.country_holidays("FR", years=range(start.year, start.year + 2))
    day = start
    while count:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in public:
            count -= 1
    return day


async def accept_stamps_from_the_future(kafka: str) -> None:
    """Kafka 4 refuses a record stamped more than an hour ahead of the broker's clock (topic setting
    `message.timestamp.after.max.ms`, one hour by default), and a producer stamps records with its process's
    clock: a service living days ahead could not publish. The CDAP topics get a topic-level override, kept
    with any other override (AlterConfigs replaces a topic's whole set)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka, **KafkaLogin.from_env().options())
    await admin.start()
    try:
        for topic in all_topics():
            [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            [(_, _, _, _, entries)] = [r[:5] for r in described.resources]
            overrides = {name: value for name, value, _, source, *_ in entries if source == 1}
            wanted = str(int(AHEAD.total_seconds() * 1000))
            if overrides.get("message.timestamp.after.max.ms") == wanted:
                continue
            overrides["message.timestamp.after.max.ms"] = wanted
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=overrides)])
    finally:
        await admin.close()


class Logins:
    """Access tokens at the fake time: one login per person and clock setting (tokens from before a jump
    have expired by the new clock, and a TOTP code is never accepted twice)."""

    def __init__(self, client: httpx.AsyncClient, identity: str, clock: FakeClock) -> None:
        self.client, self.identity, self.clock = client, identity, clock
        self.tokens: dict[tuple[str, float], dict[str, str]] = {}

    def remember(self, who: dict[str, Any]) -> dict[str, Any]:
        self.tokens[(who["email"], self.clock.offset)] = who["headers"]
        return who

    async def headers(self, who: dict[str, Any]) -> dict[str, str]:
        key = (who["email"], self.clock.offset)
        if key not in self.tokens:
            form = {"grant_type": "password", "username": who["email"], "password": PASSWORD}
            if who.get("totp"):
                form["totp"] = pyotp.TOTP(who["totp"]).at(self.clock.now())
            r = await self.client.post(f"{self.identity}/v1/token", data=form)
            assert r.status_code == 200, r.text
            self.tokens[key] = bearer(r.json()["access_token"])
        return self.tokens[key]


async def scheduler_passes_since(log: Path, moment: datetime, passes: int = 2) -> bool:
    """Whether access-requests' scheduler logged `passes` runs at or after `moment` (its log's timestamps
    come from the fake clock). Two, because the first may have started just before the jump."""
    seen = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        stamp = record.get("timestamp", "").replace("Z", "+00:00")
        if record.get("event") == "scheduled jobs ran" and datetime.fromisoformat(stamp) >= moment:
            seen += 1
    return seen >= passes


def mails_about(address: str, request_id: str, subject: str) -> list[str]:
    return [m for m in MAILBOX.to(address) if subject in m.splitlines()[0] and request_id[-8:] in m]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=CLIENT_LIMITS) as c:
        yield c


async def test_deadlines_and_grant_expiry_across_simulated_days(
    system: System, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    clock = FakeClock(tmp_path / "faketime")
    await accept_stamps_from_the_future(system.kafka)
    system.common_env = clock.env()
    await system.start(
        "identity",
        "access-requests",
        "dossiers",
        extra_env={
            "identity": {"CDAP_GRANT_SWEEP_SECONDS": "1"},
            "access-requests": {"CDAP_SCHEDULER_INTERVAL_SECONDS": "1", "CDAP_MAIL_POLL_SECONDS": "0.5"},
        },
    )
    await wait_ready(client, *(system.url(name) for name in system.processes))
    identity, access = system.url("identity"), system.url("access-requests")
    scheduler_log = system.log_path("access-requests")
    logins = Logins(client, identity, clock)

    # Today, with the real date: a CAF, a partner, three requests.
    admin = await bootstrap_admin(system, client, f"admin.{random.randint(0, 10**9)}@caf76.fr")
    (org, partner), instructor, manager = await asyncio.gather(
        partner_organisation(system, client, admin),
        caf_staff(system, client, admin, "caf_instructor"),
        caf_staff(system, client, admin, "caf_manager"),
    )
    for who in (partner, instructor, manager):
        logins.remember(who)
    today = clock.now().astimezone(PARIS).date()
    far = (today + timedelta(days=200)).isoformat()

    async def submit(profile: str, valid_until: str) -> str:
        body = access_request(
            org["id"], f"agent.{random.randint(0, 10**9)}@ccas-rouen.fr", profile, valid_until
        )
        r = await submit_when_known(client, access, partner["headers"], body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def decide(request_id: str, who: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
        r = await client.post(
            f"{access}/v1/access-requests/{request_id}/decisions", headers=who["headers"], json=decision
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def read(request_id: str) -> dict[str, Any]:
        r = await client.get(
            f"{access}/v1/access-requests/{request_id}", headers=await logins.headers(manager)
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    waiting = await submit("T3", far)  # nobody decides: reminded, then escalated
    documents = await submit("T3", far)  # documents asked, never sent: expires
    await decide(documents, instructor, {"decision": "request_documents", "documents": ["convention signée"]})
    tomorrow = (today + timedelta(days=1)).isoformat()
    granted = await submit("T1", tomorrow)  # four eyes, then a grant whose last day is tomorrow
    await decide(granted, instructor, {"decision": "approve", "comment": "Le poste correspond"})
    await decide(granted, manager, {"decision": "approve", "comment": "Validé"})

    # The stage is due 5 French business days later, not 5 calendar days (a weekend at least is in between).
    due = date.fromisoformat((await read(waiting))["due"])
    assert due == business_days_after(today, 5)
    assert (due - today).days >= 7
    assert (await read(documents))["due"] == (today + timedelta(days=30)).isoformat()

    # The grant is provisioned; its holder logs in and consults a dossier.
    applicant_email = (await read(granted))["applicant"]["email"]
    holder = logins.remember(
        {"email": applicant_email, **await activate_and_login(client, identity, applicant_email)}
    )
    [numero] = await seed_dossiers(system.kafka, 5_700_000 + random.randint(0, 80_000), 1)
    lookup = f"{system.url('dossiers')}/v1/dossiers/{numero}"
    await until_granted(client, lookup, holder["headers"], 30)

    async def provisioned() -> str | None:
        detail = await read(granted)
        return detail["grant_id"] if detail["state"] == "provisioned" else None

    grant_id = await eventually(provisioned, within=30, interval=0.5)

    # A grant ending within 30 days gets one renewal request (however many passes the scheduler makes).
    async def renewals() -> list[str]:
        r = await client.get(
            f"{access}/v1/access-requests", params={"limit": 200}, headers=await logins.headers(partner)
        )
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"] if i["kind"] == "renewal"]

    await eventually(renewals, within=30, interval=0.5)

    # Two minutes before midnight in Paris (CDAP's civil day, every service's) on the grant's last day:
    # still valid.
    last_day = today + timedelta(days=1)
    clock.set(datetime.combine(last_day, clock_time(23, 58), PARIS))
    token = await logins.headers(holder)
    await until_granted(client, lookup, token, 30)

    # Thirty seconds past midnight: identity's sweep expires the grant, and dossiers refuses the same
    # (still unexpired) token within seconds; access-requests shows the request expired.
    clock.set(datetime.combine(last_day + timedelta(days=1), clock_time(0, 0, 30), PARIS))

    async def refused() -> httpx.Response | None:
        r = await client.get(lookup, params={"motif": "accompagnement_social"}, headers=token)
        assert r.status_code in (200, 403), r.text
        return r if r.status_code == 403 else None

    denied = await eventually(refused, within=60, interval=0.2)
    assert denied.json()["reason"] == "no_grant_for_department"

    # Dossiers refuses on the date itself; identity's sweep marks the grant expired within its interval.
    async def expired_at_identity() -> bool:
        grants = await client.get(
            f"{identity}/v1/grants", params={"user": holder["user_id"]}, headers=await logins.headers(manager)
        )
        return [(g["id"], g["status"]) for g in grants.json()] == [(grant_id, "expired")]

    await eventually(expired_at_identity, within=30, interval=0.5)

    async def request_expired() -> bool:
        return (await read(granted))["state"] == "expired"

    await eventually(request_expired, within=60, interval=0.5)
    assert len(await renewals()) == 1

    def actions(detail: dict[str, Any]) -> list[str]:
        return [h["action"] for h in detail["history"]]

    # Five calendar days on, but not five business days: no reminder yet.
    moment = clock.set(noon(today + timedelta(days=5)))
    await eventually(lambda: scheduler_passes_since(scheduler_log, moment), within=60, interval=0.5)
    detail = await read(waiting)
    assert detail["state"] == "submitted" and not detail["overdue"]
    assert "reminded" not in actions(detail) and "escalated" not in actions(detail)
    assert (await read(documents))["state"] == "documents_requested"

    # On the due date: the instructors' queue is reminded, once.
    moment = clock.set(noon(due))

    async def reminded() -> dict[str, Any] | None:
        detail = await read(waiting)
        return detail if "reminded" in actions(detail) else None

    detail = await eventually(reminded, within=60, interval=0.5)
    await eventually(lambda: scheduler_passes_since(scheduler_log, moment), within=60, interval=0.5)
    assert actions(await read(waiting)).count("reminded") == 1
    assert "escalated" not in actions(await read(waiting))

    async def reminder_mail() -> list[str]:
        return mails_about("instruction-caf76@cdap.local", waiting, "Rappel")

    assert len(await eventually(reminder_mail, within=30, interval=0.5)) == 1

    # The next day it is late: escalated to the department's managers, once.
    moment = clock.set(noon(due + timedelta(days=1)))

    async def escalated() -> dict[str, Any] | None:
        detail = await read(waiting)
        return detail if "escalated" in actions(detail) else None

    detail = await eventually(escalated, within=60, interval=0.5)
    assert detail["overdue"] and detail["state"] == "submitted"

    async def escalation_mail() -> list[str]:
        return mails_about("habilitations-caf76@cdap.local", waiting, "en retard")

    assert len(await eventually(escalation_mail, within=30, interval=0.5)) == 1

    # Thirty-one days after the documents were asked for: the request expires and the partner is told.
    moment = clock.set(noon(today + timedelta(days=31)))

    async def documents_expired() -> bool:
        return (await read(documents))["state"] == "expired"

    await eventually(documents_expired, within=60, interval=0.5)

    async def expiry_mail() -> list[str]:
        return mails_about(partner["email"], documents, "expirée")

    assert len(await eventually(expiry_mail, within=30, interval=0.5)) == 1
    # Later passes act no more on the late request: one reminder, one escalation.
    await eventually(lambda: scheduler_passes_since(scheduler_log, moment), within=60, interval=0.5)
    late = actions(await read(waiting))
    assert (late.count("reminded"), late.count("escalated")) == (1, 1), late
