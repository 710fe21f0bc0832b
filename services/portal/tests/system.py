"""The real services as processes for the browser tests (cdap_testing.system): fresh databases, the test
run's topics (only this module's system uses them in the portal's run), the portal in front; and helpers
that act as the CAF and its core system.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp

from cdap_shared import events as ev
from cdap_shared.envelope import new_event_id
from cdap_shared.topics import named
from cdap_testing import free_port, run_sync
from cdap_testing import system as processes
from cdap_testing.events import publish, request_approved
from cdap_testing.system import MAILBOX

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "portal"
STRONG = "Tr0ub4dor&3-horse-staple"


def unique_email(who: str) -> str:
    return f"{who}.{new_event_id()[-12:]}@example.fr"


def wait_until(check: Any, within: float = 30.0, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {within}s (last: {last!r})")


def activation_link(email: str, within: float = 30.0) -> str:
    """The activation link of the newest mail sent to `email` (the SMTP sink's `.eml` files)."""

    def link() -> str | None:
        mails = MAILBOX.to(email)
        found = re.findall(r"(http://\S+/activate\?token=[A-Za-z0-9_\-]+)", mails[-1]) if mails else []
        return found[-1] if found else None

    result: str = wait_until(link, within, what=f"activation mail to {email}")
    return result


# A family's file as the CAF core system describes it, one value in each section a profile may open.
SAMPLE_SECTIONS: dict[str, Any] = {
    "identite": {"family_name": "Lefebvre", "given_name": "Camille", "birth_date": "1985-05-14", "sex": "F"},
    "adresse": {"line": "12 rue du Gros-Horloge", "postal_code": "76000", "city": "Rouen"},
    "contact": {"telephone": "06 12 34 56 78", "email": "camille.lefebvre@example.fr"},
    "foyer": {
        "members": [
            {
                "role": "allocataire",
                "family_name": "Lefebvre",
                "given_name": "Camille",
                "birth_date": "1985-05-14",
            },
            {"role": "enfant", "family_name": "Lefebvre", "given_name": "Louis", "birth_date": "2015-09-02"},
            {"role": "enfant", "family_name": "Lefebvre", "given_name": "Inès", "birth_date": "2018-03-21"},
        ],
        "children": 2,
    },
    "ressources": {"monthly_income": 1450, "reference_year": 2025},
    "droits": [
        {"prestation": "AF", "monthly_amount": 141.99, "from": "2024-01-01", "to": None},
        {"prestation": "APL", "monthly_amount": 280, "from": "2024-01-01", "to": None},
    ],
    "paiements": [{"date": "2026-11-05", "amount": 421.99, "payee": "allocataire"}],
    "quotient_familial": {"month": "2026-11", "value": 580},
    "logement": {"status": "locataire", "aid_paid_to": "allocataire", "landlord_siret": None, "rent": 620},
    "rsa": {"referent_siret": None, "status": "sans_droit"},
}


@dataclass
class System(processes.System):
    """The running services of one test module, and helpers that act as the CAF and its core system."""

    admin: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle
    def start_core(self) -> None:
        """identity, dossiers and the portal (the partner user's story). Every service's port is chosen
        first: the mails link to this portal, which knows where each service answers."""
        for name in processes.SERVICES:
            self.ports.setdefault(name, free_port())
        self.common_env["CDAP_LOG_LEVEL"] = "WARNING"
        # Identity reads the run's access events whole: an approval published before it joined counts.
        self.start_blocking(
            "identity",
            "dossiers",
            "portal",
            extra_env={"identity": {"CDAP_CONSUMER_OFFSET_RESET": "earliest"}},
        )
        self.wait_for_groups("identity", "dossiers")

    def start_workflow(self) -> None:
        """access-requests and audit (the whole story, from the request to the audit trail)."""
        self.start_blocking("access-requests", "audit")
        self.wait_for_groups("access-requests", "audit")

    # ------------------------------------------------------------------ acting as the CAF
    def bootstrap_admin(self) -> None:
        """The first CAF admin, as an operator creates it: `cdap identity bootstrap --json`."""
        email = unique_email("admin")
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            r = client.post("/v1/activations", json={"token": self.bootstrap(email), "password": STRONG})
            r.raise_for_status()
            secret = r.json()["totp_secret"]
        self.admin = {"email": email, "totp": secret, "refresh": ""}

    def admin_headers(self) -> dict[str, str]:
        """A fresh admin token (refreshed each time: a test may outlive one 5-minute token)."""
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            if self.admin["refresh"]:
                form = {"grant_type": "refresh_token", "refresh_token": self.admin["refresh"]}
            else:
                code = pyotp.TOTP(self.admin["totp"]).now()
                form = {
                    "grant_type": "password",
                    "username": self.admin["email"],
                    "password": STRONG,
                    "totp": code,
                }
            r = client.post("/v1/token", data=form)
            r.raise_for_status()
        self.admin["refresh"] = r.json()["refresh_token"]
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def password_login(self, email: str) -> str:
        """What identity answers `email` signing in with the password alone (an error's description)."""
        form = {"grant_type": "password", "username": email, "password": STRONG}
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            answer = client.post("/v1/token", data=form).json()
        return str(answer.get("error_description", "signed in"))

    def create_organisation(self, siret: str, admin_email: str, kind: str = "ccas") -> dict[str, Any]:
        body = {
            "siret": siret,
            "name": "CCAS de Rouen",
            "kind": kind,
            "department": "76",
            "convention": {"reference": f"CONV-76-{siret[-4:]}", "valid_until": "2030-12-31"},
            "administrators": [{"email": admin_email, "family_name": "Durand", "given_name": "Claire"}],
        }
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            r = client.post("/v1/organisations", json=body, headers=self.admin_headers())
        assert r.status_code == 201, r.text
        return dict(r.json())

    def create_staff(self, email: str, roles: list[str], family_name: str) -> dict[str, Any]:
        body = {
            "email": email,
            "family_name": family_name,
            "given_name": "Agent",
            "roles": roles,
            "department": "76",
        }
        with httpx.Client(base_url=self.url("identity"), timeout=10) as client:
            r = client.post("/v1/users", json=body, headers=self.admin_headers())
        assert r.status_code == 201, r.text
        return dict(r.json())

    def approve_directly(self, organisation_id: str, email: str, profile: str = "T1") -> None:
        """What access-requests publishes once a request is approved (identity then provisions)."""
        event = request_approved(organisation_id, email, profile)
        run_sync(publish(self.kafka, named("access.events"), event))

    def publish_dossier(self, numero: str, department: str = "76", **overrides: Any) -> ev.DossierUpserted:
        """What the CAF core system publishes: one dossier on the CAF feed, every section filled (the
        event's model is the contract; the portal's tests need no service's code to write one)."""
        nir = f"28505{department}{numero[-6:]}"  # a woman born in May 1985, and the NIR's key below
        data = ev.DossierUpserted(
            numero=numero,
            nir=f"{nir}{97 - int(nir) % 97:02d}",
            department=department,
            version=1,
            opposition=False,
            sections=SAMPLE_SECTIONS,
        ).model_copy(update=overrides)
        event = ev.make_event("caf.dossier.upserted", source="/caf/core", subject=numero, data=data)
        run_sync(publish(self.kafka, named("caf.dossiers"), event))
        return data
