"""The mail outbox: a crash repeats at most the one mail in flight, with the same Message-ID, and the
local sink (like a mailbox) keeps one copy per Message-ID."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from cdap_cli.mailsink import EmlWriter
from cdap_shared.db import create_engine, create_tables, session_factory
from cdap_shared.mail import Mail, Mailer, MailRelay, QueuedMail, queue
from cdap_testing import free_port

pytestmark = pytest.mark.stack


class Crash(Exception):
    """Stands for the process dying right after the SMTP server accepted a mail."""


class RecordingMailer(Mailer):
    """Takes every mail; raises once, after taking the `crash_after`-th one (before the commit)."""

    def __init__(self, crash_after: int | None = None) -> None:
        super().__init__("smtp://127.0.0.1:1")
        self.sent: list[Mail] = []
        self.crash_after = crash_after

    async def send(self, mail: Mail) -> bool:
        self.sent.append(mail)
        if self.crash_after is not None and len(self.sent) == self.crash_after:
            self.crash_after = None
            raise Crash
        return True


async def _relay_with_mails(
    make_database: Callable[[], Awaitable[str]], count: int
) -> tuple[MailRelay, AsyncEngine]:
    url = await make_database()
    metadata = MetaData()
    QueuedMail.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    engine = create_engine(url, 2)
    await create_tables(engine, metadata)
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        for i in range(count):
            queue(session, Mail(f"agent{i}@example.fr", f"Sujet {i}", "Bonjour"))
    return MailRelay(sessions, RecordingMailer()), engine


async def test_a_crash_repeats_only_the_mail_in_flight_with_the_same_message_id(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    relay, engine = await _relay_with_mails(make_database, 5)
    mailer = RecordingMailer(crash_after=3)
    relay.mailer = mailer
    try:
        with pytest.raises(Crash):
            await relay.send_pending()
        assert await relay.send_pending() == 3  # the one in flight again, then the two left
        recipients = [m.to for m in mailer.sent]
        assert recipients == [f"agent{i}@example.fr" for i in (0, 1, 2, 2, 3, 4)]
        assert mailer.sent[2].message_id == mailer.sent[3].message_id
        assert len({m.message_id for m in mailer.sent}) == 5
        async with relay.sessions() as session:
            unsent = (
                await session.execute(select(QueuedMail).where(col(QueuedMail.sent_at).is_(None)))
            ).all()
        assert unsent == []
    finally:
        await engine.dispose()


async def test_a_refused_mail_is_retried_later_not_in_a_tight_loop(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    relay, engine = await _relay_with_mails(make_database, 2)

    class Refusing(RecordingMailer):
        async def send(self, mail: Mail) -> bool:
            self.sent.append(mail)
            return False

    relay.mailer = Refusing()
    try:
        assert await relay.send_pending() == 1
        async with relay.sessions() as session:
            attempts = (
                (await session.execute(select(QueuedMail.attempts).order_by(QueuedMail.id))).scalars().all()
            )
        assert list(attempts) == [1, 0]
    finally:
        await engine.dispose()


async def test_the_sink_keeps_one_copy_per_message_id(tmp_path: Path) -> None:
    port = free_port()
    controller = Controller(EmlWriter(tmp_path), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = Mailer(f"smtp://127.0.0.1:{port}")
        first = Mail("a@example.fr", "Activation", "Lien", message_id="<7.1@cdap.caf.fr>")
        assert await mailer.send(first)
        assert await mailer.send(first)  # the repeat a crash causes
        assert await mailer.send(Mail("a@example.fr", "Rappel", "Texte", message_id="<8.1@cdap.caf.fr>"))
        assert await mailer.send(Mail("a@example.fr", "Sans id", "Texte"))
        await asyncio.sleep(0.1)
        stored = sorted(tmp_path.glob("*.eml"))
        subjects = [message_from_bytes(p.read_bytes())["Subject"] for p in stored]
        assert subjects == ["Activation", "Rappel", "Sans id"]
    finally:
        controller.stop()
