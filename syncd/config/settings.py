"""The daemon's settings: Kafka, database, issuer, pipeline, limits, metrics, logging, connector."""

from __future__ import annotations

import re
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Literal,
)

from pydantic import (
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from syncd.config.base import (
    _IDENT,
    _MASK,
    _SECRET_KEY,
    StrictModel,
    _secret_from_file,
    mask_properties,
)


class KafkaSettings(StrictModel):
    bootstrap_servers: str = Field(description="comma-separated host:port list")
    group_id: str = "syncd"
    topic_prefix: str = Field(description="the Debezium connector's topic.prefix")
    dead_letter_topic: str = "syncd.dead-letter"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_file: Path | None = None
    properties: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra librdkafka properties, passed through as is"
    )

    _TYPED: ClassVar[dict[str, str]] = {
        "bootstrap.servers": "bootstrap_servers",
        "group.id": "group_id",
        "security.protocol": "security_protocol",
        "sasl.mechanism": "sasl_mechanism",
        "sasl.mechanisms": "sasl_mechanism",
        "sasl.username": "sasl_username",
        "sasl.password": "sasl_password",
        "ssl.ca.location": "ssl_ca_location",
        "ssl.certificate.location": "ssl_certificate_location",
        "ssl.key.location": "ssl_key_location",
        "ssl.key.password": "ssl_key_password",
    }

    @field_validator("properties")
    @classmethod
    def _no_shadowing(cls, props: dict[str, Any]) -> dict[str, Any]:
        for key in props:
            if key in cls._TYPED:
                raise ValueError(f"set '{key}' with kafka.{cls._TYPED[key]}, not in properties")
        return props

    @model_validator(mode="after")
    def _resolve_secrets(self) -> KafkaSettings:
        self.sasl_password = _secret_from_file(
            self.sasl_password, self.sasl_password_file, "sasl_password", required=False
        )
        self.ssl_key_password = _secret_from_file(
            self.ssl_key_password, self.ssl_key_password_file, "ssl_key_password", required=False
        )
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
                self.sasl_username is None or self.sasl_password is None
            ):
                raise ValueError(
                    f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and "
                    "sasl_password (or sasl_password_file)"
                )
        return self

    @field_serializer("properties")
    def _mask(self, props: dict[str, Any]) -> dict[str, Any]:
        return mask_properties(props)

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by consumer, producer and admin client (real secrets)."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, path in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if path is not None:
                conf[key] = str(path)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        for key, value in self.properties.items():
            conf[key] = str(value).lower() if isinstance(value, bool) else str(value)
        return conf

    def masked_client_config(self) -> dict[str, str]:
        return {k: (_MASK if _SECRET_KEY.search(k) else v) for k, v in self.client_config().items()}


class DatabaseSettings(StrictModel):
    """The ERP database; syncd keeps its ledger in its own schema of the same database
    so the write-back and the ledger commit in one transaction."""

    dsn: SecretStr | None = Field(default=None, description="SQLAlchemy URL")
    dsn_file: Path | None = None
    pool_size: int = Field(default=5, ge=1, le=200)
    max_overflow: int = Field(default=5, ge=0, le=200)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    schema_name: str = Field(default="syncd", pattern=rf"^{_IDENT}$")

    @model_validator(mode="after")
    def _resolve(self) -> DatabaseSettings:
        self.dsn = _secret_from_file(self.dsn, self.dsn_file, "dsn", required=True)
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(self.dsn_value())
        except ArgumentError:
            raise ValueError(
                "dsn is not a SQLAlchemy URL (e.g. postgresql+psycopg://user@host:5432/erp)"
            ) from None
        return self

    def dsn_value(self) -> str:
        assert self.dsn is not None  # resolved by the validator
        return self.dsn.get_secret_value()

    def masked_dsn(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.dsn_value()).render_as_string(hide_password=True)


class IssuerSettings(StrictModel):
    """The e-invoice platform. Only the sandbox provider exists so far.

    The fields mirror `syncd.issuers.sandbox.SandboxIssuerSettings` (same names,
    same meaning) so `syncd.issuers.registry.create_issuer(provider, settings)`
    accepts this model; when real providers arrive this becomes a union of the
    providers' settings models discriminated by `provider`.
    """

    provider: Literal["sandbox"] = "sandbox"
    base_url: str = Field(pattern=r"^https?://", description="e.g. https://einvoice.example.com")
    app_key: str = Field(min_length=1)
    app_secret: SecretStr | None = None
    app_secret_file: Path | None = None
    connect_timeout: float = Field(default=3.0, gt=0, description="seconds")
    read_timeout: float = Field(default=10.0, gt=0, description="seconds")
    write_timeout: float = Field(default=10.0, gt=0, description="seconds")
    pool_timeout: float = Field(default=5.0, gt=0, description="seconds")
    max_connections: int = Field(default=20, ge=1)
    max_keepalive_connections: int = Field(default=10, ge=0)

    def provider_settings(self) -> dict[str, Any]:
        """Settings for the provider's own model (secret resolved, file key dropped)."""
        return self.model_dump(exclude={"app_secret_file"})

    @model_validator(mode="after")
    def _resolve(self) -> IssuerSettings:
        self.app_secret = _secret_from_file(
            self.app_secret, self.app_secret_file, "app_secret", required=True
        )
        return self


class RetrySettings(StrictModel):
    max_attempts: int = Field(default=10, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1, description="fraction of the delay, random +/-")

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise ValueError("backoff_max_seconds must be >= backoff_base_seconds")
        return self


class PipelineSettings(StrictModel):
    max_in_flight: int = Field(default=256, ge=1)
    max_in_flight_per_partition: int | None = Field(
        default=None,
        ge=1,
        description="documents of one partition in progress at once; a partition at its "
        "limit is paused so it cannot take every slot (unset: only max_in_flight applies)",
    )
    workers: int = Field(
        default=64,
        ge=1,
        le=512,
        description="threads calling the provider and writing results; each waits on one "
        "provider call at a time, so this bounds the documents per second at a given "
        "provider latency (the HTTP pool follows; the database pool up to 36)",
    )
    poll_interval_seconds: float = Field(
        default=0.2,
        gt=0,
        description="first status query of an accepted, still processing invoice",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    drain_deadline_seconds: float = Field(default=20.0, gt=0)
    migrate_on_start: bool = False
    stuck_after_seconds: float = Field(
        default=900.0,
        gt=0,
        description="a non-terminal document whose last transition is older than this is "
        "stuck (the syncd_ledger_stuck_documents gauge and its alert); keep it above "
        "retry.backoff_max_seconds, or a document waiting out one long backoff counts as stuck",
    )


class LimitsSettings(StrictModel):
    """What one Kafka record or one document may ask of syncd. A record beyond a limit is
    dead-lettered with the limit's name; a document beyond `max_lines_per_document` is
    INVALID with that reason written back. The defaults are PostgreSQL's own bounds where
    it has them, so only a source that needs more has to raise them."""

    max_record_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="key or value bytes of one record"
    )
    max_nesting_depth: int = Field(
        default=32, ge=2, le=150, description="levels of nested structs/arrays in a record"
    )
    max_fields: int = Field(default=1600, ge=1, description="fields of one struct or object")
    max_decimal_digits: int = Field(
        default=1000, ge=1, description="significant digits of one decimal value"
    )
    min_decimal_scale: int = Field(default=-1000, description="lowest decimal scale")
    max_decimal_scale: int = Field(default=1000, description="highest decimal scale")
    max_lines_per_document: int = Field(
        default=2000, ge=1, description="line rows of one document (2000: the 数电 maximum)"
    )

    @model_validator(mode="after")
    def _scale_range(self) -> LimitsSettings:
        if self.min_decimal_scale > self.max_decimal_scale:
            raise ValueError("min_decimal_scale is above max_decimal_scale")
        return self


class MetricsSettings(StrictModel):
    host: str = "0.0.0.0"  # noqa: S104 -- scraped from other pods
    port: int = Field(default=9464, ge=1, le=65535)


class LoggingSettings(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json_format: bool = Field(default=True, alias="json")

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class ConnectorDatabase(StrictModel):
    """Where the connector reaches the ERP database, if not where syncd does."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    dbname: str | None = None


_PLACEHOLDER = re.compile(r"^\$\{[^}]+\}$")


class ConnectorSettings(StrictModel):
    """Inputs of `syncd connectors render` (the Debezium Postgres connector)."""

    name: str | None = Field(default=None, description="default: <topic_prefix>-pg")
    slot_name: str | None = Field(default=None, description="default: syncd_<topic_prefix>")
    publication_name: str | None = Field(default=None, description="default: syncd_<topic_prefix>")
    heartbeat_interval_ms: int = Field(default=10000, ge=0)
    snapshot_mode: Literal["initial", "no_data", "never", "when_needed", "always"] = "initial"
    database: ConnectorDatabase = Field(default_factory=ConnectorDatabase)
    password: str = Field(
        default="${file:/opt/kafka/external-secrets/erp-db.properties:password}",
        description="a Kafka Connect config-provider placeholder, never the password itself",
    )
    extra: dict[str, str] = Field(default_factory=dict, description="more connector properties")

    @field_validator("password")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        if value and not _PLACEHOLDER.match(value):
            raise ValueError(
                "must be a config-provider placeholder like "
                "${file:/path/secrets.properties:password} (or empty for a trusted dev database); "
                "a password in the connector config would be readable through the Connect REST API"
            )
        return value

    @field_serializer("extra")
    def _mask(self, extra: dict[str, str]) -> dict[str, object]:
        return mask_properties(extra)


__all__ = [
    "ConnectorDatabase",
    "ConnectorSettings",
    "DatabaseSettings",
    "IssuerSettings",
    "KafkaSettings",
    "LimitsSettings",
    "LoggingSettings",
    "MetricsSettings",
    "PipelineSettings",
    "RetrySettings",
]
