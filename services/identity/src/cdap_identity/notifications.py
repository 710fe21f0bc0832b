"""The mails identity sends: activation and password-reset links (queued in the mail outbox).

Both follow one fixed template: the greeting names nobody, the link is the only link and stands alone on
its line right after the sentence that announces it, and the person's name comes only after it, inside
a sentence and through `mail_text`. Whatever a name holds, it cannot add a line, a link or an address
above the real link.
"""

from __future__ import annotations

from cdap_identity.models import User
from cdap_shared.mail import Mail
from cdap_shared.names import mail_text

_TEMPLATE = (
    "Bonjour,\n\n"
    "{announce} ouvrez ce lien (valable {hours} heures, une seule fois) :\n\n"
    "{link}\n\n"
    "Ce compte est au nom de {given_name} {family_name}.\n"
    "Si vous n'attendiez pas ce message, ignorez-le.\n"
)


def _link_mail(user: User, subject: str, announce: str, token: str, portal_url: str, hours: int) -> Mail:
    return Mail(
        to=user.email,
        subject=subject,
        body=_TEMPLATE.format(
            announce=announce,
            hours=hours,
            link=f"{portal_url.rstrip('/')}/activate?token={token}",
            given_name=mail_text(user.given_name),
            family_name=mail_text(user.family_name),
        ),
    )


def activation_mail(user: User, token: str, portal_url: str, hours: int) -> Mail:
    """The first mail of an account: the link to choose its password."""
    announce = "Un compte CDAP a été créé pour vous. Pour choisir votre mot de passe,"
    return _link_mail(user, "CDAP : activez votre compte", announce, token, portal_url, hours)


def reset_mail(user: User, token: str, portal_url: str, hours: int) -> Mail:
    """A forced reset: the link to choose a new password."""
    announce = "Votre caisse demande que vous choisissiez un nouveau mot de passe. Pour le choisir,"
    return _link_mail(user, "CDAP : réinitialisez votre mot de passe", announce, token, portal_url, hours)
