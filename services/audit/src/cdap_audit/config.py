"""Settings of the audit service (environment variables prefixed `CDAP_`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from cdap_audit.rules import DEFAULT_RULES
from cdap_shared.services import local_url
from cdap_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "audit"
    database_url: str = "postgresql+asyncpg://cdap_audit:cdap_audit@127.0.0.1:5432/cdap_audit"
    consumer_group: str = Field(
        default="audit", description="its Kafka consumer group (the directory's is `<group>-directory`)"
    )
    # Topics are settings so tests (and a staging copy) can use fresh ones. `caf.dossiers` is
    # deliberately absent: it carries dossier content and NIRs, which the audit must never store.
    identity_topic: str = Field(default="identity.events", description="logged, and feeds the directory")
    access_topic: str = Field(default="access.events", description="logged")
    consultations_topic: str = Field(default="dossier.consultations", description="logged")
    alerts_topic: str = Field(default="audit.alerts", description="consumed and produced")
    checkpoints_topic: str = Field(
        default="audit.checkpoints", description="where signed checkpoints are published"
    )

    audit_origin: str = Field(
        default="cdap.audit/local",
        min_length=1,
        description="checkpoint origin line; also the name of a generated signing key",
    )
    audit_signing_key: SecretStr | None = Field(
        default=None,
        description="Ed25519 note signer key `PRIVATE+KEY+<name>+<id>+<seed>`; generated and kept "
        "in the audit database when unset",
    )
    audit_signing_key_file: Path | None = Field(
        default=None,
        description="a file holding the signer key (e.g. a mounted secret); exclusive with the variable",
    )
    audit_witness_keys: list[str] = Field(
        default_factory=list,
        description="witness cosigner verifier keys `<name>+<id>+<base64(0x04 || key)>` (a JSON list) "
        "whose cosignatures are accepted and served",
    )
    checkpoint_interval: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="most seconds between two looks at the committed tree when this process commits "
        "nothing: an entry another replica committed waits at most this for its checkpoint (so at least "
        "one a second while the tree grows)",
    )
    checkpoint_min_gap: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="least seconds between two signings: an entry committed here is signed about this "
        "long after its commit at most, and a growing log stores at most 1/gap checkpoints a second "
        "(none while nothing new is committed)",
    )
    consumer_batch: int = Field(
        default=2000, ge=1, le=10_000, description="records taken per batch (one transaction each)"
    )
    retention_days: int = Field(default=3 * 365, ge=1, description="entries older than this are purged")
    partitions_ahead: int = Field(default=2, ge=1, le=24, description="monthly partitions created ahead")
    alert_rules_path: Path = Field(default=DEFAULT_RULES, description="the alert rules (TOML)")
    stream_heartbeat_seconds: float = Field(default=15, gt=0, le=300, description="SSE comment interval")
    stream_lifetime_seconds: float = Field(
        default=600, gt=0, description="a stream then ends; the client resumes with Last-Event-ID"
    )
    alert_notify_seconds: float = Field(
        default=2.0, gt=0, le=60, description="how often new alerts are looked for (critical ones mailed)"
    )
    alert_digest_hour: int = Field(
        default=7, ge=0, le=23, description="hour (Paris) from which the day's digest of warnings is mailed"
    )
    portal_url: str = Field(default=local_url("portal"), description="base of the links sent by mail")
