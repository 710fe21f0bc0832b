"""The mails name people and organisations, not ids: the organisation from this service's projection of
identity's events, the person the request is for; the request's id stays, as a reference, with its link."""

from __future__ import annotations

import re

import pytest

from .conftest import ORG, Service, mail_with

pytestmark = pytest.mark.stack


async def test_a_request_s_mail_names_its_organisation_and_person(svc: Service) -> None:
    submission = svc.submission()
    r = await svc.client.post("/v1/access-requests", json=submission, headers=svc.partner())
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]

    mail = await mail_with(svc.mailbox("instructors"), "Nouvelle demande", request_id)
    applicant = submission["applicant"]
    assert f"pour {applicant['given_name']} {applicant['family_name']}, {applicant['job_title']}" in mail
    assert "Organisme : CCAS de Rouen" in mail and ORG not in mail
    assert f"Référence : {request_id}" in mail
    assert re.search(rf"https?://\S+/access-requests/{request_id}", mail)
