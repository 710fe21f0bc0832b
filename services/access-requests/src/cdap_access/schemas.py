"""Shapes of the HTTP bodies: what a client may send (strict) and what it gets back (for OpenAPI)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from cdap_access.domain import Decision
from cdap_shared.examples import example
from cdap_shared.names import PersonName

# Deliberately plain: one @, no spaces or brackets, a dotted domain. Deliverability is the mail
# relay's business; this only keeps obvious garbage (and header injection) out.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[^@\s<>()\[\],;:\"]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

Email = Annotated[str, StringConstraints(max_length=254, pattern=EMAIL_PATTERN)]
Comment = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
DocumentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ApplicantIn(Strict):
    family_name: PersonName
    given_name: PersonName
    email: Email
    job_title: str = Field(min_length=1, max_length=200)


class SubmissionIn(Strict):
    organisation_id: str = Field(min_length=1, max_length=64)
    applicant: ApplicantIn
    profile: str = Field(min_length=1, max_length=20, description="a profile of the catalogue (T1, T2, ...)")
    department: str = Field(min_length=2, max_length=3, description="01-95 (not 20), 2A, 2B, 971-976")
    justification: str = Field(min_length=1, max_length=2000)
    valid_until: date = Field(description="after today, at most one year from today")
    contact_email: Email | None = Field(
        default=None, description="where decisions are mailed when the token carries no `email` claim"
    )

    model_config = example(
        {
            "organisation_id": "0198c3a2-7d4e-7b1a-9f00-3c5e2a1b4d6f",
            "applicant": {
                "family_name": "Lefebvre",
                "given_name": "Claire",
                "email": "claire.lefebvre@ccas-rouen.example",
                "job_title": "Assistante sociale",
            },
            "profile": "T2",
            "department": "76",
            "justification": "Accompagnement social des familles suivies par le CCAS.",
            "valid_until": "2027-06-30",
        }
    )


class DecisionIn(Strict):
    decision: Decision
    comment: Comment | None = Field(default=None, description="required to reject: the reason")
    documents: list[DocumentName] = Field(
        default_factory=list, max_length=20, description="required to request documents: which ones"
    )

    model_config = example({"decision": "approve"})


class WithdrawIn(Strict):
    comment: Comment | None = None

    model_config = example({"comment": "Demande faite en double."})


class CommentIn(Strict):
    text: Comment

    model_config = example({"text": "La convention signée est jointe."})


class RemovalIn(Strict):
    comment: Comment | None = None

    model_config = example({"comment": "Départ de l'agent le 31 mars."})


# Response examples (OpenAPI shows what an answer looks like).
REQUEST_EXAMPLE: JsonDict = {
    "id": "0198c3a2-7c00-7e5f-8b11-2d3c4e5f6a7b",
    "kind": "new",
    "state": "submitted",
    "stage": 1,
    "due": "2026-03-09",
    "overdue": False,
    "business_days_left": 5,
    "organisation_id": "0198c3a2-6b1f-7c3e-8a2d-5f4e3b2a1c0d",
    "organisation_name": "CCAS de Rouen",
    "organisation_siret": "35600000000048",
    "profile": "T2",
    "department": "76",
    "applicant": {
        "family_name": "Petit",
        "given_name": "Jules",
        "email": "jules.petit@ccas-rouen.example",
        "job_title": "Travailleur social",
    },
    "valid_until": "2027-03-01",
    "submitted_at": "2026-03-02T09:15:00+00:00",
}

REQUEST_DETAIL_EXAMPLE: JsonDict = REQUEST_EXAMPLE | {
    "version": 1,
    "justification": "Suivi des familles accompagnées par le CCAS.",
    "renews_grant_id": None,
    "grant_id": None,
    "requested_documents": [],
    "documents": [
        {
            "id": "0198c3a2-7c10-7a2b-8c3d-4e5f6a7b8c9d",
            "filename": "convention.pdf",
            "size": 182044,
            "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "uploaded_at": "2026-03-02T09:16:00+00:00",
        }
    ],
    "history": [
        {
            "at": "2026-03-02T09:15:00+00:00",
            "actor": "0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
            "action": "submitted",
            "stage": 1,
            "comment": None,
            "documents": [],
        }
    ],
}
PROFILES_EXAMPLE: JsonDict = {
    "profiles": {
        "T1": {"label": "Instruction des prestations", "sensitive": True},
        "T2": {"label": "Accompagnement social", "sensitive": False},
    }
}


class RequestState(BaseModel):
    id: str
    state: str
    stage: int | None
    due: date | None
    version: int

    model_config = example(
        {
            "id": REQUEST_EXAMPLE["id"],
            "state": "submitted",
            "stage": 1,
            "due": "2026-03-09",
            "version": 1,
        }
    )


class QueuePage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int

    model_config = example({"items": [REQUEST_EXAMPLE], "next_cursor": None, "total": 1})


class RemovalOut(BaseModel):
    id: str
    grant_id: str
    requested_by: str
    requested_at: str
    state: str

    model_config = example(
        {
            "id": "0198c3a3-0a1b-7c2d-8e3f-4a5b6c7d8e9f",
            "grant_id": "0198c3a2-7d4e-7b1a-9f00-3c5e2a1b4d6f",
            "requested_by": "0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
            "requested_at": "2026-03-02T09:15:00+00:00",
            "state": "requested",
        }
    )
