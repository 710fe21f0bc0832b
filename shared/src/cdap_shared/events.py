"""Pydantic models for the `data` of every CDAP event type, and the topic each type travels on.

One subject's events share a Kafka key (request id, user id, dossier numero) so they keep their order.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from cdap_shared.envelope import CloudEvent

Department = str  # "01".."95", "2A", "2B", "971".."976" — validated where it is entered
Severity = Literal["info", "warning", "critical"]


class EventData(BaseModel):
    """Base of every payload: unknown fields are refused so a malformed event goes to the DLQ."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, row: object, **given: Any) -> Self:
        """This payload reporting `row`: each field read from `row`'s attribute of the same name, unless
        `given` (fields named otherwise on the row, or facts it does not hold). Validated like any other."""
        names = (name for name in cls.model_fields if name not in given and hasattr(row, name))
        return cls.model_validate({name: getattr(row, name) for name in names} | given)


# ----------------------------------------------------------------- identity.events
class UserProvisioned(EventData):
    user_id: str
    organisation_id: str | None = None
    roles: list[str]
    department: Department | None = None
    request_id: str | None = None
    # Who the account is, for the audit's directory (names shown beside ids, alert mails to auditors).
    # Optional: events published before these fields existed carry none.
    email: str | None = None
    family_name: str | None = None
    given_name: str | None = None


class UserRef(EventData):
    user_id: str
    by: str | None = None
    reason: str | None = None


class UserLocked(EventData):
    user_id: str
    until: datetime | None = None
    permanent: bool = False


class LoginSucceeded(EventData):
    user_id: str
    method: Literal["password", "client_credentials", "refresh_token"]
    client_ip: str | None = None


class LoginFailed(EventData):
    user_id: str | None = None  # unknown accounts are recorded without an id
    method: Literal["password", "client_credentials", "refresh_token"]
    reason: str
    client_ip: str | None = None


class GrantIssued(EventData):
    grant_id: str
    user_id: str
    organisation_id: str
    organisation_siret: str
    profile: str
    department: Department
    valid_from: date
    valid_until: date
    request_id: str | None = None


class GrantEnded(EventData):
    grant_id: str
    user_id: str
    by: str | None = None
    reason: str | None = None
    request_id: str | None = None


class ClientChanged(EventData):
    """A partner-system client created, its secret rotated, disabled or deleted (key: the client id)."""

    client_id: str
    organisation_id: str
    grant_id: str
    by: str | None = None
    reason: str | None = None


class OrganisationRegistered(EventData):
    """A partner organisation as the CAF registered it (other services keep a projection of it)."""

    organisation_id: str
    siret: str
    name: str
    kind: str
    department: Department
    convention_reference: str
    convention_valid_until: date
    administrators: list[str] = Field(default_factory=list)  # user ids of its partner administrators
    delegation_withdrawn: bool = False


# ----------------------------------------------------------------- access.events
class Applicant(EventData):
    family_name: str = Field(min_length=1, max_length=100)
    given_name: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=254)
    job_title: str = Field(min_length=1, max_length=200)


class RequestFacts(EventData):
    """What a submitted or approved request says: who asks for which profile, where, until when."""

    request_id: str
    organisation_id: str
    applicant: Applicant
    profile: str
    department: Department
    valid_until: date
    by: str
    kind: Literal["new", "renewal"] = "new"
    renews_grant_id: str | None = None  # a renewal: the grant it follows, which runs to its own end


class RequestSubmitted(RequestFacts):
    """A request filed (by a partner administrator, or by the scheduler for a renewal)."""


class RequestDecision(EventData):
    """A step taken on a request: who, at which stage, with what comment."""

    request_id: str
    by: str | None = None
    stage: int | None = None
    comment: str | None = None
    documents: list[str] = Field(default_factory=list)


class RequestApproved(RequestFacts):
    """The last stage approved it: identity provisions the account (if new) and issues the grant."""


class RevocationRequested(EventData):
    """A partner administrator asked (and the CAF accepted) that a grant be removed."""

    request_id: str
    grant_id: str
    user_id: str
    by: str
    comment: str | None = None


# ----------------------------------------------------------------- dossier.consultations
Decision = Literal["granted", "denied", "not_found", "rate_limited"]


class Consultation(EventData):
    """What a lookup and a search both record: who asked, under which grant and motive, and the answer."""

    actor: str
    organisation_id: str | None = None
    profile: str | None = None
    grant_id: str | None = None
    motif: str | None = None
    decision: Decision
    reason: str | None = None
    policy_version: str | None = None
    client_ip: str | None = None
    trace_id: str | None = None


class DossierConsulted(Consultation):
    numero: str
    sections: list[str] = Field(default_factory=list)


class DossierSearched(Consultation):
    criteria: list[str]  # which criteria were used, never their values (NIR, phone)
    numeros: list[str] = Field(default_factory=list)


# ----------------------------------------------------------------- caf.dossiers
class DossierUpserted(EventData):
    numero: str = Field(pattern=r"^\d{7}$")
    nir: str = Field(min_length=15, max_length=15)
    department: Department
    version: int = Field(ge=1)
    opposition: bool = False
    landlord_siret: str | None = None
    rsa_referent_siret: str | None = None
    sections: dict[str, Any]


# ----------------------------------------------------------------- audit.*
class AlertRaised(EventData):
    alert_id: str
    rule: str
    severity: Severity
    actor: str | None = None
    organisation_id: str | None = None
    detail: str


class AlertReviewed(EventData):
    """An auditor acknowledged or closed an alert (the comment stays in the audit's own table)."""

    alert_id: str
    by: str


class CheckpointSigned(EventData):
    origin: str
    tree_size: int
    root_hash: str
    note: str


EVENT_DATA: dict[str, type[EventData]] = {
    "identity.user.provisioned": UserProvisioned,
    "identity.user.activated": UserRef,
    "identity.user.suspended": UserRef,
    "identity.user.reinstated": UserRef,
    "identity.user.totp_enrolled": UserRef,
    "identity.user.locked": UserLocked,
    "identity.user.reset_required": UserRef,
    "identity.user.reset_completed": UserRef,
    "identity.user.activation_resent": UserRef,
    "identity.login.succeeded": LoginSucceeded,
    "identity.login.failed": LoginFailed,
    "identity.organisation.registered": OrganisationRegistered,
    "identity.organisation.updated": OrganisationRegistered,
    "identity.grant.issued": GrantIssued,
    "identity.grant.revoked": GrantEnded,
    "identity.grant.expired": GrantEnded,
    "identity.client.created": ClientChanged,
    "identity.client.rotated": ClientChanged,
    "identity.client.disabled": ClientChanged,
    "identity.client.deleted": ClientChanged,
    "access.request.submitted": RequestSubmitted,
    "access.request.documents_requested": RequestDecision,
    "access.request.documents_received": RequestDecision,
    "access.request.stage_approved": RequestDecision,
    "access.request.approved": RequestApproved,
    "access.request.rejected": RequestDecision,
    "access.request.withdrawn": RequestDecision,
    "access.request.expired": RequestDecision,
    "access.request.escalated": RequestDecision,
    "access.request.reminded": RequestDecision,
    "access.grant.revocation_requested": RevocationRequested,
    "dossier.consulted": DossierConsulted,
    "dossier.searched": DossierSearched,
    "caf.dossier.upserted": DossierUpserted,
    "audit.alert.raised": AlertRaised,
    "audit.alert.acknowledged": AlertReviewed,
    "audit.alert.closed": AlertReviewed,
    "audit.checkpoint.signed": CheckpointSigned,
}

_TOPIC_BY_PREFIX = (
    ("identity.", "identity.events"),
    ("access.", "access.events"),
    ("dossier.", "dossier.consultations"),
    ("caf.", "caf.dossiers"),
    ("audit.alert.", "audit.alerts"),
    ("audit.checkpoint.", "audit.checkpoints"),
)

TOPICS: tuple[str, ...] = tuple(topic for _, topic in _TOPIC_BY_PREFIX)


class UnknownEventType(ValueError):
    """An event type that no model describes."""


def topic_for(event_type: str) -> str:
    """The topic an event type is published on."""
    for prefix, topic in _TOPIC_BY_PREFIX:
        if event_type.startswith(prefix):
            return topic
    raise UnknownEventType(event_type)


def dlq_for(topic: str) -> str:
    return f"{topic}.dlq"


def make_event(event_type: str, *, source: str, subject: str, data: EventData) -> CloudEvent:
    """Build an envelope, checking that `data` is the model registered for `event_type`."""
    model = EVENT_DATA.get(event_type)
    if model is None:
        raise UnknownEventType(event_type)
    if not isinstance(data, model):
        raise TypeError(f"{event_type} carries {model.__name__}, not {type(data).__name__}")
    return CloudEvent(type=event_type, source=source, subject=subject, data=data.model_dump(mode="json"))


def parse_data(event: CloudEvent) -> EventData:
    """Validate an event's payload against its type's model (raises on unknown type or bad data)."""
    model = EVENT_DATA.get(event.type)
    if model is None:
        raise UnknownEventType(event.type)
    return model.model_validate(event.data)
