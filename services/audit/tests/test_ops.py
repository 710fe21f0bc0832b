"""Start-up and operations: signing keys, refusal of bad configuration, AsyncAPI, health."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from cdap_audit.app import build
from cdap_audit.config import Settings
from cdap_audit.rules import RulesError
from cdap_audit.signing import SigningKeyError
from cdap_shared.tlog.checkpoint import Checkpoint, NoteSigner, open_note
from cdap_testing import eventually

from .conftest import Audit


def test_a_malformed_signing_key_or_rules_file_stops_the_service(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="CDAP_AUDIT_SIGNING_KEY"):
        build(Settings(audit_signing_key=SecretStr("PRIVATE+KEY+x+00000000+AAAA")))
    bad = tmp_path / "rules.toml"
    bad.write_text('version = "1"\n[[rules]]\nname = "x"\nkind = "sun"\nseverity = "info"\n')
    with pytest.raises(RulesError, match="invalid"):
        build(Settings(alert_rules_path=bad))


@pytest.mark.stack
async def test_a_configured_key_signs_and_none_is_stored(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    signer = NoteSigner.generate("cdap.audit/test")
    audit = await audit_factory(
        audit_signing_key=SecretStr(signer.signer_key), audit_origin="cdap.audit/test"
    )
    key = (await audit.client.get("/v1/checkpoints/key", headers=audit.headers())).text.strip()
    assert key == signer.verifier_key
    note = await eventually(lambda: _note(audit))
    assert Checkpoint.parse(open_note(note, signer.verifier)).origin == "cdap.audit/test"
    assert await audit.sql("SELECT 1 FROM signing_key") == []


@pytest.mark.stack
async def test_a_generated_key_is_kept_across_restarts(
    audit_factory: Callable[..., Awaitable[Audit]],
) -> None:
    first = await audit_factory()
    key = (await first.client.get("/v1/checkpoints/key", headers=first.headers())).text
    await first.stop()
    again = await audit_factory(settings=first.settings)
    assert (await again.client.get("/v1/checkpoints/key", headers=again.headers())).text == key
    [row] = await again.sql("SELECT verifier_key FROM signing_key")
    assert row["verifier_key"] == key.strip()


async def _note(audit: Audit) -> str | None:
    response = await audit.client.get("/v1/checkpoints/latest", headers=audit.headers())
    return response.text if response.status_code == 200 else None


@pytest.mark.stack
async def test_health_readiness_and_asyncapi(audit: Audit) -> None:
    assert (await audit.client.get("/health")).status_code == 200
    await eventually(lambda: _ready(audit))
    doc = (await audit.client.get("/asyncapi.json")).json()
    assert doc["asyncapi"] == "3.0.0"
    assert audit.settings.consultations_topic in {c["address"] for c in doc["channels"].values()}
    assert "DossierConsultedEvent" in doc["components"]["schemas"]
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}
    assert not any(name.startswith("Caf") for name in doc["components"]["schemas"])


async def _ready(audit: Audit) -> bool:
    return (await audit.client.get("/ready")).status_code == 200
