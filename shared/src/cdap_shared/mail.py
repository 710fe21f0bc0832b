"""Outgoing e-mail over SMTP (`CDAP_SMTP_URL`, e.g. `smtp://127.0.0.1:1025`), shared by the services.

Sending happens in a worker thread (smtplib is blocking). A failure is logged and reported to the
caller. Mails decided inside a transaction go through the mail outbox (`queue` + `MailRelay`), so
a mail is sent if and only if its transaction committed.
"""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import urlsplit

import structlog
from sqlalchemy import BigInteger, Column, DateTime, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import Field, SQLModel, col

from cdap_shared.periodic import Periodic

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str
    # Stable across resends of the same queued mail, so a mailbox shows a repeated delivery once.
    message_id: str | None = None


class Mailer:
    """Sends plain-text mails from `sender` through the SMTP server named by `url`."""

    def __init__(self, url: str, sender: str = "CDAP <no-reply@cdap.caf.fr>", timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"CDAP_SMTP_URL must be smtp:// or smtps://, not {parts.scheme!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.tls = parts.scheme == "smtps"
        self.username, self.password = parts.username, parts.password
        self.sender = sender
        self.timeout = timeout

    def _send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        if mail.message_id:
            message["Message-ID"] = mail.message_id
        message.set_content(mail.body)
        smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        with smtp_class(self.host, self.port, timeout=self.timeout) as smtp:
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(message)

    async def send(self, mail: Mail) -> bool:
        """Send one mail; returns False (and logs why, without the body) if the server refused it."""
        try:
            await asyncio.to_thread(self._send, mail)
            return True
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("mail not sent", subject=mail.subject, error=type(exc).__name__)
            return False


class QueuedMail(SQLModel, table=True):
    """A mail decided inside a transaction and sent after it commits (a mail outbox)."""

    __tablename__ = "mail_outbox"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    to: str = Field(max_length=254)
    subject: str = Field(max_length=200)
    body: str
    attempts: int = 0
    created_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now(), nullable=False)
    )
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


def message_id(row: QueuedMail) -> str:
    """The queued mail's Message-ID: its row id and creation time, unique per service database."""
    stamp = int(row.created_at.timestamp() * 1_000_000) if row.created_at else 0
    return f"<{row.id}.{stamp}@cdap.caf.fr>"


def queue(session: AsyncSession, mail: Mail) -> None:
    """Send `mail` once the caller's transaction commits (never if it rolls back)."""
    session.add(QueuedMail(to=mail.to, subject=mail.subject, body=mail.body))


class MailRelay:
    """Sends queued mails; a refused one is retried a few times, then left for an operator."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], mailer: Mailer, interval: float = 0.5
    ) -> None:
        self.sessions = sessions
        self.mailer = mailer
        self.interval = interval

    def periodic(self) -> Periodic:
        """The job a service runs for its lifespan: send what is queued every `interval` seconds, and
        again at once after a round that sent mails, so a backlog is not sent one batch per period."""
        return Periodic("mail-relay", self.send_pending, self.interval, drain=True)

    async def send_pending(self, max_attempts: int = 5, batch: int = 50) -> int:
        """Send up to `batch` queued mails; returns how many were tried.

        Each mail is marked sent in its own transaction right after the SMTP server took it: a crash can
        repeat only the one mail in flight (SMTP cannot be exactly-once), and that repeat carries the
        same Message-ID. A refused mail ends the round, to be retried after the interval.
        """
        tried = 0
        while tried < batch:
            async with self.sessions() as session, session.begin():
                row = (
                    (
                        await session.execute(
                            select(QueuedMail)
                            .where(col(QueuedMail.sent_at).is_(None), col(QueuedMail.attempts) < max_attempts)
                            .order_by(col(QueuedMail.id))
                            .limit(1)
                            .with_for_update(skip_locked=True)
                        )
                    )
                    .scalars()
                    .first()
                )
                if row is None:
                    return tried
                tried += 1
                if await self.mailer.send(Mail(row.to, row.subject, row.body, message_id=message_id(row))):
                    row.sent_at = datetime.now(UTC)
                else:
                    row.attempts += 1
                    return tried
        return tried
