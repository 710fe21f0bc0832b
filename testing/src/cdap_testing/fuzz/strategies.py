"""Hypothesis strategies for hostile Kafka records (see the package docstring)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cdap_shared.envelope import CloudEvent, new_event_id
from cdap_shared.events import EVENT_DATA, EventData, UnknownEventType, parse_data

NIR = "185057800608436"
"""A well-formed NIR put into hostile payloads: it must never reappear in a dead letter's headers."""

DLQ_HEADERS = (
    "x-error",
    "x-error-type",
    "x-original-topic",
    "x-original-partition",
    "x-original-offset",
    "x-consumer-group",
)
"""The headers `EventConsumer` adds to every dead letter (docs/architecture.md, "Delivery")."""


def fuzz_settings(max_examples: int = 40) -> settings:
    """Settings for a property over a real database: derandomized, so CI runs the examples a developer
    ran; no deadline (a database round trip varies); function-scoped fixtures are shared on purpose
    (one database for all examples, which each test resets or compares against)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


ONE_DRAW = settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    phases=[Phase.generate],  # no shrinking: each run goes through the real broker
    suppress_health_check=list(HealthCheck),
)
"""For a test that draws one batch and sends it through Kafka."""

_APPLICANT = {"family_name": "Martin", "given_name": "Léa", "email": "lea@example.org", "job_title": "CESF"}
_GRANT = {
    "grant_id": "g1",
    "user_id": "u1",
    "organisation_id": "o1",
    "organisation_siret": "73282932000074",
    "profile": "T1",
    "department": "76",
    "valid_from": "2026-01-01",
    "valid_until": "2026-12-31",
}
_ORGANISATION = {
    "organisation_id": "o1",
    "siret": "73282932000074",
    "name": "Logeo Seine",
    "kind": "bailleur",
    "department": "76",
    "convention_reference": "CONV-76-001",
    "convention_valid_until": "2027-12-31",
}
_REQUEST = {
    "request_id": "r1",
    "organisation_id": "o1",
    "applicant": _APPLICANT,
    "profile": "T1",
    "department": "76",
    "valid_until": "2027-01-01",
    "by": "pa1",
}
_DECISION = {"request_id": "r1", "by": "i1", "stage": 1}

VALID_DATA: dict[str, dict[str, Any]] = {
    "identity.user.provisioned": {"user_id": "u1", "organisation_id": "o1", "roles": ["partner_user"]},
    "identity.user.activated": {"user_id": "u1"},
    "identity.user.suspended": {"user_id": "u1", "by": "admin", "reason": "alert"},
    "identity.user.reinstated": {"user_id": "u1", "by": "admin"},
    "identity.user.totp_enrolled": {"user_id": "u1"},
    "identity.user.locked": {"user_id": "u1", "permanent": True},
    "identity.login.succeeded": {"user_id": "u1", "method": "password"},
    "identity.login.failed": {"method": "password", "reason": "bad_credentials"},
    "identity.organisation.registered": _ORGANISATION,
    "identity.organisation.updated": _ORGANISATION | {"delegation_withdrawn": True},
    "identity.grant.issued": _GRANT,
    "identity.grant.revoked": {"grant_id": "g1", "user_id": "u1", "by": "admin"},
    "identity.grant.expired": {"grant_id": "g1", "user_id": "u1"},
    "identity.user.reset_required": {"user_id": "u1", "by": "admin"},
    "identity.user.activation_resent": {"user_id": "u1", "by": "admin"},
    "identity.user.reset_completed": {"user_id": "u1"},
    **{
        f"identity.client.{change}": {
            "client_id": "c1",
            "organisation_id": "o1",
            "grant_id": "g1",
            "by": "pa1",
        }
        for change in ("created", "rotated", "disabled", "deleted")
    },
    "access.request.submitted": _REQUEST,
    "access.request.documents_requested": _DECISION | {"documents": ["convention"]},
    "access.request.documents_received": _DECISION,
    "access.request.stage_approved": _DECISION,
    "access.request.approved": _REQUEST | {"by": "m1"},
    "access.request.rejected": _DECISION | {"comment": "job does not fit"},
    "access.request.withdrawn": _DECISION,
    "access.request.expired": {"request_id": "r1"},
    "access.request.escalated": _DECISION,
    "access.request.reminded": _DECISION,
    "access.grant.revocation_requested": {"request_id": "r2", "grant_id": "g1", "user_id": "u1", "by": "pa1"},
    "dossier.consulted": {
        "actor": "u1",
        "numero": "1234567",
        "motif": "accompagnement_social",
        "decision": "granted",
        "sections": ["identite"],
    },
    "dossier.searched": {"actor": "u1", "criteria": ["nir"], "decision": "granted", "numeros": ["1234567"]},
    "caf.dossier.upserted": {
        "numero": "1234567",
        "nir": NIR,
        "department": "76",
        "version": 1,
        "sections": {"identite": {"family_name": "Martin", "given_name": "Léa", "birth_date": "1985-05-01"}},
    },
    "audit.alert.raised": {"alert_id": "a1", "rule": "night_use", "severity": "warning", "detail": "03:12"},
    "audit.alert.acknowledged": {"alert_id": "a1", "by": "auditor-1"},
    "audit.alert.closed": {"alert_id": "a1", "by": "auditor-1"},
    "audit.checkpoint.signed": {"origin": "cdap", "tree_size": 1, "root_hash": "AA==", "note": "n"},
}
"""One valid payload (JSON form) per event type: the base every payload mutation starts from."""


def envelope(event_type: str, data: Any, **fields: Any) -> dict[str, Any]:
    """A structured-mode CloudEvent as a JSON-ready dict (fresh id); `fields` override or add keys."""
    return {
        "specversion": "1.0",
        "id": new_event_id(),
        "type": event_type,
        "source": "/fuzz",
        "subject": "s-1",
        "time": "2026-03-02T10:00:00+00:00",
        "datacontenttype": "application/json",
        "schemaversion": 1,
        "data": data,
    } | fields


def encode(value: Any) -> bytes:
    """JSON bytes as a producer would write them; `\\u` escapes keep NUL and lone surrogates intact."""
    return json.dumps(value, ensure_ascii=True).encode()


def is_valid_event(raw: bytes | None) -> bool:
    """True when the consumer's own classification accepts `raw` (envelope and payload both valid)."""
    try:
        parse_data(CloudEvent.from_bytes(raw))  # type: ignore[arg-type]
    except (ValidationError, ValueError):
        return False
    return True


def _fits(model: type[BaseModel], data: Any) -> bool:
    try:
        model.model_validate(data)
    except (ValidationError, ValueError, TypeError):
        return False
    return True


# ----------------------------------------------------------------- hostile values
huge_strings = st.sampled_from(["x" * 100_000, "é" * 70_000, "\x00" * 1_000])
nul_strings = st.text(min_size=0, max_size=20).map(lambda s: f"{s}\x00{s}")
odd_strings = st.one_of(
    nul_strings,
    st.text(st.characters(codec="utf-8"), max_size=50),  # control characters, RTL marks, emoji
    st.sampled_from(["", " ", "'; DROP TABLE inbox; --", "\u202e\u0000\ufeff", "💥" * 64, "\\u0000", "%s%n"]),
)
out_of_range_dates = st.sampled_from(
    [
        "0000-01-01",
        "2026-02-30",
        "2026-13-01",
        "10000-01-01",
        "-0001-01-01",
        "1er mars",
        "2026-03-02T25:00:00",
    ]
)
extreme_numbers = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -1, 0, 1e308, -1e308, 1.5, 0.1])
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
nested_junk = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
hostile_values = st.one_of(
    nested_junk, huge_strings, odd_strings, out_of_range_dates, extreme_numbers, st.just([[[[[[[[[[]]]]]]]]]])
)
"""Values to put where a field expects something else (or something sane)."""


# ----------------------------------------------------------------- malformed records
def _invalid_utf8() -> st.SearchStrategy[bytes]:
    bad = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    return st.tuples(st.binary(max_size=20), bad, st.binary(max_size=20)).map(b"".join)


undecodable_records = st.one_of(
    st.binary(max_size=200),
    _invalid_utf8(),
    st.builds(
        lambda p: encode(envelope("identity.user.activated", {"user_id": "u1"}))[:p], st.integers(0, 60)
    ),
    st.sampled_from([b"", b"null", b"{", b'{"a":NaN}', b"\xef\xbb\xbf{}", b"[" * 5_000 + b"]" * 5_000]),
).filter(lambda raw: not is_valid_event(raw))
"""Bytes that are not a JSON event at all: random, non-UTF-8, truncated, or too deeply nested."""

non_object_json = st.one_of(
    json_scalars,
    st.lists(nested_junk, max_size=4),
    st.lists(st.just(envelope("x.y", {})), min_size=1, max_size=2),
).map(encode)
"""Valid JSON whose top level is not an object (the envelope must be one)."""

_REQUIRED_KEYS = ("id", "type", "source", "subject", "data")
_ENVELOPE_BREAKS: list[tuple[str, Any]] = [
    ("specversion", "0.3"),
    ("specversion", "2.0"),
    ("specversion", 1.0),
    ("id", ""),
    ("id", "x" * 65),
    ("id", 42),
    ("type", "Identity.User.Activated"),
    ("type", "identity"),
    ("type", "identity.user.activated\x00"),
    ("source", ""),
    ("subject", "s" * 201),
    ("time", "2026-03-02T10:00:00"),  # naive: the envelope requires a timezone
    ("time", "yesterday"),
    ("time", "0000-00-00T00:00:00Z"),
    ("schemaversion", 0),
    ("schemaversion", "one"),
    ("data", None),
    ("data", [1, 2]),
    ("data", "user_id=u1"),
    ("datacontenttype", None),
]


@st.composite
def broken_envelopes(draw: st.DrawFn, event_types: Sequence[str] = tuple(VALID_DATA)) -> bytes:
    """A known type with a valid payload whose envelope is broken: a key missing, an extra key,
    a wrong-typed or out-of-range value, a wrong specversion."""
    event_type = draw(st.sampled_from(list(event_types)))
    event = envelope(event_type, VALID_DATA[event_type])
    how = draw(st.sampled_from(["missing", "extra", "wrong", "junk"]))
    if how == "missing":
        del event[draw(st.sampled_from(_REQUIRED_KEYS))]
    elif how == "extra":
        event[draw(st.sampled_from(["extension", "traceparent", "Data", "ID", ""]))] = draw(hostile_values)
    elif how == "wrong":
        key, value = draw(st.sampled_from(_ENVELOPE_BREAKS))
        event[key] = value
    else:
        event[draw(st.sampled_from(sorted(event)))] = draw(hostile_values)
    raw = encode(event)
    if is_valid_event(raw):  # e.g. a junk value that happened to fit the field
        event["specversion"] = "0.3"
        raw = encode(event)
    return raw


unknown_types = st.builds(
    lambda event_type, data: encode(envelope(event_type, data)),
    st.from_regex(r"\A[a-z]{1,8}(\.[a-z_]{1,8}){1,3}\Z").filter(lambda t: t not in EVENT_DATA),
    st.one_of(st.sampled_from(list(VALID_DATA.values())), st.dictionaries(st.text(max_size=8), nested_junk)),
)
"""Well-formed envelopes of a type no model describes."""


def _model_of(event_type: str) -> type[EventData]:
    model = EVENT_DATA.get(event_type)
    if model is None:
        raise UnknownEventType(event_type)
    return model


Payloads = Mapping[str, Mapping[str, Any]]


@st.composite
def bad_data(draw: st.DrawFn, event_type: str, base: Payloads = VALID_DATA) -> dict[str, Any]:
    """A payload for `event_type` that its model refuses: a required field missing, an unknown field,
    a field (possibly nested) holding a wrong-typed, huge, NUL-laden or out-of-range value. Mutations
    start from `base[event_type]` (default `VALID_DATA`; a service may name its own entities)."""
    model = _model_of(event_type)
    data = copy.deepcopy(dict(base[event_type]))  # mutated below
    target: dict[str, Any] = data
    target_model: type[BaseModel] = model
    # Into a nested model (an applicant) now and then, so its own constraints are exercised too.
    nested = {
        name: f.annotation
        for name, f in model.model_fields.items()
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) and name in data
    }
    into_nested = draw(st.booleans())
    if nested and into_nested:
        name = draw(st.sampled_from(sorted(nested)))
        target, target_model = data[name], nested[name]
    required = [n for n, f in target_model.model_fields.items() if f.is_required()]
    how = draw(
        st.sampled_from(["missing", "extra", "junk", "junk", "junk"] if required else ["extra", "junk"])
    )
    if how == "missing":
        del target[draw(st.sampled_from(required))]
    elif how == "extra":
        target[
            draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in target_model.model_fields))
        ] = draw(hostile_values)
    else:
        target[draw(st.sampled_from(sorted(target_model.model_fields)))] = draw(hostile_values)
    if _fits(model, data):
        # The junk happened to fit (a string field given a string); a wrong type never does.
        target[draw(st.sampled_from(sorted(target_model.model_fields)))] = {"junk": [NIR, None]}
    if _fits(model, data):
        data["fuzz_extra"] = NIR
    return data


def bad_payloads(event_types: Sequence[str] = tuple(VALID_DATA)) -> st.SearchStrategy[bytes]:
    """Envelopes of known types (among `event_types`) whose `data` violates the type's model."""
    return (
        st.sampled_from(list(event_types))
        .flatmap(
            lambda t: st.tuples(st.just(t), bad_data(t) | st.dictionaries(st.text(max_size=8), nested_junk))
        )
        .filter(lambda pair: not _fits(_model_of(pair[0]), pair[1]))
        .map(lambda pair: encode(envelope(pair[0], pair[1], subject=NIR)))
    )


def malformed_records(event_types: Sequence[str] = tuple(VALID_DATA)) -> st.SearchStrategy[bytes]:
    """Anything the consumer's classification must refuse, payload mutations aimed at `event_types`."""
    return st.one_of(
        undecodable_records,
        non_object_json,
        broken_envelopes(event_types),
        unknown_types,
        bad_payloads(event_types),
    )


# ----------------------------------------------------------------- awkward but valid payloads
_AWKWARD_STRINGS = st.one_of(huge_strings.map(lambda s: s[:20_000]), odd_strings, st.just(NIR + "\x00"))
_AWKWARD_BY_TYPE: dict[Any, st.SearchStrategy[Any]] = {
    str: _AWKWARD_STRINGS,
    int: st.sampled_from([2**63, 2**64, 10**30, 2**31, 1]),
    date: st.sampled_from(["0001-01-01", "9999-12-31", "2026-02-29", "2028-02-29"]),
}


@st.composite
def awkward_data(draw: st.DrawFn, event_type: str, base: Payloads = VALID_DATA) -> dict[str, Any]:
    """A payload `event_type`'s model accepts but that is hostile to whatever stores it (mutations of
    `base[event_type]`; the base itself when a mutation would not fit the model)."""
    model = _model_of(event_type)
    data = copy.deepcopy(dict(base[event_type]))
    fields = sorted(model.model_fields)
    for name in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)):
        annotation = model.model_fields[name].annotation
        for kind, values in _AWKWARD_BY_TYPE.items():
            if annotation is kind or (annotation is not None and kind in getattr(annotation, "__args__", ())):
                data[name] = draw(values)
    if "sections" in model.model_fields:  # free-form in the model: anything goes inside
        data["sections"] = draw(
            st.dictionaries(st.sampled_from(["identite", "adresse", "contact", "x"]), nested_junk)
        )
    return data if _fits(model, data) else copy.deepcopy(dict(base[event_type]))


def awkward_payloads(
    event_types: Sequence[str] = tuple(VALID_DATA), base: Payloads = VALID_DATA
) -> st.SearchStrategy[bytes]:
    """Model-valid events of `event_types` with NUL characters, huge strings and extreme values."""
    return st.builds(
        lambda pair, fields: encode(envelope(pair[0], pair[1], **fields)),
        st.sampled_from(list(event_types)).flatmap(lambda t: st.tuples(st.just(t), awkward_data(t, base))),
        awkward_envelope_fields,
    )


awkward_envelope_fields: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        # The ends of what a datetime holds: converting them to UTC overflows.
        "time": st.sampled_from(
            ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1970-01-01T00:00:00Z", 0, 2**40]
        ),
        "subject": _AWKWARD_STRINGS.map(lambda s: s[:200]).filter(bool),
        "source": _AWKWARD_STRINGS.map(lambda s: s[:200]).filter(bool),
        "id": st.sampled_from(["\x00", "id with spaces", "é" * 20]).map(lambda s: f"{s}{new_event_id()}"),
        "schemaversion": st.sampled_from([2, 2**63, 10**30]),
    },
)
"""Envelope values the CloudEvent model accepts but that are hostile to what stores them."""


def valid_events(event_types: Sequence[str] = tuple(VALID_DATA)) -> st.SearchStrategy[CloudEvent]:
    """Valid events of `event_types` (from `VALID_DATA`), each with a fresh id."""
    return st.sampled_from(list(event_types)).map(
        lambda t: CloudEvent.model_validate(envelope(t, VALID_DATA[t]))
    )


Headers = tuple[tuple[str, bytes | None], ...]

hostile_headers: st.SearchStrategy[Headers] = st.lists(
    st.tuples(
        st.sampled_from(["traceparent", "tracestate", "x-error", "content-type"]) | st.text(max_size=12),
        st.none() | st.binary(max_size=40) | st.sampled_from([b"00-zz-zz-01", b"\xff\xfe", b"\x00"]),
    ),
    max_size=3,
).map(tuple)
"""Kafka headers a producer may send: no value at all (Kafka allows it), non-UTF-8, a garbage traceparent."""


@dataclass(frozen=True)
class Hostile:
    """A record to publish: its value (`None`: a tombstone) and its headers."""

    value: bytes | None
    headers: Headers = ()


def hostile_batch(
    event_types: Sequence[str] = tuple(VALID_DATA), per_kind: int = 6
) -> st.SearchStrategy[list[Hostile]]:
    """`per_kind` distinct malformed records of each kind (so even hypothesis' simplest draw covers
    every kind), payload mutations aimed at `event_types`, each with hostile headers."""
    kinds = [
        undecodable_records,
        non_object_json,
        broken_envelopes(event_types),
        unknown_types,
        bad_payloads(event_types),
    ]
    values = st.tuples(*(st.lists(kind, min_size=per_kind, max_size=per_kind, unique=True) for kind in kinds))
    flat = values.map(lambda groups: [raw for group in groups for raw in group])
    return flat.flatmap(
        lambda raws: st.lists(hostile_headers, min_size=len(raws), max_size=len(raws)).map(
            lambda drawn: [
                # The fixed ones first, so even the simplest draw sends a header without a value.
                Hostile(raw, _FIXED_HEADERS[i % len(_FIXED_HEADERS)] + h)
                for i, (raw, h) in enumerate(zip(raws, drawn, strict=True))
            ]
        )
    )


_FIXED_HEADERS: tuple[Headers, ...] = (
    (("traceparent", None),),
    (("traceparent", b"00-zz-zz-01"), ("tracestate", b"\xff\xfe")),
    (("x-error", b"forged"), ("", b"\x00")),
    (),
)
