"""The mails that tell auditors of alerts: one per critical alert, one daily digest of warnings. Pure.

Same template rule as identity's mails: a greeting naming nobody, the announcing sentence, the
portal's link alone on its line, and only then the alert's facts; names (which came by event) pass
through `mail_text`, so none can add a line, a link or a host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from cdap_shared.clock import CIVIL_ZONE
from cdap_shared.mail import Mail
from cdap_shared.names import mail_text

ALERTS_PAGE = "/audit/alertes"


@dataclass(frozen=True)
class AlertNotice:
    """An alert as a mail tells it."""

    alert_id: str
    rule: str
    severity: str
    detail: str
    event_time: datetime
    actor: str | None
    actor_name: str | None
    organisation_name: str | None


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _facts(notice: AlertNotice) -> list[str]:
    when = notice.event_time.astimezone(CIVIL_ZONE).strftime("%d/%m/%Y %H:%M")
    who = notice.actor or "inconnu"
    if notice.actor_name:
        who = f"{mail_text(notice.actor_name)} ({who})"
    lines = [
        f"Règle : {_one_line(notice.rule)} ({notice.severity})",
        f"Détail : {_one_line(notice.detail)}",
        f"Événement du {when} (heure de Paris)",
        f"Compte : {who}",
    ]
    if notice.organisation_name:
        lines.append(f"Organisation : {mail_text(notice.organisation_name)}")
    return [*lines, f"Alerte : {notice.alert_id}"]


def critical_mail(to: str, notice: AlertNotice, portal_url: str) -> Mail:
    """Sent at once to each auditor of the alert's department."""
    body = [
        "Bonjour,",
        "",
        "Une alerte critique a été levée dans le journal d'audit de CDAP. Pour l'examiner et l'acquitter :",
        "",
        portal_url.rstrip("/") + ALERTS_PAGE,
        "",
        *_facts(notice),
    ]
    subject = f"CDAP : alerte critique ({_one_line(notice.rule)})"
    return Mail(to=to, subject=subject[:200], body="\n".join(body) + "\n")


def digest_mail(to: str, notices: Sequence[AlertNotice], day: date, portal_url: str) -> Mail:
    """The day's warnings of the auditor's department, in one mail."""
    body = [
        "Bonjour,",
        "",
        f"{len(notices)} alerte(s) de niveau avertissement attendent un examen dans le journal d'audit"
        " de CDAP. Pour les examiner :",
        "",
        portal_url.rstrip("/") + ALERTS_PAGE,
    ]
    for notice in notices:
        body += ["", *_facts(notice)]
    subject = f"CDAP : synthèse des alertes du {day.strftime('%d/%m/%Y')}"
    return Mail(to=to, subject=subject, body="\n".join(body) + "\n")
