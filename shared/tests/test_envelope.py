"""The envelope and event models: what a producer may send and a consumer must refuse."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from pydantic import ValidationError

from cdap_shared import events as ev
from cdap_shared.envelope import CloudEvent

from .samples import SAMPLES


def test_every_event_type_has_a_sample_and_a_topic() -> None:
    assert set(SAMPLES) == set(ev.EVENT_DATA)
    for event_type in ev.EVENT_DATA:
        assert ev.topic_for(event_type) in ev.TOPICS


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_round_trip_keeps_every_attribute(event_type: str) -> None:
    event = ev.make_event(event_type, source="/test", subject="s-1", data=SAMPLES[event_type])
    back = CloudEvent.from_bytes(event.to_bytes())
    assert back == event
    assert back.specversion == "1.0" and back.datacontenttype == "application/json"
    assert back.schemaversion == 1
    assert ev.parse_data(back) == SAMPLES[event_type]


def test_ids_are_uuid7_and_time_ordered() -> None:
    ids = [
        ev.make_event("identity.user.activated", source="/t", subject="u", data=ev.UserRef(user_id="u")).id
        for _ in range(50)
    ]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)


def test_make_event_refuses_the_wrong_payload_model() -> None:
    with pytest.raises(TypeError):
        ev.make_event("identity.grant.issued", source="/t", subject="g", data=ev.UserRef(user_id="u"))
    with pytest.raises(ev.UnknownEventType):
        ev.make_event("identity.user.teleported", source="/t", subject="u", data=ev.UserRef(user_id="u"))


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        b'{"specversion":"0.3","type":"identity.user.activated","source":"/t","subject":"u","data":{}}',
        b'{"type":"identity.user.activated","source":"/t","subject":"u","data":{},"time":"2026-01-01T00:00:00"}',
        b'{"type":"identity.user.activated","source":"/t","subject":"u","data":{},"extra":1}',
    ],
)
def test_malformed_envelopes_are_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        CloudEvent.from_bytes(raw)


def test_payload_with_unknown_field_is_refused() -> None:
    event = CloudEvent(
        type="identity.user.activated", source="/t", subject="u", data={"user_id": "u", "x": 1}
    )
    with pytest.raises(ValidationError):
        ev.parse_data(event)


def test_time_is_timezone_aware() -> None:
    event = ev.make_event("identity.user.activated", source="/t", subject="u", data=ev.UserRef(user_id="u"))
    assert isinstance(event.time, datetime) and event.time.utcoffset() is not None


def test_a_payload_reports_a_row_by_its_field_names_and_refuses_a_row_that_lacks_one() -> None:
    class Row:
        id, siret, name, kind, department = "org-1", "13002526500013", "CCAS", "ccas", "76"
        convention_reference, convention_valid_until = "CONV-1", "2027-06-30"
        delegation_withdrawn, created_at = True, "never copied: not a field of the event"

    data = ev.OrganisationRegistered.of(Row(), organisation_id=Row.id, administrators=["u-2", "u-1"])
    assert data.model_dump(mode="json") == {
        "organisation_id": "org-1",
        "siret": "13002526500013",
        "name": "CCAS",
        "kind": "ccas",
        "department": "76",
        "convention_reference": "CONV-1",
        "convention_valid_until": "2027-06-30",
        "administrators": ["u-2", "u-1"],
        "delegation_withdrawn": True,
    }
    with pytest.raises(ValidationError, match="organisation_id"):
        ev.OrganisationRegistered.of(Row())  # the row calls it `id`: a payload without it is refused
