"""The mails identity sends: activation and password-reset links (queued in the mail outbox).

Both follow one fixed template: the greeting names nobody, the link is the only link and stands alone on
its line right after the sentence that announces it, and the person's and organisation's names come only
after it, inside a sentence and through `mail_text`. Whatever a name holds, it cannot add a line, a link
or an address above the real link.
"""

from __future__ import annotations

from cdap_identity.models import User
from cdap_shared.mail import Mail
from cdap_shared.names import mail_text

_TEMPLATE = (
    "Bonjour,\n\n"
    "{announce} ouvrez ce lien (valable {hours} heures, une seule fois) :\n\n"
    "{link}\n\n"
    "Ce compte est au nom de {given_name} {family_name}, pour {held_for}.\n"
    "Si vous n'attendiez pas ce message, ignorez-le.\n"
)


def held_for(user: User, organisation_name: str | None) -> str:
    """Whom the account acts for, as its mails say it: the partner body, or the department's CAF (never
    an id: people read these mails)."""
    if user.organisation_id is None:
        return f"la CAF du département {user.department}" if user.department else "la CAF"
    return organisation_name or "votre organisme"


def _link_mail(
    user: User, subject: str, announce: str, token: str, portal_url: str, hours: int, organisation: str | None
) -> Mail:
    return Mail(
        to=user.email,
        subject=subject,
        body=_TEMPLATE.format(
            announce=announce,
            hours=hours,
            link=f"{portal_url.rstrip('/')}/activate?token={token}",
            given_name=mail_text(user.given_name),
            family_name=mail_text(user.family_name),
            held_for=mail_text(held_for(user, organisation)),
        ),
    )


def activation_mail(
    user: User, token: str, portal_url: str, hours: int, organisation: str | None = None
) -> Mail:
    """The first mail of an account: the link to choose its password. `organisation`: its organisation's
    name (a partner's account)."""
    announce = "Un compte CDAP a été créé pour vous. Pour choisir votre mot de passe,"
    return _link_mail(user, "CDAP : activez votre compte", announce, token, portal_url, hours, organisation)


def reset_mail(user: User, token: str, portal_url: str, hours: int, organisation: str | None = None) -> Mail:
    """A forced reset: the link to choose a new password. `organisation` as for `activation_mail`."""
    announce = "Votre caisse demande que vous choisissiez un nouveau mot de passe. Pour le choisir,"
    subject = "CDAP : réinitialisez votre mot de passe"
    return _link_mail(user, subject, announce, token, portal_url, hours, organisation)
