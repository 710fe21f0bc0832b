"""Settings every service reads from the environment (prefix `CDAP_`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urljoin

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cdap_shared.kafka_access import KafkaLogin
from cdap_shared.services import local_url
from cdap_shared.topics import named


class ServiceSettings(BaseSettings):
    """Common settings; each service subclasses it and sets its own defaults."""

    model_config = SettingsConfigDict(env_prefix="CDAP_", env_file=None, extra="ignore")

    service_name: str = Field(
        default="cdap", description="the name in logs, traces and metrics (set by each service's class)"
    )
    database_url: str = Field(
        default="postgresql+asyncpg://cdap:cdap@127.0.0.1:5432/cdap",
        description="the service's own PostgreSQL database (SQLAlchemy URL, asyncpg driver)",
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka brokers, comma-separated")
    kafka_username: str | None = Field(
        default=None,
        description="SASL/SCRAM-SHA-512 principal (`cdap-<service>`, see docs/deploy.md); unset: no SASL",
    )
    kafka_password: SecretStr | None = Field(default=None, description="the Kafka principal's password")
    jwks_url: str = Field(
        default=f"{local_url('identity')}/.well-known/jwks.json",
        description="identity's public keys, which access tokens are checked against",
    )
    jwt_audience: str = Field(default="cdap", description="the `aud` an access token must carry")
    jwt_issuer: str = Field(default="cdap-identity", description="the `iss` an access token must carry")
    otlp_endpoint: str | None = Field(
        default=None,
        description="the OTLP/HTTP collector traces are sent to (e.g. Jaeger's "
        "`http://127.0.0.1:4318/v1/traces`); unset: no traces are exported",
    )
    trace_sql: bool = Field(
        default=False, description="per-statement spans, for diagnosis (they cost ~10 % of a lookup)"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR (JSON logs on stdout)")
    smtp_url: str = Field(default="smtp://127.0.0.1:1025", description="where e-mail is sent")
    db_pool_size: int = Field(default=10, ge=1, le=100, description="database connections per process")
    consumer_max_attempts: int = Field(
        default=3, ge=1, le=20, description="tries of an event before it goes to the topic's `.dlq`"
    )
    consumer_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="where a consumer group without a committed offset starts: `earliest` misses "
        "nothing; `latest` serves system tests that start fresh groups on long-lived topics",
    )
    consumer_stall_seconds: float = Field(
        default=30,
        gt=0,
        description="a consumer with records waiting that commits nothing for this long is reported "
        "stalled: /ready answers 503 naming it, and an error is logged",
    )
    consumer_watch_interval_seconds: float = Field(
        default=5, gt=0, description="how often consumers' progress is checked"
    )
    outbox_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="outbox rows published per batch by the relay"
    )
    outbox_poll_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="how often an idle outbox relay looks for rows no notification or wake announced "
        "(another replica's); it polls every 50 ms for this long after its last rows",
    )
    outbox_relay_process: bool = Field(
        default=False,
        description="run the outbox relay in a child process of its own (restarted if it dies, `/ready` "
        "503 while it is down) rather than in the service's event loop",
    )
    housekeeping_interval_seconds: float = Field(
        default=3600, gt=0, description="how often published outbox, old inbox and sent mail rows are purged"
    )
    outbox_retention_hours: int = Field(
        default=24, ge=1, description="a published outbox row is kept this long"
    )
    inbox_retention_days: int = Field(
        default=14,
        ge=8,
        description="an inbox row (an event already handled) is kept this long: longer than Kafka's "
        "7-day retention, so a redelivered event is always recognised",
    )
    sent_mail_retention_hours: int = Field(
        default=72, ge=1, description="a sent e-mail's row is kept this long"
    )

    @property
    def kafka_login(self) -> KafkaLogin:
        """The credentials every Kafka client of the service connects with."""
        password = self.kafka_password.get_secret_value() if self.kafka_password else None
        return KafkaLogin(self.kafka_username, password)

    @property
    def token_url(self) -> str:
        """Identity's token endpoint, beside the JWKS the tokens are checked with (for the OpenAPI)."""
        return urljoin(self.jwks_url, "/v1/token")

    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated "
        "networks, e.g. `10.0.0.0/8,192.168.1.7`); none by default: the socket's peer is the client",
    )

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
