"""Settings every service reads from the environment (prefix `CDAP_`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urljoin

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.topics import named


class ServiceSettings(BaseSettings):
    """Common settings; each service subclasses it and sets its own defaults."""

    model_config = SettingsConfigDict(env_prefix="CDAP_", env_file=None, extra="ignore")

    service_name: str = "cdap"
    database_url: str = "postgresql+asyncpg://cdap:cdap@127.0.0.1:5432/cdap"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # SASL/SCRAM-SHA-512 principal and password (`cdap-<service>`; see kafka_access.py); unset = no SASL.
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwt_audience: str = "cdap"
    jwt_issuer: str = "cdap-identity"
    otlp_endpoint: str | None = None
    trace_sql: bool = False  # per-statement spans, for diagnosis (they cost ~10 % of a lookup)
    log_level: str = "INFO"
    smtp_url: str = "smtp://127.0.0.1:1025"
    db_pool_size: int = Field(default=10, ge=1, le=100)
    consumer_max_attempts: int = Field(default=3, ge=1, le=20)
    # Where a consumer group that has no committed offset starts: "earliest" (the default) misses
    # nothing; "latest" serves system tests that start fresh groups on long-lived topics.
    consumer_offset_reset: Literal["earliest", "latest"] = "earliest"
    # A consumer with records waiting that commits nothing for this long is reported stalled: /ready
    # answers 503 naming it, and an error is logged (see watch.py).
    consumer_stall_seconds: float = Field(default=30, gt=0)
    consumer_watch_interval_seconds: float = Field(default=5, gt=0)
    outbox_batch_size: int = Field(default=500, ge=1, le=10_000)
    # Housekeeping of outbox / inbox / mail_outbox (see housekeeping.py); the inbox outlives Kafka's
    # 7-day retention so a redelivered event is always recognised.
    housekeeping_interval_seconds: float = Field(default=3600, gt=0)
    outbox_retention_hours: int = Field(default=24, ge=1)
    inbox_retention_days: int = Field(default=14, ge=8)
    sent_mail_retention_hours: int = Field(default=72, ge=1)

    @property
    def kafka_login(self) -> KafkaLogin:
        """The credentials every Kafka client of the service connects with."""
        password = self.kafka_password.get_secret_value() if self.kafka_password else None
        return KafkaLogin(self.kafka_username, password)

    @property
    def token_url(self) -> str:
        """Identity's token endpoint, beside the JWKS the tokens are checked with (for the OpenAPI)."""
        return urljoin(self.jwks_url, "/v1/token")

    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated networks, e.g.
    # "10.0.0.0/8,192.168.1.7"). None by default: the socket's peer is the client the audit records.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)

    @model_validator(mode="after")
    def _prefix_default_names(self) -> ServiceSettings:
        """`CDAP_TOPIC_PREFIX` in front of each default topic (`*_topic`) and of the consumer group; a name
        given explicitly is kept as it is (see `cdap_shared.topics`)."""
        for name in type(self).model_fields:
            if (name.endswith("_topic") or name == "consumer_group") and name not in self.model_fields_set:
                setattr(self, name, named(getattr(self, name)))
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
