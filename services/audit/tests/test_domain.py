"""Entries from events (pure): references only, canonical bytes, trace ids."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import TzInfo

from cdap_audit.domain import (
    EntryFacts,
    NotAudited,
    canonical_json,
    facts_from_event,
    format_time,
    leaf_bytes,
    leaf_document,
)
from cdap_shared import events as ev

from .conftest import consulted


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def json_dumps_bytes(value: object) -> bytes:
    """The encoding every existing leaf was written with: any other byte would break their proofs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_every_character_is_written_as_json_dumps_writes_it() -> None:
    # Control characters, quotes, backslashes, DEL, U+2028/9, accents, astral planes (surrogates cannot
    # be encoded at all, by either).
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        text = "".join(chars[start : start + 4096])
        assert canonical_json({text: text, "k": [text]}) == json_dumps_bytes({text: text, "k": [text]})


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON_VALUES)
def test_canonical_json_is_json_dumps_byte_for_byte(value: object) -> None:
    """Floats and integers beyond 64 bits included (they take `json`'s path)."""
    assert canonical_json(value) == json_dumps_bytes(value)


@settings(max_examples=200)
@given(
    actor=st.text(min_size=1),
    numero=st.text(min_size=1),
    motif=st.none() | st.text(),
    reason=st.none() | st.text(),
    sections=st.lists(st.text(), max_size=5),
    refs=st.dictionaries(st.text(max_size=10), st.none() | st.text() | st.integers(), max_size=4),
)
def test_leaf_bytes_are_those_of_json_dumps(
    actor: str, numero: str, motif: str | None, reason: str | None, sections: list[str], refs: dict
) -> None:
    """Accents, nulls, absent fields and any key order in `refs`: the leaf is the same bytes as before."""
    facts = EntryFacts(
        event_id="e1",
        type="dossier.consulted",
        source="/dossiers",
        time=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        subject=numero,
        actor=actor,
        motif=motif,
        reason=reason,
        sections=tuple(sections),
        refs=refs,
    )
    assert leaf_bytes(facts) == json_dumps_bytes(leaf_document(facts))


def test_a_consultation_keeps_its_references_and_trace_id() -> None:
    event = consulted("alice", "1234567", trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    facts = facts_from_event(event, trace_id="ffffffffffffffffffffffffffffffff")
    assert (facts.actor, facts.subject, facts.dossier, facts.decision) == (
        "alice",
        "1234567",
        "1234567",
        "granted",
    )
    assert facts.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # the event's own wins over the header's
    assert facts.sections == ("adresse", "identite") and facts.refs["grant_id"] == "g-alice"
    document = json.loads(leaf_bytes(facts))
    assert document["event_id"] == event.id and document["event_type"] == "dossier.consulted"
    assert document["v"] == 1 and document["client_ip"] == "10.1.2.3"


def test_the_header_trace_id_is_used_when_the_event_has_none() -> None:
    facts = facts_from_event(consulted(), trace_id="0af7651916cd43dd8448eb211c80319c")
    assert facts.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert facts_from_event(consulted()).trace_id is None


def test_time_is_utc_with_microseconds_so_it_round_trips() -> None:
    paris = timezone(timedelta(hours=1))
    event = consulted(at=datetime(2026, 1, 15, 23, 30, tzinfo=paris))
    assert json.loads(leaf_bytes(facts_from_event(event)))["time"] == "2026-01-15T22:30:00.000000+00:00"


ZONES = st.sampled_from(
    # pydantic parses "Z" as its own TzInfo: the type every consumed event's time has.
    [UTC, TzInfo(0), timezone(timedelta(hours=-3, minutes=-30)), ZoneInfo("Europe/Paris")]
)


@given(st.datetimes(timezones=ZONES), st.booleans())
def test_a_time_is_written_as_isoformat_writes_it_in_utc(value: datetime, whole: bool) -> None:
    """format_time's fast path (orjson) writes what the leaves were always written with."""
    value = value.replace(microsecond=0) if whole else value
    assert format_time(value) == value.astimezone(UTC).isoformat(timespec="microseconds")


def test_dossier_content_is_refused() -> None:
    data = ev.DossierUpserted(
        numero="1234567", nir="185057800608436", department="76", version=1, sections={}
    )
    event = ev.make_event("caf.dossier.upserted", source="/caf", subject="1234567", data=data)
    with pytest.raises(NotAudited):
        facts_from_event(event)


def test_names_comments_and_search_values_stay_out_of_the_leaf() -> None:
    applicant = ev.Applicant(family_name="Durand", given_name="Zoé", email="zoe@example.fr", job_title="CESF")
    submitted = ev.RequestSubmitted(
        request_id="r1",
        organisation_id="o1",
        applicant=applicant,
        profile="T1",
        department="76",
        valid_until=date(2027, 1, 1),
        by="admin-p",
    )
    decision = ev.RequestDecision(request_id="r1", by="m1", stage=2, comment="Mme Durand, tel 0612345678")
    searched = ev.DossierSearched(
        actor="a", criteria=["nir", "family_name"], decision="granted", numeros=["1000001"], motif="m"
    )
    leaves = [
        leaf_bytes(facts_from_event(ev.make_event(t, source="/t", subject=s, data=d)))
        for t, s, d in (
            ("access.request.submitted", "r1", submitted),
            ("access.request.stage_approved", "r1", decision),
            ("dossier.searched", "a", searched),
        )
    ]
    text = b"".join(leaves).decode()
    for secret in ("Durand", "zoe@example.fr", "0612345678", "Zoé"):
        assert secret not in text
    assert json.loads(leaves[2])["refs"] == {
        "criteria": ["nir", "family_name"],
        "numeros": ["1000001"],
        "grant_id": None,
        "policy_version": None,
    }


def test_a_failed_login_of_an_unknown_account_keeps_the_event_subject() -> None:
    data = ev.LoginFailed(method="password", reason="bad_credentials", client_ip="192.0.2.1")
    event = ev.make_event("identity.login.failed", source="/id", subject="unknown", data=data)
    facts = facts_from_event(event)
    assert (facts.subject, facts.actor, facts.reason, facts.client_ip) == (
        "unknown",
        None,
        "bad_credentials",
        "192.0.2.1",
    )


def test_same_facts_same_bytes() -> None:
    facts = EntryFacts("e", "identity.user.suspended", "/s", datetime(2026, 1, 1, tzinfo=UTC), "u")
    assert leaf_bytes(facts) == leaf_bytes(EntryFacts(**facts.__dict__))


def test_organisations_revocations_and_types_added_later_keep_references_only() -> None:
    org = ev.OrganisationRegistered(
        organisation_id="o1",
        siret="73282932000074",
        name="CCAS de Rouen",
        kind="ccas",
        department="76",
        convention_reference="CONV-1",
        convention_valid_until=date(2027, 1, 1),
        administrators=["u1"],
    )
    revocation = ev.RevocationRequested(
        request_id="r9", grant_id="g1", user_id="u2", by="u1", comment="parti"
    )
    later = ev.CheckpointSigned(origin="o", tree_size=1, root_hash="x", note="free text")  # not mapped
    facts = [
        facts_from_event(ev.make_event(t, source="/t", subject=s, data=d))
        for t, s, d in (
            ("identity.organisation.registered", "o1", org),
            ("access.grant.revocation_requested", "g1", revocation),
            ("audit.checkpoint.signed", "o", later),
        )
    ]
    assert (facts[0].subject, facts[0].organisation_id, facts[0].refs["siret"]) == (
        "o1",
        "o1",
        "73282932000074",
    )
    assert (facts[1].actor, facts[1].subject, facts[1].refs) == (
        "u1",
        "u2",
        {"request_id": "r9", "grant_id": "g1"},
    )
    assert facts[2].refs == {} and facts[2].subject == "o"
    text = b"".join(leaf_bytes(f) for f in facts).decode()
    assert "CCAS de Rouen" not in text and "left" not in text and "free text" not in text


def test_partner_system_changes_keep_who_which_client_and_grant() -> None:
    data = ev.ClientChanged(client_id="cdap-1", organisation_id="o1", grant_id="g1", by="u1", reason="left")
    facts = facts_from_event(
        ev.make_event("identity.client.disabled", source="/id", subject="cdap-1", data=data)
    )
    assert (facts.actor, facts.subject, facts.organisation_id, facts.reason, facts.refs) == (
        "u1",
        "cdap-1",
        "o1",
        "left",
        {"grant_id": "g1"},
    )
