"""The access-request workflow as a pure state machine: states, stages, and who may do what.

No I/O here: the service layer loads a request's `Facts`, asks a function below for the `Step` a
command leads to (or gets a `Refused` of the kind that says why, with a machine-readable reason), and writes
the step, its history entry and its event in one transaction.

    submitted --request_documents--> documents_requested --documents_received--> submitted
    submitted --approve (sensitive)--> awaiting_second_approval --approve (another person)--> approved
    submitted --approve (other profiles)--> approved --grant issued--> provisioned
    provisioned --grant revoked--> revoked;  provisioned --grant expired--> expired
    any open state --reject--> rejected | --withdraw--> withdrawn
    documents_requested --30 days without documents--> expired
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from cdap_access.calendar import add_years
from cdap_shared import refusals
from cdap_shared.actor import Actor
from cdap_shared.refusals import Refused as Refused  # the domain's refusals, which callers catch


class State(StrEnum):
    SUBMITTED = "submitted"
    DOCUMENTS_REQUESTED = "documents_requested"
    AWAITING_SECOND_APPROVAL = "awaiting_second_approval"
    APPROVED = "approved"
    PROVISIONED = "provisioned"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    REVOKED = "revoked"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_DOCUMENTS = "request_documents"


# Open: the CAF or the partner still has something to do. Final: nothing ever changes again.
OPEN = frozenset({State.SUBMITTED, State.DOCUMENTS_REQUESTED, State.AWAITING_SECOND_APPROVAL})
FINAL = frozenset({State.REJECTED, State.WITHDRAWN, State.EXPIRED, State.REVOKED})
STAGE_OF = {State.SUBMITTED: 1, State.DOCUMENTS_REQUESTED: 1, State.AWAITING_SECOND_APPROVAL: 2}
STAGE_ROLE = {1: "caf_instructor", 2: "caf_manager"}
PARTNER_ADMIN = "partner_admin"
APPROVER_ROLES = frozenset(STAGE_ROLE.values())
STAFF_READER_ROLES = APPROVER_ROLES | {"caf_admin"}


def awaiting_decision_states(roles: frozenset[str] | set[str]) -> list[State]:
    """The states in which a request waits for a decision of someone holding `roles` (their stages'
    states; a request whose documents are awaited waits for the partner, not for them)."""
    return [
        state
        for state in (State.SUBMITTED, State.AWAITING_SECOND_APPROVAL)
        if STAGE_ROLE[STAGE_OF[state]] in roles
    ]


# Metropolitan 01-95 without 20 (split into 2A and 2B in 1976), Corsica, and the overseas CAFs.
DEPARTMENTS = frozenset(
    [f"{n:02d}" for n in range(1, 96) if n != 20] + ["2A", "2B"] + [str(n) for n in range(971, 977)]
)

# The event each action publishes; provisioned, revoked and grant_expired follow identity's events
# and publish nothing of their own.
EVENT_TYPES = {
    action: f"access.request.{action}"
    for action in (
        "submitted",
        "documents_requested",
        "documents_received",
        "stage_approved",
        "approved",
        "rejected",
        "withdrawn",
        "expired",
    )
}


class NotPermitted(refusals.NotPermitted):
    """Not for this actor: its role, organisation or department, its own request, or four eyes."""


class Conflict(refusals.Conflict):
    """Not now: the request is closed, waits for something else, changed meanwhile, or is a duplicate."""


class Invalid(refusals.Invalid):
    """Not as asked: the organisation, department, profile, dates or comment break a rule."""


class Unknown(refusals.Unknown):
    """No such request, grant or document."""


class DocumentTooLarge(Refused):
    """A document over the size limit."""


class NotAPdf(Refused):
    """A document that is not a PDF at all."""


class UnreadablePdf(Refused):
    """A PDF that cannot be read: damaged, encrypted, or without a page."""


class ActivePdfContent(Refused):
    """A PDF carrying JavaScript or actions a viewer would run."""


@dataclass(frozen=True)
class Facts:
    """What the rules need to know about a request; `approvals` lists who approved each stage."""

    state: State
    department: str
    organisation_id: str
    submitted_by: str
    sensitive: bool
    approvals: tuple[str, ...] = ()
    applicant_email: str | None = None  # lower-cased
    applicant_user_id: str | None = None  # known for renewals and once the account exists


@dataclass(frozen=True)
class Step:
    """The outcome of an allowed command: what happened, at which stage, and the request after it."""

    action: str
    stage: int | None
    after: Facts

    @property
    def event_type(self) -> str | None:
        return EVENT_TYPES.get(self.action)


@dataclass(frozen=True)
class Organisation:
    """A partner organisation as identity last described it."""

    organisation_id: str
    department: str
    convention_valid_until: date
    administrators: frozenset[str]
    delegation_withdrawn: bool


def stage_of(state: State) -> int | None:
    return STAGE_OF.get(state)


def _check_partner(facts: Facts, actor: Actor) -> None:
    if PARTNER_ADMIN not in actor.roles:
        raise NotPermitted("role_not_allowed", "Only a partner administrator may do this.")
    if actor.org != facts.organisation_id:
        raise NotPermitted("not_your_organisation", "This request belongs to another organisation.")


def _check_staff(facts: Facts, actor: Actor, roles: frozenset[str]) -> None:
    if not actor.roles & roles:
        raise NotPermitted("role_not_allowed", "Your role does not allow this.")
    if actor.department != facts.department:
        raise NotPermitted("other_department", "This request belongs to another department's CAF.")


def check_reader(facts: Facts, actor: Actor) -> None:
    """May `actor` see the request, its documents, and comment on it? Raises `Refused` if not."""
    if PARTNER_ADMIN in actor.roles and actor.org is not None:
        _check_partner(facts, actor)
    else:
        _check_staff(facts, actor, STAFF_READER_ROLES)


def _check_open(facts: Facts) -> None:
    if facts.state not in OPEN:
        raise Conflict("request_closed", f"The request is {facts.state.value}; it can no longer change.")


def decide(
    facts: Facts,
    actor: Actor,
    decision: Decision,
    *,
    comment: str | None = None,
    documents: tuple[str, ...] = (),
) -> Step:
    """An approver's decision; the request's state says which stage it is for.

    Checks run from who the actor is to what the request allows: department, own request, own
    organisation, four eyes, open state, stage role, then the decision's own requirements.
    """
    _check_staff(facts, actor, APPROVER_ROLES)
    if actor.sub == facts.applicant_user_id or (
        actor.email is not None and actor.email == facts.applicant_email
    ):
        raise NotPermitted("own_request", "Nobody decides a request that names them.")
    if (actor.org is not None and actor.org == facts.organisation_id) or actor.sub == facts.submitted_by:
        raise NotPermitted("own_organisation", "Nobody decides on their own organisation's request.")
    if actor.sub in facts.approvals:
        raise NotPermitted(
            "already_decided",
            "You already approved this request; another person must take the next decision (four eyes).",
        )
    _check_open(facts)
    if facts.state is State.DOCUMENTS_REQUESTED:
        raise Conflict("awaiting_documents", "The partner has not sent the requested documents yet.")
    stage = STAGE_OF[facts.state]
    if STAGE_ROLE[stage] not in actor.roles:
        raise NotPermitted("wrong_stage_role", f"Stage {stage} is decided by a {STAGE_ROLE[stage]}.")
    if decision is Decision.REJECT:
        if not (comment and comment.strip()):
            raise Invalid("comment_required", "A rejection needs a comment giving the reason.")
        return Step("rejected", stage, replace(facts, state=State.REJECTED))
    if decision is Decision.REQUEST_DOCUMENTS:
        if stage != 1:
            raise Conflict("not_at_this_stage", "Documents are requested at stage 1, before approval.")
        if not documents:
            raise Invalid("documents_required", "Say which documents are needed.")
        return Step("documents_requested", stage, replace(facts, state=State.DOCUMENTS_REQUESTED))
    approvals = (*facts.approvals, actor.sub)
    if stage == 1 and facts.sensitive:
        return Step(
            "stage_approved", 1, replace(facts, state=State.AWAITING_SECOND_APPROVAL, approvals=approvals)
        )
    return Step("approved", stage, replace(facts, state=State.APPROVED, approvals=approvals))


def receive_documents(facts: Facts, actor: Actor) -> Step:
    """The partner sends documents: a request waiting for them goes back to the stage-1 queue."""
    _check_partner(facts, actor)
    _check_open(facts)
    if facts.state is State.DOCUMENTS_REQUESTED:
        return Step("documents_received", 1, replace(facts, state=State.SUBMITTED))
    return Step("documents_received", STAGE_OF[facts.state], facts)


def withdraw(facts: Facts, actor: Actor) -> Step:
    _check_partner(facts, actor)
    _check_open(facts)
    return Step("withdrawn", STAGE_OF[facts.state], replace(facts, state=State.WITHDRAWN))


def expire(facts: Facts) -> Step:
    """Documents never came: the request ends (the scheduler decides when)."""
    if facts.state is not State.DOCUMENTS_REQUESTED:
        raise Conflict("not_awaiting_documents", "Only a request waiting for documents expires.")
    return Step("expired", 1, replace(facts, state=State.EXPIRED))


def provision(facts: Facts) -> Step | None:
    """Identity issued the grant; None when already recorded (a redelivered event)."""
    if facts.state is State.PROVISIONED:
        return None
    if facts.state is not State.APPROVED:
        raise Conflict("not_approved", "A grant was issued for a request that is not approved.")
    return Step("provisioned", None, replace(facts, state=State.PROVISIONED))


def end_grant(facts: Facts, *, revoked: bool) -> Step | None:
    """The request's grant was revoked or reached its end; None if the request already shows it."""
    if facts.state is not State.PROVISIONED:
        return None
    if revoked:
        return Step("revoked", None, replace(facts, state=State.REVOKED))
    return Step("grant_expired", None, replace(facts, state=State.EXPIRED))


def check_submission(
    actor: Actor,
    organisation: Organisation | None,
    *,
    organisation_id: str,
    department: str,
    profile_known: bool,
    valid_until: date,
    today: date,
) -> None:
    """May `actor` ask for this access? Raises `Refused` with the first reason it may not.

    The organisation must be known, be the caller's, list the caller among its administrators, keep
    its delegated administration, have a convention still valid with this department's CAF, and the
    access may last at most a year and not beyond the convention.
    """
    if PARTNER_ADMIN not in actor.roles:
        raise NotPermitted("role_not_allowed", "Only a partner administrator may ask for access.")
    if actor.org != organisation_id:
        raise NotPermitted("not_your_organisation", "You may ask for access for your organisation only.")
    if organisation is None:
        raise Invalid("unknown_organisation", "This organisation is not registered with a CAF.")
    if actor.sub not in organisation.administrators:
        raise NotPermitted("not_an_administrator", "You are not an administrator of this organisation.")
    if organisation.delegation_withdrawn:
        raise NotPermitted("delegation_withdrawn", "The CAF withdrew this organisation's delegation.")
    if organisation.convention_valid_until < today:
        raise Invalid("convention_expired", "The organisation's convention with the CAF has ended.")
    if department not in DEPARTMENTS:
        raise Invalid("unknown_department", f"{department!r} is not a French department code.")
    if organisation.department != department:
        raise Invalid(
            "department_mismatch", "The convention is with another department's CAF than the one asked."
        )
    if not profile_known:
        raise Invalid("unknown_profile", "This profile does not exist.")
    if valid_until <= today:
        raise Invalid("end_date_not_in_future", "The access must end in the future.")
    if valid_until > add_years(today, 1):
        raise Invalid("end_date_too_far", "An access lasts at most one year.")
    if valid_until > organisation.convention_valid_until:
        raise Invalid("beyond_convention", "The access cannot outlast the organisation's convention.")


def check_removal(actor: Actor, *, organisation_id: str, active: bool) -> None:
    """May `actor` ask identity to remove this grant? Removal only reduces privilege: no CAF decision."""
    if PARTNER_ADMIN not in actor.roles:
        raise NotPermitted("role_not_allowed", "Only a partner administrator may ask for a removal.")
    if actor.org != organisation_id:
        raise NotPermitted("not_your_organisation", "This grant belongs to another organisation.")
    if not active:
        raise Conflict("grant_not_active", "This grant is already revoked or expired.")
