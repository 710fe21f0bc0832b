"""The mails identity sends: activation and password-reset links (queued in the mail outbox)."""

from __future__ import annotations

from cdap_identity.models import User
from cdap_shared.mail import Mail


def activation_mail(user: User, token: str, portal_url: str, hours: int) -> Mail:
    return Mail(
        to=user.email,
        subject="CDAP : activez votre compte",
        body=(
            f"Bonjour {user.given_name} {user.family_name},\n\n"
            "Un compte CDAP a été créé pour vous. Pour choisir votre mot de passe, ouvrez ce lien "
            f"(valable {hours} heures, une seule fois) :\n\n"
            f"{portal_url.rstrip('/')}/activate?token={token}\n\n"
            "Si vous n'attendiez pas ce message, ignorez-le.\n"
        ),
    )


def reset_mail(user: User, token: str, portal_url: str, hours: int) -> Mail:
    return Mail(
        to=user.email,
        subject="CDAP : réinitialisez votre mot de passe",
        body=(
            f"Bonjour {user.given_name} {user.family_name},\n\n"
            "Votre caisse demande que vous choisissiez un nouveau mot de passe. Ouvrez ce lien "
            f"(valable {hours} heures, une seule fois) :\n\n"
            f"{portal_url.rstrip('/')}/activate?token={token}\n"
        ),
    )
