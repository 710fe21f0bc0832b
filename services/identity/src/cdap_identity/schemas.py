"""Request and response bodies of the identity API (validated: bad input is a 4xx that changes nothing)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from cdap_identity import domain
from cdap_shared.examples import example
from cdap_shared.names import OrganisationName, PersonName

EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,185}\.[A-Za-z]{2,}$"
Email = Annotated[str, StringConstraints(pattern=EMAIL, max_length=254, strip_whitespace=True)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


def _department(code: str) -> str:
    if not domain.valid_department(code):
        raise ValueError("department must be 01-95 (not 20), 2A, 2B or 971-976")
    return code


def _siret(value: str) -> str:
    if not domain.valid_siret(value):
        raise ValueError("SIRET must be 14 digits with a valid check digit")
    return value


Department = Annotated[str, AfterValidator(_department)]
Siret = Annotated[str, AfterValidator(_siret)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Person(Strict):
    email: Email
    family_name: PersonName
    given_name: PersonName


class Convention(Strict):
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    valid_until: date


class OrganisationCreate(Strict):
    siret: Siret
    name: OrganisationName
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,40}$")]
    department: Department
    convention: Convention
    administrators: list[Person] = Field(min_length=1, max_length=2)

    model_config = example(
        {
            "siret": "35600000000048",
            "name": "CCAS de Rouen",
            "kind": "ccas",
            "department": "76",
            "convention": {"reference": "CONV-76-2026-014", "valid_until": "2028-12-31"},
            "administrators": [
                {
                    "email": "marie.durand@ccas-rouen.example",
                    "family_name": "Durand",
                    "given_name": "Marie",
                }
            ],
        }
    )


class OrganisationUpdate(Strict):
    """What the CAF may amend: name, kind, convention (renewed or amended). Omitted: unchanged."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)] | None = None
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,40}$")] | None = None
    convention: Convention | None = None

    model_config = example({"convention": {"reference": "CONV-76-2026-014-A1", "valid_until": "2029-12-31"}})


# Response examples, shared by the bodies that carry them (OpenAPI shows what an answer looks like).
ORGANISATION_EXAMPLE: JsonDict = {
    "id": "0198c3a2-6b1f-7c3e-8a2d-5f4e3b2a1c0d",
    "siret": "35600000000048",
    "name": "CCAS de Rouen",
    "kind": "ccas",
    "department": "76",
    "convention_reference": "CONV-76-2026-014",
    "convention_valid_until": "2028-12-31",
    "delegation_withdrawn": False,
    "administrators": ["0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d"],
}
USER_EXAMPLE: JsonDict = {
    "id": "0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
    "email": "marie.durand@ccas-rouen.example",
    "organisation_id": "0198c3a2-6b1f-7c3e-8a2d-5f4e3b2a1c0d",
    "roles": ["partner_admin"],
    "status": "active",
}
GRANT_EXAMPLE: JsonDict = {
    "id": "0198c3a2-7d4e-7b1a-9f00-3c5e2a1b4d6f",
    "user_id": "0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
    "organisation_id": "0198c3a2-6b1f-7c3e-8a2d-5f4e3b2a1c0d",
    "profile": "T2",
    "department": "76",
    "valid_from": "2026-01-05",
    "valid_until": "2026-12-31",
    "status": "active",
    "request_id": "0198c3a2-7c00-7e5f-8b11-2d3c4e5f6a7b",
}


class OrganisationPublic(BaseModel):
    id: str
    siret: str
    name: str
    kind: str
    department: str
    convention_reference: str
    convention_valid_until: date
    delegation_withdrawn: bool
    administrators: list[str]

    model_config = example(ORGANISATION_EXAMPLE)


class StaffCreate(Person):
    roles: list[
        Annotated[str, StringConstraints(pattern=r"^(caf_instructor|caf_manager|caf_admin|auditor)$")]
    ] = Field(min_length=1, max_length=4)
    department: Department

    model_config = example(
        {
            "email": "paul.martin@caf76.example",
            "family_name": "Martin",
            "given_name": "Paul",
            "roles": ["caf_instructor"],
            "department": "76",
        }
    )


class UserPublic(BaseModel):
    id: str
    email: str
    organisation_id: str | None
    roles: list[str]
    status: str

    model_config = example(USER_EXAMPLE)


class UserSummary(BaseModel):
    """An account as the lists show it: who (the name to display), where, and what state it is in."""

    id: str
    email: str
    family_name: str
    given_name: str
    display_name: str = Field(description="given name then family name, as pages write a person")
    organisation_id: str | None = Field(description="none: CAF staff")
    department: str | None
    roles: list[str]
    status: str = Field(description="pending (not activated yet) | active | suspended")
    locked: bool = Field(description="login refused for now after too many failures (unlock clears it)")
    must_reset_password: bool


class UsersPage(BaseModel):
    items: list[UserSummary]
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page; none on the last")

    model_config = example(
        {
            "items": [
                USER_EXAMPLE
                | {
                    "family_name": "Durand",
                    "given_name": "Marie",
                    "display_name": "Marie Durand",
                    "department": "76",
                    "locked": False,
                    "must_reset_password": False,
                }
            ],
            "next_cursor": "marie.durand@ccas-rouen.example|0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
        }
    )


class ActivationRequest(Strict):
    token: Annotated[str, StringConstraints(min_length=16, max_length=128)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=512)]

    model_config = example({"token": "q1Vx8bB7oZ3mT5rK9wL2", "password": "correct horse battery staple"})


class ActivationResult(BaseModel):
    user_id: str
    totp_secret: str | None = None
    otpauth_uri: str | None = None
    qr_svg: str | None = Field(
        default=None, description="the otpauth URI as a QR code, an inline SVG element"
    )

    model_config = example(
        {
            "user_id": "0198c3a2-7a10-7d2b-9c44-1e2f3a4b5c6d",
            "totp_secret": None,
            "otpauth_uri": None,
            "qr_svg": None,
        }
    )


Ticket = Annotated[
    str,
    StringConstraints(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$"),
    Field(description="the `enrolment_ticket` of the `totp enrolment required` answer of `POST /v1/token`"),
]


class EnrolmentStart(Strict):
    ticket: Ticket

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"ticket": "pZ2l0aHViLmNvbS9jZGFwL2lkZW50aXR5L3RpY2tldA"}]},
    )


class EnrolmentStarted(BaseModel):
    secret: str = Field(description="base32 TOTP secret (RFC 6238: SHA-1, 6 digits, 30 s), for manual entry")
    otpauth_uri: str = Field(description="the `otpauth://totp/...` URI authenticator apps read")
    qr_svg: str = Field(description="the same URI as a QR code: an inline `<svg>` element, ready for a page")
    expires_in: int = Field(description="seconds left to confirm with a first code")

    model_config = example(
        {
            "secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            "otpauth_uri": "otpauth://totp/CDAP:jules.petit%40example.fr?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=CDAP",
            "qr_svg": '<svg width="164" height="164" class="segno"><title>CDAP TOTP</title>...</svg>',
            "expires_in": 587,
        }
    )


class EnrolmentConfirm(Strict):
    ticket: Ticket
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")] = Field(
        description="the code the authenticator app shows for the new secret"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"ticket": "pZ2l0aHViLmNvbS9jZGFwL2lkZW50aXR5L3RpY2tldA", "code": "492039"}]
        },
    )


class TokenResponse(BaseModel):
    """What `POST /v1/token` answers a person who signed in (RFC 6749 §5.1)."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str

    model_config = example(
        {
            "access_token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl",
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": "r8Jt2vQn5LkX0pZc7WmA4yHb",
        }
    )


class GrantPublic(BaseModel):
    id: str
    user_id: str
    organisation_id: str
    profile: str
    department: str
    valid_from: date
    valid_until: date
    status: str
    request_id: str | None

    model_config = example(GRANT_EXAMPLE)


class Me(BaseModel):
    id: str
    email: str
    organisation_id: str | None
    roles: list[str]
    grants: list[GrantPublic]

    model_config = example(
        {
            "id": USER_EXAMPLE["id"],
            "email": USER_EXAMPLE["email"],
            "organisation_id": USER_EXAMPLE["organisation_id"],
            "roles": ["partner_staff"],
            "grants": [GRANT_EXAMPLE],
        }
    )


class ClientCreate(Strict):
    grant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    name: Name

    model_config = example(
        {"grant_id": "0198c3a2-7d4e-7b1a-9f00-3c5e2a1b4d6f", "name": "Logiciel de suivi social"}
    )


class ClientCreated(BaseModel):
    client_id: str
    client_secret: str
    grant_id: str

    model_config = example(
        {
            "client_id": "cdap-c-5f4e3b2a1c0d",
            "client_secret": "Zk3r9QpLx2VtB7nW0sYc4HdJ6mGa1uEo",
            "grant_id": GRANT_EXAMPLE["id"],
        }
    )


class ClientPublic(BaseModel):
    client_id: str
    name: str
    organisation_id: str
    grant_id: str
    created_by: str
    created_at: datetime | None
    disabled: bool

    model_config = example(
        {
            "client_id": "cdap-c-5f4e3b2a1c0d",
            "name": "Logiciel de suivi social",
            "organisation_id": GRANT_EXAMPLE["organisation_id"],
            "grant_id": GRANT_EXAMPLE["id"],
            "created_by": USER_EXAMPLE["id"],
            "created_at": "2026-03-02T09:15:00Z",
            "disabled": False,
        }
    )


class ClientRotated(ClientCreated):
    previous_secret_valid_until: datetime | None = Field(
        description="until when the previous secret still works (none: it stopped at once)"
    )

    model_config = example(
        {
            "client_id": "cdap-c-5f4e3b2a1c0d",
            "client_secret": "Qw8eR2tY6uI0oP4aS7dF1gH5jK9lZ3xC",
            "grant_id": GRANT_EXAMPLE["id"],
            "previous_secret_valid_until": "2026-03-03T09:15:00Z",
        }
    )


class Reason(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None

    model_config = example({"reason": "Départ de l'organisme"})
