"""One valid payload per event type, for round-trip tests."""

from __future__ import annotations

from datetime import date

from cdap_shared import events as ev

APPLICANT = ev.Applicant(family_name="Martin", given_name="Léa", email="lea@example.org", job_title="CESF")

SAMPLES: dict[str, ev.EventData] = {
    "identity.user.provisioned": ev.UserProvisioned(
        user_id="u1", organisation_id="o1", roles=["partner_user"]
    ),
    "identity.user.activated": ev.UserRef(user_id="u1"),
    "identity.user.suspended": ev.UserRef(user_id="u1", by="admin", reason="alert"),
    "identity.user.reinstated": ev.UserRef(user_id="u1", by="admin"),
    "identity.user.totp_enrolled": ev.UserRef(user_id="u1"),
    "identity.user.locked": ev.UserLocked(user_id="u1", permanent=True),
    "identity.login.succeeded": ev.LoginSucceeded(user_id="u1", method="password"),
    "identity.login.failed": ev.LoginFailed(method="password", reason="bad_credentials"),
    "identity.grant.issued": ev.GrantIssued(
        grant_id="g1",
        user_id="u1",
        organisation_id="o1",
        organisation_siret="73282932000074",
        profile="T1",
        department="76",
        valid_from=date(2026, 1, 1),
        valid_until=date(2026, 12, 31),
    ),
    "identity.organisation.registered": ev.OrganisationRegistered(
        organisation_id="o1",
        siret="73282932000074",
        name="Logeo Seine",
        kind="bailleur",
        department="76",
        convention_reference="CONV-76-001",
        convention_valid_until=date(2027, 12, 31),
        administrators=["pa1"],
    ),
    "identity.organisation.updated": ev.OrganisationRegistered(
        organisation_id="o1",
        siret="73282932000074",
        name="Logeo Seine",
        kind="bailleur",
        department="76",
        convention_reference="CONV-76-001",
        convention_valid_until=date(2027, 12, 31),
        delegation_withdrawn=True,
    ),
    "identity.grant.revoked": ev.GrantEnded(grant_id="g1", user_id="u1", by="admin"),
    "identity.grant.expired": ev.GrantEnded(grant_id="g1", user_id="u1"),
    "identity.user.reset_required": ev.UserRef(user_id="u1", by="admin"),
    "identity.user.activation_resent": ev.UserRef(user_id="u1", by="admin"),
    "identity.user.reset_completed": ev.UserRef(user_id="u1"),
    **{
        f"identity.client.{change}": ev.ClientChanged(
            client_id="c1", organisation_id="o1", grant_id="g1", by="pa1"
        )
        for change in ("created", "rotated", "disabled", "deleted")
    },
    "access.request.submitted": ev.RequestSubmitted(
        request_id="r1",
        organisation_id="o1",
        applicant=APPLICANT,
        profile="T1",
        department="76",
        valid_until=date(2027, 1, 1),
        by="pa1",
    ),
    "access.request.documents_requested": ev.RequestDecision(
        request_id="r1", by="i1", documents=["convention"]
    ),
    "access.request.documents_received": ev.RequestDecision(request_id="r1", by="pa1"),
    "access.request.stage_approved": ev.RequestDecision(request_id="r1", by="i1", stage=1),
    "access.request.approved": ev.RequestApproved(
        request_id="r1",
        organisation_id="o1",
        applicant=APPLICANT,
        profile="T1",
        department="76",
        valid_until=date(2027, 1, 1),
        by="m1",
    ),
    "access.request.rejected": ev.RequestDecision(
        request_id="r1", by="i1", stage=1, comment="job does not fit"
    ),
    "access.request.withdrawn": ev.RequestDecision(request_id="r1", by="pa1"),
    "access.request.expired": ev.RequestDecision(request_id="r1"),
    "access.request.escalated": ev.RequestDecision(request_id="r1", stage=1),
    "access.request.reminded": ev.RequestDecision(request_id="r1", stage=1),
    "access.grant.revocation_requested": ev.RevocationRequested(
        request_id="r2", grant_id="g1", user_id="u1", by="pa1"
    ),
    "dossier.consulted": ev.DossierConsulted(
        actor="u1", numero="1234567", motif="accompagnement_social", decision="granted", sections=["identite"]
    ),
    "dossier.searched": ev.DossierSearched(
        actor="u1", criteria=["nir"], decision="granted", numeros=["1234567"]
    ),
    "caf.dossier.upserted": ev.DossierUpserted(
        numero="1234567", nir="185057800608436", department="76", version=1, sections={"identite": {}}
    ),
    "audit.alert.raised": ev.AlertRaised(alert_id="a1", rule="night_use", severity="warning", detail="03:12"),
    "audit.alert.acknowledged": ev.AlertReviewed(alert_id="a1", by="auditor-1"),
    "audit.alert.closed": ev.AlertReviewed(alert_id="a1", by="auditor-1"),
    "audit.checkpoint.signed": ev.CheckpointSigned(origin="cdap", tree_size=1, root_hash="AA==", note="n"),
}
