"""Who is told what, by e-mail, when a request moves.

The service knows no CAF staff address: each department's instructors and managers have a
functional mailbox built from a template in the settings (`instruction-caf76@...`). The partner
side is the administrator who submitted the request (`contact_email`). Mails are queued in the
transaction of the change they report (`cdap_shared.mail.queue`), so a rolled-back change sends
nothing and a committed one is sent even if the process stops right after.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from cdap_access.config import Settings
from cdap_access.models import AccessRequest, PartnerOrganisation
from cdap_shared.mail import Mail, queue
from cdap_shared.names import mail_text

INSTRUCTORS = "instructors"
MANAGERS = "managers"
PARTNER = "partner"

# Action -> who hears of it. Decisions go to the partner; work arriving in a queue to that queue.
RECIPIENTS: dict[str, tuple[str, ...]] = {
    "submitted": (INSTRUCTORS,),
    "renewal_submitted": (INSTRUCTORS, PARTNER),
    "documents_requested": (PARTNER,),
    "stage_approved": (PARTNER, MANAGERS),
    "approved": (PARTNER,),
    "rejected": (PARTNER,),
    "withdrawn": (INSTRUCTORS,),
    "expired": (PARTNER,),
    "provisioned": (PARTNER,),
    "escalated": (MANAGERS,),
}

SUBJECTS = {
    "submitted": "Nouvelle demande d'habilitation à instruire",
    "renewal_submitted": "Demande de renouvellement d'habilitation",
    "documents_requested": "Pièces demandées pour votre demande d'habilitation",
    "documents_received": "Pièces reçues pour une demande d'habilitation",
    "stage_approved": "Demande d'habilitation validée en premier niveau",
    "approved": "Demande d'habilitation accordée",
    "rejected": "Demande d'habilitation refusée",
    "withdrawn": "Demande d'habilitation retirée par le partenaire",
    "expired": "Demande d'habilitation expirée",
    "provisioned": "Habilitation créée",
    "reminded": "Rappel : demande d'habilitation à traiter aujourd'hui",
    "escalated": "Demande d'habilitation en retard",
    "commented": "Nouveau commentaire sur une demande d'habilitation",
}


def mailbox(settings: Settings, who: str, department: str) -> str:
    template = settings.instructors_mailbox if who == INSTRUCTORS else settings.managers_mailbox
    return template.format(department=department)


def addresses(settings: Settings, row: AccessRequest, recipients: Iterable[str]) -> list[str]:
    """The addresses behind the recipient names; a request without a partner contact skips the partner."""
    found = []
    for who in recipients:
        if who == PARTNER:
            if row.contact_email:
                found.append(row.contact_email)
        else:
            found.append(mailbox(settings, who, row.department))
    return found


def stage_queue(stage: int | None) -> str:
    """The queue that owns a stage: instructors decide stage 1, managers stage 2."""
    return MANAGERS if stage == 2 else INSTRUCTORS


def body(
    settings: Settings,
    row: AccessRequest,
    action: str,
    comment: str | None,
    documents: list[str],
    organisation: str | None = None,
) -> str:
    """The mail's text: who the request is for and from which organisation (`organisation`, its name as
    identity's events told it; the id only if it is not known), then the link, then the reference."""
    applicant = row.applicant
    # Through mail_text: a stored name or job title can neither break the line nor pose as a link.
    person = mail_text(f"{applicant.get('given_name', '')} {applicant.get('family_name', '')}")
    kind = "renouvellement" if row.kind == "renewal" else "nouvelle habilitation"
    lines = [
        f"Demande d'habilitation ({kind}) pour {person}, {mail_text(str(applicant.get('job_title', '')))}",
        f"Organisme : {mail_text(organisation) if organisation else row.organisation_id}",
        f"Profil {row.profile}, département {row.department}",
        f"Échéance de l'étape : {row.due.strftime('%d/%m/%Y') if row.due else 'aucune'}",
    ]
    if documents:
        lines.append("Pièces : " + ", ".join(documents))
    if comment:
        lines.append(f"Commentaire : {comment}")
    lines += [f"Référence : {row.id}", f"{settings.portal_url}/access-requests/{row.id}"]
    return "\n".join(lines) + "\n"


async def notify(
    session: AsyncSession,
    settings: Settings,
    row: AccessRequest,
    action: str,
    *,
    recipients: Iterable[str] | None = None,
    comment: str | None = None,
    documents: list[str] | None = None,
) -> None:
    """Queue the mails `action` calls for (in the caller's transaction), naming the organisation from
    this service's own projection of identity's events."""
    if recipients is None:
        # Documents go to whoever holds the request now (instructors, or managers at stage 2).
        recipients = (
            (stage_queue(row.stage),) if action == "documents_received" else RECIPIENTS.get(action, ())
        )
    targets = addresses(settings, row, recipients)
    subject = f"[CDAP] {SUBJECTS.get(action, action)} ({row.id[-8:]})"
    known = await session.get(PartnerOrganisation, row.organisation_id)
    text = body(settings, row, action, comment, documents or [], known.name if known else None)
    for to in dict.fromkeys(targets):  # once per address, in order
        queue(session, Mail(to=to, subject=subject, body=text))
