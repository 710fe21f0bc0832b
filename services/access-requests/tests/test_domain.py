"""The pure state machine: no command sequence reaches an invalid state, and submissions are checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cdap_access import domain
from cdap_access.domain import (
    FINAL,
    OPEN,
    Conflict,
    Decision,
    Facts,
    Invalid,
    NotPermitted,
    Organisation,
    Refused,
    State,
    Step,
)
from cdap_shared.actor import Actor

ORG = "org-1"
ACTORS = {
    a.sub: a
    for a in (
        Actor("instructor-1", frozenset({"caf_instructor"}), department="76"),
        Actor("instructor-2", frozenset({"caf_instructor"}), department="76"),
        Actor("manager-1", frozenset({"caf_manager"}), department="76"),
        Actor("manager-2", frozenset({"caf_manager"}), department="76"),
        Actor("both-roles", frozenset({"caf_instructor", "caf_manager"}), department="76"),
        Actor("other-department", frozenset({"caf_instructor", "caf_manager"}), department="27"),
        Actor("insider", frozenset({"caf_instructor", "caf_manager"}), org=ORG, department="76"),
        Actor("caf-admin", frozenset({"caf_admin"}), department="76"),
        Actor("partner-1", frozenset({"partner_admin"}), org=ORG),
        Actor("partner-other", frozenset({"partner_admin"}), org="org-2"),
    )
}
actors = st.sampled_from(sorted(ACTORS))
DONE = frozenset({State.APPROVED, State.PROVISIONED})


class Workflow(RuleBasedStateMachine):
    """Random commands by random actors; every allowed step is checked against the rules."""

    facts: Facts
    provisioned_once: bool

    @initialize(sensitive=st.booleans())
    def submit(self, sensitive: bool) -> None:
        self.facts = Facts(State.SUBMITTED, "76", ORG, "partner-1", sensitive)
        self.provisioned_once = False

    def attempt(self, command: Callable[[], Step | None]) -> Step | None:
        before = self.facts
        try:
            step = command()
        except Refused as refused:
            assert type(refused) in (NotPermitted, Conflict, Invalid) and refused.reason
            assert self.facts == before  # a refusal changes nothing
            return None
        if step is None:
            return None
        assert before.state not in FINAL, f"{before.state} is final but {step.action} reopened it"
        if before.state in DONE:
            assert step.action in ("provisioned", "revoked", "grant_expired"), step.action
        self.facts = step.after
        return step

    @rule(
        sub=actors,
        decision=st.sampled_from(Decision),
        comment=st.sampled_from([None, "", "  ", "pièce manquante"]),
        documents=st.sampled_from([(), ("convention signée",)]),
    )
    def decide(self, sub: str, decision: Decision, comment: str | None, documents: tuple[str, ...]) -> None:
        actor = ACTORS[sub]
        before = self.facts
        step = self.attempt(
            lambda: domain.decide(before, actor, decision, comment=comment, documents=documents)
        )
        if step is None:
            return
        assert before.state in (State.SUBMITTED, State.AWAITING_SECOND_APPROVAL)
        assert actor.department == "76" and actor.org != ORG and sub != before.submitted_by
        assert sub not in before.approvals
        stage = domain.STAGE_OF[before.state]
        assert domain.STAGE_ROLE[stage] in actor.roles and step.stage == stage
        if decision is Decision.REJECT:
            assert comment and comment.strip() and step.after.state is State.REJECTED
        if decision is Decision.REQUEST_DOCUMENTS:
            assert documents and stage == 1

    @rule(sub=actors)
    def upload(self, sub: str) -> None:
        before = self.facts
        step = self.attempt(lambda: domain.receive_documents(before, ACTORS[sub]))
        if step is not None:
            assert ACTORS[sub].org == ORG and "partner_admin" in ACTORS[sub].roles
            assert before.state in OPEN

    @rule(sub=actors)
    def withdraw(self, sub: str) -> None:
        before = self.facts
        step = self.attempt(lambda: domain.withdraw(before, ACTORS[sub]))
        if step is not None:
            assert before.state in OPEN and step.after.state is State.WITHDRAWN

    @rule()
    def expire(self) -> None:
        before = self.facts
        step = self.attempt(lambda: domain.expire(before))
        if step is not None:
            assert before.state is State.DOCUMENTS_REQUESTED

    @rule()
    def grant_issued(self) -> None:
        before = self.facts
        step = self.attempt(lambda: domain.provision(before))
        if step is not None:
            assert before.state is State.APPROVED
            self.provisioned_once = True

    @rule(revoked=st.booleans())
    def grant_ended(self, revoked: bool) -> None:
        before = self.facts
        step = self.attempt(lambda: domain.end_grant(before, revoked=revoked))
        if step is not None:
            assert before.state is State.PROVISIONED

    @invariant()
    def approvals_follow_the_rules(self) -> None:
        f = self.facts
        approvals = f.approvals
        assert len(set(approvals)) == len(approvals), "one person approved twice"
        assert len(approvals) <= (2 if f.sensitive else 1)
        for sub in approvals:
            actor = ACTORS[sub]
            assert actor.department == f.department and actor.org != f.organisation_id
        if approvals:
            assert "caf_instructor" in ACTORS[approvals[0]].roles, "stage 1 approved by a non-instructor"
        if len(approvals) == 2:
            assert "caf_manager" in ACTORS[approvals[1]].roles, "stage 2 approved by a non-manager"
        granted = f.state in DONE or (f.state in (State.REVOKED, State.EXPIRED) and self.provisioned_once)
        if granted:
            assert len(approvals) == (2 if f.sensitive else 1), "granted without every required approval"
        if f.state is State.AWAITING_SECOND_APPROVAL:
            assert f.sensitive and len(approvals) == 1
        if f.state in (State.SUBMITTED, State.DOCUMENTS_REQUESTED):
            assert approvals == ()
        assert (domain.stage_of(f.state) is None) == (f.state not in OPEN)


Workflow.TestCase.settings = settings(
    max_examples=300, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestWorkflow = Workflow.TestCase


def test_the_full_sensitive_path_needs_two_different_people() -> None:
    facts = Facts(State.SUBMITTED, "76", ORG, "partner-1", sensitive=True)
    step = domain.decide(facts, ACTORS["both-roles"], Decision.APPROVE)
    assert step.action == "stage_approved" and step.after.state is State.AWAITING_SECOND_APPROVAL
    with pytest.raises(Refused) as refused:
        domain.decide(step.after, ACTORS["both-roles"], Decision.APPROVE)
    assert (type(refused.value), refused.value.reason) == (NotPermitted, "already_decided")
    final = domain.decide(step.after, ACTORS["manager-1"], Decision.APPROVE)
    assert final.action == "approved" and final.event_type == "access.request.approved"
    assert final.after.approvals == ("both-roles", "manager-1")


def test_the_person_a_request_names_never_decides_it() -> None:
    renewal = Facts(State.SUBMITTED, "76", ORG, "system", sensitive=False, applicant_user_id="instructor-1")
    by_email = Facts(State.SUBMITTED, "76", ORG, "partner-1", sensitive=False, applicant_email="i2@caf.test")
    named = replace(ACTORS["instructor-2"], email="i2@caf.test")
    for facts, actor in ((renewal, ACTORS["instructor-1"]), (by_email, named)):
        with pytest.raises(Refused) as refused:
            domain.decide(facts, actor, Decision.APPROVE)
        assert (type(refused.value), refused.value.reason) == (NotPermitted, "own_request")
    assert domain.decide(renewal, ACTORS["instructor-2"], Decision.APPROVE).after.state is State.APPROVED


def test_other_profiles_are_approved_at_stage_one() -> None:
    facts = Facts(State.SUBMITTED, "76", ORG, "partner-1", sensitive=False)
    step = domain.decide(facts, ACTORS["instructor-1"], Decision.APPROVE)
    assert step.after.state is State.APPROVED and step.stage == 1


TODAY = date(2026, 11, 27)
GOOD_ORG = Organisation(ORG, "76", TODAY + timedelta(days=700), frozenset({"partner-1"}), False)


@pytest.mark.parametrize(
    ("actor", "organisation", "overrides", "kind", "reason"),
    [
        ("instructor-1", GOOD_ORG, {}, NotPermitted, "role_not_allowed"),
        ("partner-other", GOOD_ORG, {}, NotPermitted, "not_your_organisation"),
        ("partner-1", None, {}, Invalid, "unknown_organisation"),
    ],
)
def test_check_submission_basic_refusals(
    actor: str,
    organisation: Organisation | None,
    overrides: dict[str, object],
    kind: type[Refused],
    reason: str,
) -> None:
    assert_submission_refused(ACTORS[actor], organisation, overrides, kind, reason)


def assert_submission_refused(
    actor: Actor,
    organisation: Organisation | None,
    overrides: dict[str, object],
    kind: type[Refused],
    reason: str,
) -> None:
    """A good submission but for `overrides` is refused with this kind and reason."""
    arguments: dict[str, object] = {
        "organisation_id": ORG,
        "department": "76",
        "profile_known": True,
        "valid_until": TODAY + timedelta(days=100),
        "today": TODAY,
    } | overrides
    with pytest.raises(Refused) as refused:
        domain.check_submission(actor, organisation, **arguments)  # type: ignore[arg-type]
    assert (type(refused.value), refused.value.reason) == (kind, reason)


@pytest.mark.parametrize(
    ("organisation_changes", "overrides", "kind", "reason"),
    [
        ({"administrators": frozenset({"someone-else"})}, {}, NotPermitted, "not_an_administrator"),
        ({"delegation_withdrawn": True}, {}, NotPermitted, "delegation_withdrawn"),
        ({"convention_valid_until": TODAY - timedelta(days=1)}, {}, Invalid, "convention_expired"),
        ({}, {"department": "20"}, Invalid, "unknown_department"),
        ({}, {"department": "27"}, Invalid, "department_mismatch"),
        ({}, {"profile_known": False}, Invalid, "unknown_profile"),
        ({}, {"valid_until": TODAY}, Invalid, "end_date_not_in_future"),
        ({}, {"valid_until": date(2027, 11, 28)}, Invalid, "end_date_too_far"),
        ({"convention_valid_until": TODAY + timedelta(days=30)}, {}, Invalid, "beyond_convention"),
    ],
)
def test_check_submission_organisation_and_dates(
    organisation_changes: dict[str, object], overrides: dict[str, object], kind: type[Refused], reason: str
) -> None:
    organisation = replace(GOOD_ORG, **organisation_changes)  # type: ignore[arg-type]
    assert_submission_refused(ACTORS["partner-1"], organisation, overrides, kind, reason)


def test_a_year_to_the_day_is_allowed() -> None:
    domain.check_submission(
        ACTORS["partner-1"],
        GOOD_ORG,
        organisation_id=ORG,
        department="76",
        profile_known=True,
        valid_until=date(2027, 11, 27),
        today=TODAY,
    )


def test_department_codes() -> None:
    assert {"01", "19", "21", "2A", "2B", "95", "971", "976"} <= domain.DEPARTMENTS
    assert not {"00", "20", "96", "970", "977", "2C", "1"} & domain.DEPARTMENTS
    assert len(domain.DEPARTMENTS) == 94 + 2 + 6
