"""What identity's mails say of whom an account acts for."""

from __future__ import annotations

from cdap_identity.models import User
from cdap_identity.notifications import activation_mail, reset_mail


def test_a_caf_staff_mail_names_the_department_s_caf_and_no_id() -> None:
    staff = User(id="u-9", email="agent@caf76.fr", family_name="Martin", given_name="Léa", department="76")
    for mail in (
        activation_mail(staff, "t" * 32, "https://cdap.test", 72),
        reset_mail(staff, "t" * 32, "https://cdap.test", 72),
    ):
        assert "Ce compte est au nom de Léa Martin, pour la CAF du département 76." in mail.body
        assert "u-9" not in mail.body


def test_a_partner_mail_without_its_organisation_s_name_shows_no_id() -> None:
    partner = User(
        id="u-8", email="a@b.fr", family_name="Petit", given_name="Jules", organisation_id="org-42"
    )
    body = activation_mail(partner, "t" * 32, "https://cdap.test", 72).body
    assert "pour votre organisme." in body and "org-42" not in body
