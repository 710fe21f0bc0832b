"""What an audit entry is: the facts kept from an event and the canonical bytes that are hashed. Pure.

An entry keeps *references* only (ids, profile, motif, section names, decision, client IP, trace id):
never dossier content, never free text written by people (comments), never an applicant's name.
The leaf is a canonical JSON document (sorted keys, compact separators, UTF-8) so that anyone can
re-derive the fields an auditor is shown from the exact bytes the Merkle tree commits to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

import orjson

from cdap_shared import events as ev
from cdap_shared.clock import CIVIL_ZONE
from cdap_shared.envelope import CloudEvent

LEAF_VERSION = 1
"""Bumped if the canonical document ever changes shape; old leaves keep their version."""


@dataclass
class EntryFacts:
    """The fields of one audit entry, before it gets its index. Nothing changes them once built; not
    frozen only because a frozen dataclass's `__init__` costs three times as much (one per entry)."""

    event_id: str
    type: str
    source: str
    time: datetime
    subject: str
    actor: str | None = None
    organisation_id: str | None = None
    profile: str | None = None
    decision: str | None = None
    reason: str | None = None
    motif: str | None = None
    sections: tuple[str, ...] = ()
    client_ip: str | None = None
    trace_id: str | None = None
    refs: dict[str, Any] = field(default_factory=dict)

    @property
    def dossier(self) -> str | None:
        """The numero allocataire consulted, for the per-dossier index (consultations only)."""
        return self.subject if self.type == "dossier.consulted" else None


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not \\u-escaped): one byte string per value.

    These bytes are hashed into the tree, so they are those of `json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`, forever. orjson writes the very same bytes for
    strings, booleans, null, integers (up to 64 bits), lists and string-keyed objects, several times
    faster; anything else (a float, whose text differs, a huge integer, another type) goes to `json`.
    """
    if _orjson_writes_as_json(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate: json decides
            pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _orjson_writes_as_json(value: Any) -> bool:
    """Whether `value` holds only types whose orjson text is byte for byte `json.dumps`'s (exact types:
    a subclass such as an enum may write differently)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is dict:
        if not _KEYS.issuperset(map(type, value)):
            return False
        items = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return False
    # This runs on every leaf: the types are checked at C speed, only nested containers are walked.
    if _SCALARS.issuperset(map(type, items)):
        return True
    return all(type(v) in _SCALARS or _orjson_writes_as_json(v) for v in items)


_SCALARS = frozenset({str, bool, int, type(None)})
_KEYS = frozenset({str})


def format_time(value: datetime) -> str:
    """UTC, microseconds always written: PostgreSQL keeps microseconds, so the text round-trips.
    The text is `isoformat(timespec="microseconds")`'s: `2026-12-02T05:10:00.000000+00:00`."""
    if value.utcoffset() == _ZERO and value.year >= 1000:
        # Every leaf writes one: orjson writes the same text ten times faster, a zero fraction aside.
        text = orjson.dumps(value).decode()[1:-1]
        return text if value.microsecond else f"{text[:19]}.000000{text[19:]}"
    return value.astimezone(UTC).isoformat(timespec="microseconds")


_ZERO = timedelta(0)


def leaf_document(facts: EntryFacts) -> dict[str, Any]:
    return {
        "v": LEAF_VERSION,
        "event_id": facts.event_id,
        "event_type": facts.type,
        "source": facts.source,
        "time": format_time(facts.time),
        "subject": facts.subject,
        "actor": facts.actor,
        "organisation_id": facts.organisation_id,
        "profile": facts.profile,
        "decision": facts.decision,
        "reason": facts.reason,
        "motif": facts.motif,
        "sections": list(facts.sections),
        "client_ip": facts.client_ip,
        "trace_id": facts.trace_id,
        "refs": facts.refs,
    }


def leaf_bytes(facts: EntryFacts) -> bytes:
    """The exact bytes whose RFC 6962 leaf hash goes into the tree."""
    return canonical_json(leaf_document(facts))


class NotAudited(ValueError):
    """An event type the audit log must not keep (e.g. a CAF dossier feed event carrying content)."""


def facts_from_event(
    event: CloudEvent, trace_id: str | None = None, data: ev.EventData | None = None
) -> EntryFacts:
    """Keep the references of `event`; `trace_id` is the Kafka header's, used when the data has none.
    `data` is the event's payload when the caller validated it already (the consumer does).

    Raises `NotAudited` for the CAF feed's types, which carry dossier content.
    """
    if event.type.startswith("caf."):
        raise NotAudited(f"{event.type} carries dossier content: not kept in the audit log")
    if data is None:
        data = ev.parse_data(event)
    if isinstance(data, ev.DossierConsulted | ev.DossierSearched):
        return _consultation(event, data, trace_id)
    base: dict[str, Any] = {
        "event_id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time,
        "subject": event.subject,
        "trace_id": trace_id,
    }
    fields = _fields(data)
    if fields.get("trace_id") is None:
        fields.pop("trace_id", None)  # the payload has none: keep the one from the Kafka header
    return EntryFacts(**base | fields)


def _fields(data: ev.EventData) -> dict[str, Any]:
    """Per payload model, which of its fields become entry fields and which become `refs`."""
    if isinstance(data, ev.UserProvisioned):
        refs = {"roles": data.roles, "department": data.department, "request_id": data.request_id}
        return {"subject": data.user_id, "organisation_id": data.organisation_id, "refs": refs}
    if isinstance(data, ev.UserRef):
        return {"actor": data.by, "subject": data.user_id, "reason": data.reason}
    if isinstance(data, ev.UserLocked):
        until = format_time(data.until) if data.until else None
        return {"subject": data.user_id, "refs": {"until": until, "permanent": data.permanent}}
    if isinstance(data, ev.LoginSucceeded | ev.LoginFailed):
        reason = data.reason if isinstance(data, ev.LoginFailed) else None
        subject = {"subject": data.user_id} if data.user_id else {}
        return subject | {
            "actor": data.user_id,
            "client_ip": data.client_ip,
            "reason": reason,
            "refs": {"method": data.method},
        }
    if isinstance(data, ev.GrantIssued):
        refs = {
            "grant_id": data.grant_id,
            "organisation_siret": data.organisation_siret,
            "department": data.department,
            "valid_from": data.valid_from.isoformat(),
            "valid_until": data.valid_until.isoformat(),
            "request_id": data.request_id,
        }
        return {
            "subject": data.user_id,
            "organisation_id": data.organisation_id,
            "profile": data.profile,
            "refs": refs,
        }
    if isinstance(data, ev.GrantEnded):
        refs = {"grant_id": data.grant_id, "request_id": data.request_id}
        return {"actor": data.by, "subject": data.user_id, "reason": data.reason, "refs": refs}
    if isinstance(data, ev.ClientChanged):
        return {
            "actor": data.by,
            "subject": data.client_id,
            "organisation_id": data.organisation_id,
            "reason": data.reason,
            "refs": {"grant_id": data.grant_id},
        }
    if isinstance(data, ev.OrganisationRegistered):
        refs = data.model_dump(mode="json", exclude={"organisation_id", "name"})
        return {"subject": data.organisation_id, "organisation_id": data.organisation_id, "refs": refs}
    if isinstance(data, ev.RequestSubmitted | ev.RequestApproved):
        # The applicant's name and e-mail stay in access-requests: the request id is the reference.
        refs = {
            "department": data.department,
            "valid_until": data.valid_until.isoformat(),
            "kind": data.kind,
            "renews_grant_id": data.renews_grant_id,
        }
        return {
            "actor": data.by,
            "subject": data.request_id,
            "organisation_id": data.organisation_id,
            "profile": data.profile,
            "refs": refs,
        }
    if isinstance(data, ev.RequestDecision):
        # `comment` is free text and may name people: left out, the request keeps it.
        steps = {"stage": data.stage, "documents": data.documents}
        return {"actor": data.by, "subject": data.request_id, "refs": steps}
    if isinstance(data, ev.RevocationRequested):
        refs = {"request_id": data.request_id, "grant_id": data.grant_id}
        return {"actor": data.by, "subject": data.user_id, "refs": refs}
    if isinstance(data, ev.AlertRaised):
        refs = {"alert_id": data.alert_id, "severity": data.severity, "detail": data.detail}
        return {
            "actor": data.actor,
            "organisation_id": data.organisation_id,
            "reason": data.rule,
            "refs": refs,
        }
    return _generic(data)


def _generic(data: ev.EventData) -> dict[str, Any]:
    """A type added to `events.py` after this module: keep its ids only (free text could be anything)."""
    fields = data.model_dump(mode="json")
    refs = {k: v for k, v in fields.items() if k.endswith(("_id", "_ids")) and k != "organisation_id"}
    by = fields.get("by")
    organisation = fields.get("organisation_id")
    return {
        "actor": by if isinstance(by, str) else None,
        "organisation_id": organisation if isinstance(organisation, str) else None,
        "refs": refs,
    }


def _consultation(
    event: CloudEvent, data: ev.DossierConsulted | ev.DossierSearched, trace_id: str | None
) -> EntryFacts:
    """A lookup's or a search's entry, the bulk of the log: built in one call (no dicts merged)."""
    refs: dict[str, Any] = {"grant_id": data.grant_id, "policy_version": data.policy_version}
    sections: tuple[str, ...] = ()
    if isinstance(data, ev.DossierSearched):
        # Which criteria were used (names, never values) and which numeros the caller was shown.
        refs |= {"criteria": data.criteria, "numeros": data.numeros}
        subject = event.subject
    else:
        subject, sections = data.numero, tuple(data.sections)
    return EntryFacts(
        event_id=event.id,
        type=event.type,
        source=event.source,
        time=event.time,
        subject=subject,
        actor=data.actor,
        organisation_id=data.organisation_id,
        profile=data.profile,
        decision=data.decision,
        reason=data.reason,
        motif=data.motif,
        sections=sections,
        client_ip=data.client_ip,
        # The payload's own trace id, else the Kafka header's.
        trace_id=trace_id if data.trace_id is None else data.trace_id,
        refs=refs,
    )


# ----------------------------------------------------------------- what becomes of an alert
ALERT_STATES = ("open", "acknowledged", "closed")
ReviewAction = Literal["acknowledge", "close"]
_REACHES = {
    ("open", "acknowledge"): "acknowledged",
    ("open", "close"): "closed",
    ("acknowledged", "close"): "closed",
}
_DONE = {"acknowledge": "acknowledged", "close": "closed"}


class UnknownAlert(LookupError):
    """No alert has this id."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"No alert {alert_id}.")


class InvalidTransition(ValueError):
    """The action does not apply to the alert's state (acknowledged twice, or already closed)."""

    reason = "invalid_transition"


class CommentRequired(ValueError):
    """Acknowledging says what is being done about the alert."""

    reason = "comment_required"


def next_state(state: str, action: ReviewAction, comment: str | None) -> str:
    """The state `action` takes an alert in `state` to: open -> acknowledged -> closed, or open -> closed."""
    if action == "acknowledge" and not comment:
        raise CommentRequired("Acknowledging an alert needs a comment: what is being done about it.")
    reached = _REACHES.get((state, action))
    if reached is None:
        raise InvalidTransition(f"An alert already {state} cannot be {_DONE[action]}.")
    return reached


def digest_cutoff(now: datetime, hour: int) -> datetime:
    """The last digest time at or before `now`: `hour` o'clock in Paris, today or yesterday. The digest
    sent from then on lists the warnings raised before it; later ones wait for the next day's."""
    local = now.astimezone(CIVIL_ZONE)
    day = local.date() if local.hour >= hour else local.date() - timedelta(days=1)
    return datetime.combine(day, time(hour), CIVIL_ZONE)


# ----------------------------------------------------------------- what the log cannot give
class UnknownEntry(LookupError):
    """No entry at this position: beyond the tree, or purged by retention."""

    def __init__(self, index: int) -> None:
        super().__init__(f"No entry at index {index} (beyond the log, or purged).")


class InvalidProofRequest(ValueError):
    """The sizes or positions asked for do not fit the log as committed."""


class LogDamaged(Exception):
    """A Merkle node of a committed size is gone: not the caller's doing, only tampering explains it."""


class NoCheckpointYet(LookupError):
    """Nothing is signed yet (the service has just started on an empty log)."""


class NoWitnessConfigured(LookupError):
    """No witness key is configured, so no checkpoint can be witnessed."""


class NotWitnessedYet(LookupError):
    """No checkpoint carries a cosignature of every witness asked for."""


class KeyUnavailable(Exception):
    """The signing key could not be loaded (its first load needs the database)."""


class CosignatureRejected(Exception):
    """A witness's submission was not added; the subclass says why."""


class NotASignedNote(CosignatureRejected):
    """The submission is not a checkpoint note with signature lines."""


class CosignatureRefused(CosignatureRejected):
    """No valid cosignature by a witness configured here (or a forged one)."""


class UnknownCheckpoint(CosignatureRejected):
    """The note's checkpoint text is not one signed here."""
