"""Request and response bodies of the identity API (validated: bad input is a 4xx that changes nothing)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from cdap_identity import domain

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
    family_name: Name
    given_name: Name


class Convention(Strict):
    reference: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    valid_until: date


class OrganisationCreate(Strict):
    siret: Siret
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    kind: Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,40}$")]
    department: Department
    convention: Convention
    administrators: list[Person] = Field(min_length=1, max_length=2)


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


class StaffCreate(Person):
    roles: list[
        Annotated[str, StringConstraints(pattern=r"^(caf_instructor|caf_manager|caf_admin|auditor)$")]
    ] = Field(min_length=1, max_length=4)
    department: Department


class UserPublic(BaseModel):
    id: str
    email: str
    organisation_id: str | None
    roles: list[str]
    status: str


class ActivationRequest(Strict):
    token: Annotated[str, StringConstraints(min_length=16, max_length=128)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class ActivationResult(BaseModel):
    user_id: str
    totp_secret: str | None = None
    otpauth_uri: str | None = None


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


class Me(BaseModel):
    id: str
    email: str
    organisation_id: str | None
    roles: list[str]
    grants: list[GrantPublic]


class ClientCreate(Strict):
    grant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    name: Name


class ClientCreated(BaseModel):
    client_id: str
    client_secret: str
    grant_id: str


class ClientPublic(BaseModel):
    client_id: str
    name: str
    organisation_id: str
    grant_id: str
    created_by: str
    created_at: datetime | None
    disabled: bool


class ClientRotated(ClientCreated):
    previous_secret_valid_until: datetime | None = Field(
        description="until when the previous secret still works (none: it stopped at once)"
    )


class Reason(Strict):
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
